"""Self-check: hostile submissions earn what their honest programs earn, and nothing more.

A batch of careless or malicious submissions (tests/hostile/README.md) is graded by
tools/grade_all.py as an instructor would: stages 01 and 02, two at a time. Then:
- each submission's points are exactly those of its honest programs;
- no process of theirs is alive (the daemon, the fork bomb's children);
- nothing outside the batch's own results changed: the course's files, the other
  submissions' results.
Runs under --impl solutions (a self-check, no points).
"""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader import grading as grading_tools
from grader.course import stage_named

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
HOSTILE = TESTS / "hostile"

# The first check waits for a whole grade_all batch (about 1.5 minutes on a busy machine).
pytestmark = [pytest.mark.selfcheck, pytest.mark.timeout(600),
              pytest.mark.skipif(sys.platform == "win32", reason="the hostile programs use fork() and /proc")]

STAGE_01_POINTS = stage_named("01").points  # course.toml holds the tests to it
SANDBOX = grading_tools.sandbox_for(0)
LIMITED = SANDBOX is not None or (sys.platform.startswith("linux") and os.geteuid() != 0)
DAEMON_MARKER = "threaded-chat-hostile-daemon"
FORGED_MARKER = "threaded-chat-hostile-forged"


def solution(stage, program="server.py"):
    return (ROOT / "solutions" / stage / program).read_text(encoding="utf-8")


def starter(stage, program="server.py"):
    return (ROOT / "stages" / stage / program).read_text(encoding="utf-8")


def with_mischief(name):
    """The stage 01 solution, calling tests/hostile/mischief/NAME.py's mischief() first."""
    prelude = (HOSTILE / "mischief" / f"{name}.py").read_text(encoding="utf-8")
    program = solution("01_echo")
    assert program.rstrip().endswith('if __name__ == "__main__":\n    main()')
    return prelude + "\n\n" + program.rstrip()[:-len("main()")] + "mischief()\n    main()\n"


def write(path, text, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if mode:
        path.chmod(mode)


def build_batch(batch):
    """The hostile submissions; returns {name: (expected 01 points, expected 02 points)}."""
    expected = {}
    forging = batch / "forging"
    write(forging / "01_echo" / "server.py", starter("01_echo"))
    write(forging / "02_lines" / "server.py", starter("02_lines"))
    for piece in ("conftest.py", "pytest.ini"):
        shutil.copy(HOSTILE / "forging" / piece, forging / piece)
        shutil.copy(HOSTILE / "forging" / piece, forging / "01_echo" / piece)
    expected["forging"] = (0.0, 0.0)

    hooks = batch / "import_hooks"
    write(hooks / "01_echo" / "server.py", solution("01_echo"))
    for piece in (HOSTILE / "import_hooks").iterdir():
        shutil.copy(piece, hooks / piece.name)
        shutil.copy(piece, hooks / "01_echo" / piece.name)
    expected["import_hooks"] = (STAGE_01_POINTS, 0.0)

    mischiefs = ["daemon", "output_flood"]
    if LIMITED:
        mischiefs.append("fork_bomb")  # bounded by the process limit only where one applies
    if SANDBOX is not None:
        mischiefs.append("writes_course")  # as the grader's own user it could write the course
    for name in mischiefs:
        write(batch / name / "01_echo" / "server.py", with_mischief(name))
        expected[name] = (STAGE_01_POINTS, 0.0)

    links = batch / "links"
    (links / "01_echo").mkdir(parents=True)
    (links / "02_lines").mkdir()
    secret = batch.parent / "root-only.txt"
    write(secret, "a file the submission must never read\n", mode=0o600)
    (links / "01_echo" / "server.py").symlink_to(secret)
    (links / "02_lines" / "server.py").symlink_to("/dev/zero")
    expected["links"] = (0.0, 0.0)

    odd = batch / "odd_files"
    (odd / "01_echo").mkdir(parents=True)
    os.mkfifo(odd / "01_echo" / "server.py")
    write(odd / "02_lines" / "server.py", solution("02_lines") + "#" * 2_000_000 + "\n")
    expected["odd_files"] = (0.0, 0.0)

    # A zip of the whole repository (its own conftest.py, pytest.ini and tests/ included),
    # with the stage 01 solution as the student's work.
    with zipfile.ZipFile(batch / "whole_repository.zip", "w") as archive:
        for relative in tracked_files():
            source = ROOT / relative
            if relative == "stages/01_echo/server.py":
                archive.writestr(f"threaded-chat/{relative}", solution("01_echo"))
            elif source.is_file() and not source.is_symlink():
                archive.write(source, f"threaded-chat/{relative}")
    expected["whole_repository"] = (STAGE_01_POINTS, 0.0)
    return expected


def tracked_files():
    listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listing.returncode == 0 and listing.stdout.strip():
        return listing.stdout.split()
    return [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
            if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts]


def course_snapshot():
    """{path: digest} of the course's tracked files, and the names of all its files."""
    digests = {}
    for relative in tracked_files():
        path = ROOT / relative
        if path.is_file():
            digests[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    names = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
             if ".git" not in p.parts and "__pycache__" not in p.parts}
    return digests, names


def processes_with(marker):
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the hostile batch once: (expected points, CSV rows, output dir, tool output)."""
    work = tmp_path_factory.mktemp("hostile")
    work.chmod(0o755)
    batch = work / "batch"
    batch.mkdir()
    expected = build_batch(batch)
    before = course_snapshot()
    out = work / "grades_results"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "grade_all.py"), str(batch), "--csv", str(work / "grades.csv"),
         "--stages", "01,02", "-j", "2", "--out", str(out), "--timeout", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    after = course_snapshot()
    rows = {}
    if (work / "grades.csv").is_file():
        with open(work / "grades.csv", newline="", encoding="utf-8") as handle:
            rows = {row["submission"]: row for row in csv.DictReader(handle)}
    yield {"expected": expected, "rows": rows, "out": out, "output": result.stdout + result.stderr,
           "status": result.returncode, "before": before, "after": after}
    for pid in processes_with(DAEMON_MARKER):  # never leave one behind, even when a check failed
        os.kill(pid, 9)


def test_the_batch_was_graded(graded):
    assert graded["status"] == 0, graded["output"][-3000:]
    assert set(graded["rows"]) == set(graded["expected"]), graded["output"][-3000:]


@pytest.mark.parametrize("name", ["forging", "import_hooks", "daemon", "output_flood", "fork_bomb",
                                  "writes_course", "links", "odd_files", "whole_repository"])
def test_each_submission_earns_what_its_programs_earn(graded, name):
    if name not in graded["expected"]:
        pytest.skip("needs a grading user of its own (run as root) or a process limit (Linux)")
    row = graded["rows"].get(name)
    assert row is not None, f"{name} is missing from the CSV:\n{graded['output'][-3000:]}"
    got = (float(row["01_echo"]), float(row["02_lines"]))
    assert got == graded["expected"][name], (
        f"{name} earned {got}, its honest programs earn {graded['expected'][name]}\n"
        f"notes: {row['notes']}\n{graded['output'][-2000:]}")
    results = json.loads((graded["out"] / name / "results.json").read_text(encoding="utf-8"))
    assert results["score"] == sum(got), f"{name}: results.json says {results['score']}"


def test_refused_files_are_named_in_the_notes(graded):
    links, odd = graded["rows"]["links"]["notes"], graded["rows"]["odd_files"]["notes"]
    assert "symbolic link" in links, links
    assert "not a regular file" in odd and "larger than" in odd, odd


def test_no_process_is_left_behind(graded):
    assert not processes_with(DAEMON_MARKER), "the double-forked daemon outlived its grading"
    if SANDBOX is not None:
        for slot in range(2):
            uid = grading_tools.SANDBOX_FIRST_UID + slot
            assert not grading_tools.processes_of_user(uid), f"processes of the grading user {uid} are left"


def test_nothing_outside_the_results_changed(graded):
    (digests_before, names_before), (digests_after, names_after) = graded["before"], graded["after"]
    changed = sorted(p for p in digests_before if digests_after.get(p) != digests_before[p])
    appeared = sorted(p for p in names_after - names_before if FORGED_MARKER in p or "zz_forged" in p)
    assert not changed and not appeared, f"changed in the course: {changed}; appeared: {appeared}"
    for results in graded["out"].rglob("*.json"):
        assert FORGED_MARKER not in results.read_text(encoding="utf-8", errors="replace"), results


def test_submission_files_never_reach_the_grading_run(graded):
    for name in ("forging", "import_hooks", "whole_repository"):
        for log in (graded["out"] / name).glob("*.log"):
            text = log.read_text(encoding="utf-8", errors="replace")
            assert "sitecustomize.py of a submission ran" not in text, log
            assert ".pth file of a submission ran" not in text, log
            assert "option names" not in text, f"{log}: a submission's conftest.py was loaded"
