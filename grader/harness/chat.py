"""Helpers for the chat stages (04, 05, 06, 08): joining, the protocol's lines,
chat-aware failure hints, and running clients in threads for race tests.

    alice = join(connect, "alice")
    bob = join(connect, "bob", room=[alice])     # waits until alice saw bob join
    bob.send_line("hi")
    expect_chat_line(alice, said("bob", "hi"))

    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])   # no helper client

Every join helper here rests on docs/PROTOCOL.md's JOIN RULE: the join line reaches
exactly the clients that were in the chat when the joiner was added (adding it
and taking the list for its join line are one step). So a client that has seen
NAME join was in before NAME, and NAME never hears of it; of two clients that
send their names at the same moment, exactly one hears the other join. The
helpers check that as they go, and name the rule when a server breaks it.
"""

import socket
import struct
import threading
import time

from .client import fail, show

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


JOIN_RULE = (
    "The join rule: the join line reaches exactly the clients that were in the chat when the\n"
    "  joiner was added. Add the member and take the list for its join line in one step, under\n"
    "  the lock (say, ChatRoom.add() returns the members who were in before), then send the\n"
    "  join line to that list outside the lock.")


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
    if got.endswith(" joined the chat room!") and got != expected:
        return ("A join line arrived where none was due.\n  " + JOIN_RULE +
                "\n  Is the join line sent to a list taken after the add (a client who joined meanwhile\n"
                "  is in it), or to a list that other threads change while broadcast() loops over it?")
    if got.strip() != got and got.strip() == expected:
        return "The line has extra spaces or '\\r' around it."
    if expected.endswith(" exited the chat room") and got.endswith(" exited the chat room"):
        return "The wrong client was announced as leaving."
    return None


def expect_chat_line(client, expected, timeout=CHAT_WAIT, cause=None):
    """The next line this client receives must be `expected` (with chat-aware hints)."""
    got = client.read_line(timeout)
    if got == expected:
        return got
    fail_unexpected_line(client, expected, got, timeout, cause)


def fail_unexpected_line(client, expected, got, timeout=CHAT_WAIT, cause=None):
    """Fail: `got` (a line already read; None if none came within `timeout`) is not `expected`."""
    if got is None:
        client.fail_missing(f"the line {expected!r}", timeout, cause)
    own = (f"{client.name} received its own message back: a message goes to everyone *but* its "
           f"sender." if got.startswith(f"{client.name}: ") else None)
    client.fail(f"{client.name} expected the line {show(expected)}\n"
                 f"{client.name} received the line {show(got)}",
                 cause or own or chat_cause(expected, got) or _generic_cause(expected, got))


def _generic_cause(expected, got):
    from .client import likely_cause
    return likely_cause(expected, got)


def expect_chat_lines(client, expected, timeout=CHAT_WAIT, cause=None):
    """The next lines must be exactly these, in this order; one deadline for all."""
    deadline = time.monotonic() + timeout
    for line in expected:
        expect_chat_line(client, line, max(0.0, deadline - time.monotonic()), cause)


def join(connect, name, room=None, server=None, timeout=CHAT_WAIT, cause=None):
    """Connect a client and send its username; return it once the server surely knows it.

    With `room` (clients already surely in the chat): waits until each of them
    has seen NAME join. By the join rule NAME was then added after them: its
    messages reach them, and it never hears their join lines.

    Without `room` (the first client): nobody can see it join, so a silent helper
    client, "witness", joins alongside it first (see confirm_first); the witness
    stays in the chat, never read, until the test ends. Where an extra member
    would matter (a user limit, a reader that must keep up), use join_all().
    """
    if not room:
        return confirm_first(connect, name, server, timeout)
    client = connect(name, server)
    client.send_line(name)
    for other in room:
        expect_chat_line(other, joined(name), timeout, cause)
    return client


def connect_named(connect, name, server=None, **options):
    """A client that connected and sent its username, and nothing more: no wait.

    For a client the server may refuse, or many joining at once.
    """
    client = connect(name, server, **options)
    client.send_line(name)
    return client


def join_all(connect, names, server=None, timeout=CHAT_WAIT):
    """Clients joined one after another, each seen by all the earlier ones; return them.

    No helper client: the first two send their names together, and whichever
    hears the other join was in first (join_pair). Each later one joins a room
    whose members are known.
    """
    if len(names) == 1:
        return [join(connect, names[0], server=server, timeout=timeout)]
    clients = [connect(names[0], server), connect(names[1], server)]
    join_pair(*clients, timeout=timeout)
    for name in names[2:]:
        clients.append(join(connect, name, room=list(clients), server=server, timeout=timeout))
    return clients


def join_pair(first, second, timeout=CHAT_WAIT, strict=False):
    """Two connected clients send their usernames back to back; return the one that heard
    the other join, once both are surely in the chat (see first_join_line)."""
    first.send_line(first.name)
    second.send_line(second.name)
    return first_join_line(first, second, timeout, strict)


def first_join_line(first, second, timeout=CHAT_WAIT, strict=False):
    """Both clients have sent their usernames: return the one that heard the other join,
    once both are surely in the chat, with nothing left to read.

    Whichever the server added second is announced to the other: once one of the
    two has heard the other join, both are in. That one then says SYNC, and the
    other's next line must be it. By the join rule, exactly one of the two hears a
    join line; if both do, `strict` fails the test, naming the rule. Otherwise the
    extra join line is skipped and noted in the story: the join rule has a test of
    its own (check_join_rule), and the other tests grade what they are about.
    """
    listener, joiner = _wait_for_a_join_line(first, second, timeout)
    listener.story.add("the test", f"(the server took {listener.name}'s name first: {listener.name} "
                                   f"heard {joiner.name} join)")
    listener.send_line(SYNC)
    line = joiner.read_line(timeout)
    if line == said(listener.name, SYNC):
        return listener
    if line == joined(listener.name) and not strict:
        joiner.story.add("the test", "(both heard the other join, which breaks the join rule: "
                                     "skipped, as check_join_rule tests it)")
        line = joiner.read_line(timeout)
        if line == said(listener.name, SYNC):
            return listener
    elif line == joined(listener.name):
        joiner.fail(
            f"{first.name} and {second.name} sent their usernames at the same moment, and both heard the "
            f"other join:\n{listener.name} received {show(joined(joiner.name))}, and "
            f"{joiner.name} received {show(joined(listener.name))}.\n"
            f"Exactly one of the two may hear it: the one the server added first.",
            JOIN_RULE + "\n  Both hearing means the list for a join line was taken after the add, in a\n"
                        "  separate step: the other client had been added in between.")
    missing = (f"{joiner.name} had sent its name and {listener.name} had heard it join, so "
               f"{listener.name}'s message was due: is {joiner.name} in the list that broadcast() uses?")
    fail_unexpected_line(joiner, said(listener.name, SYNC), line, timeout, missing if line is None else None)


def _wait_for_a_join_line(first, second, timeout):
    """Read both clients until one of them has a line, which must be the other's join line."""
    deadline = time.monotonic() + timeout
    pairs = ((first, second), (second, first))
    while time.monotonic() < deadline:
        for listener, joiner in pairs:
            line = listener.read_line(0.02)  # also checks that the server is alive
            if line == joined(joiner.name):
                return listener, joiner
            if line is not None:
                expect = f"nothing, or the line {show(joined(joiner.name))}"
                own = "The joiner must not get its own join line: send it to everyone *but* the joiner."
                listener.fail(f"{first.name} and {second.name} sent their usernames at the same moment.\n"
                               f"{listener.name} expected {expect}\n"
                               f"{listener.name} received the line {show(line)}",
                               (own if line == joined(listener.name) else chat_cause(joined(joiner.name), line))
                               or "Only the join line of the other client can arrive here.")
            if listener.closed_by_server:
                listener.fail_missing("to stay connected while it joined", timeout, None)
    partial = next((client for client in (first, second) if client.buffer), None)
    if partial is not None:
        partial.fail_missing(f"the line {joined((second if partial is first else first).name)!r}",
                              timeout, None)
    first.fail(f"{first.name} and {second.name} sent their usernames at the same moment; within "
                f"{timeout} s neither heard the other join.\n"
                f"Exactly one of them must: the one the server added first hears the other join.",
                "Does the server announce a join to the others at all? If it does: " + JOIN_RULE +
                "\n  Neither hearing means the list for a join line was taken before the add, in a\n"
                "  separate step: each joiner missed the other.")


def check_join_rule(connect, rounds=5, timeout=CHAT_WAIT):
    """Pairs of clients send their names back to back, `rounds` times: each time exactly
    one of the two must hear the other join (first_join_line fails otherwise, naming the
    rule). Earlier pairs stay in the chat, silent."""
    for number in range(rounds):
        join_pair(connect(f"pair{number}a"), connect(f"pair{number}b"), timeout, strict=True)


def confirm_first(connect, name, server=None, timeout=CHAT_WAIT):
    """Join the first client, and wait until the server has surely added it to the chat.

    The first client sees nobody join, so we cannot watch for its own join. A
    helper, "witness", sends its name at the same moment (first_join_line):
    whichever of the two hears the other join, both are then in, and the client
    has a clean slate. The witness stays in the chat, never read, until the test ends.
    """
    witness = connect(WITNESS, server)
    client = connect(name, server)
    join_pair(witness, client, timeout)
    return client


WITNESS = "witness"
SYNC = "(the test checks that the chat is ready)"


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
