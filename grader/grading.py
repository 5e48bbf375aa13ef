"""Grading runs as the instructors' tools do them (tools/grade_all.py, tools/trust.py,
gradescope/run_autograder): intake, a sandbox user, the pinned pytest command, a run with limits.

Standard library and the course's grader package only, so the tools run with the interpreter
that runs the course.

A grading run, as every tool does it:

    intake = take_in_submission(entry, work / "impl")      # only the listed programs
    sandbox = sandbox_for(slot)                            # an unprivileged uid when root
    command = pytest_command(work / "impl", json_path, stage_test_files(stage))
    status, seconds = run_isolated(command, ROOT, timeout, log_path, sandbox=sandbox)
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from grader.course import STAGE_TEST_FILE, load_stages
from grader.intake import take_in
from grader.launch import descendants
from grader.results import TestResult, scores_by_stage

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
IS_WINDOWS = sys.platform == "win32"


# ---- the course's stages and their test files --------------------------------

def course_stages(root=ROOT):
    """The course's stage names, in order, as course.toml lists them."""
    return [stage.slug for stage in load_stages(root)]


def select_stages(stages, wanted):
    """Keep the stages named in `wanted` ('01', '1', '01_echo', '01,02' ...); all if empty."""
    if not wanted:
        return list(stages)
    keys = set()
    for item in wanted:
        for part in str(item).split(","):
            part = part.strip()
            if part:
                keys.add(part.zfill(2) if part.isdigit() else part)
    chosen = [s for s in stages if s in keys or s[:2] in keys]
    unknown = keys - {s for s in chosen} - {s[:2] for s in chosen}
    if unknown:
        raise SystemExit(f"unknown stage(s): {', '.join(sorted(unknown))}; "
                         f"the course has {', '.join(stages)}")
    return chosen


def stage_test_files(stage, tests_dir=TESTS):
    """tests/test_NN_*.py for stage NN_name: the file named after it plus any extra (hidden) ones."""
    number = stage[:2]
    return sorted(p for p in Path(tests_dir).glob(f"test_{number}_*.py")
                  if STAGE_TEST_FILE.match(p.name))


# ---- taking in a submission -------------------------------------------------

def take_in_submission(entry, dest):
    """Copy exactly the program files course.toml lists out of a submission (folder or .zip).

    Returns an Intake: layout (where the stage folders were found), copied, notes (what
    was refused or not found). Nothing else of the submission is ever copied.
    """
    return take_in(entry, dest, ROOT)


def pytest_command(impl_dir, json_path, test_files, extra=()):
    """The pytest command line of a grading run, with the course's configuration pinned.

    -c and --rootdir make the course's pytest.ini the configuration whatever is on the
    command line; --impl= and --grade-json= in one token each are never taken for test
    paths, so pytest looks at nothing of the submission.
    """
    return [sys.executable, "-m", "pytest", "-c", str(ROOT / "pytest.ini"), "--rootdir", str(ROOT),
            f"--impl={impl_dir}", f"--grade-json={json_path}", "-p", "no:cacheprovider",
            "-q", "--color=no", *extra, *map(str, test_files)]


# ---- an unprivileged user for the programs under test (POSIX, as root) -------

SANDBOX_VARIABLE = "THREADED_CHAT_SANDBOX"  # read by grader/harness/process.py
SANDBOX_FIRST_UID = 64100  # uids with no account: nothing else runs as them


class SandboxError(Exception):
    """The grading user cannot run the programs: grading stops rather than run them as root."""


class Sandbox:
    """An unprivileged uid/gid that the programs under test of one grading job run as."""

    def __init__(self, uid, gid=None, name=None):
        self.uid = uid
        self.gid = uid if gid is None else gid
        self.name = name or f"uid {uid}"

    def environment(self, env):
        env = dict(env)
        env[SANDBOX_VARIABLE] = f"{self.uid}:{self.gid}"
        return env

    def check(self, *paths):
        """Raise SandboxError unless this user can run Python on the launcher and read `paths`."""
        probe = ("import os, sys\n"
                 "for path in sys.argv[1:]:\n"
                 "    if not os.access(path, os.R_OK):\n"
                 "        sys.exit('cannot read ' + path)\n")
        needed = [str(ROOT / "grader" / "launch.py"), str(ROOT / "grader" / "noise"), *map(str, paths)]
        try:
            result = subprocess.run([sys.executable, "-c", probe, *needed], cwd="/", user=self.uid,
                                    group=self.gid, extra_groups=[], capture_output=True, text=True,
                                    timeout=60, env={"PATH": os.environ.get("PATH", "")})
            problem = (result.stderr or result.stdout).strip().splitlines()[-1:] if result.returncode else None
        except (OSError, subprocess.SubprocessError) as error:
            problem = [repr(error)]
        if problem:
            raise SandboxError(
                f"The grading user ({self.name}) cannot run {sys.executable} on the course: {problem[0]}\n"
                f"Student programs are never run as root. Make the interpreter, the course folder and\n"
                f"every folder above them readable and searchable by others (chmod o+rx), e.g. create\n"
                f"the virtual environment outside /root; or grade as an ordinary user.")

    def kill_everything(self):
        """Kill every process of this uid (stopped first, so none can fork meanwhile)."""
        from grader.launch import kill_all
        for _ in range(50):
            pids = processes_of_user(self.uid)
            if not pids:
                return
            kill_all(pids)
            time.sleep(0.05)


SANDBOX_UIDS = 900  # how many uids, from SANDBOX_FIRST_UID on, the grading tools may take
SANDBOX_LOCKS = Path(tempfile.gettempdir())


def sandbox_for(slot):
    """A Sandbox for one concurrent job when running as root on POSIX; else None.

    Its uid is this machine's, not just this tool's: a lock file per uid, held while the
    Sandbox lives, keeps two grading tools running at once (two batches, a batch and a
    self-check) from sharing a uid and killing each other's programs at the end of a job.
    `slot` only says where to start looking.
    """
    if IS_WINDOWS or os.geteuid() != 0:
        return None
    import fcntl  # POSIX only, like the rest of the sandbox
    for offset in range(SANDBOX_UIDS):
        uid = SANDBOX_FIRST_UID + (slot + offset) % SANDBOX_UIDS
        lock = open(SANDBOX_LOCKS / f"threaded-chat-sandbox-{uid}.lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        if processes_of_user(uid):  # something runs as it already: not ours to take
            lock.close()
            continue
        sandbox = Sandbox(uid)
        sandbox.lock = lock  # released when the Sandbox is gone (or this process ends)
        return sandbox
    raise SandboxError(f"all {SANDBOX_UIDS} grading uids from {SANDBOX_FIRST_UID} on are in use")


def processes_of_user(uid):
    """Pids of the live processes whose real or effective uid is `uid` (Linux /proc; else ps)."""
    found = []
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines()
                              if ":" in line)
            except OSError:
                continue
            # A zombie has ended already (this machine's init may never reap it): not a process to fear.
            if str(uid) in fields.get("Uid", "").split()[:2] and not fields.get("State", "").strip().startswith("Z"):
                found.append(int(entry.name))
        return found
    try:
        listing = subprocess.run(["ps", "-A", "-o", "pid=,uid="], capture_output=True, text=True,
                                 timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return found
    for line in listing.split("\n"):
        parts = line.split()
        if len(parts) == 2 and parts[1] == str(uid):
            found.append(int(parts[0]))
    return found


# ---- running a child with a deadline, then leaving nothing behind ------------

TOKEN_VARIABLE = "THREADED_CHAT_GRADING_RUN"


def run_isolated(command, cwd, timeout, log_path, env=None, sandbox=None):
    """Run `command` in its own process group under a deadline; kill all it started.

    Returns (exit status or None when the deadline passed, seconds taken). On the
    deadline pytest first gets Ctrl+C (SIGINT), so its fixtures stop the servers
    and it writes its results; 5 s later everything left is killed. Every process
    started under it carries a token in its environment, so even one that left
    the process tree (a daemon) is found and killed on Linux. With a `sandbox`
    the programs under test run as its uid, and every process of that uid is killed
    at the end, whatever became of its environment.
    """
    token = uuid.uuid4().hex
    env = dict(os.environ if env is None else env)
    if sandbox is not None:
        env = sandbox.environment(env)
    env[TOKEN_VARIABLE] = token
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    options = {}
    if IS_WINDOWS:
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        options["start_new_session"] = True
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, **options)
        status = None
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            interrupt(proc)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        finally:
            kill_everything(proc, token)
            if sandbox is not None:
                sandbox.kill_everything()
    return status, time.monotonic() - started


def interrupt(proc):
    try:
        if IS_WINDOWS:
            proc.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            os.killpg(proc.pid, signal.SIGINT)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def kill_everything(proc, token):
    """Kill the child, its process group, its descendants and any process carrying token."""
    if IS_WINDOWS:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        victims = set(descendants(proc.pid)) | set(tagged_processes(token))
        for group in {proc.pid} | victims:
            # The harness starts each server in a session of its own, so kill groups too.
            for kill in (os.killpg, os.kill):
                try:
                    kill(group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError, OSError):
                    pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def tagged_processes(token):
    """Processes whose environment carries this run's token (Linux only)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    needle = f"{TOKEN_VARIABLE}={token}".encode()
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


# ---- results.json ------------------------------------------------------------

def read_results(path):
    """A results.json as a dict, or None when missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def stage_points(results):
    """{stage: points earned} from a results.json dict."""
    tests = (results or {}).get("tests", [])
    return {stage: score.earned for stage, score in
            scores_by_stage(TestResult.from_gradescope(test) for test in tests).items()}
