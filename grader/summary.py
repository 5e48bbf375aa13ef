"""Turn a results.json (from --grade-json) into Markdown: the scoreboard, then the failures.

    python tools/summary.py results.json >> "$GITHUB_STEP_SUMMARY"
    python tools/summary.py grades_results/alice/results.json     # why alice lost points

Used by .github/workflows/grade.yml for the job summary, and to read (or send) one student's
failures after grade_all.py; handy anywhere Markdown is shown.
Always exits 0: the grading step, not this one, says whether the tests passed.
"""

import argparse
import json
import sys
from pathlib import Path

from .results import TestResult, num, scores_by_stage

OUTPUT_LINES = 40  # of each failure's message, in the summary


def render(results, title):
    tests = results.get("tests", [])
    rows = {stage: vars(score) for stage, score in
            scores_by_stage(TestResult.from_gradescope(test) for test in tests).items()}
    lines = [f"## {title}", "", "| stage | points | tests passed |", "|---|---:|---:|"]
    earned = possible = 0.0
    for stage, row in rows.items():
        mark = " ✅" if row["passed"] == row["tests"] else ""
        lines.append(f"| {stage}{mark} | {num(row['earned'])} / {num(row['possible'])} | "
                     f"{row['passed']} / {row['tests']} |")
        earned += row["earned"]
        possible += row["possible"]
    lines.append(f"| **total** | **{num(earned)} / {num(possible)}** | |")
    failed = [t for t in tests if t.get("status") != "passed" and float(t.get("max_score") or 0) > 0]
    if failed:
        lines += ["", f"### Failed tests ({len(failed)})", ""]
        for test in failed:
            output = (test.get("output") or "").rstrip().splitlines()
            shown = output[:OUTPUT_LINES] + (["..."] if len(output) > OUTPUT_LINES else [])
            body = "\n".join(shown).replace("```", "'''")
            lines += [f"<details><summary>{escape(test.get('name', '?'))} "
                      f"({num(test.get('max_score') or 0)} points)</summary>", "",
                      "```text", body, "```", "</details>", ""]
    return "\n".join(lines) + "\n"


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main(argv=None):
    parser = argparse.ArgumentParser(description="results.json as a Markdown scoreboard")
    parser.add_argument("results", type=Path, nargs="?", default=Path("results.json"))
    parser.add_argument("--title", default="Threaded Chat: scoreboard")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"## {args.title}\n\nNo grades: {args.results} could not be read ({error}).\n"
              f"The test run did not get far enough to write it; see the job's log.")
        return 0
    sys.stdout.write(render(results, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
