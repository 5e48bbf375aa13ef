"""Start one program under test with resource limits, and leave nothing of it behind (POSIX).

    python grader/launch.py [--sandboxed] -- PYTHON PROGRAM.py ARGS...

The harness starts every student program through this small launcher. The launcher
- sets resource limits that the program and all it starts inherit: memory, the size of
  a file it writes, CPU time, no core dumps, and (when it runs as an unprivileged
  grading user: --sandboxed) the number of processes, which bounds a fork bomb;
- on Linux, becomes a "child subreaper": a process the program starts and abandons,
  even a double-forked daemon in a session of its own, is re-parented to the launcher
  instead of to init, so the harness still finds it among the launcher's descendants;
- passes Ctrl+C (SIGINT) and SIGHUP on to the program, and exits with the program's own
  status, so the tests see the program's behaviour;
- once the program has exited, or when the harness stops it (SIGTERM to the launcher),
  kills the program and whatever it started, collects them all (so none lingers as a
  zombie that still counts against the process limit), and exits.

Where there is no launcher process (Windows, where a Job Object does its work; or POSIX with
THREADED_CHAT_PORTABLE_STOP=1, to test that path), the harness starts the program through
this file's other mode, in which it runs the program in its own process:

    python grader/launch.py --in-process [--break SIGNAME] [--sandboxed] -- PROGRAM.py ARGS...

--break names a signal that the program receives as Ctrl+C. On Windows a program of a
process group of its own (which the harness needs, to signal it alone) never gets Ctrl+C:
the harness sends Ctrl+Break (SIGBREAK) to its group, and this turns it into whatever
the program made of Ctrl+C (KeyboardInterrupt, unless it installed a handler of its own).
It is started by the harness, never imported by a submission, and uses the standard library only.
"""

import ctypes
import os
import runpy
import signal
import subprocess
import sys
import time

GIB = 1024 ** 3
LIMITS = {
    # Virtual memory: room for 250 threads' stacks (8 MB each) and a chat's buffers.
    "RLIMIT_AS": 6 * GIB,
    # A program under test writes no files; this stops one that fills the disk.
    "RLIMIT_FSIZE": 64 * 1024 ** 2,
    # Far above any stage's time limit: only a runaway process reaches it.
    "RLIMIT_CPU": 900,
    "RLIMIT_CORE": 0,
}
# Processes (threads count too on Linux) of the grading user, all its programs together;
# for an ordinary user, this many more than it runs already.
SANDBOX_PROCESSES = 2048
PR_SET_CHILD_SUBREAPER = 36
FORWARDED = ("SIGINT", "SIGHUP")


def set_limits(sandboxed):
    import resource  # POSIX only: the launcher is never used on Windows, its helpers are
    limits = dict(LIMITS)
    # Counted per user, never enforced for root: bounds a fork bomb for a grading user of
    # its own, and for an ordinary user (Linux, where its tasks can be counted).
    if sandboxed:
        limits["RLIMIT_NPROC"] = SANDBOX_PROCESSES
    elif os.geteuid() != 0 and sys.platform.startswith("linux"):
        limits["RLIMIT_NPROC"] = tasks_of_user(os.getuid()) + SANDBOX_PROCESSES
    for name, value in limits.items():
        which = getattr(resource, name, None)
        if which is None:
            continue
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))
        except (ValueError, OSError):
            pass  # not enforced on this system (macOS ignores some): the other limits still hold


def tasks_of_user(uid):
    """Processes and threads this user runs now (Linux /proc)."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            if fields["Uid"].split()[0] == str(uid):
                count += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            pass
    return count


def become_subreaper():
    """Linux only: orphans of the program are re-parented here, not to init."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def children_table():
    """{parent pid: [child pids]} from /proc (Linux), else from ps (macOS)."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return _children_from_ps()
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            table.setdefault(int(fields[1]), []).append(int(name))
        except (OSError, IndexError, ValueError):
            pass
    return table


def _children_from_ps():
    table = {}
    try:
        listing = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True,
                                 timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return table
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            table.setdefault(int(parts[1]), []).append(int(parts[0]))
    return table


def descendants(pid):
    """Every process below `pid` (orphans included, once `pid` is a subreaper)."""
    table = children_table()
    found, frontier = [], [pid]
    while frontier:
        for child in table.get(frontier.pop(), []):
            if child not in found:
                found.append(child)
                frontier.append(child)
    return found


def kill_all(pids):
    """Stop them first (a stopped process cannot fork), then kill them."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def reap_leftovers():
    """Kill everything below the launcher, and collect it, until nothing is left (3 s at most)."""
    give_up = time.monotonic() + 3.0
    while time.monotonic() < give_up:
        left = [pid for pid in descendants(os.getpid()) if not is_zombie(pid)]
        kill_all(left)
        # Collect our children, the program's orphans among them: a zombie nobody
        # collects still counts against the user's process limit.
        deadline = min(give_up, time.monotonic() + 1.0)
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break  # no child left at all
            if pid == 0:
                if not left:
                    break  # only live children we have not killed: none, since `left` was empty
                time.sleep(0.005)
        if not left and not descendants(os.getpid()):
            return


def is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def main(argv):
    options, command = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    sandboxed = "--sandboxed" in options
    if "--in-process" in options:
        break_name = options[options.index("--break") + 1] if "--break" in options else None
        return run_in_this_process(command, break_name, sandboxed)
    set_limits(sandboxed)
    become_subreaper()
    started = []  # the program, once it runs; a signal before that is held for it
    for name in FORWARDED:
        signal.signal(getattr(signal, name), lambda signum, frame: _forward(started, signum))
    signal.signal(signal.SIGTERM, _stop_everything)
    started.append(subprocess.Popen(command))  # inherits the streams, the limits, the group
    program = started[0]
    # Our copies of the streams are not needed: the program's end of file is its own.
    null = os.open(os.devnull, os.O_RDWR)
    for descriptor in (0, 1, 2):
        os.dup2(null, descriptor)
    status = program.wait()
    reap_leftovers()
    if status < 0:  # killed by a signal: end the same way, so the harness sees it
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


def _stop_everything(signum, frame):
    """The harness is done with the program: kill it and all below, collect them, exit."""
    reap_leftovers()
    os._exit(128 + signum)


def _forward(started, signum):
    if not started:
        return  # not started yet: nothing to pass the signal to
    try:
        started[0].send_signal(signum)
    except OSError:
        pass


# ---- the program in this very process (Windows, and the portable path forced on POSIX) ----

def run_in_this_process(command, break_name, sandboxed):
    """Run PROGRAM.py ARGS as `python PROGRAM.py ARGS` would, here; `break_name` means Ctrl+C."""
    program, args = os.path.abspath(command[0]), command[1:]
    if os.name == "posix":
        set_limits(sandboxed)  # on Windows the program's Job Object holds its limits
    if break_name:
        signal.signal(getattr(signal, break_name), _as_ctrl_c)
    sys.argv = [program, *args]
    sys.path[0] = os.path.dirname(program)  # where `python PROGRAM.py` looks first (here: our folder)
    try:
        runpy.run_path(program, run_name="__main__")
    except SystemExit:
        raise
    except BaseException as error:  # noqa: B902 - shown and ended on as Python itself would
        return _die_like_python(error, program)
    return 0


def _as_ctrl_c(signum, frame):
    """The break signal arrived: do what Ctrl+C would do in the program, now."""
    handler = signal.getsignal(signal.SIGINT)
    if handler == signal.SIG_IGN:
        return
    if callable(handler):
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


def _die_like_python(error, program):
    """An exception escaped the program: its traceback (without our frames), and Python's status."""
    trace = error.__traceback__
    while trace is not None and trace.tb_frame.f_code.co_filename != program:
        trace = trace.tb_next  # runpy's frames and ours: `python PROGRAM.py` shows none of them
    error.__traceback__ = trace or error.__traceback__
    sys.excepthook(type(error), error, error.__traceback__)
    sys.stderr.flush()
    if isinstance(error, KeyboardInterrupt):
        if os.name == "posix":  # Python ends by SIGINT itself, so that its parent sees how it ended
            sys.stdout.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        return -1073741510  # Windows: 0xC000013A, STATUS_CONTROL_C_EXIT, as python.exe ends on Ctrl+C
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
