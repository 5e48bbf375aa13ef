"""Grade a whole class: every submission in a folder, one CSV row each.

    python tests/grade_all.py SUBMISSIONS_DIR --csv grades.csv
    python tests/grade_all.py SUBMISSIONS_DIR --csv grades.csv -j 2 --out results/ --stages 01,02

SUBMISSIONS_DIR holds one entry per student: a folder laid out like stages/ (or a copy
of the whole repository, or a .zip of either). Each submission is copied to a temporary
folder of its own, and each of its stages is graded by a pytest process of its own, in
its own process group, under a time limit (--timeout, per stage); everything it started
is killed when it ends. A stage that hangs, crashes the run or is missing earns 0, and
the batch goes on.

The CSV has the columns: submission, one per course stage (the folders of solutions/),
total, notes. Each submission's Gradescope-style results.json and pytest's output are
kept in --out DIR/<submission>/.
"""

import argparse
import concurrent.futures
import csv
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grading_tools import (ROOT, course_stages, copy_submission, find_layout, num,  # noqa: E402
                           read_results, run_isolated, select_stages, stage_points,
                           stage_test_files)

DEFAULT_TIMEOUT = 300  # seconds per stage; the reference solution's slowest stage takes < 60


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Grade every submission in a folder.")
    parser.add_argument("submissions", type=Path, help="folder with one submission per student")
    parser.add_argument("--csv", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for each submission's results.json and pytest log "
                             "(default: next to the CSV, named after it: grades_results/)")
    parser.add_argument("-j", "--jobs", type=int, default=1,
                        help="submissions graded at once (default 1; keep it at most half "
                             "your CPU cores, so timing-sensitive tests keep their margin)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds allowed for one stage of one submission (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--stages", action="append", default=[],
                        help="grade only these stages, e.g. --stages 01,02 (default: all)")
    parser.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument passed to every pytest run (repeatable)")
    return parser.parse_args(argv)


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


def grade_submission(entry, stages, out_dir, timeout, pytest_args):
    """Grade one submission, stage by stage. Returns {stage: points}, total, notes."""
    name = submission_name(entry)
    report_dir = out_dir / name
    report_dir.mkdir(parents=True, exist_ok=True)
    points = {stage: 0.0 for stage in stages}
    notes = []
    merged = {"tests": [], "execution_time": 0.0}
    workdir = Path(tempfile.mkdtemp(prefix=f"grade-{name}-"))
    try:
        copy_submission(entry, workdir / "submission")
        layout = find_layout(workdir / "submission")
        if layout is None:
            notes.append("no stage folders found (expected NN_name/ folders, or stages/NN_name/)")
            layout = workdir / "submission"
            layout.mkdir(exist_ok=True)
        for stage in stages:
            files = stage_test_files(stage)
            if not files:
                notes.append(f"{stage}: the course has no test file for it yet")
                continue
            if not (layout / stage).is_dir():
                notes.append(f"{stage}: missing")
            earned, note, results = grade_stage(layout, stage, files, report_dir, timeout, pytest_args)
            points[stage] = earned
            if note:
                notes.append(f"{stage}: {note}")
            if results:
                merged["tests"].extend(results.get("tests", []))
                merged["execution_time"] += float(results.get("execution_time") or 0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_merged(report_dir / "results.json", merged, points, notes)
    return points, sum(points.values()), notes


def grade_stage(layout, stage, files, report_dir, timeout, pytest_args):
    """Run one stage's tests on the copy; returns (points, note or '', results dict or None)."""
    json_path = report_dir / f"{stage}.json"
    if json_path.exists():
        json_path.unlink()
    command = [sys.executable, "-m", "pytest", "--impl", str(layout), "--grade-json", str(json_path),
               "-p", "no:cacheprovider", "-q", "--color=no", *pytest_args, *map(str, files)]
    status, seconds = run_isolated(command, cwd=ROOT, timeout=timeout,
                                   log_path=report_dir / f"{stage}.log")
    results = read_results(json_path)
    if status is None:
        return 0.0, f"timed out after {timeout:g} s (0 points)", results
    if status not in (0, 1):
        return 0.0, f"the test run crashed (pytest exit status {status}; see {stage}.log)", results
    if results is None:
        return 0.0, f"no results were written (see {stage}.log)", None
    earned = stage_points(results).get(stage, [0.0, 0.0])[0]
    return earned, "", results


def write_merged(path, merged, points, notes):
    """One Gradescope-style results.json for the whole submission."""
    lines = [f"{stage:<16}{num(value):>6}" for stage, value in points.items()]
    lines.append(f"{'total':<16}{num(sum(points.values())):>6}")
    lines += [f"note: {note}" for note in notes]
    result = {
        "score": sum(points.values()),
        "execution_time": round(merged["execution_time"], 1),
        "output": "\n".join(lines),
        "visibility": "visible",
        "stdout_visibility": "visible",
        "tests": merged["tests"],
    }
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")


def main(argv=None):
    args = parse_args(argv)
    if not args.submissions.is_dir():
        raise SystemExit(f"{args.submissions}: not a folder")
    stages = select_stages(course_stages(), args.stages)
    entries = list_submissions(args.submissions)
    if not entries:
        raise SystemExit(f"{args.submissions}: no submissions in it")
    names = [submission_name(e) for e in entries]
    if len(set(names)) != len(names):
        raise SystemExit("two submissions have the same name (a folder and a .zip?)")
    out_dir = args.out or args.csv.with_name(args.csv.stem + "_results")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"grading {len(entries)} submission(s), stages {', '.join(stages)}, "
          f"{args.jobs} at a time, {args.timeout:g} s per stage", flush=True)

    rows = {}
    done = [0]
    lock = threading.Lock()
    started = time.monotonic()

    def work(entry):
        began = time.monotonic()
        try:
            points, total, notes = grade_submission(entry, stages, out_dir, args.timeout, args.pytest_arg)
        except Exception as error:  # a broken submission never stops the batch
            points, total, notes = {s: 0.0 for s in stages}, 0.0, [f"grading failed: {error!r}"]
        name = submission_name(entry)
        with lock:
            rows[name] = (points, total, notes)
            done[0] += 1
            cells = "  ".join(f"{stage[:2]}:{num(points[stage])}" for stage in stages)
            note = f"  ({'; '.join(notes)})" if notes else ""
            print(f"[{done[0]}/{len(entries)}] {name}: {cells}  total {num(total)}"
                  f"  [{time.monotonic() - began:.0f} s]{note}", flush=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(work, entries))

    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", *stages, "total", "notes"])
        for name in names:
            points, total, notes = rows[name]
            writer.writerow([name, *(num(points[s]) for s in stages), num(total), "; ".join(notes)])
    print(f"wrote {args.csv} and {out_dir}{os.sep} in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
