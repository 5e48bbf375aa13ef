"""Grades as data: each graded test's result, the scores per stage, results.json both ways.

The pytest plugin fills a `Grades` as the run goes (it is a pytest plugin object of its
own, registered by grader/plugin.py) and writes Gradescope's results.json; the tools
(grade_all, trust, summary, run_autograder) read results.json back with `load_results`
into the same `TestResult`s. Every result carries its test's id (`test`, such as
`test_join_line[alice]`) and stage in `extra_data`, so nothing parses display titles.
"""

import json
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class Status(str, Enum):
    NOT_RUN = "not run"      # deselected, or the run stopped before it
    RUNNING = "running"      # started and not finished: the run was stopped or timed out
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"      # this platform cannot run it: counts for nothing either way


DID_NOT_FINISH = "This test did not finish (the run was stopped or timed out)."


@dataclass
class TestResult:
    test: str                # the test's id within its file: test_name or test_name[param]
    stage: str               # 04_broadcast
    points: float
    description: str = ""    # the first line of the test's docstring
    status: Status = Status.NOT_RUN
    output: str = ""         # why it failed (or was skipped), as the student reads it
    number: str = ""

    __test__ = False  # a data class, not a test for pytest to collect

    @property
    def function(self):
        """The test function's name, without parameters: test_name."""
        return self.test.split("[", 1)[0]

    @property
    def earned(self):
        return self.points if self.status == Status.PASSED else 0.0

    @property
    def counted(self):
        """Counts toward the points possible: it ran, on a platform that can run it."""
        return self.status not in (Status.SKIPPED, Status.NOT_RUN)

    @property
    def title(self):
        title = f"{self.stage}: {self.test}"
        return f"{title} - {self.description}" if self.description else title

    def to_gradescope(self):
        skipped = self.status == Status.SKIPPED
        entry = {
            "name": self.title,
            "number": self.number,
            "score": self.earned,
            "max_score": 0.0 if skipped else self.points,
            "output": f"Skipped: {self.output}" if skipped else self.output,
            "tags": [self.stage],
            "visibility": "visible",
            "extra_data": {"test": self.test, "stage": self.stage, "points": self.points},
        }
        if not skipped:  # a skipped test is neither: Gradescope shows it as 0 / 0
            entry["status"] = "passed" if self.status == Status.PASSED else "failed"
        return entry

    @classmethod
    def from_gradescope(cls, entry):
        extra = entry.get("extra_data") or {}
        status = entry.get("status")
        return cls(
            test=extra.get("test", entry.get("name", "?")),
            stage=extra.get("stage") or (entry.get("tags") or ["?"])[0],
            points=float(extra.get("points", entry.get("max_score") or 0)),
            status=Status(status) if status in ("passed", "failed") else Status.SKIPPED,
            output=entry.get("output") or "",
            number=str(entry.get("number", "")),
        )


@dataclass
class StageScore:
    stage: str
    earned: float = 0.0
    possible: float = 0.0
    passed: int = 0
    tests: int = 0
    skipped: int = 0


def scores_by_stage(results):
    """{stage: StageScore} in stage order, from TestResults; the one place points are summed."""
    scores = {}
    for result in results:
        if result.status == Status.NOT_RUN:
            continue
        score = scores.setdefault(result.stage, StageScore(result.stage))
        if result.status == Status.SKIPPED:
            score.skipped += 1
        elif result.counted:
            score.tests += 1
            score.possible += result.points
            score.earned += result.earned
            score.passed += result.status == Status.PASSED
    return dict(sorted(scores.items()))


def num(value):
    return f"{float(value):g}"


def scoreboard_text(results):
    """The scoreboard as the terminal and results.json's output show it."""
    scores = scores_by_stage(results)
    if not scores:
        return ""
    lines = [f"{'stage':<16}{'points':^13}  tests passed"]
    for score in scores.values():
        skipped = f"  ({score.skipped} skipped on this platform)" if score.skipped else ""
        lines.append(f"{score.stage:<16}{num(score.earned):>5} / {num(score.possible):<5}"
                     f"  {score.passed}/{score.tests}{skipped}")
    earned = sum(score.earned for score in scores.values())
    possible = sum(score.possible for score in scores.values())
    lines.append(f"{'total':<16}{num(earned):>5} / {num(possible):<5}")
    return "\n".join(lines)


def gradescope_results(results, execution_time):
    """Gradescope's results.json, as a dict, for these TestResults."""
    tests = [result.to_gradescope() for result in results if result.status != Status.NOT_RUN]
    return {
        "score": sum(test["score"] for test in tests),
        "execution_time": round(execution_time, 1),
        "output": scoreboard_text(results),
        # Plain text keeps the scoreboard's columns and the failures' indentation.
        "output_format": "text",
        "test_output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "visible",
        "tests": tests,
    }


def write_json(path, data):
    """Write atomically: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2), encoding="utf-8")
    temporary.replace(path)


def load_results(path):
    """The TestResults of a results.json; None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return [TestResult.from_gradescope(entry) for entry in data.get("tests", [])]


@dataclass(eq=False)  # a pytest plugin object: hashable, by identity
class Grades:
    """This run's TestResults, kept up to date by pytest's hooks and written out as it goes.

    The JSON file is rewritten when each test starts (counting it failed until it
    finishes), so even a run killed by a hard timeout leaves a file that names the test
    that never finished.
    """

    json_path: Path = None
    results: dict = field(default_factory=dict)  # nodeid -> TestResult, in collection order
    started: float = field(default_factory=time.monotonic)

    def add(self, item, stage, points):
        function = getattr(item, "function", None)
        doc = (getattr(function, "__doc__", None) or "").strip().splitlines()
        self.results[item.nodeid] = TestResult(
            test=item.name, stage=stage, points=points,
            description=doc[0].strip() if doc else "", number=str(len(self.results) + 1))

    def scoreboard_text(self):
        return scoreboard_text(self.results.values())

    def write(self):
        if self.json_path is not None:
            data = gradescope_results(self.results.values(), time.monotonic() - self.started)
            write_json(self.json_path, data)

    # pytest's hooks: this object is registered as a plugin for the run.

    def pytest_runtest_logstart(self, nodeid, location):
        result = self.results.get(nodeid)
        if result is not None:
            result.status, result.output = Status.RUNNING, DID_NOT_FINISH
            self.write()

    def pytest_runtest_logreport(self, report):
        result = self.results.get(report.nodeid)
        if result is None:
            return
        if report.failed:
            where = "" if report.when == "call" else f" (during {report.when})"
            result.status, result.output = Status.FAILED, f"FAILED{where}\n{report.longreprtext}"
        elif report.skipped and result.status != Status.FAILED:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            result.status, result.output = Status.SKIPPED, reason
        elif report.when == "call" and report.passed and result.status == Status.RUNNING:
            result.status, result.output = Status.PASSED, ""

    def pytest_runtest_logfinish(self, nodeid, location):
        self.write()

    def pytest_sessionfinish(self, session):
        self.write()
