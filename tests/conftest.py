"""The course's grading harness: what is graded, points, scoreboard, results.json.

    python -m pytest                      grades stages/ (your own work)
    python -m pytest --impl solutions     grades the reference solutions
    python -m pytest --impl PATH          grades any folder laid out like stages/
    python -m pytest ... --grade-json results.json   also writes Gradescope's format

The options themselves are declared in the repository's top conftest.py.
Each graded test carries points: @pytest.mark.points(N). A test's stage is
the name of its file: tests/test_04_broadcast.py grades stages/04_broadcast/.
"""

import json
import re
import signal
import time
from pathlib import Path

import pytest

from harness.client import Client, Story
from harness.process import Server, fail

ROOT = Path(__file__).resolve().parent.parent
STAGE_FILE = re.compile(r"^test_(\d\d)_[a-z0-9_]*\.py$")
NAMED_IMPLS = {"stages": ROOT / "stages", "solutions": ROOT / "solutions"}

GRADES = pytest.StashKey()


def impl_root(config):
    """The folder being graded."""
    value = config.getoption("--impl")
    if value in NAMED_IMPLS:
        return NAMED_IMPLS[value]
    return Path(value).expanduser().resolve()


def grading_solutions(config):
    return impl_root(config) == NAMED_IMPLS["solutions"]


def stage_of(path):
    """'04_broadcast' for tests/test_04_broadcast.py (or test_04_hidden.py); else None.

    A test file grades the stage whose number it starts with, so instructors can
    add files of their own, such as tests/test_04_extra.py, to any stage.
    """
    match = STAGE_FILE.match(Path(str(path)).name)
    if not match:
        return None
    number = match.group(1)
    # solutions/ names the stages; a student's copy without it (a classroom template) has stages/.
    for parent in ("solutions", "stages"):
        for folder in sorted((ROOT / parent).glob(f"{number}_*")):
            if folder.is_dir():
                return folder.name
    return None


def pytest_configure(config):
    root = impl_root(config)
    if not root.is_dir():
        raise pytest.UsageError(f"--impl {config.getoption('--impl')}: no folder {root}")
    config.stash[GRADES] = Grades(config.getoption("--grade-json"))
    restore_ctrl_c()
    # The per-test hooks below get no config argument: remember it here.
    _CONFIG[:] = [config]


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

def pytest_collection_modifyitems(config, items):
    grades = config.stash[GRADES]
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


@pytest.fixture(scope="session")
def impl_dir(request):
    """The folder being graded (stages/, solutions/ or --impl PATH)."""
    return impl_root(request.config)


@pytest.fixture
def stage_dir(request, impl_dir):
    """This test file's stage folder inside the graded folder, e.g. stages/01_echo."""
    stage = stage_of(request.path)
    if stage is None:
        raise RuntimeError(f"{request.path.name} is not named after a stage")
    folder = impl_dir / stage
    if not folder.is_dir():
        fail(f"There is no folder {folder}: this stage is missing from what is graded.")
    return folder


@pytest.fixture
def story():
    """The steps this test took, replayed in failure messages."""
    return Story()


@pytest.fixture
def start_server(stage_dir, story):
    """start_server(*extra_args, noise=False) runs this stage's server.py; always stopped after."""
    servers = []

    def start(*args, noise=False, env=None, program="server.py"):
        server = Server(stage_dir / program, args, env=env, noise=noise)
        servers.append(server)
        if story.server is None:
            story.server = server
        story.add("the test", f"started the server ({'with scheduling noise, ' if noise else ''}"
                              f"port {server.port})")
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server):
    """This stage's server, running, on a free port."""
    return start_server()


@pytest.fixture
def connect(story):
    """connect(name, server) opens a named test client; all are closed after the test."""
    clients = []

    def open_client(name, server=None, rcvbuf=None):
        target = server or story.server
        client = Client(name, target.address, story, server=target, rcvbuf=rcvbuf)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close(note="(closed by the test's clean-up)")


# ---- results ----------------------------------------------------------------

class Grades:
    """Points per test, as the run goes; written out as it goes, too.

    The JSON file is rewritten when each test starts (counting it failed until
    it finishes), so even a run killed by a hard timeout leaves a file that
    names the test that never finished.
    """

    def __init__(self, json_path):
        self.json_path = Path(json_path) if json_path else None
        self.tests = {}  # nodeid -> record, in collection order
        self.started = time.monotonic()

    def add(self, item, stage, points):
        doc = (item.function.__doc__ or "").strip().splitlines() if hasattr(item, "function") else []
        self.tests[item.nodeid] = {
            "stage": stage,
            "name": item.name,
            "description": doc[0] if doc else "",
            "points": points,
            "status": "not run",
            "output": "",
        }

    def start(self, nodeid):
        record = self.tests.get(nodeid)
        if record:
            record["status"] = "running"
            record["output"] = "This test did not finish (the run was stopped or timed out)."
            self.write_json()

    def record(self, report):
        record = self.tests.get(report.nodeid)
        if record is None:
            return
        if report.failed:
            record["status"] = "failed"
            where = "" if report.when == "call" else f" (during {report.when})"
            record["output"] = f"FAILED{where}\n{report.longreprtext}"
        elif report.skipped and record["status"] != "failed":
            record["status"] = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            record["output"] = reason
        elif report.when == "call" and report.passed and record["status"] == "running":
            record["status"] = "passed"
            record["output"] = ""

    def finish(self, nodeid):
        self.write_json()

    def earned(self, record):
        return record["points"] if record["status"] == "passed" else 0.0

    def counted(self, record):
        """Skipped tests (a platform that cannot run them) count for nothing either way."""
        return record["status"] not in ("skipped", "not run")

    def by_stage(self):
        stages = {}
        for record in self.tests.values():
            if record["status"] == "not run":
                continue  # deselected, or the run stopped before it
            row = stages.setdefault(record["stage"], {"earned": 0.0, "possible": 0.0,
                                                       "passed": 0, "tests": 0, "skipped": 0})
            if record["status"] == "skipped":
                row["skipped"] += 1
            elif self.counted(record):
                row["tests"] += 1
                row["possible"] += record["points"]
                row["earned"] += self.earned(record)
                row["passed"] += record["status"] == "passed"
        return dict(sorted(stages.items()))

    def write_json(self):
        if self.json_path is None:
            return
        tests = []
        for number, record in enumerate(self.tests.values(), 1):
            if record["status"] == "not run":
                continue
            skipped = record["status"] == "skipped"
            title = f"{record['stage']}: {record['name']}"
            if record["description"]:
                title += f" - {record['description']}"
            test = {
                "name": title,
                "number": str(number),
                "score": self.earned(record),
                "max_score": 0.0 if skipped else record["points"],
                "output": f"Skipped: {record['output']}" if skipped else record["output"],
                "tags": [record["stage"]],
                "visibility": "visible",
            }
            if not skipped:  # a skipped test is neither: Gradescope shows it as 0 / 0
                test["status"] = "passed" if record["status"] == "passed" else "failed"
            tests.append(test)
        result = {
            "score": sum(t["score"] for t in tests),
            "execution_time": round(time.monotonic() - self.started, 1),
            "output": self.scoreboard_text(),
            # Plain text keeps the scoreboard's columns and the failures' indentation.
            "output_format": "text",
            "test_output_format": "text",
            "visibility": "visible",
            "stdout_visibility": "visible",
            "tests": tests,
        }
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.json_path.with_name(self.json_path.name + ".tmp")
        temporary.write_text(json.dumps(result, indent=2), encoding="utf-8")
        temporary.replace(self.json_path)

    def scoreboard_text(self):
        rows = self.by_stage()
        if not rows:
            return ""
        lines = [f"{'stage':<16}{'points':^13}  tests passed"]
        total_earned = total_possible = 0.0
        for stage, row in rows.items():
            skipped = f"  ({row['skipped']} skipped)" if row["skipped"] else ""
            lines.append(f"{stage:<16}{_num(row['earned']):>5} / {_num(row['possible']):<5}"
                         f"  {row['passed']}/{row['tests']}{skipped}")
            total_earned += row["earned"]
            total_possible += row["possible"]
        lines.append(f"{'total':<16}{_num(total_earned):>5} / {_num(total_possible):<5}")
        return "\n".join(lines)


def _num(value):
    return f"{value:g}"


def pytest_runtest_logstart(nodeid, location):
    _grades().start(nodeid)


def pytest_runtest_logreport(report):
    _grades().record(report)


def pytest_runtest_logfinish(nodeid, location):
    _grades().finish(nodeid)


_CONFIG = []  # set by pytest_configure


def _grades():
    return _CONFIG[0].stash[GRADES]


def pytest_sessionfinish(session):
    session.config.stash[GRADES].write_json()


def pytest_terminal_summary(terminalreporter, config):
    grades = config.stash[GRADES]
    text = grades.scoreboard_text()
    if not text or config.option.collectonly:
        return
    terminalreporter.section("scoreboard")
    terminalreporter.write_line(f"graded: {impl_root(config)}")
    for line in text.splitlines():
        terminalreporter.write_line(line)
    if grades.json_path:
        terminalreporter.write_line(f"results written to {grades.json_path}")
