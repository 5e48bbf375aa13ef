"""Run a student's program as a child process, and always clean it up.

A Program reads the child's standard output and standard error on two
background threads, so a chatty program never blocks on a full pipe, and the
tests can wait for a line with a deadline. stop() kills the child *and every
process it started* (its process group on POSIX, its process tree on Windows).
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

from grader.launch import descendants, kill_all

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

# How long a program may take to print its first line. Generous, because a
# server run under scheduling noise starts slowly; a program that exits early
# is reported at once, without waiting for this.
START_DEADLINE = 15.0


# Every program started and not yet stopped, so that a test run that ends
# abruptly (Ctrl+C, or killed by a grading script's deadline with SIGTERM)
# still takes its servers with it: each runs in a process group of its own,
# which a kill of the test run's group would not reach.
RUNNING = set()


def stop_all_programs():
    for program in list(RUNNING):
        program.stop()


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

    def __init__(self, path, args=(), env=None, stdin=False, noise=False, label="program"):
        self.path = Path(path)
        self.label = label
        if not self.path.is_file():
            fail(f"There is no file {self.path}.\n"
                 f"Is the stage folder complete? (--impl chooses which folder is graded.)")
        env = dict(os.environ if env is None else env)
        env["PYTHONIOENCODING"] = "utf-8"
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
        options = {}
        self.command = [sys.executable, str(self.path), *map(str, args)]
        launch = self.command
        if IS_WINDOWS:
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            options["start_new_session"] = True  # its own process group
            # Through the launcher: resource limits, and nothing it starts escapes the clean-up.
            sandbox = grading_user()
            launch = [sys.executable, str(LAUNCHER), *(["--sandboxed"] if sandbox else []), "--", *self.command]
            if sandbox:  # graded as root: the program runs as an unprivileged user of its own
                options.update(user=sandbox[0], group=sandbox[1], extra_groups=[])
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
            return self._stdout.decode("utf-8", "replace")

    @property
    def stderr(self):
        with self._changed:
            return self._stderr.decode("utf-8", "replace")

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
        """Press Ctrl+C: SIGINT to the program (POSIX only)."""
        if IS_WINDOWS:
            pytest.skip("SIGINT cannot be sent to a single process on Windows")
        os.kill(self.proc.pid, signal.SIGINT)

    @property
    def pid(self):
        """The program's own process id (the launcher's child, where there is a launcher)."""
        if IS_WINDOWS or self._pid is not None:
            return self._pid or self.proc.pid
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            children = []
        if children:
            self._pid = int(children[0])
            return self._pid
        return self.proc.pid  # not started yet, or no /proc: the launcher stands for it

    def cpu_seconds(self):
        """User + system CPU time the program has used so far (Linux only, else None)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self):
        """Kill the program and all its children; safe to call twice."""
        RUNNING.discard(self)
        if not IS_WINDOWS:
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
        elif self.proc.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.proc.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    """A server program, started with --host 127.0.0.1 --port 0 as the contract says."""

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


def not_done_hint(stderr):
    if "NotImplementedError" in stderr:
        return "  This part of the stage is not done yet: fill in the function named in the error."
    if "Address already in use" in stderr:
        return "  Hint: bind to the --port you were given (the tests pass --port 0)."
    if "unrecognized arguments" in stderr or "usage:" in stderr:
        return "  Hint: the server must accept --host HOST and --port PORT."
    return ""
