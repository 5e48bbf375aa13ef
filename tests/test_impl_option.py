"""Self-check: `--impl PATH` grades any folder or zip, written as the README writes it.

pytest chooses its rootdir and configuration before any plugin can declare --impl, so
`--impl /some/folder` (with a space) first looks like a test path; the course's plugin
must still grade that folder with the course's own configuration. Each case grades a
copy of the stage 01 solution in a temporary folder outside the repository.
"""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader.course import stage_named

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.selfcheck
STAGE_01_POINTS = stage_named("01").points  # course.toml holds the tests to it


def grade(cwd, *arguments):
    """Run `python -m pytest ARGUMENTS --grade-json FILE` in cwd; return (results, output)."""
    results = Path(cwd if Path(cwd).is_absolute() else ROOT / cwd) / "results.json"
    finished = subprocess.run([sys.executable, "-m", "pytest", *arguments, "--grade-json", str(results),
                               "-p", "no:cacheprovider", "-q"], cwd=cwd, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)
    output = finished.stdout[-3000:] + finished.stderr[-3000:]
    assert results.is_file(), f"no results.json (status {finished.returncode}):\n{output}"
    return json.loads(results.read_text(encoding="utf-8")), output


@pytest.fixture
def copy_of_solution(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(ROOT / "solutions" / "01_echo", folder / "01_echo")
    return folder


@pytest.mark.parametrize("form", ["space, test path after", "space, no test path", "equals sign"])
def test_an_absolute_path_outside_the_repository(copy_of_solution, tmp_path, form):
    if form == "equals sign":
        arguments = [f"--impl={copy_of_solution}", "tests/test_01_echo.py"]
    elif form == "space, test path after":
        arguments = ["--impl", str(copy_of_solution), "tests/test_01_echo.py"]
    else:  # no test path: the stage is chosen with -k, so the option's value is the only path
        arguments = ["--impl", str(copy_of_solution), "-k", "test_01_echo"]
    # A pytest.ini in the graded folder must not become the run's configuration.
    (copy_of_solution / "pytest.ini").write_text("[pytest]\ntestpaths = nothing_here\n")
    results, output = grade(ROOT, *arguments)
    assert results["score"] == STAGE_01_POINTS, output
    assert {test["tags"][0] for test in results["tests"]} == {"01_echo"}, output


def test_a_relative_path_inside_the_repository():
    results, output = grade(ROOT, "--impl", "solutions/../solutions", "tests/test_01_echo.py")
    assert results["score"] == STAGE_01_POINTS, output


def test_a_zip_of_the_stage_folders(tmp_path):
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(ROOT / "solutions" / "01_echo" / "server.py", "my-work/01_echo/server.py")
    results, output = grade(ROOT, "--impl", str(archive), "tests/test_01_echo.py")
    assert results["score"] == STAGE_01_POINTS, output
