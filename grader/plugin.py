"""The course's pytest plugin: what is graded, which tests count, the scoreboard.

The grades themselves (results as data, results.json) are grader/results.py.

Installed with the course (`pip install -r requirements.txt` installs this folder as a
package whose pytest11 entry point is this module), so pytest knows --impl before it
reads its arguments: `--impl /any/path` is an option with a value, never a test path,
and no conftest.py of a submission is ever looked at.

    python -m pytest                      grades stages/ (your own work)
    python -m pytest --impl solutions     grades the reference solutions
    python -m pytest --impl PATH          grades a submission: a folder or .zip laid out like
                                          stages/ (or the whole repository); only the program
                                          files course.toml lists are copied out of it
    python -m pytest ... --grade-json results.json   also writes Gradescope's format

Each graded test carries points: @pytest.mark.points(N). A test's stage is the number its
file starts with: tests/test_04_broadcast.py grades 04_broadcast. Outside this course's
own folder the plugin only declares its options and does nothing else.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .course import ROOT, stage_of_test_file
from .harness.process import ProgramError
from .intake import take_in
from .results import Grades
from .watchdog import Watchdog

NAMED_IMPLS = {"stages": ROOT / "stages", "solutions": ROOT / "solutions"}

GRADES = pytest.StashKey()
IMPL = pytest.StashKey()


def pytest_addoption(parser):
    group = parser.getgroup("threaded chat")
    group.addoption("--impl", default="stages", metavar="WHAT",
                    help="what to grade: 'stages' (default, your work), 'solutions', "
                         "or a path to a submission (a folder or .zip laid out like stages/)")
    group.addoption("--grade-json", default=None, metavar="FILE",
                    help="also write the grades as a Gradescope results.json")


REEXEC_GUARD = "THREADED_CHAT_REEXECUTED"


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Make `--impl PATH` (with a space) mean what it says, from the course's folder.

    pytest picks its rootdir and configuration file before any plugin can declare an
    option, so in `--impl /some/folder` it takes the folder for a test path: the
    rootdir becomes that folder, and a pytest.ini found there becomes the run's
    configuration. When that happened to a run started inside the course, run it
    again with `--impl=PATH`, which pytest never mistakes for a path. (A submission's
    pytest.ini can still disable this plugin in such a run: grade untrusted folders
    with tools/grade_all.py or `--impl=PATH`, which never hand the path to pytest.)
    """
    given = list(early_config.invocation_params.args)
    if "--impl" not in given[:-1] or os.environ.get(REEXEC_GUARD):
        return
    here = Path(early_config.invocation_params.dir).resolve()
    if Path(str(early_config.rootpath)).resolve() == ROOT or not (here == ROOT or ROOT in here.parents):
        return
    at = given.index("--impl")
    fixed = given[:at] + [f"--impl={given[at + 1]}"] + given[at + 2:]
    command = [sys.executable, "-m", "pytest", *fixed]
    environment = dict(os.environ, **{REEXEC_GUARD: "1"})
    capture = early_config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # give the terminal back: capturing has begun already
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.platform == "win32":  # os.execv would not wait there: run it, pass its status on
        raise SystemExit(subprocess.run(command, env=environment).returncode)
    os.execve(sys.executable, command, environment)


class Impl:
    """What is graded: where it came from, and the folder its programs run from."""

    def __init__(self, value):
        self.value = value
        self.intake = None
        self.scratch = None
        if value in NAMED_IMPLS:
            self.source = self.folder = NAMED_IMPLS[value]
            if not self.folder.is_dir():
                raise pytest.UsageError(f"--impl {value}: this copy of the course has no {value}/ folder")
            return
        self.source = Path(value).expanduser().resolve()
        if not self.source.exists():
            raise pytest.UsageError(f"--impl {value}: there is no folder or file {self.source}")
        # A submission is data: only its listed programs are copied, into a folder of our own.
        self.scratch = Path(tempfile.mkdtemp(prefix="threaded-chat-impl-"))
        self.scratch.chmod(0o755)  # programs may run as a grading user of their own
        self.folder = self.scratch / "impl"
        self.intake = take_in(self.source, self.folder)

    def describe(self):
        if self.intake is None:
            return str(self.source)
        where = f" (stage folders found in {self.intake.layout or '.'}/)" if self.intake.layout is not None else ""
        return f"{self.source}{where}"

    def cleanup(self):
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def is_course_run(config):
    """True when pytest runs this course's tests (its rootdir is this repository)."""
    return Path(str(config.rootpath)).resolve() == ROOT


def impl_of(config):
    return config.stash[IMPL]


def impl_root(config):
    """The folder whose NN_name/ programs are graded."""
    return impl_of(config).folder


def grading_solutions(config):
    return impl_of(config).value == "solutions" or impl_root(config) == NAMED_IMPLS["solutions"]


def stage_of(path):
    """'04_broadcast' for tests/test_04_broadcast.py (or test_04_hidden.py); else None."""
    return stage_of_test_file(path)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if not is_course_run(config):
        other = Path(str(config.rootpath))
        if (other / "course.toml").is_file() and (other / "grader" / "plugin.py").is_file():
            raise pytest.UsageError(
                f"This Python has the course's grader installed from {ROOT},\n"
                f"but the tests being run are in {other}. Install this copy's grader:\n"
                f"  cd {other} && python -m pip install -r requirements.txt")
        return
    config.stash[IMPL] = Impl(config.getoption("--impl"))
    json_path = config.getoption("--grade-json")
    grades = Grades(Path(json_path) if json_path else None)
    config.stash[GRADES] = grades
    # The grades follow the run through pytest's own hooks: a plugin object of their own.
    config.pluginmanager.register(grades, "threaded-chat-grades")
    # Each test's time limit, kept by the grader (grader/watchdog.py) in place of pytest-timeout's
    # timer: a test that reaches it fails, and the run still ends with its scoreboard, everywhere.
    config.pluginmanager.register(Watchdog(), "threaded-chat-watchdog")
    restore_ctrl_c()


def pytest_unconfigure(config):
    impl = config.stash.get(IMPL, None)
    if impl is not None:
        impl.cleanup()


def restore_ctrl_c():
    """Let the programs under test receive Ctrl+C (SIGINT), even in CI.

    A shell starts background jobs with SIGINT ignored, and an ignored signal
    stays ignored in every child: a server started from such a run could not
    be stopped with Ctrl+C, and stage 08's test of it would fail a correct
    server. Python's own handler is reset to the default at exec(), so
    installing it here gives every child the default behaviour.
    """
    if hasattr(signal, "SIGINT") and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# ---- what is graded ---------------------------------------------------------

def pytest_ignore_collect(collection_path, config):
    """Outside --impl solutions, the course's own checks are not even imported.

    They are for the course's maintainers, and need solutions/, which a student's
    copy (a Classroom template) may not have: only the stage test files are graded.
    """
    if IMPL not in config.stash or grading_solutions(config):
        return None
    path = Path(str(collection_path))
    if path.suffix == ".py" and path.parent == ROOT / "tests" and path.name.startswith("test_"):
        return True if stage_of(path) is None else None
    return None


def pytest_collection_modifyitems(config, items):
    grades = config.stash.get(GRADES, None)
    if grades is None:
        return
    if not grading_solutions(config):
        # The course's own checks are for its maintainers: leave them out of a
        # student's or a submission's run (they run under --impl solutions).
        selfchecks = [item for item in items if item.get_closest_marker("selfcheck")]
        if selfchecks:
            config.hook.pytest_deselected(items=selfchecks)
            items[:] = [item for item in items if not item.get_closest_marker("selfcheck")]
    for item in items:
        points = item.get_closest_marker("points")
        stage = stage_of(item.path)
        if points and stage:
            grades.add(item, stage, float(points.args[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A program that could not be run (grader.harness.process.ProgramError) fails the test
    with the error's own message, written for students, and no traceback of the harness."""
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(ProgramError):
        report.longrepr = str(call.excinfo.value)


# ---- the scoreboard ------------------------------------------------------------

def pytest_terminal_summary(terminalreporter, config):
    grades = config.stash.get(GRADES, None)
    if grades is None:
        return
    text = grades.scoreboard_text()
    impl = impl_of(config)
    if impl.intake is not None and impl.intake.notes:
        terminalreporter.section("submission")
        for note in impl.intake.notes:
            terminalreporter.write_line(f"note: {note}")
    if not text or config.option.collectonly:
        return
    terminalreporter.section("scoreboard")
    terminalreporter.write_line(f"graded: {impl.describe()}")
    for line in text.splitlines():
        terminalreporter.write_line(line)
    if grades.json_path:
        terminalreporter.write_line(f"results written to {grades.json_path}")
