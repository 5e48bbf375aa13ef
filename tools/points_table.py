"""Print what each stage's points cover, as Markdown, from the test files themselves.

    python tools/points_table.py              a summary table, then one table per stage
    python tools/points_table.py --summary    only the summary (stage, tests, points)
    python tools/points_table.py --summary --hidden ~/private/test_04_hidden.py
                                              the same, counting a hidden test file kept
                                              outside the repository (repeatable)

Collects the tests the way a grading run does (pytest's own collection, with the plugin's
stage-of-a-file rule), so hidden test files (tests/test_04_hidden.py, or --hidden FILE) and
parametrized tests are counted exactly as they will be graded. Paste the output into
docs/INSTRUCTORS.md.
"""

import argparse
import sys
from pathlib import Path

from grader.course import stage_number_of
from grader.grading import ROOT, TESTS, course_stages, select_stages, stage_test_files
from grader.points import CollectionFailed, collect_points


def collect(files, hidden=()):
    """(stage, file, test, points, description, hidden?) rows of the graded tests."""
    hidden = {Path(path).resolve() for path in hidden}
    try:
        tests = collect_points([*files, *hidden], ROOT)
    except CollectionFailed as error:
        raise SystemExit(f"collecting the tests failed ({error})")
    return [(t.stage, t.file, t.test, t.points, t.description, t.path in hidden) for t in tests]


def hidden_files(paths, stages):
    """The --hidden files that add tests to the chosen stages; refuses misnamed or missing ones."""
    chosen = []
    for path in paths:
        path = Path(path).expanduser()
        number = stage_number_of(path)
        if not path.is_file() or number is None:
            raise SystemExit(f"{path}: a hidden test file must exist and be named test_NN_something.py "
                             f"(NN: the stage it grades)")
        if (TESTS / path.name).exists():
            # pytest could not import two modules of one name; the one in tests/ is what is graded.
            print(f"note: tests/{path.name} exists already and is counted; {path} is not",
                  file=sys.stderr)
            continue
        if not any(stage[:2] == number for stage in stages):
            print(f"note: {path} grades stage {number}, which is not in this table",
                  file=sys.stderr)
            continue
        chosen.append(path.resolve())
    return chosen


def cell(text):
    return text.replace("|", "\\|")


def render(rows, stages, summary_only=False):
    """Markdown: the summary (a column of hidden points when any row is hidden), then per stage."""
    with_hidden = any(r[5] for r in rows)
    lines = ["| stage | graded tests | points |" + (" of which hidden |" if with_hidden else ""),
             "|---|---:|---:|" + ("---:|" if with_hidden else "")]
    total_tests = total_points = total_hidden = 0
    for stage in stages:
        mine = [r for r in rows if r[0] == stage]
        points = sum(r[3] for r in mine)
        hidden = [r for r in mine if r[5]]
        hidden_cell = f" {len(hidden)} tests, {sum(r[3] for r in hidden):g} points |" if hidden else " |"
        lines.append(f"| {stage} | {len(mine) or 'no tests yet'} | {points:g} |"
                     + (hidden_cell if with_hidden else ""))
        total_tests += len(mine)
        total_points += points
        total_hidden += sum(r[3] for r in hidden)
    lines.append(f"| **total** | **{total_tests}** | **{total_points:g}** |"
                 + (f" **{total_hidden:g} points** |" if with_hidden else ""))
    if summary_only:
        return "\n".join(lines)
    for stage in stages:
        mine = [r for r in rows if r[0] == stage]
        if not mine:
            continue
        lines += ["", f"#### {stage} ({sum(r[3] for r in mine):g} points)", "",
                  "| test | points | what it checks |", "|---|---:|---|"]
        for _, filename, name, points, doc, hidden in mine:
            extra = "" if filename.startswith(f"test_{stage}") else f" ({filename})"
            extra = f" ({filename}, hidden)" if hidden else extra
            lines.append(f"| `{cell(name)}`{extra} | {points:g} | {cell(doc)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Markdown table of the points per stage and test")
    parser.add_argument("--summary", action="store_true", help="only the table of stages")
    parser.add_argument("--stages", action="append", default=[], help="only these stages")
    parser.add_argument("--hidden", type=Path, action="append", default=[], metavar="FILE",
                        help="a test file of your own kept outside tests/ (test_NN_something.py), "
                             "counted in its stage and marked hidden (repeatable)")
    args = parser.parse_args(argv)
    stages = select_stages(course_stages(), args.stages)
    files = [f for stage in stages for f in stage_test_files(stage)]
    hidden = hidden_files(args.hidden, stages)
    rows = collect(files, hidden) if files or hidden else []
    print(render(rows, stages, args.summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
