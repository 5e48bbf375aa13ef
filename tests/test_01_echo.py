"""Stage 01_echo: an echo server, one client at a time (docs/PROTOCOL.md)."""

import random
import socket
import threading
import sys
import time

import pytest

from grader.harness.client import fail
from grader.harness.ports import port_turn
from grader.harness.process import START_DEADLINE, STARTED_LINE, Program, not_done_hint

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 9801  # docs/PROTOCOL.md, S1

ONE_MB = 1024 * 1024
CTRL_C_LIMIT = 5.0  # seconds
if sys.platform == "win32":
    CTRL_C_CAUSE = ("accept() waits without a timeout. On Windows, Ctrl+C does not interrupt a\n"
                    "  blocked accept() (CPython issue #85609): give the listening socket a timeout\n"
                    "  (settimeout) so that accept() returns now and then and Ctrl+C is seen.")
else:
    CTRL_C_CAUSE = ("Ctrl+C raises KeyboardInterrupt in the main thread, wherever it waits. Is it\n"
                    "  swallowed (a bare `except:`, or `except BaseException`) and the loop goes on?")


def send_in_background(client, data):
    """Send while the test reads: the echo comes back as we send, and a client
    that only reads after sending everything could fill both directions' buffers."""
    sender = threading.Thread(target=client.sock.sendall, args=(data,), daemon=True)
    sender.start()
    return sender


@pytest.mark.points(2)
def test_echoes_a_line(server, connect):
    """A line sent comes back unchanged."""
    alice = connect("alice")
    alice.send(b"hello, echo\n")
    alice.expect_bytes(b"hello, echo\n")


@pytest.mark.points(3)
def test_echoes_one_megabyte_of_binary_data_intact(server, connect):
    """1 MB of binary data (every byte value) comes back intact and in order."""
    alice = connect("alice")
    data = bytes(range(256)) + random.Random(1).randbytes(ONE_MB - 256)
    sender = send_in_background(alice, data)
    alice.story.add("alice", f"is sending {len(data)} bytes of binary data (every byte value)")
    alice.expect_bytes(data, timeout=15, cause=(
        "Echo the bytes exactly as received: don't decode them as text (binary data is not UTF-8), "
        "don't add or drop anything, and send every byte (sendall, not send)."))
    sender.join(5)


@pytest.mark.points(2)
def test_echoes_many_small_sends(server, connect):
    """Two hundred small sends come back, all of them, in order."""
    alice = connect("alice")
    pieces = [f"piece {i};".encode() for i in range(200)]
    for piece in pieces:
        alice.sock.sendall(piece)
    alice.story.add("alice", f"sent {len(pieces)} small pieces, one send() each")
    alice.expect_bytes(b"".join(pieces), timeout=5)


@pytest.mark.points(2)
def test_closes_the_connection_when_the_client_closes(server, connect):
    """When the client closes its side, the echo ends and the server closes too."""
    alice = connect("alice")
    alice.send(b"last words")
    alice.half_close()
    alice.expect_bytes(b"last words")
    alice.expect_closed(cause=(
        "recv() returns b'' when the client has closed its side. Stop the loop then and close "
        "the connection; a loop that keeps calling recv() spins forever."))


@pytest.mark.points(3)
def test_serves_the_next_client_after_one_closes(server, connect):
    """A second client waits its turn and is served once the first closes."""
    alice = connect("alice")
    alice.send(b"alice first\n")
    alice.expect_bytes(b"alice first\n")
    bob = connect("bob")  # waits in the listen queue while alice is served
    bob.send(b"bob next\n")
    alice.close()
    bob.expect_bytes(b"bob next\n", timeout=3, cause=(
        "After one client closes, go back to accept() for the next: accept in a loop."))


@pytest.mark.points(1)
def test_survives_a_client_that_resets(server, connect):
    """A client that aborts (RST) does not stop the server."""
    alice = connect("alice")
    alice.send(b"about to vanish")
    alice.expect_bytes(b"about to vanish")
    alice.reset()
    bob = connect("bob")
    bob.send(b"still there?\n")
    bob.expect_bytes(b"still there?\n", timeout=3, cause=(
        "A reset connection makes recv() or send() raise ConnectionResetError. Catch it, close "
        "that connection and serve the next client."))


@pytest.mark.points(1)
def test_ctrl_c_stops_the_waiting_server(server, story):
    """Ctrl+C (SIGINT) stops the server within a few seconds while it waits for a client."""
    # Past one accept timeout (0.5 s in the starter), the server is surely waiting in accept().
    time.sleep(0.6)
    server.interrupt()
    story.add("the test", "pressed Ctrl+C (sent SIGINT to the server) while no client was connected")
    # A correct server exits within one accept timeout (0.5 s); the limit leaves room for a
    # loaded grading machine. (tests/test_portable.py holds the reference servers to 1 s.)
    if server.wait_exit(CTRL_C_LIMIT) is None:
        fail(f"The server was still running {CTRL_C_LIMIT:g} s after Ctrl+C (SIGINT), while it waited "
             f"for a client.\n"
             f"Likely cause: {CTRL_C_CAUSE}\nWhat the test did:\n{story.render()}\n\n{server.report()}")
    server.assert_no_traceback("Ctrl+C")


@pytest.mark.points(1)
def test_default_address_is_127_0_0_1_port_9801(stage_dir, story):
    """Started with no --host and no --port, the server listens on 127.0.0.1:9801."""
    # Grading runs side by side take turns at the default port (grader/harness/ports.py).
    with port_turn(DEFAULT_PORT):
        # Every other test passes --host and --port; this one needs the default port free.
        try:
            socket.create_server((DEFAULT_HOST, DEFAULT_PORT)).close()
        except OSError as error:
            pytest.skip(f"port {DEFAULT_PORT} is in use on this machine ({error}), so the default "
                        f"address cannot be checked (a server of yours still running?)")
        server = Program(stage_dir / "server.py", [], label="server")
        story.add("the test", "started: python server.py   (no --host, no --port)")
        try:
            lines = server.wait_for(server.stdout_lines, START_DEADLINE)
            if not lines and "Address already in use" in server.stderr:
                pytest.skip(f"port {DEFAULT_PORT} was taken by another program as the test started it")
            match = STARTED_LINE.match(lines[0]) if lines else None
            if match is None:
                fail(f"Started with no options, the server's first line should be "
                     f"'Server started on {DEFAULT_HOST}:{DEFAULT_PORT}'.\n{server.report()}\n"
                     f"{not_done_hint(server.stderr)}")
            address = (match.group("host"), int(match.group("port")))
            if address != (DEFAULT_HOST, DEFAULT_PORT):
                fail(f"Started with no options, the server printed {lines[0]!r}: it listens on "
                     f"{address[0]}:{address[1]}, where {DEFAULT_HOST}:{DEFAULT_PORT} was due.\n"
                     f"Likely cause: the defaults of --host and --port. --host defaults to 127.0.0.1 (only "
                     f"this machine may connect; 'localhost' can cost a second per connection where it "
                     f"means IPv6 first), --port to 9801.\n{server.report()}")
            received = b""
            try:
                with socket.create_connection(address, timeout=5) as client:
                    client.sendall(b"default address\n")
                    client.shutdown(socket.SHUT_WR)
                    while chunk := client.recv(4096):
                        received += chunk
            except OSError as error:
                received += f" (then {error!r})".encode()
            if received != b"default address\n":
                fail(f"The server said it listens on {DEFAULT_HOST}:{DEFAULT_PORT}; a client there sent "
                     f"b'default address\\n' and received {received!r}.\n{server.report()}")
        finally:
            server.stop()
