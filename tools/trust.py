"""Measure how far the grades can be trusted: no flaky test, no bug slipping through.

    python tools/trust.py --runs 20                 everything, 20 times
    python tools/trust.py --runs 100 --stages 06    one stage, 100 times
    python tools/trust.py --runs 20 --skip-suite    only the buggy variants
    python tools/trust.py --runs 20 --markdown trust.md -j 2
    python tools/trust.py --runs 20 --skip-suite --skip-variants --slow   the alternatives

1. The suite: the graded tests (tests/test_NN_*.py) are run K times on the reference
   solutions, each run a fresh `python -m pytest --impl solutions` process; every test that
   ever failed is reported, with how often. A correct solution must never fail.
2. The variants: each tests/variants/NAME.toml is a solution with one bug put back (a few
   replacements, built into a temporary folder by grader.variants); it names the tests aimed
   at that bug (caught_by) and words their failure text must hold (failure_words). Each is
   run K times against those tests; a run CATCHES the bug when every caught_by test fails,
   and its failure text holds every one of the failure_words.
3. The alternatives: each tests/alternatives/<name>/ is a correct program of another design
   (alternative.json: stage, design, known_failures). Each is run K times on its whole stage,
   and with --slow K more times under the slow noise profile (THREADED_CHAT_NOISE=slow); a
   run PASSES when every graded test but its known failures passed.

Prints a Markdown report (date, machine, Python, K) ready to paste into docs/INSTRUCTORS.md.
Exits with status 1 when a test was flaky, or a variant escaped or lacked its failure words in any run.
-j N runs N pytest processes at once; keep the default (1) for published figures, since
race tests are then measured on an otherwise idle machine, as a student's run would be.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from grader import variants as variant_specs
from grader.grading import (ROOT, TESTS, course_stages, pytest_command, read_results,
                           run_isolated, select_stages, stage_test_files)
from grader.results import TestResult

ALTERNATIVES = TESTS / "alternatives"
RUN_TIMEOUT = 600  # seconds for one pytest run (the whole suite on the solutions takes < 180)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Rerun the suite and the buggy variants K times.")
    parser.add_argument("--runs", "-k", dest="runs", type=int, default=20, help="K (default 20)")
    parser.add_argument("--stages", action="append", default=[],
                        help="only these stages, e.g. --stages 06,07")
    parser.add_argument("--skip-suite", action="store_true", help="do not rerun the suite")
    parser.add_argument("--skip-variants", action="store_true", help="do not rerun the variants")
    parser.add_argument("--skip-alternatives", action="store_true", help="do not rerun the alternatives")
    parser.add_argument("--alternative", action="append", default=[],
                        help="only the alternative(s) with this folder name")
    parser.add_argument("--slow", action="store_true",
                        help="also run the solutions and each alternative K more times with "
                             "THREADED_CHAT_NOISE=slow (every socket call slowed at random)")
    parser.add_argument("--slow-runs", type=int, default=None, metavar="K",
                        help="how many slow-mode runs (default: as many as --runs)")
    parser.add_argument("--variant", action="append", default=[],
                        help="only the variant(s) with this name (tests/variants/NAME.toml)")
    parser.add_argument("--variants-dir", type=Path, default=None,
                        help="where the variants' NAME.toml specs are (default tests/variants)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="pytest runs at once (default 1)")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT,
                        help=f"seconds for one pytest run (default {RUN_TIMEOUT})")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--keep", type=Path, help="keep every run's results.json and log here")
    return parser.parse_args(argv)


# ---- what to run ---------------------------------------------------------------

def load_variants(stages, only=(), where=None):
    """[(name, Variant or None, why it can't be used)] for the variants of the chosen stages."""
    found = []
    for name in variant_specs.variant_names(ROOT, where):
        if only and name not in only:
            continue
        try:
            variant = variant_specs.load_variant(name, ROOT, where)
        except variant_specs.VariantError as error:
            found.append((name, None, str(error)))
            continue
        if variant.stage in stages or only:
            found.append((name, variant, None))
    return found


def load_alternatives(stages, only=(), where=ALTERNATIVES):
    """[(folder, alternative.json dict)] for the alternatives of the chosen stages."""
    found = []
    for spec in sorted(where.glob("*/alternative.json")) if where.is_dir() else []:
        if only and spec.parent.name not in only:
            continue
        data = json.loads(spec.read_text(encoding="utf-8"))
        if data.get("stage") in stages or only:
            found.append((spec.parent, data))
    return found


def name_of_test(test):
    """'test_x[param]': the test's id, which results.json carries as data."""
    return TestResult.from_gradescope(test).test


def base_name(name):
    return name.split("[", 1)[0]


# ---- one pytest run --------------------------------------------------------------

class Runner:
    def __init__(self, keep, timeout):
        self.scratch = Path(tempfile.mkdtemp(prefix="trust-"))
        self.keep = keep
        self.timeout = timeout
        self.counter = 0
        self.lock = threading.Lock()

    def run(self, label, impl, files, select=None, slow=False, env=None):
        """One pytest process; returns (results dict or None, exit status or None, seconds)."""
        with self.lock:
            self.counter += 1
            number = self.counter
        stem = f"{number:04d}-{label}{'-slow' if slow else ''}"
        json_path = self.scratch / f"{stem}.json"
        log_path = self.scratch / f"{stem}.log"
        extra = ["-k", " or ".join(sorted(set(select)))] if select else []
        command = pytest_command(impl, json_path, files, extra=extra)
        env = dict(os.environ, **(env or {}), **({"THREADED_CHAT_NOISE": "slow"} if slow else {}))
        status, seconds = run_isolated(command, cwd=ROOT, timeout=self.timeout, log_path=log_path, env=env)
        results = read_results(json_path)
        if self.keep:
            self.keep.mkdir(parents=True, exist_ok=True)
            for path in (json_path, log_path):
                if path.exists():
                    shutil.copy(path, self.keep / path.name)
        for path in (json_path, log_path):
            try:
                path.unlink()
            except OSError:
                pass
        return results, status, seconds

    def close(self):
        shutil.rmtree(self.scratch, ignore_errors=True)


# ---- the two measurements -----------------------------------------------------------

class SuiteTally:
    def __init__(self):
        self.runs = 0
        self.failures = Counter()       # test -> runs in which it failed
        self.failed_runs = Counter()    # stage -> runs in which one of its tests failed
        self.tests_by_stage = {}        # stage -> set of tests seen
        self.bad_runs = []              # (run, what went wrong)
        self.seconds = []

    def add(self, run, results, status, seconds, files):
        self.runs += 1
        self.seconds.append(seconds)
        if status is None:
            self.bad_runs.append((run, f"timed out after {seconds:.0f} s"))
        elif status not in (0, 1):
            self.bad_runs.append((run, f"pytest exit status {status}"))
        if results is None:
            self.bad_runs.append((run, "no results.json written"))
            return
        stages_failing = set()
        for test in results.get("tests", []):
            stage = TestResult.from_gradescope(test).stage
            name = name_of_test(test)
            self.tests_by_stage.setdefault(stage, set()).add(name)
            if test.get("status") != "passed" and float(test.get("max_score") or 0) > 0:
                self.failures[(stage, name)] += 1
                stages_failing.add(stage)
        for stage in stages_failing:
            self.failed_runs[stage] += 1


def measure_suite(runner, stages, runs, jobs, progress, slow=False):
    files = [f for stage in stages for f in stage_test_files(stage)]
    tally = SuiteTally()
    if not files:
        return tally, files

    def one(run):
        results, status, seconds = runner.run(f"suite{run}", "solutions", files, slow=slow)
        return run, results, status, seconds

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for run, results, status, seconds in pool.map(one, range(1, runs + 1)):
            tally.add(run, results, status, seconds, files)
            failed = [name for (stage, name), _ in tally.failures.items()]
            progress(f"suite run {run}/{runs}{' (slow)' if slow else ''}: {seconds:.1f} s, "
                     f"{'exit ' + str(status) if status not in (0,) else 'all passed'}"
                     f"{'; tests that failed so far: ' + ', '.join(failed) if failed else ''}")
    return tally, files


def measure_variant(runner, name, variant, problem, runs, jobs, progress):
    """K runs of the variant (built once into the scratch folder) against its caught_by tests."""
    outcome = {"caught": 0, "runs": 0, "missed_tests": Counter(), "problems": [], "not_run": 0,
               "missing_words": Counter()}
    if variant is None:
        outcome["problems"].append(problem)
        return outcome
    caught_by = list(variant.caught_by)
    files = stage_test_files(variant.stage)
    folder = runner.scratch / f"variant-{name}"
    try:
        variant_specs.build(variant, folder, ROOT)
    except variant_specs.VariantError as error:
        outcome["problems"].append(str(error))
        return outcome
    if not files:
        outcome["problems"].append(f"no test file for {variant.stage}")
        return outcome

    def one(run):
        return runner.run(f"{name}{run}", folder, files, select=caught_by)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for run, (results, status, seconds) in enumerate(pool.map(one, range(1, runs + 1)), 1):
            outcome["runs"] += 1
            if status is None:
                outcome["problems"].append(f"run {run} timed out")
            statuses = {}
            for test in (results or {}).get("tests", []):
                statuses[name_of_test(test)] = test.get("status")
                statuses.setdefault(base_name(name_of_test(test)), test.get("status"))
            escaped = []
            for wanted in caught_by:
                if wanted not in statuses:
                    escaped_unknown = f"{wanted} did not run (no such test?)"
                    if escaped_unknown not in outcome["problems"]:
                        outcome["problems"].append(escaped_unknown)
                    outcome["not_run"] += 1
                elif statuses[wanted] == "passed":
                    escaped.append(wanted)
            for test_name in escaped:
                outcome["missed_tests"][test_name] += 1
            text = variant_specs.failure_text(
                variant, [TestResult.from_gradescope(test) for test in (results or {}).get("tests", [])])
            missing = variant_specs.missing_failure_words(variant, text)
            for word in missing:
                outcome["missing_words"][word] += 1
            if not escaped and not missing and results is not None and all(t in statuses for t in caught_by):
                outcome["caught"] += 1
    progress(f"variant {name}: caught in {outcome['caught']}/{outcome['runs']} runs"
             f"{' (' + '; '.join(outcome['problems']) + ')' if outcome['problems'] else ''}")
    return outcome


def measure_alternative(runner, folder, spec, runs, jobs, progress, slow):
    """K runs of the alternative's whole stage; a run passes when every test but the known failures did."""
    stage = spec.get("stage", "?")
    files = stage_test_files(stage) if stage in course_stages() else []
    known = set(spec.get("known_failures") or [])
    outcome = {"passed": 0, "runs": 0, "failed_tests": Counter(), "problems": []}
    if not files:
        outcome["problems"].append(f"no test file for {stage}")
        return outcome

    # An alternative that is the solution on another path (the 08 reference without
    # MSG_DONTWAIT) has no program of its own: its "env" makes the solution take that path.
    own = any((folder / stage).glob("*.py"))
    impl = folder if own else ROOT / "solutions"

    def one(run):
        return runner.run(f"{folder.name}{run}", impl, files, slow=slow, env=spec.get("env"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for run, (results, status, seconds) in enumerate(pool.map(one, range(1, runs + 1)), 1):
            outcome["runs"] += 1
            if status is None:
                outcome["problems"].append(f"run {run} timed out")
            if results is None:
                outcome["problems"].append(f"run {run} wrote no results")
                continue
            failed = [name_of_test(t) for t in results.get("tests", [])
                      if t.get("status") == "failed" and base_name(name_of_test(t)) not in known]
            for name in failed:
                outcome["failed_tests"][name] += 1
            if not failed and status is not None:
                outcome["passed"] += 1
    progress(f"alternative {folder.name}{' (slow)' if slow else ''}: passed {outcome['passed']}/{outcome['runs']}"
             f"{' (' + '; '.join(outcome['problems']) + ')' if outcome['problems'] else ''}")
    return outcome


# ---- the report -------------------------------------------------------------------

def machine():
    cpus = os.cpu_count() or "?"
    name = platform.system()
    detail = platform.release() if name == "Linux" else platform.mac_ver()[0] or platform.release()
    return f"{name} {detail} {platform.machine()}, {cpus} CPUs"


def load_average():
    """The 1-minute load average (other work on the machine skews timing tests), or '?'."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        return "?"


def report(args, stages, suite, variants, elapsed, load_before="?", alternatives=None):
    lines = ["| measured | |", "|---|---|",
             f"| date | {datetime.date.today().isoformat()} |",
             f"| machine | {machine()} |",
             f"| Python | {platform.python_version()} |",
             f"| runs (K) | {args.runs} |",
             f"| stages | {', '.join(stages)} |",
             f"| parallel runs (-j) | {args.jobs} |",
             f"| load average (start, end) | {load_before}, {load_average()} |",
             f"| wall time | {elapsed / 60:.1f} min |", ""]
    if suite is not None:
        lines.append(suite_table(suite, stages))
    if variants is not None:
        lines += [f"**Buggy variants, {args.runs} runs each** (caught = every `caught_by` test failed, "
                  f"and their failure text held every one of the `failure_words`)", "",
                  "| variant | stage | bug put back | caught_by | caught |", "|---|---|---|---|---|"]
        if not variants:
            lines.append("| (none yet) | | | | |")
        for name, variant, outcome in variants:
            escaped = ", ".join(f"`{t}` passed {n}x" for t, n in sorted(outcome["missed_tests"].items()))
            wordless = ", ".join(f"no {w!r} {n}x" for w, n in sorted(outcome["missing_words"].items()))
            problems = "; ".join(outcome["problems"])
            caught = f"{outcome['caught']}/{outcome['runs']}"
            extra = "; ".join(x for x in (escaped, wordless, problems) if x).replace("|", "\\|")
            bug = " ".join(variant.bug.split()).replace("|", "\\|") if variant else "?"
            lines.append(f"| `{name}` | {variant.stage if variant else '?'} | {bug} | "
                         f"{', '.join('`' + t + '`' for t in (variant.caught_by if variant else ()))} | "
                         f"{caught}{' (' + extra + ')' if extra else ''} |")
        lines.append("")
    if alternatives is not None:
        lines += [f"**Alternative correct solutions of other designs, {args.runs} runs each** "
                  f"(passed = every graded test of the stage passed"
                  f"{f'; slow = {args.slow_runs or args.runs} runs under THREADED_CHAT_NOISE=slow' if args.slow else ''})", "",
                  "| alternative | stage | design | passed |" + (" slow |" if args.slow else ""),
                  "|---|---|---|---|" + ("---|" if args.slow else "")]
        for folder, spec, normal, slow in alternatives:
            cells = [_passed(normal)] + ([_passed(slow)] if slow is not None else [])
            design = " ".join(spec.get("design", "").split()).replace("|", "\\|")
            lines.append(f"| `{folder.name}` | {spec.get('stage', '?')} | {design} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def suite_table(suite, stages, how=""):
    tally, files = suite
    lines = [f"**The reference solutions, every graded test, {tally.runs} runs{' ' + how if how else ''}**", "",
             "| stage | graded tests | runs with a failure | tests that ever failed |",
             "|---|---|---|---|"]
    for stage in stages:
        tests = tally.tests_by_stage.get(stage, set())
        failed = {name: n for (s, name), n in tally.failures.items() if s == stage}
        bad_runs = tally.failed_runs.get(stage, 0)
        shown = ", ".join(f"`{name}` ({n}/{tally.runs})" for name, n in sorted(failed.items()))
        lines.append(f"| {stage} | {len(tests) if tests else 'no tests yet'} | "
                     f"{bad_runs}/{tally.runs} | {shown or 'none'} |")
    if tally.seconds:
        lines += ["", f"One run of these tests: median {statistics.median(tally.seconds):.1f} s, "
                      f"slowest {max(tally.seconds):.1f} s."]
    for run, problem in tally.bad_runs:
        lines.append(f"- run {run}: {problem}")
    lines.append("")
    return "\n".join(lines)


def _passed(outcome):
    failed = ", ".join(f"`{t}` failed {n}x" for t, n in sorted(outcome["failed_tests"].items()))
    extra = "; ".join(x for x in (failed, "; ".join(outcome["problems"])) if x)
    return f"{outcome['passed']}/{outcome['runs']}{' (' + extra + ')' if extra else ''}"


def trustworthy(suite, variants, alternatives=None):
    if suite is not None:
        tally, _ = suite
        if tally.failures or tally.bad_runs:
            return False
    if variants is not None:
        for _, _, outcome in variants:
            if outcome["runs"] == 0 or outcome["caught"] != outcome["runs"]:
                return False
    for _, _, *outcomes in alternatives or []:
        for outcome in filter(None, outcomes):
            if outcome["runs"] == 0 or outcome["passed"] != outcome["runs"]:
                return False
    return True


def main(argv=None):
    args = parse_args(argv)
    stages = select_stages(course_stages(), args.stages)
    runner = Runner(args.keep, args.timeout)
    load_before = load_average()
    started = time.monotonic()
    jobs = max(1, args.jobs)

    def progress(text):
        print(f"[{time.monotonic() - started:6.0f} s] {text}", file=sys.stderr, flush=True)

    try:
        suite = None if args.skip_suite else measure_suite(runner, stages, args.runs, jobs, progress)
        slow_runs = args.slow_runs or args.runs
        slow_suite = (measure_suite(runner, stages, slow_runs, jobs, progress, slow=True)
                      if args.slow and not args.skip_suite else None)
        variants = None
        if not args.skip_variants:
            variants = []
            for name, variant, problem in load_variants(stages, args.variant, args.variants_dir):
                outcome = measure_variant(runner, name, variant, problem, args.runs, jobs, progress)
                variants.append((name, variant, outcome))
        alternatives = None
        if not args.skip_alternatives:
            alternatives = []
            for folder, spec in load_alternatives(stages, args.alternative):
                normal = measure_alternative(runner, folder, spec, args.runs, jobs, progress, slow=False)
                slow = (measure_alternative(runner, folder, spec, slow_runs, jobs, progress, slow=True)
                        if args.slow else None)
                alternatives.append((folder, spec, normal, slow))
    finally:
        runner.close()
    text = report(args, stages, suite, variants, time.monotonic() - started, load_before, alternatives)
    if slow_suite is not None:
        text += "\n" + suite_table(slow_suite, stages, "under THREADED_CHAT_NOISE=slow")
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    return 0 if trustworthy(suite, variants, alternatives) and trustworthy(slow_suite, None) else 1


if __name__ == "__main__":
    sys.exit(main())
