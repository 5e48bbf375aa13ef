"""Print what each stage's points cover, as Markdown, from the test files themselves.

    python tests/points_table.py              a summary table, then one table per stage
    python tests/points_table.py --summary    only the summary (stage, tests, points)

Collects the tests the way a grading run does (pytest's own collection, with conftest.py's
stage-of-a-file rule), so hidden test files (tests/test_04_hidden.py) and parametrized tests
are counted exactly as they will be graded. Paste the output into docs/INSTRUCTORS.md.
"""

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grading_tools import ROOT, course_stages, select_stages, stage_test_files  # noqa: E402


class Collector:
    """A pytest plugin that keeps the graded tests it sees being collected."""

    def __init__(self):
        self.rows = []

    def pytest_collection_modifyitems(self, items):
        for item in items:
            points = item.get_closest_marker("points")
            if not points:
                continue
            function = getattr(item, "function", None)
            doc = (getattr(function, "__doc__", None) or "").strip().splitlines()
            stage = stage_of_file(item.path.name)
            self.rows.append((stage, item.path.name, item.name, float(points.args[0]),
                              doc[0].strip() if doc else ""))


def stage_of_file(filename):
    number = filename[5:7]
    for stage in course_stages():
        if stage[:2] == number:
            return stage
    return "?"


def collect(files):
    collector = Collector()
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", "--impl", "solutions",
            "--rootdir", str(ROOT), "-c", str(ROOT / "pytest.ini"), *map(str, files)]
    import io
    import contextlib
    with contextlib.redirect_stdout(io.StringIO()):
        status = pytest.main(args, plugins=[collector])
    if status not in (0, 5):
        raise SystemExit(f"collecting the tests failed (pytest exit status {status}); "
                         f"run: python -m pytest --collect-only {' '.join(map(str, files))}")
    return collector.rows


def cell(text):
    return text.replace("|", "\\|")


def render(rows, stages, summary_only=False):
    lines = ["| stage | graded tests | points |", "|---|---:|---:|"]
    total_tests = total_points = 0
    for stage in stages:
        mine = [r for r in rows if r[0] == stage]
        points = sum(r[3] for r in mine)
        lines.append(f"| {stage} | {len(mine) or 'no tests yet'} | {points:g} |")
        total_tests += len(mine)
        total_points += points
    lines.append(f"| **total** | **{total_tests}** | **{total_points:g}** |")
    if summary_only:
        return "\n".join(lines)
    for stage in stages:
        mine = [r for r in rows if r[0] == stage]
        if not mine:
            continue
        lines += ["", f"#### {stage} ({sum(r[3] for r in mine):g} points)", "",
                  "| test | points | what it checks |", "|---|---:|---|"]
        for _, filename, name, points, doc in mine:
            extra = "" if filename.startswith(f"test_{stage}") else f" ({filename})"
            lines.append(f"| `{cell(name)}`{extra} | {points:g} | {cell(doc)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Markdown table of the points per stage and test")
    parser.add_argument("--summary", action="store_true", help="only the table of stages")
    parser.add_argument("--stages", action="append", default=[], help="only these stages")
    args = parser.parse_args(argv)
    stages = select_stages(course_stages(), args.stages)
    files = [f for stage in stages for f in stage_test_files(stage)]
    rows = collect(files) if files else []
    print(render(rows, stages, args.summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
