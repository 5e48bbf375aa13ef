"""Helpers for the chat stages (04, 05, 06, 08): joining, the protocol's lines,
chat-aware failure hints, and running clients in threads for race tests.

    alice = join(connect, "alice")
    bob = join(connect, "bob", room=[alice])     # waits until alice saw bob join
    bob.send_line("hi")
    expect_chat_line(alice, said("bob", "hi"))
"""

import socket
import struct
import threading
import time

from .client import show
from .process import fail

# A correct server answers within milliseconds, but under scheduling noise one
# can pause for over a second: waits for lines that must come are generous.
CHAT_WAIT = 5.0


def joined(name):
    return f"{name} joined the chat room!"


def exited(name):
    return f"{name} exited the chat room"


def said(name, text):
    return f"{name}: {text}"


NAME_FROM_FIRST_RECV = (
    "The username is the first *line* the client sends. Here the name and the first message\n"
    "  arrived in one recv(), and both were taken as the name. Split on '\\n' first: the bytes\n"
    "  after the name's '\\n' are already the first message.")
RECV_IS_NOT_A_MESSAGE = (
    "One recv() is not one message: TCP delivers a stream of bytes, split and joined as it\n"
    "  pleases. Keep the bytes in a buffer and forward a message only when its '\\n' has arrived.")
DECODE_WHOLE_LINES = (
    "A multi-byte character (here UTF-8) can be split between two recv() calls; decoding each\n"
    "  chunk on its own fails on the half character. Split the bytes on b'\\n' first, then\n"
    "  decode each whole line.")


def chat_cause(expected, got):
    """A guess, from the chat protocol, at why `got` arrived where `expected` was due."""
    if got is None:
        return None
    if expected.endswith(" joined the chat room!"):
        name = expected[: -len(" joined the chat room!")]
        if got.endswith(" joined the chat room!") and got.startswith(name) and got != expected:
            return NAME_FROM_FIRST_RECV
        if got == name:
            return NAME_FROM_FIRST_RECV + "\n  (The name arrived on a line of its own, glued to the next line.)"
    if ": " in expected and ": " in got:
        want_name, _, want_text = expected.partition(": ")
        got_name, _, got_text = got.partition(": ")
        if want_name == got_name and got_text and got_text != want_text:
            if want_text.startswith(got_text):
                return ("Only the start of the message was forwarded. " + RECV_IS_NOT_A_MESSAGE)
            if want_text in got_text:
                return ("Two messages were forwarded as one. " + RECV_IS_NOT_A_MESSAGE)
            if got_text.rstrip("\r") == want_text:
                return "The message still ends with '\\r': drop a trailing '\\r' from each line."
    if expected.endswith(" joined the chat room!") and got.endswith(" joined the chat room!"):
        return ("Another client's join line arrived here. Join lines go to the clients in the chat\n"
                "  when the joiner is added, each exactly once; is broadcast() looping over a list\n"
                "  that other threads change meanwhile?")
    if got.strip() != got and got.strip() == expected:
        return "The line has extra spaces or '\\r' around it."
    if expected.endswith(" exited the chat room") and got.endswith(" exited the chat room"):
        return "The wrong client was announced as leaving."
    return None


def expect_chat_line(client, expected, timeout=CHAT_WAIT, hint=None):
    """The next line this client receives must be `expected` (with chat-aware hints)."""
    got = client.read_line(timeout)
    if got == expected:
        return got
    if got is None:
        client._fail_missing(f"the line {expected!r}", timeout, hint)
    client._fail(f"{client.name} expected the line {show(expected)}\n"
                 f"{client.name} received the line {show(got)}",
                 hint or chat_cause(expected, got) or _generic_cause(expected, got))


def _generic_cause(expected, got):
    from .client import likely_cause
    return likely_cause(expected, got)


def expect_chat_lines(client, expected, timeout=CHAT_WAIT, hint=None):
    """The next lines must be exactly these, in this order; one deadline for all."""
    deadline = time.monotonic() + timeout
    for line in expected:
        expect_chat_line(client, line, max(0.0, deadline - time.monotonic()), hint)


def join(connect, name, room=None, server=None, timeout=CHAT_WAIT, hint=None):
    """Connect a client and send its username; return it once the server surely knows it.

    With `room` (the clients already in the chat): waits until each of them has
    seen NAME join. Then the server knows NAME, and NAME's messages reach them.

    Without `room` (the first client): nobody can see it join, so a silent helper
    client, "witness", joins alongside it first (see confirm_first); the witness
    stays in the chat, never read, until the test ends.
    """
    if not room:
        return confirm_first(connect, name, server, timeout)
    client = connect(name, server)
    client.send_line(name)
    for other in room:
        expect_chat_line(other, joined(name), timeout, hint)
    return client


def confirm_first(connect, name, server=None, timeout=CHAT_WAIT):
    """Join the first client, and wait until the server has surely added it to the chat.

    The first client sees nobody join, so we cannot watch for its own join. A
    helper, "witness", joins too. Whichever of the two the server adds second
    announces itself to the first, so once either has seen the other join,
    both are in. The witness's join line may or may not reach the client; the
    witness then sends a line, and everything before it (at most that join
    line) is skipped: the client starts with a clean slate.
    """
    witness = connect(WITNESS, server)
    witness.send_line(WITNESS)
    client = connect(name, server)
    client.send_line(name)
    skipped = []
    deadline = time.monotonic() + timeout
    while True:
        line = client.read_line(0.02)
        if line is not None:
            skipped.append(line)
            if line == joined(WITNESS):
                break
        if witness.read_line(0.02) == joined(name):
            break
        for who in (client, witness):
            who._check_server()
            if who.closed_by_server:
                who._fail_missing("to stay connected while it joined", timeout, None)
        if time.monotonic() > deadline:
            client._fail_missing(f"that {WITNESS!r}, who joined at the same time, "
                                 f"would see it join, or see the line {joined(WITNESS)!r}",
                                 timeout, "Does the server announce a join to the others?")
    witness.send_line(SYNC)
    while True:
        line = client.read_line(max(0.0, deadline - time.monotonic()))
        if line == said(WITNESS, SYNC):
            break
        if line is None:
            client._fail_missing(f"the line {said(WITNESS, SYNC)!r}", timeout, None)
        skipped.append(line)
    unexpected = [line for line in skipped if line != joined(WITNESS)]
    if unexpected:
        client._fail(f"{name} received {show(unexpected, 200)} while it joined, before anyone spoke.",
                     "Only the join line of another client may arrive here. Does the joiner get its own join line?")
    return client


WITNESS = "witness"
SYNC = "(the test checks that the chat is ready)"


def join_all(connect, names, server=None, timeout=CHAT_WAIT):
    """Join clients one after the other, each seen by all the earlier ones; return them."""
    clients = []
    for name in names:
        clients.append(join(connect, name, room=list(clients), server=server, timeout=timeout))
    return clients


def nodelay(client):
    """Send each send() as its own packet (no Nagle), so a split stays a split."""
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def send_in_pieces(client, pieces, pause=0.1, note=None):
    """Send each piece of bytes separately, pausing between them, so the server
    very likely receives them in separate recv() calls."""
    nodelay(client)
    for i, piece in enumerate(pieces):
        if i:
            time.sleep(pause)
        client.sock.sendall(piece)
    client.story.add(client.name, note or f"sent {' then '.join(show(p, 60) for p in pieces)} "
                                          f"as separate packets, {pause} s apart")


# ---- raw clients for race tests ---------------------------------------------------


class RawClient:
    """A bare connection for churn: no story entries, no test failures from threads.

    Errors are kept (self.error) for the test to report from its own thread.
    """

    def __init__(self, address, name, sock=None):
        self.name = name
        if sock is None:
            sock = socket.create_connection(address, timeout=10)
            sock.settimeout(None)
            sock.sendall((name + "\n").encode("utf-8"))
        self.sock = sock

    @classmethod
    def wrap(cls, sock, name):
        """A RawClient for a connection that has already joined."""
        return cls(None, name, sock=sock)

    def send_line(self, text):
        self.sock.sendall((text + "\n").encode("utf-8"))

    def leave(self, how):
        """Leave the chat: 'exit' (/exit, then close), 'close' (FIN) or 'reset' (RST)."""
        try:
            if how == "exit":
                self.send_line("/exit")
            elif how == "reset":
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class Threads:
    """Run functions in threads; errors (including pytest failures) are re-raised by join()."""

    def __init__(self):
        self.threads = []
        self.errors = []
        self._lock = threading.Lock()

    def start(self, function, *args):
        def run():
            try:
                function(*args)
            except BaseException as error:  # pytest.fail raises a BaseException
                with self._lock:
                    self.errors.append(error)
        thread = threading.Thread(target=run, daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def join(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self.threads):
            fail(f"A client thread of the test did not finish within {timeout} s.")
        if self.errors:
            raise self.errors[0]
