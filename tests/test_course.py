"""The course checks itself (run by: python -m pytest --impl solutions).

- every stage folder is complete: instructions, starter, solution, tests;
- every graded test carries points;
- every starter fails its stage's tests (nothing is solved already);
- every buggy variant (tests/variants/NAME.toml: its solution with one bug put
  back, built on demand by grader.variants) still applies to its solution, fails
  each test aimed at it, and their failure text holds its failure_words;
- every alternative correct solution in tests/alternatives/ passes its stage
  (but the tests its alternative.json lists as known failures);
- slow mode (marker slow_mode): the solutions of the chat stages (04 on) and
  their alternatives pass with THREADED_CHAT_NOISE=slow, which slows every
  program at random (grader/noise/sitecustomize.py): no test needs a quick server.

Stages, variants and alternatives are discovered from the folders, so one
added later is checked without editing this file.
"""

import ast
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from grader import variants
from grader.results import TestResult

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
ALTERNATIVES = TESTS / "alternatives"
PROGRAMS = ("server.py", "client.py")
RUN_DEADLINE = 300  # seconds for one inner pytest run; far above what any takes
# The child runs start on worker threads while pytest's main thread sets and removes
# PYTEST_CURRENT_TEST in os.environ: copying os.environ there can raise KeyError. So the
# environment is copied once, here, at collection.
ENVIRONMENT = dict(os.environ)
# A variant is its solution with one bug put back: a few changed lines (the most,
# 06_no_lock, takes the lock out of three methods: 24).
MOST_CHANGED_LINES = 30

# A check waits for child runs of whole stages (several at once, on a busy machine): its
# limit is the child's own, not pytest.ini's 120 s for one graded test.
pytestmark = [pytest.mark.selfcheck, pytest.mark.timeout(2 * RUN_DEADLINE)]


def stage_names():
    names = {p.name for base in ("stages", "solutions") for p in (ROOT / base).iterdir() if p.is_dir()}
    return sorted(name for name in names if name[:2].isdigit())


def stage_test_files(stage):
    return sorted(TESTS.glob(f"test_{stage[:2]}_*.py"))


def variant_names():
    return variants.variant_names(ROOT)


# ---- running the graded tests on something else, in a child pytest -----------

def run_graded(test_files, impl, select=None, stop_at_first_failure=False, noise=None, env=None):
    """Run the graded tests on `impl` in a child pytest; return its results.json.

    noise: the child's THREADED_CHAT_NOISE ("slow"), else it inherits this run's.
    env: more environment variables for the child (and so for the programs it runs).
    """
    env = dict(ENVIRONMENT, **(env or {}))
    if noise:
        env["THREADED_CHAT_NOISE"] = noise
    with tempfile.TemporaryDirectory() as scratch:
        results = Path(scratch) / "results.json"
        command = [sys.executable, "-m", "pytest", *map(str, test_files), "--impl", str(impl),
                   "--grade-json", str(results), "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
        if select:
            command += ["-k", " or ".join(select)]
        if stop_at_first_failure:
            command.append("-x")
        finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                  timeout=RUN_DEADLINE, stdin=subprocess.DEVNULL, env=env)
        if not results.exists():
            pytest.fail(f"The child pytest wrote no results (status {finished.returncode}):\n"
                        f"{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}", pytrace=False)
        report = json.loads(results.read_text(encoding="utf-8"))
        report["pytest_output"] = finished.stdout[-4000:]
        return report


def status_of(report, test_name):
    """'passed' / 'failed' for a test function name in a results.json, or None if it did not run."""
    for test in report["tests"]:
        if graded_test_name(test) == test_name:
            return test.get("status", "skipped")
    return None


def graded_test_name(test):
    """The test function's name (no parameters), which results.json carries as data."""
    return TestResult.from_gradescope(test).function


@pytest.fixture(scope="module")
def child_runs(request):
    """Runs the starter, variant and alternative checks two at a time (they mostly wait on sockets).

    Slow-mode runs have workers of their own: they spend nearly all their time
    asleep in the noise's pauses, so they add little load while the others run.
    """
    with ThreadPoolExecutor(max_workers=2) as pool, \
            ThreadPoolExecutor(max_workers=SLOW_MODE_WORKERS) as slow_pool:
        jobs = {}
        for stage in stage_names():
            jobs[("starter", stage)] = pool.submit(
                run_graded, stage_test_files(stage), ROOT / "stages", stop_at_first_failure=True)
        for name in variant_names():
            jobs[("variant", name)] = pool.submit(run_variant, name)
        submit_alternative_runs(pool, slow_pool, jobs, selected_tests(request))
        yield jobs
        for job in jobs.values():
            job.cancel()


def run_variant(name):
    """Build the variant into a temporary folder and run the tests aimed at it there."""
    variant = variants.load_variant(name, ROOT)
    with tempfile.TemporaryDirectory(prefix=f"variant-{name}-") as folder:
        variants.build(variant, folder, ROOT)
        return run_graded(stage_test_files(variant.stage), folder, select=variant.caught_by)


def load_variant_or_fail(name):
    """The variant, checked to apply to its solution; a malformed or stale one fails the check."""
    try:
        variant = variants.load_variant(name, ROOT)
        variants.patched_programs(variant, ROOT)
    except variants.VariantError as error:
        pytest.fail(str(error), pytrace=False)
    return variant


# ---- the checks -----------------------------------------------------------------

@pytest.mark.parametrize("stage", stage_names())
def test_stage_is_complete(stage):
    """A stage has instructions, a starter, a solution with the same files, and graded tests."""
    starter, solution = ROOT / "stages" / stage, ROOT / "solutions" / stage
    for folder in (starter, solution):
        assert (folder / "README.md").is_file(), f"{folder} has no README.md"
        assert any((folder / program).is_file() for program in PROGRAMS), \
            f"{folder} has no server.py or client.py"
    starter_files = {p.name for p in starter.iterdir() if p.suffix == ".py"}
    solution_files = {p.name for p in solution.iterdir() if p.suffix == ".py"}
    assert starter_files == solution_files, \
        f"stages/{stage} has {sorted(starter_files)} but solutions/{stage} has {sorted(solution_files)}"
    assert stage_test_files(stage), f"no tests/test_{stage[:2]}_*.py grades {stage}"


@pytest.mark.parametrize("test_file", sorted(TESTS.glob("test_[0-9][0-9]_*.py")), ids=lambda p: p.name)
def test_every_graded_test_has_points_and_a_description(test_file):
    """Each test in a stage's file carries @pytest.mark.points(N) and a docstring."""
    tree = ast.parse(test_file.read_text(encoding="utf-8"))
    problems = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            marks = [ast.unparse(d) for d in node.decorator_list]
            if not any("mark.points" in m for m in marks):
                problems.append(f"{node.name} has no @pytest.mark.points(N)")
            if not ast.get_docstring(node):
                problems.append(f"{node.name} has no docstring (it names the test in results.json)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stage", stage_names())
def test_starter_fails_its_stage(stage, child_runs):
    """The untouched starter does not pass its stage: there is work to do."""
    report = child_runs[("starter", stage)].result()
    possible = sum(test["max_score"] for test in report["tests"])
    assert report["tests"], f"no graded test ran against stages/{stage}:\n{report['pytest_output']}"
    assert report["score"] < possible, (
        f"stages/{stage} already passes its tests: the starter should leave work to do.\n"
        f"(If you solved this stage in your own copy, this check is for the course's maintainers.)")


def test_variants_folder_holds_only_specs():
    """tests/variants/ holds replace specs (NAME.toml) only: no full copy of a program creeps back."""
    stray = sorted(path.name for path in (ROOT / variants.VARIANTS).iterdir()
                   if path.suffix != variants.SUFFIX and path.name != "README.md")
    assert not stray, (f"tests/variants/ should hold only NAME.toml replace specs, but has: {stray}. "
                       f"A variant is a few [[replace]] entries against its solution (see grader/variants.py).")


@pytest.mark.parametrize("variant", variant_names())
def test_variant_is_its_solution_with_one_bug(variant):
    """Each variant's spec applies to its stage's solution and changes a few lines, with a comment at the bug."""
    spec = load_variant_or_fail(variant)
    changed = variants.changed_lines(spec, ROOT)
    assert changed, f"{variant} changes nothing in solutions/{spec.stage}: no bug put back"
    assert len(changed) <= MOST_CHANGED_LINES, (
        f"{variant} changes {len(changed)} lines of solutions/{spec.stage} (at most {MOST_CHANGED_LINES}): "
        f"one bug put back is a few lines.")
    assert any("# BUG" in replacement.replace for replacement in spec.replacements), (
        f"{variant}: no replace text carries a '# BUG: ...' comment saying what is wrong there")


@pytest.mark.parametrize("variant", variant_names())
def test_variant_is_caught(variant, child_runs):
    """A buggy variant of a solution fails every test aimed at its bug, with the failure text it should have."""
    spec = load_variant_or_fail(variant)
    report = child_runs[("variant", variant)].result()
    missed = {name: status_of(report, name) for name in spec.caught_by}
    missed = {name: status for name, status in missed.items() if status != "failed"}
    assert not missed, (
        f"Variant {variant} ({spec.bug}) was not caught by: "
        + ", ".join(f"{name} ({status or 'did not run: no such test?'})" for name, status in missed.items())
        + f"\n{report['pytest_output']}")
    # The golden check: the failure says what the bug is (words chosen from a real run of it).
    text = variants.failure_text(spec, [TestResult.from_gradescope(test) for test in report["tests"]])
    missing = variants.missing_failure_words(spec, text)
    assert not missing, (
        f"Variant {variant} was caught, but its failure text lacks {missing} (failure_words in "
        f"{spec.path.name}): has a test's message changed? Its failure text was:\n{head_of(text)}")


# ---- alternative correct solutions, and slow mode ------------------------------------
#
# The graded tests were first proven on the reference solutions only, so they
# could lean on how fast, and in what order, those happen to do things. Correct
# programs of other designs (tests/alternatives/NAME/STAGE/ + alternative.json),
# and every correct program slowed down at random (THREADED_CHAT_NOISE=slow),
# must pass too: a failure here is a test that is unfair to a correct program.

# Slow mode checks the chat stages: from 04 on, what a server does and when
# depends on several clients at once.
FIRST_SLOW_MODE_STAGE = "04"
# Slow-mode child runs at once, besides the two of child_runs' other checks.
SLOW_MODE_WORKERS = 2


def alternative_folders():
    return sorted(p.parent for p in ALTERNATIVES.glob("*/alternative.json"))


def read_alternative(folder):
    return json.loads((folder / "alternative.json").read_text(encoding="utf-8"))


def alternative_problems(folder):
    """What is wrong with an alternative's folder or alternative.json (nothing: [])."""
    try:
        spec = read_alternative(folder)
    except (OSError, ValueError) as error:
        return [f"{folder.name}/alternative.json cannot be read: {error}"]
    if not isinstance(spec, dict):
        return [f"{folder.name}/alternative.json should be an object with stage and design"]
    problems = []
    stage = spec.get("stage")
    if stage not in stage_names():
        problems.append(f"{folder.name}/alternative.json: stage {stage!r} is not one of {stage_names()}")
    elif not any((folder / stage / program).is_file() for program in PROGRAMS) and not spec.get("env"):
        problems.append(f"{folder.name}/{stage}/ has no server.py or client.py (nor is it the solution "
                        f"run with an \"env\" of its own)")
    if not isinstance(spec.get("env", {}), dict):
        problems.append(f"{folder.name}/alternative.json: env should be an object of variable: value")
    if not str(spec.get("design", "")).strip():
        problems.append(f"{folder.name}/alternative.json has no design (one sentence: how it is built)")
    known = spec.get("known_failures", [])
    if not isinstance(known, list) or not all(isinstance(name, str) for name in known):
        problems.append(f"{folder.name}/alternative.json: known_failures should be a list of test names")
    return problems


def alternative_program(folder):
    """(what to grade, extra environment) of an alternative.

    An alternative that is the stage's solution on another path (the 08 reference without
    MSG_DONTWAIT, as on Windows) has no program of its own: alternative.json's "env" makes
    the solution take that path.
    """
    spec = read_alternative(folder)
    own = any((folder / spec["stage"] / program).is_file() for program in PROGRAMS)
    return (folder if own else ROOT / "solutions"), spec.get("env", {})


def known_failures(folder):
    return set(read_alternative(folder).get("known_failures", []))


def slow_mode_stages():
    return [stage for stage in stage_names()
            if stage[:2] >= FIRST_SLOW_MODE_STAGE and (ROOT / "solutions" / stage).is_dir()]


def slow_mode_alternatives():
    """The alternatives of slow-mode stages (a malformed one is reported by its own check)."""
    return [folder for folder in alternative_folders()
            if not alternative_problems(folder) and read_alternative(folder)["stage"] in slow_mode_stages()]


def selected_tests(request):
    """Names (with parameters) of the tests this run will run: only their child runs are started."""
    return {item.name for item in request.session.items}


def submit_alternative_runs(pool, slow_pool, jobs, selected):
    """Start the child runs of the alternative and slow-mode checks that this run selected."""
    for folder in alternative_folders():
        if f"test_alternative_passes_its_stage[{folder.name}]" in selected and not alternative_problems(folder):
            stage = read_alternative(folder)["stage"]
            impl, env = alternative_program(folder)
            jobs[("alternative", folder.name)] = pool.submit(run_graded, stage_test_files(stage), impl, env=env)
    slow_runs = []  # (stage, key, what to grade, extra environment)
    for stage in slow_mode_stages():
        if f"test_solution_passes_in_slow_mode[{stage}]" in selected:
            slow_runs.append((stage, ("slow", stage), ROOT / "solutions", {}))
    for folder in slow_mode_alternatives():
        if f"test_alternative_passes_in_slow_mode[{folder.name}]" in selected:
            slow_runs.append((read_alternative(folder)["stage"], ("slow alternative", folder.name),
                              *alternative_program(folder)))
    # The last stages' runs are the longest: started first, the workers finish together.
    for stage, key, impl, env in sorted(slow_runs, key=lambda run: run[0], reverse=True):
        jobs[key] = slow_pool.submit(run_graded, stage_test_files(stage), impl, noise="slow", env=env)


def assert_passes_its_stage(report, what, stage, expected_failures=()):
    """Every graded test of the stage ran and passed, but the expected failures."""
    ran = {graded_test_name(test) for test in report["tests"]}
    if not ran:
        pytest.fail(f"no graded test of {stage} ran against {what}:\n{report['pytest_output']}", pytrace=False)
    unknown = set(expected_failures) - ran
    if unknown:
        pytest.fail(f"{what}: known_failures names {sorted(unknown)}, which are no tests of {stage} "
                    f"(renamed? fixed and removed?)", pytrace=False)
    failed = [test for test in report["tests"]
              if test.get("status") == "failed" and graded_test_name(test) not in expected_failures]
    if failed:
        # The child's own failure messages say what was sent, expected and received.
        pytest.fail(
            f"{what} is correct, but failed {len(failed)} test(s) of {stage}. Each is a test that leans on\n"
            f"something docs/PROTOCOL.md does not promise (speed, an order between clients, one design):\n\n"
            + "\n\n".join(f"{test['name']}\n{head_of(test['output'])}" for test in failed), pytrace=False)


def head_of(text, lines=45):
    """The start of a child's failure message: what was expected and received comes first."""
    kept = text.rstrip("\n").splitlines()
    cut = ["    ..."] if len(kept) > lines else []
    return "\n".join(["    " + line for line in kept[:lines]] + cut)


@pytest.mark.parametrize("alternative", [f.name for f in alternative_folders()])
def test_alternative_passes_its_stage(alternative, child_runs):
    """A correct solution of another design passes every test of its stage (but its known failures)."""
    folder = ALTERNATIVES / alternative
    problems = alternative_problems(folder)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    report = child_runs[("alternative", alternative)].result()
    stage = read_alternative(folder)["stage"]
    assert_passes_its_stage(report, f"alternatives/{alternative} ({read_alternative(folder)['design']})",
                            stage, known_failures(folder))


@pytest.mark.slow_mode
@pytest.mark.parametrize("stage", slow_mode_stages())
def test_solution_passes_in_slow_mode(stage, child_runs):
    """The reference solution passes its stage when slowed down at random (THREADED_CHAT_NOISE=slow)."""
    report = child_runs[("slow", stage)].result()
    assert_passes_its_stage(report, f"solutions/{stage} in slow mode", stage)


@pytest.mark.slow_mode
@pytest.mark.parametrize("alternative", [f.name for f in slow_mode_alternatives()])
def test_alternative_passes_in_slow_mode(alternative, child_runs):
    """An alternative solution passes its stage when slowed down at random (but its known failures)."""
    folder = ALTERNATIVES / alternative
    report = child_runs[("slow alternative", alternative)].result()
    assert_passes_its_stage(report, f"alternatives/{alternative} in slow mode",
                            read_alternative(folder)["stage"], known_failures(folder))
