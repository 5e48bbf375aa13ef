"""What the graded tests are worth, as pytest collects them (nothing is run).

Used by tools/points_table.py, by gradescope/make_autograder.py (in a copy of the zip it
builds, so that what is counted is what Gradescope will run) and by the manifest's
self-check (course.toml's points per stage).
"""

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from .course import ROOT, stage_of_test_file


@dataclass(frozen=True)
class GradedTest:
    stage: str           # '04_broadcast' ('?' for a file named after no stage of the course)
    file: str            # test_04_broadcast.py
    test: str            # the test's id within its file
    points: float
    description: str     # the first line of its docstring
    path: Path


class PointsCollector:
    """A pytest plugin that keeps the graded tests (those with a points marker) it sees."""

    def __init__(self, root):
        self.root = root
        self.tests = []

    def pytest_collection_modifyitems(self, items):
        for item in items:
            marker = item.get_closest_marker("points")
            if not marker:
                continue
            doc = (getattr(getattr(item, "function", None), "__doc__", None) or "").strip().splitlines()
            self.tests.append(GradedTest(
                stage=stage_of_test_file(item.path, self.root) or "?", file=item.path.name,
                test=item.name, points=float(marker.args[0]),
                description=doc[0].strip() if doc else "", path=Path(item.path).resolve()))


class CollectionFailed(Exception):
    """pytest could not collect the files; the message holds the end of its log."""


def collect_points(files, root=ROOT):
    """The GradedTests in these test files of the course at `root` (its pytest.ini pinned)."""
    root = Path(root)
    collector = PointsCollector(root)
    # Collecting runs no test: an empty folder stands for the submission.
    with tempfile.TemporaryDirectory(prefix="points-") as nothing:
        args = ["--collect-only", "-q", "-p", "no:cacheprovider", f"--impl={nothing}",
                "--rootdir", str(root), "-c", str(root / "pytest.ini"), *map(str, files)]
        with contextlib.redirect_stdout(io.StringIO()) as log:
            status = pytest.main(args, plugins=[collector])
    if status not in (0, 5):  # 5: no tests collected
        raise CollectionFailed(f"pytest exit status {int(status)}:\n{log.getvalue()[-4000:]}")
    return collector.tests


def points_by_stage(tests):
    """{stage: points} of GradedTests."""
    totals = {}
    for test in tests:
        totals[test.stage] = totals.get(test.stage, 0.0) + test.points
    return totals
