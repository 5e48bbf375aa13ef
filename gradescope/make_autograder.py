"""Build the Gradescope autograder zip from this repository.

    python gradescope/make_autograder.py                       -> autograder.zip
    python gradescope/make_autograder.py --out build/ag.zip --timeout 900 \\
        --hidden ~/course-private/test_04_hidden.py --hidden-visibility after_due_date

The zip holds, at its root (as Gradescope wants): setup.sh, run_autograder, requirements.txt,
pytest.ini, tests/ (the harness and the graded test files; not the variants or the course's
self-checks), one empty-but-for-a-note folder per stage in solutions/ (conftest.py learns the
stage names from them; no solution code is shipped), and gradescope/settings.json.
Hidden test files are added to tests/ and run separately, shown to students with
--hidden-visibility (Gradescope: hidden, after_due_date, after_published or visible).
"""

import argparse
import json
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "gradescope"
STAGE = re.compile(r"^\d\d_[A-Za-z0-9_]+$")
STAGE_TEST_FILE = re.compile(r"^test_(\d\d)_[a-z0-9_]*\.py$")
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
TEST_SUPPORT = ["conftest.py", "grading_tools.py", "README.md"]
TEST_FOLDERS = ["harness", "noise"]


def add_file(zipped, source, name, executable=False):
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((0o755 if executable else 0o644) | 0o100000) << 16
    zipped.writestr(info, Path(source).read_bytes() if source else b"")


def add_text(zipped, text, name):
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o644 | 0o100000) << 16
    zipped.writestr(info, text)


def contents(stages, hidden):
    """[(source path or None, name in the zip, executable)]."""
    files = [(HERE / "setup.sh", "setup.sh", True),
             (HERE / "run_autograder", "run_autograder", True),
             (ROOT / "requirements.txt", "requirements.txt", False),
             (ROOT / "pytest.ini", "pytest.ini", False)]
    for name in ("conftest.py", "LICENSE"):  # the top conftest declares --impl and --grade-json
        if (ROOT / name).is_file():
            files.append((ROOT / name, name, False))
    tests = ROOT / "tests"
    for name in TEST_SUPPORT:
        if (tests / name).is_file():
            files.append((tests / name, f"tests/{name}", False))
    for folder in TEST_FOLDERS:
        for path in sorted((tests / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append((path, path.relative_to(ROOT).as_posix(), False))
    numbers = {stage[:2] for stage in stages}
    for path in sorted(tests.glob("test_*.py")):
        match = STAGE_TEST_FILE.match(path.name)
        if match and match.group(1) in numbers:
            files.append((path, f"tests/{path.name}", False))
    for path in hidden:
        files.append((path, f"tests/{path.name}", False))
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the Gradescope autograder zip.")
    parser.add_argument("--out", type=Path, default=Path("autograder.zip"))
    parser.add_argument("--timeout", type=int, default=540,
                        help="seconds the tests may take per submission (default 540; set "
                             "Gradescope's own limit above it, so results.json is always written)")
    parser.add_argument("--hidden", type=Path, action="append", default=[],
                        help="a test file of your own (named test_NN_something.py) to add, hidden")
    parser.add_argument("--hidden-visibility", default="after_due_date", choices=VISIBILITIES)
    parser.add_argument("--stages", action="append", default=[],
                        help="grade only these stages, e.g. --stages 04,05 for an assignment "
                             "covering two stages (default: all)")
    args = parser.parse_args(argv)

    stages = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir() and STAGE.match(p.name))
    graded = stages
    if args.stages:
        wanted = {part.strip().zfill(2)[:2] for item in args.stages for part in item.split(",") if part.strip()}
        graded = [s for s in stages if s[:2] in wanted]
        if len(graded) != len(wanted):
            raise SystemExit(f"--stages {','.join(args.stages)}: the course has {', '.join(stages)}")
    for path in args.hidden:
        if not path.is_file() or not STAGE_TEST_FILE.match(path.name):
            raise SystemExit(f"{path}: a hidden test file must exist and be named test_NN_something.py")
        if path.name[5:7] not in {s[:2] for s in graded}:
            raise SystemExit(f"{path}: no stage {path.name[5:7]} among the stages graded")
        if (ROOT / "tests" / path.name).exists():
            raise SystemExit(f"{path}: tests/{path.name} exists already; give the hidden file another name")
    settings = {"timeout": args.timeout, "hidden_files": [p.name for p in args.hidden],
                "hidden_visibility": args.hidden_visibility}
    files = contents(graded, args.hidden)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.out, "w") as zipped:
        for source, name, executable in files:
            add_file(zipped, source, name, executable)
        for stage in stages:
            add_text(zipped, "Only this folder's name is needed: conftest.py reads the stage names "
                             "from solutions/. No solution is shipped to Gradescope.\n",
                     f"solutions/{stage}/STAGE.txt")
        add_text(zipped, json.dumps(settings, indent=2) + "\n", "gradescope/settings.json")
    test_files = [name for _, name, _ in files if STAGE_TEST_FILE.match(Path(name).name)]
    print(f"wrote {args.out}: stages graded {', '.join(graded)}; {len(test_files)} test files"
          f"{' (' + str(len(args.hidden)) + ' hidden)' if args.hidden else ''}; timeout {args.timeout} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
