"""Build the Gradescope autograder zip from this repository.

    python gradescope/make_autograder.py                       -> autograder.zip
    python gradescope/make_autograder.py --out build/ag.zip --timeout 900 \\
        --hidden ~/course-private/test_04_hidden.py --hidden-visibility after_due_date

The zip holds, at its root (as Gradescope wants): setup.sh and run_autograder; the course's
grader package (pyproject.toml, course.toml, grader/), which setup.sh installs; pytest's
settings (pytest.ini, conftest.py, requirements.txt); tests/ (the harness and the graded test
files of the chosen stages; not the variants or the course's self-checks); and
gradescope/settings.json. No solution code is shipped.

Hidden test files are added to tests/ and run after the public ones, within the same time
limit; their tests are shown to students as --hidden-visibility says (Gradescope: hidden,
after_due_date, after_published or visible). Before writing the zip's name, the tests in it
are collected from an unpacked copy, as Gradescope will run them, and the points printed:
set the assignment's autograder points to the total.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from grader.course import load_stages, stage_number_of

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "gradescope"
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
# What grading needs besides the test files: the installable grader package and its settings.
TOP_FILES = ["requirements.txt", "pytest.ini", "conftest.py", "course.toml", "pyproject.toml", "LICENSE"]
PACKAGE_FOLDERS = ["grader"]
TEST_SUPPORT = ["conftest.py", "README.md"]
ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed, so that the same sources give the same zip



def add_bytes(zipped, data, name, executable=False):
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((0o755 if executable else 0o644) | 0o100000) << 16
    zipped.writestr(info, data)


def source_files(folder):
    """The files of a folder, without caches."""
    return [path for path in sorted(folder.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"]


def contents(stages, hidden):
    """[(source path, name in the zip, executable)] for the graded stages and the hidden files."""
    files = [(HERE / "setup.sh", "setup.sh", True),
             (HERE / "run_autograder", "run_autograder", True)]
    for name in TOP_FILES:
        if (ROOT / name).is_file():
            files.append((ROOT / name, name, False))
    for folder in PACKAGE_FOLDERS:
        files += [(path, path.relative_to(ROOT).as_posix(), False) for path in source_files(ROOT / folder)]
    tests = ROOT / "tests"
    for name in TEST_SUPPORT:
        if (tests / name).is_file():
            files.append((tests / name, f"tests/{name}", False))
    numbers = {stage.number for stage in stages}
    for path in sorted(tests.glob("test_*.py")):
        if stage_number_of(path) in numbers:
            files.append((path, f"tests/{path.name}", False))
    for path in hidden:
        files.append((path, f"tests/{path.name}", False))
    return files


# Runs in a child Python, in an unpacked copy of the zip: the grader package and the tests
# are the zip's own, so what is counted is what Gradescope will run.
COLLECT = r"""
import json, sys
# `python -c` puts the working folder (the unpacked zip) first on sys.path: its own grader.
from grader.points import CollectionFailed, collect_points
try:
    tests = collect_points(sys.argv[2:], sys.argv[1])
except CollectionFailed as error:
    print(json.dumps({"error": str(error)}))
    sys.exit()
by_file = {}
for test in tests:
    by_file[test.file] = by_file.get(test.file, 0.0) + test.points
print(json.dumps({"points": by_file}))
"""


def points_in(zip_path, test_names):
    """{test file name: points} of the zip's test files, collected from an unpacked copy."""
    with tempfile.TemporaryDirectory(prefix="autograder-check-") as folder:
        with zipfile.ZipFile(zip_path) as zipped:
            zipped.extractall(folder)
        run = subprocess.run([sys.executable, "-c", COLLECT, folder, *test_names], cwd=folder,
                             capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"collecting the zip's tests failed:\n{run.stdout}{run.stderr}")
    if "error" in report:
        raise SystemExit(f"collecting the zip's tests failed ({report['error']})")
    return report["points"]


def chosen_stages(stages, wanted):
    """The stages named in --stages ('04', '4', '04_broadcast', '04,05'); all when none."""
    if not wanted:
        return stages
    keys = {part.strip() for item in wanted for part in item.split(",") if part.strip()}
    keys = {key.zfill(2) if key.isdigit() else key for key in keys}
    graded = [stage for stage in stages if stage.slug in keys or stage.number in keys]
    unknown = keys - {stage.slug for stage in graded} - {stage.number for stage in graded}
    if unknown:
        raise SystemExit(f"--stages: no stage {', '.join(sorted(unknown))}; the course has "
                         f"{', '.join(stage.slug for stage in stages)}")
    return graded


def check_hidden(paths, graded):
    for path in paths:
        number = stage_number_of(path)
        if not path.is_file() or number is None:
            raise SystemExit(f"{path}: a hidden test file must exist and be named test_NN_something.py")
        if number not in {stage.number for stage in graded}:
            raise SystemExit(f"{path}: no stage {number} among the stages graded")
        if (ROOT / "tests" / path.name).exists():
            raise SystemExit(f"{path}: tests/{path.name} exists already; give the hidden file another name")
    names = [path.name for path in paths]
    if len(set(names)) != len(names):
        raise SystemExit("two hidden test files have the same name")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the Gradescope autograder zip.")
    parser.add_argument("--out", type=Path, default=Path("autograder.zip"))
    parser.add_argument("--timeout", type=int, default=540,
                        help="seconds all the tests together (public and hidden) may take per "
                             "submission (default 540; set Gradescope's own limit above it, so "
                             "that results.json is always written)")
    parser.add_argument("--hidden", type=Path, action="append", default=[],
                        help="a test file of your own (named test_NN_something.py) to add, hidden")
    parser.add_argument("--hidden-visibility", default="after_due_date", choices=VISIBILITIES)
    parser.add_argument("--stages", action="append", default=[],
                        help="grade only these stages, e.g. --stages 04,05 for an assignment "
                             "covering two stages (default: all)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        raise SystemExit("--timeout must be a positive number of seconds")

    graded = chosen_stages(load_stages(ROOT), args.stages)
    check_hidden(args.hidden, graded)
    settings = {"timeout": args.timeout, "stages": [stage.slug for stage in graded],
                "hidden_files": [path.name for path in args.hidden],
                "hidden_visibility": args.hidden_visibility}
    files = contents(graded, args.hidden)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.out, "w") as zipped:
        for source, name, executable in files:
            add_bytes(zipped, Path(source).read_bytes(), name, executable)
        add_bytes(zipped, json.dumps(settings, indent=2) + "\n", "gradescope/settings.json")

    test_names = [Path(name).name for _, name, _ in files if name.startswith("tests/test_")]
    points = points_in(args.out, [f"tests/{name}" for name in test_names])
    hidden = set(settings["hidden_files"])
    public_points = sum(v for name, v in points.items() if name not in hidden)
    hidden_points = sum(v for name, v in points.items() if name in hidden)
    for name in sorted(hidden - set(points)):
        print(f"warning: the hidden file {name} holds no test with @pytest.mark.points(N)")
    print(f"wrote {args.out}: stages graded {', '.join(settings['stages'])}; {len(test_names)} test files"
          f"{f' ({len(hidden)} hidden, {args.hidden_visibility})' if hidden else ''}; "
          f"timeout {args.timeout} s for all of them")
    print(f"points: {public_points:g} public + {hidden_points:g} hidden = {public_points + hidden_points:g} "
          f"in total: set the assignment's autograder points to {public_points + hidden_points:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
