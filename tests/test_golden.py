"""Golden results: the results.json of a fixed partial submission, held to an expected file.

The submission: stage 01 is the course's variant 01_decodes_text (the solution with one
bug put back: it decodes bytes as text, so binary data comes back changed), stage 02 is
missing. (A variant whose server dies would not do: whether the next client is refused,
reset or accepted and closed depends on timing.) Graded the way
the tools grade (intake, the pinned command), its results.json must match
tests/golden/partial_results.json: each test's id, stage, status, score and points, and the
first line of what it tells the student. Timings and ports are not compared.

When a test of stage 01 or 02 changes on purpose, rewrite the expected file and read its
diff before committing it:

    THREADED_CHAT_UPDATE_GOLDEN=1 python -m pytest --impl solutions tests/test_golden.py
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from grader import variants
from grader.grading import pytest_command, stage_test_files
from grader.results import load_results

pytestmark = [pytest.mark.selfcheck, pytest.mark.timeout(600)]  # a child run of two stages

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "partial_results.json"
UPDATE = os.environ.get("THREADED_CHAT_UPDATE_GOLDEN") == "1"


def first_line(output, submission):
    """What a failure says first, with the run's own numbers (ports, times) masked."""
    output = output.replace(str(submission), "SUBMISSION")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if lines and lines[0].startswith("FAILED"):  # the plugin's header: "FAILED (during setup)"
        lines = [lines[0]] if len(lines) == 1 else [f"{lines[0]}: {lines[1]}"]
    line = lines[0] if lines else ""
    return re.sub(r"\d+(\.\d+)?", "N", line)


def normalised(results, submission):
    return [{"test": r.test, "stage": r.stage, "status": r.status.value, "score": r.earned,
             "points": r.points, "says": first_line(r.output, submission)} for r in results]


def test_results_json_of_a_partial_submission(tmp_path):
    submission = tmp_path / "submission"
    variants.build("01_decodes_text", submission)
    json_path = tmp_path / "results.json"
    files = stage_test_files("01_echo") + stage_test_files("02_lines")
    command = pytest_command(submission, json_path, files)
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    results = load_results(json_path)
    assert results is not None, f"no results.json was written:\n{run.stdout[-3000:]}{run.stderr[-2000:]}"
    got = normalised(results, submission)
    if UPDATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n", encoding="utf-8")
        pytest.skip(f"rewrote {GOLDEN.relative_to(ROOT)}: read its diff before committing it")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert got == expected, (
        "results.json differs from tests/golden/partial_results.json.\n"
        + "\n".join(f"  expected {e}\n  got      {g}" for e, g in zip(expected, got) if e != g)
        + (f"\n  {len(expected)} tests expected, {len(got)} got" if len(expected) != len(got) else "")
        + "\nIf a test changed on purpose, rewrite it (see this file's docstring).")
