"""The harness's own messages, checked against deliberately broken servers.

Each broken server is graded by a real stage test in a child pytest, and the
failure text a student would read must say what happened, not something else.
"""

import subprocess
import sys
import textwrap

import pytest

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
