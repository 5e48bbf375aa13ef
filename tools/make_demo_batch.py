"""Build a small batch of submissions to try grade_all.py on (nothing here is committed).

    python tools/make_demo_batch.py DIR [--partial-starters 02,03]

DIR gets three submissions, each laid out like stages/:
  complete/   a copy of solutions/            (full marks expected)
  partial/    solutions/, but the stages named by --partial-starters are the starters
              from stages/ (default: every second stage from 02 on)
  starters/   a copy of stages/               (0 expected wherever the starter is unfinished)
"""

import argparse
import shutil
from pathlib import Path

from grader.grading import ROOT, course_stages, select_stages


def build(target, starter_stages=None):
    target = Path(target)
    stages = course_stages()
    if starter_stages is None:
        starter_stages = stages[1::2]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "solutions", target / "complete", ignore=ignore)
    shutil.copytree(ROOT / "stages", target / "starters", ignore=ignore)
    partial = target / "partial"
    shutil.copytree(ROOT / "solutions", partial, ignore=ignore)
    for stage in starter_stages:
        shutil.rmtree(partial / stage)
        shutil.copytree(ROOT / "stages" / stage, partial / stage, ignore=ignore)
    return starter_stages


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="folder to create (must not exist)")
    parser.add_argument("--partial-starters", action="append", default=[],
                        help="stages the 'partial' submission takes from stages/")
    args = parser.parse_args(argv)
    if args.target.exists():
        raise SystemExit(f"{args.target} exists already")
    chosen = select_stages(course_stages(), args.partial_starters) if args.partial_starters else None
    used = build(args.target, chosen)
    print(f"built {args.target}/complete, partial (starters for {', '.join(used) or 'none'}), starters")


if __name__ == "__main__":
    main()
