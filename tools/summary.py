"""Turn a results.json (from --grade-json) into Markdown: the scoreboard, then the failures.

    python tools/summary.py results.json >> "$GITHUB_STEP_SUMMARY"
    python tools/summary.py grades_results/alice/results.json     # why alice lost points

The work is grader/summary.py's; this is its command line.
"""

from grader.summary import main

if __name__ == "__main__":
    raise SystemExit(main())
