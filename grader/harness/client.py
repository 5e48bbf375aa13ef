"""A test client that talks to the student's server and explains what went wrong.

Every client of a test shares one Story: the steps the test took, in order.
When an expectation fails, the message names the client, replays the story,
shows the expected line against what arrived (with repr(), so spaces, \\r and
missing newlines are visible), and suggests a likely cause.
"""

import socket
import struct
import time

import pytest

from .process import tail

# Seconds to wait for a reply that should come at once. A correct server answers
# in milliseconds, so only a wrong one ever waits this long; the margin is for a
# grading machine that is busy (measured: 2 s was missed under 3x overload).
DEFAULT_WAIT = 5.0
POLL = 0.05         # how often a waiting client checks that the server is alive
# A connect() can wait for the server's listen queue: when many clients connect at once
# to a server with a short queue (socketserver's is 5), the system drops a connection
# request and retries it after 1, then 2, then 4 s. A correct server never needs more.
CONNECT_WAIT = 15.0


class Story:
    """The steps a test took, replayed in failure messages."""

    def __init__(self):
        self.steps = []
        self.server = None  # set by the fixture that starts the server

    def add(self, who, what):
        self.steps.append(f"{who} {what}")

    def render(self, last=30):
        shown = self.steps[-last:]
        skipped = len(self.steps) - len(shown)
        lines = [f"    ... {skipped} earlier steps"] if skipped else []
        first = skipped + 1
        lines += [f"   {first + i:3}. {step}" for i, step in enumerate(shown)]
        return "\n".join(lines) or "    (no steps)"


def fail(message):
    """Fail the current test with a message written for students (no traceback)."""
    pytest.fail(message, pytrace=False)


def show(data, limit=120):
    """repr() of bytes or text, shortened in the middle when long."""
    text = repr(data)
    if len(text) > limit:
        size = len(data)
        text = f"{text[:limit // 2]} ... {text[-limit // 3:]} ({size} {'bytes' if isinstance(data, bytes) else 'characters'})"
    return text


def likely_cause(expected, got):
    """A guess at why the line `got` arrived where `expected` was due."""
    if got == expected.upper() and got != expected:
        return None
    if got.rstrip("\r") == expected and got.endswith("\r"):
        return "The line ends with '\\r': drop a trailing '\\r' before using the line."
    if got and expected.startswith(got):
        return ("Only the start of the line arrived before its newline. Is one message being split,\n"
                "  for example by treating each recv() as one complete message?")
    if expected and expected in got and got != expected:
        return ("The expected line arrived glued to other text: two messages were joined.\n"
                "  Are you treating one recv() as one message instead of splitting on '\\n'?")
    if got.endswith("joined the chat room!") and expected.endswith("joined the chat room!"):
        return ("The name in the join line is wrong. The username is the first *line* the client\n"
                "  sends; the bytes after its '\\n' are already the first message.")
    return None


class Client:
    """One TCP connection to the server under test, named for failure messages."""

    def __init__(self, name, address, story, server=None, rcvbuf=None, connect=True):
        self.name = name
        self.address = address
        self.story = story
        self.server = server if server is not None else story.server
        self.sock = None
        self.buffer = bytearray()   # received, not yet returned as a line
        self.received = bytearray()  # everything ever received
        self.lines = []             # every line returned so far
        self.closed_by_server = False
        self.rcvbuf = rcvbuf
        if connect:
            self.connect()

    # ---- connecting and sending ----------------------------------------

    def connect(self, timeout=CONNECT_WAIT):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:
            # Must be set before connect(): the window is agreed on at connect time.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.settimeout(timeout)
        try:
            sock.connect(self.address)
            error = None
        except OSError as caught:
            error = caught
        if error is not None:  # failed outside the except block: no chained traceback
            sock.close()
            if self.server is not None:
                self.server.settle(0.3)  # a server that is dying: let its last words arrive
            timed_out = isinstance(error, (socket.timeout, TimeoutError))
            where = f"{self.name} could not connect to {self.address[0]}:{self.address[1]}"
            if self.server is not None and self.server.exited():
                # Refused or reset, depending on when it died: say what matters.
                self.fail(f"{where}: the server is not running any more ({error}).",
                          "The server stopped (its standard error below): did an exception in one "
                          "client's handling end the whole server? Catch it where it happens.")
            self.fail(f"{where}: {'no answer within ' + str(timeout) + ' s' if timed_out else error}",
                      "The server is not accepting connections: is accept() called again for each "
                      "new client?" if timed_out else None)
        sock.settimeout(None)
        self.sock = sock
        self.story.add(self.name, "connected")
        return self

    def send(self, data, note=None):
        """Send bytes exactly as given (they may arrive split or joined)."""
        try:
            self.sock.sendall(data)
            error = None
        except OSError as caught:
            error = caught
        if error is not None:  # failed outside the except block: no chained traceback
            self.fail(f"{self.name} could not send {show(data)}: {error}",
                       "The server has closed or reset this connection.")
        self.story.add(self.name, note or f"sent {show(data)}")

    def send_line(self, text):
        self.send((text + "\n").encode("utf-8"), note=f"sent the line {text!r}")

    def send_slowly(self, data, pause=0.02):
        """Send one byte at a time, pausing, so each byte travels on its own."""
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        note = f"sent {show(data)} one byte at a time"
        for i in range(len(data)):
            self.send(data[i:i + 1], note=f"sent byte {i + 1} of {len(data)}: {show(data[i:i + 1])}")
            self.story.steps.pop()  # one step for the whole send, below
            time.sleep(pause)
        self.story.add(self.name, note)

    def half_close(self):
        """Say 'no more data' (FIN) but keep reading: shutdown(SHUT_WR)."""
        self.sock.shutdown(socket.SHUT_WR)
        self.story.add(self.name, "closed its sending side (shutdown SHUT_WR)")

    def close(self, note=None):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
            self.story.add(self.name, note or "closed the connection")

    def reset(self):
        """Abort the connection: close with SO_LINGER 0 sends RST instead of FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close(note="reset the connection (RST, no goodbye)")

    # ---- receiving -------------------------------------------------------

    def receive_some(self, until):
        """Receive whatever arrives before the monotonic time `until`.

        Returns False when the deadline passed with nothing new. Checks that the
        server is alive while waiting, so a crashed server fails the test at once.
        """
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(min(remaining, POLL))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                chunk = None
            except (ConnectionResetError, ConnectionAbortedError):
                chunk = b""
            if chunk is None:
                # Outside the except block, so that a failure here reads as itself and
                # not as "during handling of the above exception" (the timeout).
                self.check_server()
                continue
            if not chunk:
                self.closed_by_server = True
                return False
            self.buffer.extend(chunk)
            self.received.extend(chunk)
            return True

    def check_server(self):
        server = self.server
        if server is None:
            return
        if server.exited():
            self.fail(f"The server stopped while {self.name} was waiting for a reply.")
        if "NotImplementedError" in server.stderr:
            self.fail("The server raised NotImplementedError: this part is not done yet.")

    def receive_bytes(self, count, timeout=DEFAULT_WAIT):
        """Return up to `count` bytes: fewer only if the deadline passed or the server closed."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < count:
            if self.closed_by_server or not self.receive_some(deadline):
                break
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        self.story.add(self.name, f"received {len(data)} bytes")
        return data

    def expect_bytes(self, expected, timeout=DEFAULT_WAIT, cause=None):
        """The next bytes must be exactly `expected` (binary-safe; shows where they differ)."""
        got = self.receive_bytes(len(expected), timeout)
        if got == expected:
            return got
        same = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        if len(got) < len(expected) and same == len(got):
            ending = "the server closed the connection" if self.closed_by_server else f"nothing more came within {timeout} s"
            head = (f"{self.name} expected {len(expected)} bytes back but received only {len(got)};\n"
                    f"then {ending}. The bytes that did arrive were right.")
        else:
            head = (f"{self.name} expected {len(expected)} bytes; they differ from byte {same} on.\n"
                    f"  expected: {show(expected[same:same + 40])}\n"
                    f"  received: {show(got[same:same + 40])}")
        self.fail(head, cause)

    def read_line(self, timeout=DEFAULT_WAIT):
        """Return the next line as text (without its '\\n'), or None if none came in time.

        None also when the server closed the connection (see closed_by_server).
        """
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.closed_by_server or not self.receive_some(deadline):
                return None
        raw, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        line = raw.decode("utf-8", "backslashreplace")
        self.lines.append(line)
        self.story.add(self.name, f"received the line {line!r}")
        return line

    def expect_line(self, expected, timeout=DEFAULT_WAIT, cause=None):
        """The next line must be `expected`."""
        got = self.read_line(timeout)
        if got == expected:
            return got
        if got is None:
            self.fail_missing(f"the line {expected!r}", timeout, cause)
        cause = cause or likely_cause(expected, got)
        self.fail(f"{self.name} expected the line {show(expected)}\n"
                   f"{self.name} received the line {show(got)}",
                   cause)

    def expect_lines(self, expected, timeout=DEFAULT_WAIT, cause=None, ordered=True):
        """The next len(expected) lines must be these (in this order, unless ordered=False).

        The deadline covers all of them, so a slow but correct server passes.
        """
        expected = list(expected)
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < len(expected):
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                missing = _missing(expected, got, ordered)
                self.fail_missing(f"{len(expected)} lines; {len(got)} arrived, still missing "
                                   f"{show(missing, 200)}", timeout, cause)
            got.append(line)
            if ordered and line != expected[len(got) - 1]:
                want = expected[len(got) - 1]
                self.fail(f"{self.name} expected line {len(got)} of {len(expected)} to be {show(want)}\n"
                           f"{self.name} received {show(line)}",
                           cause or likely_cause(want, line) or _order_hint(expected, line))
        if not ordered and sorted(got) != sorted(expected):
            self.fail(f"{self.name} expected these lines, in any order: {show(sorted(expected), 300)}\n"
                       f"{self.name} received: {show(got, 300)}",
                       cause or "A line is missing, extra, or changed.")
        return got

    def collect_until(self, predicate, count, timeout, what):
        """Read lines until `count` lines satisfying predicate have arrived; return all read.

        For many messages from many senders: waits for the whole expected set with
        one generous deadline, never stopping at a quiet gap.
        """
        got = []
        matching = 0
        deadline = time.monotonic() + timeout
        while matching < count:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                return got
            got.append(line)
            if predicate(line):
                matching += 1
        return got

    def expect_no_more(self, window=0.3, cause=None):
        """Nothing more may arrive within `window` seconds (use after a sync point)."""
        if self.buffer:
            self._fail_extra(bytes(self.buffer), cause)
        self.receive_some(time.monotonic() + window)
        if self.closed_by_server:
            self.fail(f"{self.name} expected the connection to stay open, "
                       f"but the server closed it.", "Did the server crash in this client's thread?")
        if self.buffer:
            # Give the rest of the unexpected data a moment, to show it whole.
            self.receive_some(time.monotonic() + 0.05)
            self._fail_extra(bytes(self.buffer), cause)
        self.story.add(self.name, f"received nothing more (waited {window} s)")

    def expect_closed(self, timeout=DEFAULT_WAIT, cause=None):
        """The server must close this connection (any unread lines are ignored)."""
        deadline = time.monotonic() + timeout
        while not self.closed_by_server:
            self.buffer.clear()
            if not self.receive_some(deadline) and not self.closed_by_server:
                self.fail(f"{self.name} expected the server to close the connection within {timeout} s,\n"
                           f"but it stayed open.", cause)
        self.story.add(self.name, "saw the server close the connection")

    # ---- failure messages -------------------------------------------------

    def fail_missing(self, what, timeout, cause):
        partial = bytes(self.buffer)
        if self.closed_by_server:
            head = f"{self.name} expected {what}, but the server closed the connection."
            cause = cause or "The server closed this client's connection. Did it crash in that client's thread?"
        elif partial:
            head = (f"{self.name} expected {what}.\n"
                    f"{self.name} received {show(partial)} but no newline after it within {timeout} s.")
            cause = cause or "Every line must end with '\\n'; the receiver waits for it."
        else:
            head = f"{self.name} expected {what}.\nNo response within {timeout} s."
        self.fail(head, cause)

    def _fail_extra(self, data, cause):
        self.fail(f"{self.name} expected nothing more, but received {show(data, 200)}",
                   cause or "The server sent something it should not have: an extra line, or a line twice?")

    def fail(self, head, cause=None):
        server = self.server
        if server is not None:
            server.settle(0.3 if self.closed_by_server else 0.0)
        if server is not None and "NotImplementedError" in server.stderr:
            cause = "This part of the stage is not done yet: the server raised NotImplementedError (below)."
        parts = [head]
        if cause:
            parts.append(f"Likely cause: {cause}")
        parts.append("What the test did:\n" + self.story.render())
        if server is not None:
            parts.append(f"{server.describe_exit()} Its standard error:\n{tail(server.stderr)}")
        fail("\n\n".join(parts))


def _missing(expected, got, ordered):
    if ordered:
        return expected[len(got):]
    remaining = list(expected)
    for line in got:
        if line in remaining:
            remaining.remove(line)
    return remaining


def _order_hint(expected, line):
    if line in expected:
        return "The right line arrived out of order: lines from one sender must arrive in the order sent."
    return None
