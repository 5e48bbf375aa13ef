"""Grade a whole class: every submission in a folder, one CSV row each.

    python tools/grade_all.py SUBMISSIONS_DIR --csv grades.csv
    python tools/grade_all.py SUBMISSIONS_DIR --csv grades.csv -j 2 --timeout 120
    python tools/grade_all.py SUBMISSIONS_DIR --csv grades.csv --stages 04 --only alice --only bob

SUBMISSIONS_DIR holds one entry per student: a folder laid out like stages/, a copy or
clone of the whole repository, or a .zip of either. Only the program files course.toml
lists are taken out of a submission (take_in_submission); nothing else of it, no
conftest.py, pytest.ini or tests of its own, ever takes part in a grading run. Each stage
is graded by a pytest process of its own with the course's configuration pinned
(pytest_command), under a time limit (--timeout, per stage); everything it started is
killed when it ends. Run as root (POSIX), the students' programs run as an unprivileged
uid, one per concurrent job (sandbox_for); if that uid cannot run Python, nothing is graded.

The CSV has the columns: submission, one per graded stage, total, notes. Grading some
stages (--stages) or some students (--only) updates the CSV and each results.json in
place: the other stages and students keep their grades. Per submission, --out DIR/NAME/
keeps results.json (Gradescope's format, every test's explanation), and per stage the
run's NN_name.json and pytest's output NN_name.log; grades.json records each stage's
points and notes, from which results.json and the CSV row are rebuilt.
"""

import argparse
import concurrent.futures
import csv
import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from grader.grading import (ROOT, SandboxError, course_stages, pytest_command,
                           read_results, run_isolated, sandbox_for, select_stages,
                           stage_points, stage_test_files, take_in_submission)
from grader.results import TestResult, num

DEFAULT_TIMEOUT = 300  # seconds per stage; the reference solution's slowest stage takes < 30
RECORD = "grades.json"  # per submission: {"stages": {stage: {"points", "notes"}}, "intake": [...]}

# Seconds one stage takes on the reference solutions, measured on a loaded 2-CPU Linux
# machine (pytest start-up included), rounded up: a typical working submission.
TYPICAL_SECONDS = {"01_echo": 3, "02_lines": 5, "03_threads": 3, "04_broadcast": 8,
                   "05_exit": 4, "06_races": 10, "07_client": 7, "08_robust": 20}
UNKNOWN_STAGE_SECONDS = 10
# A server that never prints its start line costs each test the harness's start deadline.
START_DEADLINE = 15
INTERRUPT_GRACE = 5  # run_isolated waits this long after Ctrl+C before it kills


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Grade every submission in a folder.")
    parser.add_argument("submissions", type=Path, help="folder with one submission per student")
    parser.add_argument("--csv", type=Path, required=True,
                        help="CSV file to write, or to update when it exists")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for each submission's results.json and pytest logs "
                             "(default: next to the CSV, named after it: grades_results/)")
    parser.add_argument("-j", "--jobs", type=int, default=1,
                        help="submissions graded at once (default 1; keep it at most half "
                             "your CPU cores, so timing-sensitive tests keep their margin)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds allowed for one stage of one submission (default "
                             f"{DEFAULT_TIMEOUT}); tests not finished by then earn 0")
    parser.add_argument("--stages", action="append", default=[],
                        help="grade only these stages, e.g. --stages 01,02 (default: all); "
                             "the other stages keep their grades")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="grade only this submission (repeatable, or NAME,NAME); "
                             "the others keep their grades")
    parser.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument passed to every pytest run (repeatable)")
    return parser.parse_args(argv)


# ---- the submissions ----------------------------------------------------------

def list_submissions(folder):
    """Sub-folders and .zip files of the submissions folder, by name; hidden entries skipped."""
    entries = []
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if entry.is_dir() or (entry.is_file() and entry.suffix.lower() == ".zip"):
            entries.append(entry)
    return entries


def submission_name(entry):
    return entry.stem if entry.is_file() else entry.name


def choose_submissions(entries, only):
    """The entries named by --only (all when none); an unknown name stops the batch."""
    wanted = {part.strip() for item in only for part in item.split(",") if part.strip()}
    if not wanted:
        return entries
    chosen = [e for e in entries if submission_name(e) in wanted]
    unknown = wanted - {submission_name(e) for e in chosen}
    if unknown:
        raise SystemExit(f"--only: no submission named {', '.join(sorted(unknown))} "
                         f"(names are the folders and .zip files, without .zip)")
    return chosen


# ---- grading one submission -----------------------------------------------------

def grade_submission(entry, stages, report_dir, timeout, pytest_args, sandbox):
    """Grade the chosen stages of one submission; returns its updated record."""
    report_dir.mkdir(parents=True, exist_ok=True)
    record = load_record(report_dir)
    workdir = Path(tempfile.mkdtemp(prefix=f"grade-{submission_name(entry)}-"))
    try:
        # The grading user must reach the programs; they are copies, readable by all.
        os.chmod(workdir, 0o755)
        impl = workdir / "impl"
        intake = take_in_submission(entry, impl)
        record["intake"] = list(intake.notes)
        if sandbox is not None:
            sandbox.check(impl)  # a folder the grading user cannot read would grade as 0
        for stage in stages:
            record["stages"][stage] = grade_stage(impl, intake, stage, report_dir, timeout,
                                                  pytest_args, sandbox)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    save_record(report_dir, record)
    write_results(report_dir, record)
    return record


def grade_stage(impl, intake, stage, report_dir, timeout, pytest_args, sandbox):
    """Run one stage's tests; returns {"points": earned, "notes": [why it earned less]}."""
    json_path = report_dir / f"{stage}.json"
    log_path = report_dir / f"{stage}.log"
    for stale in (json_path, log_path):
        if stale.exists():
            stale.unlink()
    files = stage_test_files(stage)
    if not files:
        return {"points": 0.0, "notes": ["the course has no test file for it yet"]}
    if not intake.copied:
        # Nothing was found at all: the intake note says so; no run could earn a point.
        return {"points": 0.0, "notes": []}
    notes = [] if stage in intake.copied else ["missing"]
    command = pytest_command(impl, json_path, files, extra=pytest_args)
    status, seconds = run_isolated(command, cwd=ROOT, timeout=timeout, log_path=log_path,
                                   sandbox=sandbox)
    results = read_results(json_path)
    earned = stage_points(results).get(stage, 0.0)
    if status is None:
        # The tests that passed before the deadline keep their points; the rest earn 0.
        notes.append(f"timed out after {timeout:g} s: only the tests finished by then count "
                     f"(see {stage}.log)")
        return {"points": earned, "notes": notes}
    if status not in (0, 1):
        notes.append(f"the test run crashed (pytest exit status {status}; 0 points; see {stage}.log)")
        return {"points": 0.0, "notes": notes}
    if results is None:
        notes.append(f"no results were written (0 points; see {stage}.log)")
        return {"points": 0.0, "notes": notes}
    return {"points": earned, "notes": notes}


# ---- what is kept per submission: grades.json, results.json ------------------------

def load_record(report_dir):
    try:
        record = json.loads((report_dir / RECORD).read_text(encoding="utf-8"))
        if isinstance(record.get("stages"), dict):
            record.setdefault("intake", [])
            return record
    except (OSError, ValueError, AttributeError):
        pass
    return {"stages": {}, "intake": []}


def save_record(report_dir, record):
    write_atomically(report_dir / RECORD, json.dumps(record, indent=2))


def record_total(record):
    return sum(float(grade["points"]) for grade in record["stages"].values())


def record_notes(record, stages):
    """Notes for the CSV: the intake's, then each stage's, prefixed with the stage."""
    notes = list(record.get("intake", []))
    for stage in stages:
        grade = record["stages"].get(stage)
        if grade:
            notes += [f"{stage}: {note}" for note in grade["notes"]]
    return notes


def write_results(report_dir, record):
    """One Gradescope-style results.json from every stage graded so far (their NN_name.json)."""
    stages = [s for s in course_stages() if s in record["stages"]]
    stages += sorted(set(record["stages"]) - set(stages))
    tests, seconds = [], 0.0
    for stage in stages:
        results = read_results(report_dir / f"{stage}.json") or {}
        seconds += float(results.get("execution_time") or 0)
        stage_tests = [t for t in results.get("tests", [])
                       if TestResult.from_gradescope(t).stage == stage]
        if record["stages"][stage]["points"] == 0:
            for test in stage_tests:  # a crashed run's points were not kept: say why
                if test.get("score"):
                    test["score"] = 0.0
                    test["output"] = ("Not counted: " + "; ".join(record["stages"][stage]["notes"])
                                      + "\n" + (test.get("output") or ""))
        tests += stage_tests
    lines = [f"{stage:<16}{num(record['stages'][stage]['points']):>6}" for stage in stages]
    lines.append(f"{'total':<16}{num(record_total(record)):>6}")
    lines += [f"note: {note}" for note in record_notes(record, stages)]
    result = {
        "score": record_total(record),
        "execution_time": round(seconds, 1),
        "output": "\n".join(lines),
        "output_format": "text",
        "test_output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "visible",
        "tests": tests,
    }
    write_atomically(report_dir / "results.json", json.dumps(result, indent=2))


def write_atomically(path, text):
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


# ---- the class's CSV: updated in place ------------------------------------------

def read_csv(path):
    """(stage columns, {submission: row dict}) of an existing CSV; empty when there is none."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c for c in (reader.fieldnames or []) if c not in ("submission", "total", "notes")]
            return columns, {row["submission"]: row for row in reader if row.get("submission")}
    except (OSError, KeyError, csv.Error):
        return [], {}


def seed_from_csv(record, row, columns):
    """A submission graded before grades.json existed: its other stages come from the CSV."""
    if record["stages"] or not row:
        return
    notes = [n.strip() for n in (row.get("notes") or "").split(";") if n.strip()]
    for stage in columns:
        cell = (row.get(stage) or "").strip()
        try:
            points = float(cell)
        except ValueError:
            continue
        mine = [n[len(stage) + 1:].strip() for n in notes if n.startswith(f"{stage}:")]
        record["stages"][stage] = {"points": points, "notes": mine}


def write_csv(path, columns, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", *columns, "total", "notes"])
        for name in sorted(rows):
            row = rows[name]
            writer.writerow([name, *(row.get(c, "") for c in columns), row.get("total", ""),
                             row.get("notes", "")])
    temporary.replace(path)


def csv_row(record, columns):
    row = {stage: num(float(record["stages"][stage]["points"]))
           for stage in columns if stage in record["stages"]}
    row["total"] = num(record_total(record))
    row["notes"] = "; ".join(record_notes(record, columns))
    return row


# ---- how long it will take --------------------------------------------------------

def graded_test_count(stage):
    """Graded tests in a stage's files, counted from their @pytest.mark.points lines."""
    return sum(path.read_text(encoding="utf-8").count("mark.points(") for path in stage_test_files(stage))


def estimate(stages, submissions, jobs, timeout):
    """(typical seconds, worst seconds) for the batch: working programs, and hanging ones."""
    typical = sum(TYPICAL_SECONDS.get(s, UNKNOWN_STAGE_SECONDS) for s in stages)
    worst = sum(min(timeout + INTERRUPT_GRACE, graded_test_count(s) * START_DEADLINE + 2) for s in stages)
    waves = -(-submissions // max(1, jobs))  # jobs at a time
    return typical * waves, worst * waves


def duration(seconds):
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {round(seconds % 3600 / 60)} min"


# ---- the batch -------------------------------------------------------------------

def ready_sandboxes(jobs):
    """One sandbox per job slot (None when not root); stops the batch if one cannot run Python."""
    sandboxes = [sandbox_for(slot) for slot in range(jobs)]
    for sandbox in sandboxes:
        if sandbox is not None:
            sandbox.check()
    return sandboxes


def main(argv=None):
    args = parse_args(argv)
    if not args.submissions.is_dir():
        raise SystemExit(f"{args.submissions}: not a folder")
    jobs = max(1, args.jobs)
    stages = select_stages(course_stages(), args.stages)
    everyone = list_submissions(args.submissions)
    if not everyone:
        raise SystemExit(f"{args.submissions}: no submissions in it")
    names = [submission_name(e) for e in everyone]
    if len(set(names)) != len(names):
        raise SystemExit("two submissions have the same name (a folder and a .zip?)")
    entries = choose_submissions(everyone, args.only)
    out_dir = args.out or args.csv.with_name(args.csv.stem + "_results")
    try:
        sandboxes = ready_sandboxes(jobs)
    except SandboxError as error:
        print(f"Nothing was graded.\n{error}", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    typical, worst = estimate(stages, len(entries), jobs, args.timeout)
    who = "submissions run as an unprivileged uid each" if sandboxes[0] else "programs run as you"
    print(f"grading {len(entries)} submission(s), stages {', '.join(stages)}, {jobs} at a time, "
          f"{args.timeout:g} s per stage at most ({who})\n"
          f"estimate: about {duration(typical)} if the programs work; up to {duration(worst)} if "
          f"every server hangs before its start line ({START_DEADLINE} s per test, each stage "
          f"stopped at --timeout)", flush=True)

    old_columns, rows = read_csv(args.csv)
    slots = queue.SimpleQueue()
    for slot in range(jobs):
        slots.put(slot)
    records = {}
    lock = threading.Lock()
    started = time.monotonic()

    def work(entry):
        name = submission_name(entry)
        began = time.monotonic()
        report_dir = out_dir / name
        record = load_record(report_dir)
        seed_from_csv(record, rows.get(name), old_columns)
        slot = slots.get()  # a free job slot: its own grading uid, never shared at once
        try:
            record = grade_and_keep(entry, record, stages, report_dir, args, sandboxes[slot])
        finally:
            slots.put(slot)
        with lock:
            records[name] = record
            cells = "  ".join(f"{stage[:2]}:{num(float(record['stages'][stage]['points']))}"
                              for stage in stages)
            notes = record_notes(record, stages)
            note = f"  ({'; '.join(notes)})" if notes else ""
            print(f"[{len(records)}/{len(entries)}] {name}: {cells}  total {num(record_total(record))}"
                  f"  [{time.monotonic() - began:.0f} s]{note}", flush=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(work, entries))

    # Columns: every stage graded now, before, or kept in a record; in the course's order.
    known = set(old_columns) | set(stages) | {s for r in records.values() for s in r["stages"]}
    columns = [s for s in course_stages() if s in known] + sorted(known - set(course_stages()))
    for name, record in records.items():
        rows[name] = csv_row(record, columns)
    write_csv(args.csv, columns, rows)
    print(f"wrote {args.csv} and {out_dir}{os.sep} in {time.monotonic() - started:.0f} s", flush=True)
    return 0


def grade_and_keep(entry, record, stages, report_dir, args, sandbox):
    """Grade a submission from its record so far; a broken submission never stops the batch."""
    report_dir.mkdir(parents=True, exist_ok=True)
    save_record(report_dir, record)  # the grades seeded from an older CSV, kept before grading
    try:
        return grade_submission(entry, stages, report_dir, args.timeout, args.pytest_arg, sandbox)
    except SandboxError as error:
        note = f"the grading user cannot read this submission's copy: {error}"
    except Exception as error:  # noqa: BLE001 - reported in the CSV, the batch goes on
        note = f"grading failed: {error!r}"
    record = load_record(report_dir)
    for stage in stages:
        record["stages"][stage] = {"points": 0.0, "notes": [note]}
    save_record(report_dir, record)
    write_results(report_dir, record)
    return record


if __name__ == "__main__":
    sys.exit(main())
