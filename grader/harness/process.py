"""Run a student's program as a child process, and always clean it up.

A Program reads the child's standard output and standard error on two
background threads, so a chatty program never blocks on a full pipe, and the
tests can wait for a line with a deadline. stop() kills the child *and every
process it started*, in one of three ways (`how_to_run`):

- "launcher" (POSIX): through grader/launch.py, in a session of its own; the
  launcher is a child subreaper on Linux and kills and collects all below it.
- "job" (Windows): in a Job Object made "kill on job close" (grader/harness/system.py),
  started suspended and put in the job before it runs; Ctrl+C is sent as Ctrl+Break to
  its process group, which grader/launch.py --in-process turns back into Ctrl+C.
- "tree" (forced anywhere with THREADED_CHAT_PORTABLE_STOP=1; Windows' fallback when a
  job cannot be made): no process group and no job; stop() walks the process tree.
  On POSIX this is how the portable path is tested: the program runs through
  grader/launch.py --in-process too, with SIGUSR1 standing in for Ctrl+Break.
"""

import atexit
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grader.launch import children_table, descendants, kill_all

from . import system

IS_WINDOWS = sys.platform == "win32"
LAUNCHER = Path(__file__).resolve().parents[2] / "grader" / "launch.py"
# Set by the grading tools when they run as root: "UID:GID" of the user programs run as.
SANDBOX_VARIABLE = "THREADED_CHAT_SANDBOX"
# How long the launcher may take to kill and collect all that a program started.
LAUNCHER_GRACE = 5.0
# Output kept per stream: the start, and the most recent rest (a flood is cut in the middle).
KEEP_HEAD = 256 * 1024
KEEP_TAIL = 1024 * 1024
STARTED_LINE = re.compile(r"^Server started on (?P<host>\S+):(?P<port>\d+)\s*$")
NOISE_DIR = Path(__file__).resolve().parent.parent / "noise"

# Forces the process-tree way of stopping programs (no process group, no job): "1".
PORTABLE_VARIABLE = "THREADED_CHAT_PORTABLE_STOP"
# On POSIX's portable path, the signal that stands in for Windows' Ctrl+Break.
BREAK_STAND_IN = "SIGUSR1"

# How long a program may take to print its first line. Generous, because a
# server run under scheduling noise starts slowly; a program that exits early
# is reported at once, without waiting for this.
START_DEADLINE = 15.0


# Every program started and not yet stopped, so that a test run that ends
# abruptly (Ctrl+C, or killed by a grading script's deadline with SIGTERM)
# still takes its servers with it: each runs in a process group of its own,
# which a kill of the test run's group would not reach.
RUNNING = set()


# Set by grader/watchdog.py when a test ran out of time: no new program may start
# until that test is over (its text is the reason, for the failure message).
REFUSED = []


def stop_all_programs():
    for program in list(RUNNING):
        program.stop()


def refuse_new_programs(reason):
    """Until allow_new_programs(): starting a program fails with `reason` (the test ran out of time)."""
    REFUSED[:] = [reason]


def allow_new_programs():
    REFUSED.clear()


def how_to_run():
    """How programs run and are stopped: "launcher" (POSIX), "job" (Windows), or "tree"
    (no process group and no job: forced with THREADED_CHAT_PORTABLE_STOP=1)."""
    if os.environ.get(PORTABLE_VARIABLE, "") not in ("", "0"):
        return "tree"
    return "job" if IS_WINDOWS else "launcher"


def _stop_all_then_terminate(signum, frame):
    stop_all_programs()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


atexit.register(stop_all_programs)
if not IS_WINDOWS and threading.current_thread() is threading.main_thread():
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_all_then_terminate)


def grading_user():
    """(uid, gid) to run programs as, when the grading tools asked for it; else None."""
    value = os.environ.get(SANDBOX_VARIABLE, "")
    if not value:
        return None
    uid, _, gid = value.partition(":")
    return int(uid), int(gid or uid)


class ProgramError(Exception):
    """A program under test could not be run as the protocol says (missing, silent, crashed).

    Its message is written for students. The runner is not tied to pytest: the tools
    (tools/load.py) catch this error themselves, and the course's pytest plugin reports
    it as a plain failure with that message and no traceback.
    """


def fail(message):
    raise ProgramError(message)


def tail(text, lines=25):
    """The last few lines of a program's output, indented for a report."""
    kept = text.rstrip("\n").splitlines()[-lines:]
    if not kept:
        return "    (nothing)"
    return "\n".join("    " + line for line in kept)


class Program:
    """A child process whose output is collected line by line."""

    def __init__(self, path, args=(), env=None, stdin=False, noise=False, label="program",
                 encoding="utf-8"):
        """encoding: of the program's standard streams. "utf-8" (PYTHONIOENCODING=utf-8) for
        every test but those about encodings; another name sets PYTHONIOENCODING to it;
        None leaves the platform's own (PYTHONIOENCODING and PYTHONUTF8 removed)."""
        self.path = Path(path)
        self.label = label
        if REFUSED:
            fail(REFUSED[0])
        if not self.path.is_file():
            fail(f"There is no file {self.path}.\n"
                 f"Is the stage folder complete? (--impl chooses which folder is graded.)")
        env = dict(os.environ if env is None else env)
        if encoding is None:
            env.pop("PYTHONIOENCODING", None)
            env.pop("PYTHONUTF8", None)
            self.encoding = platform_encoding()
        else:
            env["PYTHONIOENCODING"] = encoding
            env.pop("PYTHONUTF8", None)  # would not change the streams; left out all the same
            self.encoding = encoding
        # Grades must not depend on the grader's environment: a program that
        # forgets flush=True fails everywhere, as it would for a user who pipes it.
        env.pop("PYTHONUNBUFFERED", None)
        # Noise: grader/noise/sitecustomize.py, on PYTHONPATH, runs before the
        # program does, with the profiles named in THREADED_CHAT_NOISE. "race"
        # (noise=True) makes races show up on nearly every run; "slow", which
        # the test run's own environment asks for (THREADED_CHAT_NOISE=slow),
        # slows every program at random: a test must never need a quick one.
        profiles = {name.strip() for name in os.environ.get("THREADED_CHAT_NOISE", "").split(",")
                    if name.strip()} | ({"race"} if noise else set())
        if profiles - {"race", "slow"}:
            fail(f"THREADED_CHAT_NOISE={os.environ['THREADED_CHAT_NOISE']!r} names no known noise "
                 f"profile: use 'slow' (or 'race', or 'race,slow'), or leave it unset.")
        env.pop("THREADED_CHAT_NOISE", None)
        if profiles:
            env["THREADED_CHAT_NOISE"] = ",".join(sorted(profiles))
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(NOISE_DIR), env.get("PYTHONPATH", "")) if p)
        self.command = [sys.executable, str(self.path), *map(str, args)]
        self.how = how_to_run()
        self.job = None  # Windows: the program's Job Object
        self._stop_lock = threading.Lock()
        launch, options = self._launch_command()
        self.proc = subprocess.Popen(
            launch,
            cwd=str(self.path.parent),
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **options,
        )
        self._pid = None
        RUNNING.add(self)
        self.started_at = time.monotonic()
        self._changed = threading.Condition()
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._readers = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._stdout), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        if IS_WINDOWS:
            self._contain_and_resume()

    def _launch_command(self):
        """The command line that starts the program, and Popen's options, for self.how."""
        options = {}
        sandbox = None if IS_WINDOWS else grading_user()
        sandboxed = ["--sandboxed"] if sandbox else []
        if sandbox:  # graded as root: the program runs as an unprivileged user of its own
            options.update(user=sandbox[0], group=sandbox[1], extra_groups=[])
        if self.how == "launcher":
            options["start_new_session"] = True  # its own process group
            # Through the launcher: resource limits, and nothing it starts escapes the clean-up.
            return [sys.executable, str(LAUNCHER), *sandboxed, "--", *self.command], options
        # In its own process, through launch.py's --in-process mode: a break signal means Ctrl+C.
        break_name = "SIGBREAK" if IS_WINDOWS else BREAK_STAND_IN
        launch = [sys.executable, str(LAUNCHER), "--in-process", "--break", break_name, *sandboxed,
                  "--", *self.command[1:]]
        if IS_WINDOWS:
            # A process group of its own, so that Ctrl+Break reaches it alone; suspended
            # until it is in its job (see _contain_and_resume).
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | system.CREATE_SUSPENDED
        return launch, options

    def _contain_and_resume(self):
        """Windows: put the suspended program in a job of its own, then let it run."""
        if self.how == "job":
            try:
                job = system.Job()
            except OSError:
                job = None
            if job is not None:
                try:
                    job.add(self.proc.pid)
                    self.job = job
                except OSError:  # e.g. a job that allows no nested job: the tree way, then
                    job.close()
            if self.job is None:
                self.how = "tree"
        try:
            system.resume(self.proc.pid)
        except OSError as error:
            self.stop()
            fail(f"The test harness could not start {self.path.name}: {error}")

    # ---- output -----------------------------------------------------------

    def _drain(self, pipe, into):
        while True:
            chunk = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(1)
            with self._changed:
                if chunk:
                    into.extend(chunk)
                    if len(into) > KEEP_HEAD + 2 * KEEP_TAIL:
                        # An output flood: keep its start and its latest part, bounded.
                        marker = b"\n[... output cut by the test harness ...]\n"
                        del into[KEEP_HEAD:len(into) - KEEP_TAIL]
                        into[KEEP_HEAD:KEEP_HEAD] = marker
                self._changed.notify_all()
            if not chunk:
                return

    @property
    def stdout(self):
        with self._changed:
            return self._stdout.decode(self.encoding, "replace")

    @property
    def stderr(self):
        with self._changed:
            return self._stderr.decode(self.encoding, "replace")

    def stdout_lines(self):
        """Complete lines printed so far (a trailing partial line is left out)."""
        text = self.stdout.replace("\r\n", "\n")
        return text.split("\n")[:-1]

    def wait_for(self, condition, timeout):
        """Wait until condition() is true, the program exits, or the deadline; return condition()."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = condition()
                if result or self.proc.poll() is not None:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return result
                self._changed.wait(min(remaining, 0.05))

    # ---- life and death -----------------------------------------------------

    @property
    def returncode(self):
        return self.proc.poll()

    def exited(self):
        return self.proc.poll() is not None

    def wait_exit(self, timeout):
        """Wait for the program to exit by itself; return its status or None.

        After an exit, also wait for the last of its output: what it printed just
        before exiting may still be in the pipe until the readers reach its end.
        """
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for reader in self._readers:
            reader.join(2)
        return status

    def settle(self, grace=0.3):
        """Before reporting: let a crashing program finish exiting and its output arrive."""
        if "Traceback (most recent call last)" in self.stderr:
            grace = max(grace, 0.3)
        self.wait_exit(grace)  # if it is still running, its output so far is all there is

    def interrupt(self):
        """Press Ctrl+C, as a user would at the program's terminal; return what was sent, in words.

        POSIX: SIGINT (the launcher passes it on). Windows: a program in a process group
        of its own never gets Ctrl+C, so Ctrl+Break goes to its group, and
        grader/launch.py --in-process turns it into Ctrl+C inside the program. On POSIX's
        forced portable path, SIGUSR1 stands in for Ctrl+Break, through the same code.
        """
        if self.how == "launcher":
            os.kill(self.proc.pid, signal.SIGINT)
            return "pressed Ctrl+C (sent SIGINT to the server)"
        if IS_WINDOWS:
            try:
                os.kill(self.proc.pid, signal.CTRL_BREAK_EVENT)  # to the process group it leads
            except OSError as error:
                pytest.skip(f"Ctrl+Break could not be sent ({error}): this test run has no console")
            return "pressed Ctrl+C (sent Ctrl+Break to the server's process group, which it sees as Ctrl+C)"
        os.kill(self.proc.pid, getattr(signal, BREAK_STAND_IN))
        return f"pressed Ctrl+C (sent {BREAK_STAND_IN}, which the portable path turns into Ctrl+C)"

    @property
    def pid(self):
        """The program's own process id (the launcher's child, where there is a launcher)."""
        if self.how != "launcher" or self._pid is not None:
            return self._pid or self.proc.pid
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:  # no /proc (macOS): ps knows
            children = children_table().get(self.proc.pid, [])
        if children:
            self._pid = int(children[0])
            return self._pid
        return self.proc.pid  # not started yet: the launcher stands for it

    def cpu_seconds(self):
        """User + system CPU time the program has used so far; None where it cannot be read.

        Linux: /proc; macOS: ps; Windows: the program's job (which counts the python.exe
        that a virtual environment's python.exe starts, too) or else the process.
        """
        if self.job is not None:
            return self.job.cpu_seconds()
        return system.cpu_seconds(self.pid)

    def peak_memory_kb(self):
        """The program's peak memory in kB so far; None where it cannot be read (macOS).

        Linux: VmHWM, the peak resident memory, from /proc. Windows: the peak memory that
        any process of the program's job committed, or else the process's peak working set.
        """
        if self.job is not None:
            return self.job.peak_memory_kb()
        return system.peak_memory_kb(self.pid)

    def stop(self):
        """Kill the program and all its children; safe to call twice, and from two threads
        at once (the watchdog of grader/watchdog.py stops programs from its own)."""
        RUNNING.discard(self)
        with self._stop_lock:
            if self.how == "launcher":
                self._stop_through_launcher()
            elif self.job is not None:
                self.job.kill()  # every process in the job, wherever it went
                self.job.close()
                self.job = None
            else:
                stop_tree(self.proc.pid)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            for reader in self._readers:
                reader.join(2)
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if pipe:
                    try:
                        pipe.close()
                    except OSError:
                        pass

    def _stop_through_launcher(self):
        # The launcher kills and collects the program and everything it started,
        # even a daemon that left the group (Linux: it was re-parented to the launcher).
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(LAUNCHER_GRACE)
            except (OSError, subprocess.TimeoutExpired):
                pass
        # If it could not: everything below it, while it lives, then the group.
        kill_all(descendants(self.proc.pid))
        # Then the whole process group: even after the program itself has exited,
        # a child it started may live on.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def describe_exit(self):
        code = self.proc.poll()
        if code is None:
            return f"The {self.label} is still running."
        return f"The {self.label} exited with status {code}."

    def report(self):
        """What the program printed, for a failure message."""
        return (f"{self.describe_exit()}\n"
                f"  Its standard output:\n{tail(self.stdout)}\n"
                f"  Its standard error:\n{tail(self.stderr)}")


class Server(Program):
    """A server program, started with --host 127.0.0.1 --port 0 (docs/PROTOCOL.md, S1)."""

    def __init__(self, path, args=(), env=None, noise=False):
        super().__init__(path, ["--host", "127.0.0.1", "--port", "0", *args],
                         env=env, noise=noise, label="server")
        self.host = "127.0.0.1"
        try:
            self.port = self._read_port()
        except BaseException:
            # The test fails here, before any fixture holds this server: stop it now,
            # or a server that never printed its start line lives until the run ends.
            self.stop()
            raise

    @property
    def address(self):
        return (self.host, self.port)

    def _read_port(self):
        lines = self.wait_for(self.stdout_lines, START_DEADLINE)
        if not lines:
            if self.exited():
                fail(f"The server exited before it printed 'Server started on HOST:PORT'.\n"
                     f"{self.report()}\n{not_done_hint(self.stderr)}")
            fail(f"The server printed no line within {START_DEADLINE:.0f} s; docs/PROTOCOL.md wants "
                 f"'Server started on HOST:PORT' as its first line, flushed at once.\n"
                 f"  Hint: print(..., flush=True) - output to a pipe is buffered otherwise.\n"
                 f"{self.report()}")
        match = STARTED_LINE.match(lines[0])
        if not match:
            self.settle(0.3)  # it may be about to crash: show why
            fail(f"The server's first line should be 'Server started on HOST:PORT'.\n"
                 f"  It printed: {lines[0]!r}\n{self.report()}")
        return int(match.group("port"))

    def has_traceback(self):
        return "Traceback (most recent call last)" in self.stderr

    def assert_no_traceback(self, what="the test"):
        if self.has_traceback():
            fail(f"The server printed a traceback during {what}; docs/PROTOCOL.md says it never does,\n"
                 f"whatever clients do. Catch the error where it happens, and clean up that client.\n"
                 f"  Its standard error:\n{tail(self.stderr, 40)}")

    def assert_running(self, what="the test"):
        if self.exited():
            fail(f"The server stopped during {what}.\n{self.report()}")


def stop_tree(pid):
    """Kill a process and all its descendants, with no process group and no job to help.

    POSIX: each process is stopped (SIGSTOP) before its children are listed, so that none
    can start another or exit (which would hand its children to init, out of reach) while
    the tree is walked; then all are killed. A child that was orphaned before stop() began
    is out of reach here: that is what the launcher (POSIX) and the job (Windows) are for.
    Windows' fallback: taskkill /T, which walks the tree the same way.
    """
    if IS_WINDOWS:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return
    stopped, frontier = [], [pid]
    while frontier:
        for each in frontier:
            try:
                os.kill(each, signal.SIGSTOP)
            except OSError:
                pass
        stopped += frontier
        frontier = [each for each in descendants(pid) if each not in stopped]
    kill_all(stopped)


def platform_encoding():
    """The encoding a Python program started here uses for a pipe when nothing sets one."""
    import locale
    getencoding = getattr(locale, "getencoding", None)  # Python 3.11+: ignores UTF-8 mode
    return getencoding() if getencoding else locale.getpreferredencoding(False)


def not_done_hint(stderr):
    if "NotImplementedError" in stderr:
        return "  This part of the stage is not done yet: fill in the function named in the error."
    if "Address already in use" in stderr:
        return "  Hint: bind to the --port you were given (the tests pass --port 0)."
    if "unrecognized arguments" in stderr or "usage:" in stderr:
        return "  Hint: the server must accept --host HOST and --port PORT."
    return ""
