"""What is new in a stage: the previous stage's solution against this stage's starter.

    python tools/diff.py 04            solutions/03_threads/server.py -> stages/04_broadcast/server.py
    python tools/diff.py 04 --mine     your own stages/03_threads/server.py instead of the solution

Each stage's starter is the previous stage's solution plus the new part (the TODOs and
what they need), so this diff is exactly what the stage asks of you. A program's previous
stage is the last earlier stage with a program of the same name (stage 08's server builds
on stage 06's; stage 07's client has no earlier stage). Where solutions/ is missing (a
copy made from a classroom template), --mine compares with your own earlier stage.
"""

import argparse
import difflib
import sys
from pathlib import Path

from grader.course import load_stages, stage_named

ROOT = Path(__file__).resolve().parent.parent


def previous_with(program, stage, stages):
    """The last stage before `stage` that has a program called `program`, or None."""
    earlier = [s for s in stages if s.number < stage.number and program in s.programs]
    return earlier[-1] if earlier else None


def diff_program(program, stage, stages, mine):
    """The unified diff for one program of the stage, as text."""
    starter = ROOT / "stages" / stage.slug / program
    before = previous_with(program, stage, stages)
    if before is None:
        return (f"# stages/{stage.slug}/{program} has no earlier stage: all of it is new.\n"
                f"# Read it whole: {starter.relative_to(ROOT)}\n")
    base = ROOT / ("stages" if mine else "solutions") / before.slug / program
    if not base.is_file():
        return (f"# {base.relative_to(ROOT)} is not in this copy of the course.\n"
                f"# Compare with your own work instead: python tools/diff.py {stage.number} --mine\n")
    old = base.read_text(encoding="utf-8").splitlines(keepends=True)
    new = starter.read_text(encoding="utf-8").splitlines(keepends=True)
    lines = difflib.unified_diff(old, new, fromfile=base.relative_to(ROOT).as_posix(),
                                 tofile=starter.relative_to(ROOT).as_posix())
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return text or f"# {starter.relative_to(ROOT)} is the same as {base.relative_to(ROOT)}.\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Show what is new in a stage.")
    parser.add_argument("stage", help="the stage: 04, 4 or 04_broadcast")
    parser.add_argument("--mine", action="store_true",
                        help="compare with your own earlier stage in stages/, not solutions/")
    args = parser.parse_args(argv)
    stages = load_stages(ROOT)
    stage = stage_named(args.stage, ROOT)
    if stage is None:
        parser.error(f"no stage {args.stage!r}; the course has {', '.join(s.slug for s in stages)}")
    for program in stage.programs:
        sys.stdout.write(diff_program(program, stage, stages, args.mine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
