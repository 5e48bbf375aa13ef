"""Self-checks of the instructors' tools: grade_all.py, trust.py, summary.py, points_table.py
and the Gradescope autograder. Not graded (no points); they run under --impl solutions.

Each works on stage 01 only, so the whole file takes a few seconds.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
import summary  # noqa: E402

pytestmark = pytest.mark.selfcheck
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="process groups and /proc are POSIX")


def tool(*args, cwd=ROOT, timeout=120):
    """Run a tool with this interpreter; returns the CompletedProcess."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def stage01_points():
    """Points possible in stage 01, as points_table.py counts them."""
    result = tool("tests/points_table.py", "--summary", "--stages", "01")
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("| 01_echo"))
    return float(line.strip("|").split("|")[2])


def test_points_table_lists_every_graded_test_with_its_docstring():
    result = tool("tests/points_table.py", "--stages", "01")
    assert result.returncode == 0, result.stderr
    rows = [l for l in result.stdout.splitlines() if l.startswith("| `test_")]
    assert rows, result.stdout
    for row in rows:
        description = row.strip("|").split("|")[2].strip()
        assert description, f"a graded test without a docstring: {row}"


def test_grade_all_grades_each_submission_alone(tmp_path):
    batch = tmp_path / "batch"
    shutil.copytree(ROOT / "solutions" / "01_echo", batch / "good" / "01_echo")
    shutil.copytree(ROOT / "stages" / "01_echo", batch / "starter" / "stages" / "01_echo")  # a repo copy
    (batch / "empty").mkdir()
    result = tool("tests/grade_all.py", batch, "--csv", tmp_path / "grades.csv", "--stages", "01",
                  "-j", "2", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("] ") >= 3, result.stdout  # a progress line each
    with open(tmp_path / "grades.csv", newline="") as handle:
        rows = {row["submission"]: row for row in csv.DictReader(handle)}
    full = stage01_points()
    assert float(rows["good"]["01_echo"]) == full
    assert float(rows["good"]["total"]) == full
    assert float(rows["starter"]["total"]) == 0
    assert float(rows["empty"]["total"]) == 0
    with open(tmp_path / "grades.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["submission", "01_echo", "total", "notes"]
    assert rows["empty"]["01_echo"] == "0", "a submission missing the stage still has its column"
    results = json.loads((tmp_path / "out" / "good" / "results.json").read_text())
    assert results["score"] == full
    assert all(t["status"] == "passed" and t["visibility"] for t in results["tests"])


@POSIX_ONLY
def test_grade_all_stops_a_hanging_stage_and_kills_what_it_started(tmp_path):
    marker = tmp_path / "daemon.pid"
    batch = tmp_path / "batch"
    server = batch / "hangs" / "01_echo" / "server.py"
    server.parent.mkdir(parents=True)
    # Starts a detached daemon (a new session, so it leaves the process group), then
    # never prints its start line: the harness waits for it far longer than --timeout.
    server.write_text(textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                                 start_new_session=True)
        open({str(marker)!r}, "w").write(str(child.pid))
        time.sleep(300)
    """))
    result = tool("tests/grade_all.py", batch, "--csv", tmp_path / "g.csv",
                  "--stages", "01", "--timeout", "4", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "timed out" in result.stdout
    row = next(csv.DictReader(open(tmp_path / "g.csv", newline="")))
    assert float(row["total"]) == 0 and "timed out" in row["notes"]
    assert not alive(int(marker.read_text())), "the daemon the server started was left running"


def alive(pid):
    """True if pid runs (a killed process nobody has reaped yet, a zombie, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_summary_renders_a_scoreboard_and_the_failures():
    results = {"tests": [
        {"name": "01_echo: test_a - A.", "score": 2, "max_score": 2, "status": "passed",
         "tags": ["01_echo"], "output": ""},
        {"name": "01_echo: test_b - B <x>.", "score": 0, "max_score": 3, "status": "failed",
         "tags": ["01_echo"], "output": "alice expected 'X'"},
    ]}
    text = summary.render(results, "Scores")
    assert "| 01_echo | 2 / 5 | 1 / 2 |" in text
    assert "**2 / 5**" in text
    assert "B &lt;x&gt;." in text and "alice expected 'X'" in text


def test_summary_of_a_missing_file_says_so(tmp_path):
    result = tool("tests/summary.py", tmp_path / "nothing.json")
    assert result.returncode == 0 and "No grades" in result.stdout


def test_trust_reports_catch_rates(tmp_path):
    variants = tmp_path / "variants"
    caught = variants / "01_starter"
    shutil.copytree(ROOT / "stages" / "01_echo", caught / "01_echo")
    (caught / "variant.json").write_text(json.dumps(
        {"stage": "01_echo", "bug": "nothing echoed", "caught_by": ["test_echoes_a_line"]}))
    escaped = variants / "01_correct"
    shutil.copytree(ROOT / "solutions" / "01_echo", escaped / "01_echo")
    (escaped / "variant.json").write_text(json.dumps(
        {"stage": "01_echo", "bug": "none", "caught_by": ["test_echoes_a_line"]}))
    result = tool("tests/trust.py", "--runs", "2", "--stages", "01", "--skip-suite",
                  "--variants-dir", variants, "-j", "2")
    assert result.returncode == 1, "a variant that escapes makes trust.py fail"
    lines = {l.split("|")[1].strip(): l for l in result.stdout.splitlines() if l.startswith("| `01_")}
    assert "| 2/2 |" in lines["`01_starter`"], result.stdout
    assert "0/2" in lines["`01_correct`"], result.stdout


def test_gradescope_autograder_grades_a_repository_zip(tmp_path):
    zip_path = tmp_path / "autograder.zip"
    built = tool("gradescope/make_autograder.py", "--out", zip_path, "--stages", "01")
    assert built.returncode == 0, built.stderr
    home = tmp_path / "autograder"
    with zipfile.ZipFile(zip_path) as zipped:
        names = zipped.namelist()
        assert {"setup.sh", "run_autograder", "requirements.txt", "pytest.ini", "conftest.py",
                "tests/conftest.py", "tests/test_01_echo.py"} <= set(names)
        assert (zipped.getinfo("run_autograder").external_attr >> 16) & 0o111
        zipped.extractall(home / "source")
    assert not any(n.startswith("solutions/") and n.endswith(".py") for n in names), "no solution code"
    os.chmod(home / "source" / "run_autograder", 0o755)
    # The student zipped the repository: stages/01_echo inside a wrapper folder.
    shutil.copytree(ROOT / "solutions" / "01_echo", home / "submission" / "my-repo" / "stages" / "01_echo")
    env = dict(os.environ, AUTOGRADER_ROOT=str(home), AUTOGRADER_USER="no-such-user-here")
    run = subprocess.run([sys.executable, str(home / "source" / "run_autograder")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((home / "results" / "results.json").read_text())
    assert results["score"] == stage01_points()
    for test in results["tests"]:
        assert test["status"] in ("passed", "failed")
        assert test["visibility"] in ("visible", "hidden", "after_due_date", "after_published")
