"""Self-checks of the instructors' tools: grade_all.py, trust.py, summary.py, points_table.py.
Not graded (no points); they run under --impl solutions. The Gradescope autograder has its
own: tests/test_gradescope.py.

Each works on stage 01 (the regrade check on 01 and 02's starter), so the file takes about
a minute on a busy 2-CPU machine.
"""

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from grader.summary import render

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

pytestmark = pytest.mark.selfcheck
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="process groups and /proc are POSIX")


def tool(*args, cwd=ROOT, timeout=120):
    """Run a tool with this interpreter; returns the CompletedProcess."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def stage01_points():
    """Points possible in stage 01, as points_table.py counts them."""
    result = tool("tools/points_table.py", "--summary", "--stages", "01")
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("| 01_echo"))
    return float(line.strip("|").split("|")[2])


def test_points_table_lists_every_graded_test_with_its_docstring():
    result = tool("tools/points_table.py", "--stages", "01")
    assert result.returncode == 0, result.stderr
    rows = [l for l in result.stdout.splitlines() if l.startswith("| `test_")]
    assert rows, result.stdout
    for row in rows:
        description = row.strip("|").split("|")[2].strip()
        assert description, f"a graded test without a docstring: {row}"


def grade_all_run(monkeypatch, capsys, *args):
    """Run grade_all.main in this process; returns (status, stdout, stderr).

    In this process so that, where the grading user cannot run Python here (root, with
    an interpreter under /root), the batch still runs: the programs graded in these
    checks are the course's own, and the check that such a sandbox stops the batch is
    test_grade_all_stops_when_the_grading_user_cannot_run_python.
    """
    grade_all = load_tool("grade_all")
    if not grading_user_runs_here(grade_all):
        monkeypatch.setattr(grade_all, "sandbox_for", lambda slot: None)
    status = grade_all.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def load_tool(name):
    """tools/NAME.py as a module (tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grading_user_runs_here(grade_all):
    """False when grade_all would stop: root, and its grading uid cannot run Python here.

    The probe's uid is released on return (its Sandbox is gone), for grade_all to take.
    """
    sandbox = grade_all.sandbox_for(0)
    if sandbox is None:
        return True
    try:
        sandbox.check()
        return True
    except grade_all.SandboxError:
        return False


def read_csv(path):
    with open(path, newline="") as handle:
        return {row["submission"]: row for row in csv.DictReader(handle)}


def test_grade_all_grades_each_submission_alone(tmp_path, monkeypatch, capsys):
    batch = tmp_path / "batch"
    shutil.copytree(ROOT / "solutions" / "01_echo", batch / "good" / "01_echo")
    shutil.copytree(ROOT / "stages" / "01_echo", batch / "starter" / "stages" / "01_echo")  # a repo copy
    (batch / "empty").mkdir()
    status, out, err = grade_all_run(monkeypatch, capsys, batch, "--csv", tmp_path / "grades.csv",
                                     "--stages", "01", "-j", "2", "--out", tmp_path / "out")
    assert status == 0, out + err
    assert "estimate: about" in out, out
    assert out.count("] ") >= 3, out  # a progress line each
    rows = read_csv(tmp_path / "grades.csv")
    full = stage01_points()
    assert float(rows["good"]["01_echo"]) == full
    assert float(rows["good"]["total"]) == full
    assert float(rows["starter"]["total"]) == 0
    assert float(rows["empty"]["total"]) == 0 and "no stage folders found" in rows["empty"]["notes"]
    with open(tmp_path / "grades.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["submission", "01_echo", "total", "notes"]
    assert rows["empty"]["01_echo"] == "0", "a submission missing the stage still has its column"
    results = json.loads((tmp_path / "out" / "good" / "results.json").read_text())
    assert results["score"] == full
    assert all(t["status"] == "passed" and t["visibility"] for t in results["tests"])


FORGING_CONFTEST = """
import json, sys

def pytest_sessionfinish(session):  # full marks, whatever the tests said
    for arg in sys.argv:
        if arg.startswith("--grade-json"):
            path = arg.split("=", 1)[1] if "=" in arg else sys.argv[sys.argv.index(arg) + 1]
            json.dump({"score": 999, "tests": [{"name": "01_echo: forged", "score": 999,
                       "max_score": 999, "status": "passed", "tags": ["01_echo"]}]}, open(path, "w"))
"""


def test_grade_all_ignores_a_submissions_conftest_and_pytest_ini(tmp_path, monkeypatch, capsys):
    """A submission's conftest.py that rewrites the grades, and its pytest.ini, take no part."""
    forger = tmp_path / "batch" / "forger"
    shutil.copytree(ROOT / "stages" / "01_echo", forger / "01_echo")
    for folder in (forger, forger / "01_echo"):
        (folder / "conftest.py").write_text(FORGING_CONFTEST)
    (forger / "pytest.ini").write_text("[pytest]\naddopts = -p no:timeout -p no:grader.plugin\n")
    status, out, err = grade_all_run(monkeypatch, capsys, tmp_path / "batch", "--csv",
                                     tmp_path / "g.csv", "--stages", "01")
    assert status == 0, out + err
    row = read_csv(tmp_path / "g.csv")["forger"]
    assert float(row["total"]) == 0, f"the starter plus a forging conftest.py earned {row['total']}"
    results = json.loads((tmp_path / "g_results" / "forger" / "results.json").read_text())
    assert results["score"] == 0 and "forged" not in json.dumps(results)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to clone the course")
def test_grade_all_grades_a_whole_repository_clone_and_zip(tmp_path, monkeypatch, capsys):
    """A clone of the course (its tests, conftest.py, solutions/ too), or a zip of it, earns
    what the programs in its stages/ earn."""
    batch = tmp_path / "batch"
    clone = batch / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", str(clone)], check=True,
                   capture_output=True, timeout=120)
    shutil.copy(ROOT / "solutions" / "01_echo" / "server.py", clone / "stages" / "01_echo" / "server.py")
    shutil.rmtree(clone / ".git")
    with zipfile.ZipFile(batch / "zipped.zip", "w") as zipped:
        for path in clone.rglob("*"):
            zipped.write(path, Path("my-repo") / path.relative_to(clone))
    status, out, err = grade_all_run(monkeypatch, capsys, batch, "--csv", tmp_path / "g.csv",
                                     "--stages", "01", "-j", "2")
    assert status == 0, out + err
    rows = read_csv(tmp_path / "g.csv")
    full = stage01_points()
    for name in ("clone", "zipped"):
        assert float(rows[name]["01_echo"]) == full, f"{name}: {rows[name]} ({out})"


def test_grade_all_regrade_keeps_other_stages_and_students(tmp_path, monkeypatch, capsys):
    """--stages 02 --only alice updates alice's 02 only: her 01 and bob's row are kept,
    in the CSV and in her results.json."""
    batch = tmp_path / "batch"
    shutil.copytree(ROOT / "solutions" / "01_echo", batch / "alice" / "01_echo")
    (batch / "alice" / "02_lines").mkdir()
    (batch / "alice" / "02_lines" / "server.py").write_text("raise SystemExit(1)\n")  # fails fast
    shutil.copytree(ROOT / "solutions" / "01_echo", batch / "bob" / "01_echo")
    grades = tmp_path / "g.csv"
    status, out, err = grade_all_run(monkeypatch, capsys, batch, "--csv", grades, "--stages", "01,02",
                                     "-j", "2")
    assert status == 0, out + err
    before = read_csv(grades)
    full = stage01_points()
    (batch / "bob" / "01_echo" / "server.py").write_text("raise SystemExit(1)\n")  # not regraded
    status, out, err = grade_all_run(monkeypatch, capsys, batch, "--csv", grades, "--stages", "02",
                                     "--only", "alice")
    assert status == 0, out + err
    after = read_csv(grades)
    assert after["bob"] == before["bob"], "a student not regraded keeps the row"
    assert float(after["alice"]["01_echo"]) == full and float(after["alice"]["total"]) == full
    assert list(after["alice"]) == ["submission", "01_echo", "02_lines", "total", "notes"]
    results = json.loads((tmp_path / "g_results" / "alice" / "results.json").read_text())
    assert results["score"] == full
    stages = {t["tags"][0] for t in results["tests"]}
    assert stages == {"01_echo", "02_lines"}, "results.json keeps the stage not regraded"


def test_grade_all_stops_when_the_grading_user_cannot_run_python(tmp_path, monkeypatch, capsys):
    """Never run students' programs as root instead: say why, and grade nothing."""
    grade_all = load_tool("grade_all")

    class Unusable:
        def check(self, *paths):
            raise grade_all.SandboxError("The grading user (uid 1) cannot run python: test")

    monkeypatch.setattr(grade_all, "sandbox_for", lambda slot: Unusable())
    (tmp_path / "batch" / "someone").mkdir(parents=True)
    status = grade_all.main([str(tmp_path / "batch"), "--csv", str(tmp_path / "g.csv")])
    err = capsys.readouterr().err
    assert status == 2 and "Nothing was graded" in err and "cannot run python" in err
    assert not (tmp_path / "g.csv").exists()


@POSIX_ONLY
def test_grade_all_stops_a_hanging_stage_and_kills_what_it_started(tmp_path, monkeypatch, capsys):
    # The program may run as a grading uid of its own: its marker goes where any user may write.
    drop = Path(tempfile.mkdtemp(prefix="threaded-chat-marker-"))
    drop.chmod(0o777)
    try:
        hanging_stage_check(tmp_path, drop / "daemon.pid", monkeypatch, capsys)
    finally:
        shutil.rmtree(drop, ignore_errors=True)


def hanging_stage_check(tmp_path, marker, monkeypatch, capsys):
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
    status, out, err = grade_all_run(monkeypatch, capsys, batch, "--csv", tmp_path / "g.csv",
                                     "--stages", "01", "--timeout", "8")
    assert status == 0, out + err
    assert "timed out" in out
    row = next(iter(read_csv(tmp_path / "g.csv").values()))
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


def test_points_table_counts_hidden_test_files(tmp_path):
    hidden = tmp_path / "test_01_hidden.py"
    hidden.write_text(textwrap.dedent('''
        import pytest
        from grader.harness.client import Client  # noqa: F401 (hidden tests import the harness)

        @pytest.mark.points(4)
        def test_extra(server, connect):
            """An extra check."""
    '''))
    result = tool("tools/points_table.py", "--summary", "--stages", "01", "--hidden", hidden)
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("| 01_echo"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[2]) == stage01_points() + 4 and cells[3] == "1 tests, 4 points", result.stdout


def test_summary_renders_a_scoreboard_and_the_failures():
    results = {"tests": [
        {"name": "01_echo: test_a - A.", "score": 2, "max_score": 2, "status": "passed",
         "tags": ["01_echo"], "output": ""},
        {"name": "01_echo: test_b - B <x>.", "score": 0, "max_score": 3, "status": "failed",
         "tags": ["01_echo"], "output": "alice expected 'X'"},
    ]}
    text = render(results, "Scores")
    assert "| 01_echo | 2 / 5 | 1 / 2 |" in text
    assert "**2 / 5**" in text
    assert "B &lt;x&gt;." in text and "alice expected 'X'" in text


def test_summary_of_a_missing_file_says_so(tmp_path):
    result = tool("tools/summary.py", tmp_path / "nothing.json")
    assert result.returncode == 0 and "No grades" in result.stdout


VARIANT_SPEC = """stage = "01_echo"
bug = "{bug}"
caught_by = ["test_echoes_a_line"]
failure_words = ["alice expected"]

[[replace]]
file = "server.py"
find = '''
        connection.sendall(data)
'''
replace = '''
        {replace}
'''
"""


def test_trust_reports_catch_rates(tmp_path):
    variants = tmp_path / "variants"
    variants.mkdir()
    (variants / "01_silent.toml").write_text(VARIANT_SPEC.format(
        bug="nothing echoed", replace="pass  # BUG: nothing is sent back"))
    (variants / "01_correct.toml").write_text(VARIANT_SPEC.format(
        bug="none", replace="connection.sendall(data)  # BUG: none, the line is unchanged"))
    result = tool("tools/trust.py", "--runs", "2", "--stages", "01", "--skip-suite",
                  "--variants-dir", variants, "-j", "2")
    assert result.returncode == 1, "a variant that escapes makes trust.py fail"
    lines = {l.split("|")[1].strip(): l for l in result.stdout.splitlines() if l.startswith("| `01_")}
    assert "| 2/2 |" in lines["`01_silent`"], result.stdout
    assert "0/2" in lines["`01_correct`"], result.stdout
