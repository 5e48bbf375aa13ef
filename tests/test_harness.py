"""The harness's own promises, checked.

- Its messages, against deliberately broken servers: each broken server is graded
  by a real stage test in a child pytest, and the failure text a student would read
  must say what happened, not something else.
- Its time limit (grader/watchdog.py): a test that hangs fails like any other, and
  the run still ends with its scoreboard, results.json, and no program left running,
  with pytest-timeout's signal method and with its thread method (Windows' only one).
- Its ways of stopping a program and all it started (grader/harness/process.py): the
  launcher (POSIX), and the process-tree way that has no process group, forced here on
  POSIX with THREADED_CHAT_PORTABLE_STOP=1 (the Job Object itself runs on Windows only).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from grader.grading import pytest_command
from grader.harness import system
from grader.harness.process import PORTABLE_VARIABLE, Server
from grader.launch import descendants
from test_course import ROOT

pytestmark = pytest.mark.selfcheck

SKELETON = '''
import argparse, socket, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--host", default="localhost")
parser.add_argument("--port", type=int, default=9801)
args = parser.parse_args()
listener = socket.create_server((args.host, args.port))
print(f"Server started on {args.host}:{listener.getsockname()[1]}", flush=True)
while True:
    connection, _ = listener.accept()
    data = connection.recv(4096)
{handle}
'''

BROKEN_SERVERS = {
    # name: (what it does with the first chunk, the test that grades it, text the student must read)
    "never_answers": (
        "    time.sleep(60)",
        "test_replies_to_a_line_in_upper_case",
        ["alice expected the line 'HELLO, LINES'", "No response within 5.0 s"],
    ),
    "drops_the_newline": (
        "    connection.sendall(data.strip().upper())\n    time.sleep(60)",
        "test_replies_to_a_line_in_upper_case",
        ["received b'HELLO, LINES' but no newline after it", "Every line must end with '\\n'"],
    ),
    "answers_twice": (
        "    while data:\n        connection.sendall(data.upper() * 2)\n        data = connection.recv(4096)",
        "test_several_lines_in_one_packet",
        ["alice expected nothing more, but received b'ONE\\nTWO\\nTHREE\\n'", "a line twice?"],
    ),
    "exits_at_start": (
        None,
        "test_replies_to_a_line_in_upper_case",
        ["The server exited before it printed 'Server started on HOST:PORT'",
         "ZeroDivisionError"],
    ),
    "chunk_as_message": (
        "    connection.sendall(data.upper())\n    while data := connection.recv(4096):\n"
        "        connection.sendall(data.upper())",
        "test_waits_for_the_end_of_the_line",
        ["alice expected nothing more, but received b'NOT FINI'",
         "Keep the bytes in a buffer and reply only when a '\\n' completes a line."],
    ),
}


def write_broken_server(folder, handle):
    stage = folder / "02_lines"
    stage.mkdir(parents=True)
    if handle is None:
        program = "import sys\n1 / 0\n"
    else:
        program = SKELETON.replace("{handle}", handle)
    (stage / "server.py").write_text(textwrap.dedent(program), encoding="utf-8")


@pytest.mark.parametrize("name", sorted(BROKEN_SERVERS))
def test_failure_message_explains_a_broken_server(name, tmp_path):
    """A broken server fails its test with a message that says what went wrong."""
    handle, test_name, expected_texts = BROKEN_SERVERS[name]
    write_broken_server(tmp_path, handle)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_02_lines.py", "-k", test_name,
         "--impl", str(tmp_path), "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert run.returncode == 1, f"the broken server '{name}' passed:\n{run.stdout[-2000:]}"
    for text in expected_texts:
        assert text in run.stdout, f"missing {text!r} in the failure for '{name}':\n{run.stdout[-4000:]}"
    assert "0 / " in run.stdout, "the scoreboard is missing or gave points"


# ---- the time limit of one test (grader/watchdog.py) ----------------------------------------

# A server that accepts one connection and never answers; a child it starts holds the
# connection too (POSIX), so that only stopping both wakes the test. It writes the child's pid.
SILENT_SERVER = """
import argparse, socket, subprocess, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--host"); parser.add_argument("--port", type=int); parser.add_argument("--pids")
args = parser.parse_args()
listener = socket.create_server((args.host, args.port))
print(f"Server started on {args.host}:{listener.getsockname()[1]}", flush=True)
connection, _ = listener.accept()
held = {"pass_fds": [connection.fileno()]} if sys.platform != "win32" else {}
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], **held)
with open(args.pids, "a") as pids:
    pids.write(f"{child.pid}\\n")
time.sleep(600)
"""

# Tests that hang in every way the watchdog meets, in this order (file order is run order).
HANGING_TESTS = """
import signal, socket, sys, threading, time
from pathlib import Path
import pytest
from grader.harness.process import Server

HERE = Path(__file__).parent

def silent_server_and_connection():
    server = Server(HERE / "silent_server.py", ["--pids", str(HERE / "pids.txt")])
    with open(HERE / "pids.txt", "a") as pids:
        pids.write(f"{server.proc.pid}\\n{server.pid}\\n")
    connection = socket.create_connection(server.address)
    connection.sendall(b"hello\\n")
    return connection

@pytest.mark.points(1)
def test_a_passes():
    pass

@pytest.mark.points(1)
@pytest.mark.timeout(2)
def test_b_recv_from_a_silent_server():
    assert silent_server_and_connection().recv(100) == b"HELLO\\n"

@pytest.mark.points(1)
@pytest.mark.timeout(2)
def test_c_busy_loop():
    while True:
        pass

@pytest.mark.points(1)
@pytest.mark.timeout(2)
def test_d_sleep():
    silent_server_and_connection()
    time.sleep(600)

@pytest.mark.points(1)
@pytest.mark.timeout(2)
def test_e_event_wait():
    silent_server_and_connection()
    threading.Event().wait()

@pytest.mark.points(1)
@pytest.mark.timeout(2)
def test_f_deaf_to_signals():
    silent_server_and_connection()
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})
        time.sleep(600)
    threading.Lock().acquire(); threading.Lock().acquire()

@pytest.mark.points(1)
def test_g_after():
    pass
"""

TEACHING = "This test did not finish within 2 s, the grader's time limit for one test"
NOT_RUN = "Not run: the run was stopped after"
# Where the run must end by the last resort (os._exit after the grades are written), on POSIX:
# with the signal method only a test that blocks the signals; with the thread method, as on
# Windows, the first pure-Python wait that a signal raised in another thread cannot wake.
STUCK_AT = {"signal": "test_f_deaf_to_signals", "thread": "test_d_sleep"}


def pids_alive(pid_file):
    pids = [int(line) for line in pid_file.read_text().split()] if pid_file.exists() else []
    return pids, [pid for pid in pids if system.process_exists(pid)]


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_a_hanging_test_fails_and_the_run_still_writes_its_grades(method, tmp_path):
    """With either method of pytest-timeout, hanging tests fail with the watchdog's message, the
    run ends with the scoreboard and a complete results.json, and no program is left running."""
    if method == "signal" and not hasattr(os, "getuid"):
        pytest.skip("pytest-timeout's signal method needs SIGALRM, which Windows does not have")
    (tmp_path / "silent_server.py").write_text(SILENT_SERVER, encoding="utf-8")
    scratch = tmp_path / "test_02_hangs.py"
    scratch.write_text(HANGING_TESTS, encoding="utf-8")
    json_path = tmp_path / "results.json"
    command = pytest_command("solutions", json_path, [scratch], extra=["--timeout-method", method])
    started = time.monotonic()
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180,
                         stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    shown = f"the child run ({took:.0f} s, status {run.returncode}):\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert run.returncode == 1, shown
    assert "+++ Timeout" not in run.stdout + run.stderr, "pytest-timeout's own timer fired: " + shown
    assert "scoreboard" in run.stdout and "total" in run.stdout, "no scoreboard: " + shown
    assert json_path.exists(), "no results.json: " + shown
    results = {entry["extra_data"]["test"]: entry for entry in json.loads(json_path.read_text())["tests"]}
    names = [line.split("def ", 1)[1].split("(")[0] for line in HANGING_TESTS.splitlines() if line.startswith("def test_")]
    assert sorted(results) == sorted(names), f"results.json lists {sorted(results)}: " + shown
    assert results["test_a_passes"]["status"] == "passed", shown
    for name in ("test_b_recv_from_a_silent_server", "test_c_busy_loop"):
        assert results[name]["status"] == "failed" and TEACHING in results[name]["output"], \
            f"{name}: {results[name]['output']}\n" + shown
    stuck = next((name for name in names if "could not be interrupted" in results[name]["output"]), None)
    if sys.platform != "win32":
        assert stuck == STUCK_AT[method], f"the run ended at {stuck}, not {STUCK_AT[method]}: " + shown
    if stuck is not None:
        for name in names[names.index(stuck) + 1:]:
            assert results[name]["status"] == "failed" and NOT_RUN in results[name]["output"], shown
        # It ended no sooner than the last resort allows, and not much later.
        assert took < 60, shown
    pids, alive = pids_alive(tmp_path / "pids.txt")
    # At least test b's server and the stuck test's: each a launcher (POSIX), a program, a child.
    assert len(pids) >= 6, f"the silent servers wrote {pids}: " + shown
    assert not alive, f"left running after the run: {alive} of {pids}\n" + shown


# ---- stopping a program and everything it started (grader/harness/process.py) ------------------

@pytest.mark.parametrize("how", ["launcher", "tree"])
def test_a_server_and_its_child_are_stopped(how, tmp_path, monkeypatch):
    """The launcher (POSIX), and the process-tree way with no process group (forced), both stop a
    server and the child process it started, which holds the server's connection too."""
    if sys.platform == "win32":
        pytest.skip("POSIX's ways; on Windows the Job Object stops the program and all it started")
    if how == "tree":
        monkeypatch.setenv(PORTABLE_VARIABLE, "1")
    else:
        monkeypatch.delenv(PORTABLE_VARIABLE, raising=False)
    (tmp_path / "silent_server.py").write_text(SILENT_SERVER, encoding="utf-8")
    pid_file = tmp_path / "pids.txt"
    server = Server(tmp_path / "silent_server.py", ["--pids", str(pid_file)])
    try:
        assert server.how == how
        connection = socket.create_connection(server.address)
        deadline = time.monotonic() + 15
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text().split()[0])
        assert child in descendants(server.proc.pid), "the server's child is not below the process Popen started"
        if how == "tree":  # no launcher: the program runs in the process Popen started, in our group
            assert server.pid == server.proc.pid and os.getpgid(server.pid) == os.getpgid(0)
        connection.settimeout(10)
        started = time.monotonic()
        server.stop()
        stopped_in = time.monotonic() - started
        # The connection ends only when the child, which holds it too, is gone.
        assert connection.recv(100) == b"", "the connection is still open: the child lives"
    finally:
        server.stop()
    alive = [pid for pid in (server.proc.pid, server.pid, child) if system.process_exists(pid)]
    assert not alive, f"still running after stop(): {alive}"
    assert stopped_in < 5, f"stop() took {stopped_in:.1f} s"


def test_ctrl_c_and_the_client_through_the_portable_path(tmp_path):
    """With THREADED_CHAT_PORTABLE_STOP=1 programs run through launch.py --in-process (as on
    Windows), Ctrl+C arrives as a stand-in break signal: stage 08's Ctrl+C test and stage 07's
    client tests (standard input, os._exit, encodings) pass the reference solutions."""
    if sys.platform == "win32":
        pytest.skip("this is Windows' own path: the graded tests run through it")
    json_path = tmp_path / "results.json"
    command = pytest_command("solutions", json_path,
                             [ROOT / "tests" / "test_07_client.py", ROOT / "tests" / "test_08_robust.py"],
                             extra=["-k", "test_07 or ctrl_c"])
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL, env=dict(os.environ, **{PORTABLE_VARIABLE: "1"}))
    results = json.loads(json_path.read_text())["tests"] if json_path.exists() else []
    failed = [entry["name"] for entry in results if entry.get("status") != "passed"]
    assert run.returncode == 0 and results and not failed, f"{failed}\n{run.stdout[-4000:]}"
    assert any("ctrl_c" in entry["name"] for entry in results), run.stdout[-2000:]
