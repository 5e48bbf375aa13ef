"""Stage 08_robust: the chat server hardened (docs/PROTOCOL.md, section 6).

Limits (--max-users, usernames, --max-line with bounded memory, --handshake-timeout),
bad input (invalid UTF-8, control characters), slow readers, Ctrl+C, 200 users,
and the join/leave churn of stage 06, which must still hold.
"""

import socket
import threading
import time

import pytest

from grader.harness.background import BackgroundReader
from grader.harness.chat import check_join_rule, connect_named, join, join_all, join_pair
from grader.harness.churn import check_every_message_exactly_once, run_churn
from grader.harness.client import DEFAULT_WAIT, fail

# How long a student's server may stall the others before it gives up on a
# client that stopped reading (the README asks for "a few seconds", at most 5).
STUCK_GRACE = 5.0
# A burst of several MB must arrive in full by then, however slowly, as long as it keeps coming.
BURST_DEADLINE = 120.0


# ---- helpers ------------------------------------------------------------------

def expect_refused(client, why, timeout=DEFAULT_WAIT):
    """The server sends `client` one line starting with 'Error:', then closes the connection."""
    line = client.read_line(timeout)
    if line is None or not line.startswith("Error:"):
        got = "nothing" if line is None else repr(line)
        closed = " and the server closed the connection" if client.closed_by_server else ""
        client.fail(f"{client.name} expected a line starting with 'Error:' ({why}).\n"
                     f"{client.name} received {got}{closed}.",
                     f"docs/PROTOCOL.md (R2): {why}: one 'Error: ...' line, then disconnect. "
                     f"Send the line before you close, and end it with '\\n'.")
    client.expect_closed(timeout, cause=f"After the Error line ({why}) the server must close the connection.")
    return line


def peak_memory_kb(server):
    """The server's peak memory in kB (Linux: VmHWM from /proc; Windows: from its job)."""
    peak = server.peak_memory_kb()
    if peak is None:
        pytest.skip("this system shows the harness no peak memory of a program (macOS)")
    return peak


class Drain(BackgroundReader):
    """Reads a test client's socket in the background, counting numbered chat lines per sender.

    `pause` makes it a slow (but steady) reader.
    """

    def __init__(self, client, chunk=65536, pause=0.0):
        super().__init__(client, chunk=chunk, pause=pause)
        self.counts = {}        # sender -> lines seen
        self.disorder = []      # lines that arrived out of their sender's order
        self.others = []        # lines that are not numbered chat lines
        self.stalled_for = 0.0  # seconds without a byte, when wait_for() gave up

    @property
    def closed(self):
        return self.closed_by_server or self.error is not None

    def count(self, lines):
        for line in lines:
            head = line[:24].split(b" ", 2)
            if len(head) >= 2 and head[0].endswith(b":") and head[1].isdigit():
                sender = head[0][:-1].decode()
                number = int(head[1])
                seen = self.counts.get(sender, 0)
                if number != seen and len(self.disorder) < 5:
                    self.disorder.append(f"from {sender}: line number {number} arrived "
                                         f"where number {seen} was due")
                self.counts[sender] = seen + 1
            elif len(self.others) < 50:
                self.others.append(line[:80].decode("utf-8", "replace"))

    def wait_for(self, senders, lines_each, stall, timeout=BURST_DEADLINE):
        """True once `lines_each` lines from every sender arrived.

        False when delivery stalled (no byte for `stall` seconds), at the overall
        deadline, or when the connection closed; self.stalled_for then says which.
        A slow but steady server (slow mode, a busy grading machine) keeps making
        progress and is given up to `timeout`; only a stall longer than the
        protocol allows (R11) fails it.
        """
        deadline = time.monotonic() + timeout
        last_progress, last_received = time.monotonic(), self.received
        with self.changed:
            while True:
                if all(self.counts.get(s, 0) >= lines_each for s in senders):
                    return True
                now = time.monotonic()
                if self.received != last_received:
                    last_progress, last_received = now, self.received
                self.stalled_for = now - last_progress
                if now >= deadline or self.closed or self.stalled_for >= stall:
                    return False
                self.changed.wait(0.1)

    def summary(self, senders, lines_each):
        got = ", ".join(f"{self.counts.get(s, 0)} of {lines_each} from {s}" for s in senders)
        if self.closed:
            state = "and the server closed its connection"
        elif self.stalled_for >= 1:
            state = f"and then nothing more for {self.stalled_for:.0f} s (its connection is open)"
        else:
            state = f"and its connection is open ({BURST_DEADLINE:.0f} s after the burst began)"
        return f"{self.client.name} received {got} ({self.received} bytes), {state}."


def burst(sender, lines, size):
    """`lines` numbered chat lines of about `size` bytes, as one bytes object (cheap to build)."""
    padding = b"x" * (size - 12)
    return b"".join(b"%06d %s\n" % (number, padding) for number in range(lines))


def send_in_threads(clients, payloads):
    """Each client sends its payload from a thread of its own; returns the threads' errors list."""
    errors = []

    def send(client, payload):
        try:
            client.sock.sendall(payload)
        except OSError as error:
            errors.append(f"{client.name} could not send: {error}")

    for client in clients:
        client.sock.settimeout(None)  # the harness leaves a short timeout on its sockets
    threads = [threading.Thread(target=send, args=pair, daemon=True) for pair in zip(clients, payloads)]
    for client, payload in zip(clients, payloads):
        client.story.add(client.name, f"started sending {len(payload)} bytes of numbered lines")
    for thread in threads:
        thread.start()
    return threads, errors


# ---- --max-users ---------------------------------------------------------------

@pytest.mark.points(3)
def test_max_users_limit(start_server, connect):
    """With --max-users 3, a fourth user gets an Error line and nobody hears it joined."""
    start_server("--max-users", "3")
    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])
    dave = connect_named(connect, "dave")
    expect_refused(dave, "a client beyond --max-users")
    alice.send_line("who is here?")
    for client in (bob, carol):
        client.expect_line("alice: who is here?", cause=(
            "Only alice's message was due here: did the server announce the refused user?"))
    bob.send_line("/exit")
    # Both hear bob leave before erin comes: a leave and a join are concurrent otherwise.
    alice.expect_line("bob exited the chat room")
    carol.expect_line("bob exited the chat room")
    erin = connect_named(connect, "erin")
    alice.expect_line("erin joined the chat room!", cause=(
        "bob left, so there is room again: the limit counts the members now in the room."))
    carol.expect_line("erin joined the chat room!")
    erin.send_line("hi")
    alice.expect_line("erin: hi")


@pytest.mark.points(2)
def test_max_users_holds_when_many_join_at_once(start_server, connect):
    """Eight clients joining at once with --max-users 3: exactly three get in."""
    start_server("--max-users", "3", noise=True)
    clients = [connect(f"user{i}") for i in range(8)]
    for client in clients:
        client.sock.sendall(f"{client.name}\n".encode())
    clients[0].story.add("the test", "had user0 ... user7 send their names at once")
    refused, deadline = [], time.monotonic() + 5
    waiting = list(clients)
    while len(refused) < 5 and time.monotonic() < deadline:
        clients[0].check_server()  # a crashed or unfinished server fails at once
        for client in list(waiting):
            if client.buffer or client.receive_some(time.monotonic() + 0.02):
                line = client.read_line(0.5) or ""
                if line.startswith("Error:"):
                    refused.append(client)
                    waiting.remove(client)
                # a join line: an admitted member; keep reading
            elif client.closed_by_server:
                waiting.remove(client)
    if len(refused) != 5 or len(waiting) != 3:
        clients[0].fail(f"With --max-users 3 and 8 clients, 5 should get an 'Error:' line and 3 stay.\n"
                         f"{len(refused)} got an Error line; {len(waiting)} were still connected "
                         f"without one after 5 s.",
                         "Check the number of members and add the new one under the same lock,\n"
                         "  in one step: otherwise two threads both see room for one more.")
    speaker, *listeners = waiting
    speaker.send_line("we are three")
    for listener in listeners:
        listener.collect_until(lambda line: line == f"{speaker.name}: we are three", 1, 5, "the message")
        if listener.lines[-1] != f"{speaker.name}: we are three":
            listener.fail(f"{listener.name} expected {speaker.name}'s message",
                           "The members still connected after the refusals must be able to chat.")


@pytest.mark.points(1)
def test_default_max_users_is_10(server, connect):
    """With no --max-users, ten members get in and an eleventh is refused."""
    members = join_all(connect, [f"user{i}" for i in range(10)])
    extra = connect_named(connect, "user10")
    expect_refused(extra, "an eleventh user, when --max-users defaults to 10")
    members[0].send_line("ten of us")
    for member in members[1:]:
        member.expect_line("user0: ten of us", cause=(
            "Only user0's message was due here: did the server announce the refused user?"))


# ---- usernames -------------------------------------------------------------------

@pytest.mark.points(3)
def test_invalid_usernames_refused(server, connect):
    """Blank names, names over 32 characters, with ':' or a control character are refused."""
    alice, carol = join_all(connect, ["alice", "carol"])
    cases = [("blank", "   "), ("empty", ""), ("33 characters", "n" * 33), ("with ':'", "eve: admin"),
             ("with an escape character", "bad\x1b[31mname"), ("with a NUL", "nul\x00name")]
    for what, name in cases:
        client = connect(f"client named {what}")
        client.send((name + "\n").encode(), note=f"sent the username {name!r}")
        expect_refused(client, f"a username {what} is refused")
    connect_named(connect, "bob")
    alice.expect_line("bob joined the chat room!", cause=(
        "A refused username must never be announced: bob's join line should be the first to arrive."))


@pytest.mark.points(1)
def test_username_of_32_characters_accepted(server, connect):
    """A name of exactly 32 characters (non-ASCII counts as one each) is accepted."""
    alice, bob = join_all(connect, ["alice", "bob"])
    name = "é" * 32
    connect_named(connect, name)
    alice.expect_line(f"{name} joined the chat room!", cause=(
        "32 characters is allowed; only longer names are refused. Count characters, not bytes."))


@pytest.mark.points(2)
def test_username_in_use_refused(server, connect):
    """A second client asking for a name in use is refused; the first one is unaffected."""
    alice, bob = join_all(connect, ["alice", "bob"])
    impostor = connect_named(connect, "alice")
    expect_refused(impostor, "a username already in use is refused")
    alice.send_line("still me")
    bob.expect_line("alice: still me", cause="Nobody should hear the second alice join.")
    bob.send_line("hello alice")
    alice.expect_line("bob: hello alice", cause="The first alice must keep her name and her connection.")


@pytest.mark.points(1)
def test_username_with_a_tab_refused(server, connect):
    """A tab is a control character too: a name with one is refused."""
    alice, bob = join_all(connect, ["alice", "bob"])
    tabby = connect("client named with a tab")
    tabby.send(b"tab\tname\n", note="sent the username 'tab\\tname'")
    expect_refused(tabby, "a username with a control character (a tab counts) is refused")
    alice.send_line("anyone new?")
    bob.expect_line("alice: anyone new?", cause="A refused username must never be announced.")


@pytest.mark.points(1)
def test_names_differing_in_case_are_different_users(server, connect):
    """Names compare exactly: 'Alice' may join while 'alice' is in."""
    alice, bob = join_all(connect, ["alice", "bob"])
    connect_named(connect, "Alice")
    alice.expect_line("Alice joined the chat room!", cause=(
        "Names compare exactly (docs/PROTOCOL.md, R4): 'Alice' and 'alice' are two different\n"
        "  users. Compare the names as they are, not lower-cased."))


# ---- --max-line ------------------------------------------------------------------

@pytest.mark.points(2)
def test_long_line_refused(start_server, connect):
    """With --max-line 100: 100 bytes pass, 101 get an Error line and reach nobody."""
    start_server("--max-line", "100")
    alice, bob = join_all(connect, ["alice", "bob"])
    alice.send_line("y" * 100)
    bob.expect_line("alice: " + "y" * 100, cause="A line of exactly --max-line bytes is allowed.")
    alice.send_line("z" * 101)
    line = alice.read_line(DEFAULT_WAIT)
    if line is None or not line.startswith("Error:"):
        alice.fail(f"alice sent a line of 101 bytes (limit 100) and expected an 'Error:' line.\n"
                    f"alice received {'nothing' if line is None else repr(line)}.",
                    "A line longer than --max-line is forwarded to nobody; its sender gets an Error line.")
    alice.send_line("after")
    bob.expect_line("alice: after", cause="The long line must reach nobody, and alice stays connected.")


@pytest.mark.points(3)
def test_endless_line_keeps_memory_bounded(server, connect):
    """24 MB with no newline: the server's memory stays bounded and the line reaches nobody."""
    alice, bob = join_all(connect, ["alice", "bob"])
    before = peak_memory_kb(server)
    chunk = b"m" * 65536
    alice.sock.settimeout(30)  # the harness leaves a short timeout on its sockets
    sent, error = 0, None
    try:
        for _ in range(24 * 1024 * 1024 // len(chunk)):
            alice.sock.sendall(chunk)
            sent += len(chunk)
    except OSError as caught:
        error = caught
    if error is not None:  # reported outside the except block: no chained traceback
        report_endless_line_cut_off(alice, sent, error)
    alice.story.add("alice", "sent 24 MB without a newline")
    alice.send(b"\nafter\n", note="sent '\\n' then the line 'after'")
    bob.expect_line("alice: after", timeout=10, cause=(
        "The 24 MB line is far over --max-line (4096): it must reach nobody, and alice stays connected."))
    grown_mb = (peak_memory_kb(server) - before) / 1024
    if grown_mb > 8:
        fail(f"The server's peak memory grew by {grown_mb:.0f} MB while alice sent 24 MB with no newline.\n"
             f"Likely cause: the bytes of an unfinished line are kept until its '\\n' arrives. Once the\n"
             f"  line passes --max-line, throw its bytes away as they arrive, up to the next '\\n'.")
    line = alice.read_line(DEFAULT_WAIT)
    if line is None or not line.startswith("Error:"):
        alice.fail(f"alice expected an 'Error:' line about her 24 MB line; received "
                    f"{'nothing' if line is None else repr(line)}.",
                    "The sender of a line over --max-line gets an Error line.")


def report_endless_line_cut_off(alice, sent, error):
    """alice's sendall() of a long line failed: say what the server did, and what it should do."""
    mb = sent / (1024 * 1024)
    if isinstance(error, socket.timeout):
        alice.story.add("alice", f"sent {mb:.1f} MB without a newline; then the server took nothing for 30 s")
        alice.fail(f"alice was sending a line with no newline. After {mb:.1f} MB the server stopped reading "
                    f"her connection: nothing more was taken for 30 s.",
                    "Keep reading a client that sends a line over --max-line: throw its bytes away as they\n"
                    "  arrive, up to the next '\\n', then send one 'Error:' line.")
    alice.story.add("alice", f"sent {mb:.1f} MB without a newline; then sending failed: {error}")
    alice.fail(f"The server closed alice's connection while she sent a long line (after {mb:.1f} MB "
                f"with no newline; sending failed with {error!r}).",
                "A line longer than --max-line is not a reason to disconnect: docs/PROTOCOL.md (R6) wants one\n"
                "  'Error:' line to its sender, who stays connected. Throw the line's bytes away as they\n"
                "  arrive, up to its '\\n', and keep the connection.")


@pytest.mark.points(1)
def test_carriage_return_counts_toward_max_line(start_server, connect):
    """With --max-line 100: 99 bytes and '\\r\\n' pass, 100 bytes and '\\r\\n' are too long."""
    start_server("--max-line", "100")
    alice, bob = join_all(connect, ["alice", "bob"])
    alice.send(b"y" * 99 + b"\r\n", note="sent 99 bytes, then '\\r\\n'")
    bob.expect_line("alice: " + "y" * 99, cause=(
        "99 bytes and a '\\r' are 100 bytes before the '\\n': allowed with --max-line 100."))
    alice.send(b"z" * 100 + b"\r\n", note="sent 100 bytes, then '\\r\\n'")
    line = alice.read_line(DEFAULT_WAIT)
    if line is None or not line.startswith("Error:"):
        alice.fail(f"alice sent 100 bytes and '\\r\\n' (limit 100) and expected an 'Error:' line.\n"
                   f"alice received {'nothing' if line is None else repr(line)}.",
                   "Every byte before the '\\n' counts toward --max-line, the '\\r' too\n"
                   "  (docs/PROTOCOL.md, R6): 100 bytes and a '\\r' are 101, one too many.")
    alice.send_line("after")
    bob.expect_line("alice: after", cause="The long line must reach nobody, and alice stays connected.")


@pytest.mark.points(1)
def test_default_max_line_is_4096(server, connect):
    """With no --max-line, a line of 4096 bytes passes and one of 4097 is refused."""
    alice, bob = join_all(connect, ["alice", "bob"])
    alice.send_line("y" * 4096)
    bob.expect_line("alice: " + "y" * 4096, cause="--max-line defaults to 4096: a line of 4096 bytes is allowed.")
    alice.send_line("z" * 4097)
    line = alice.read_line(DEFAULT_WAIT)
    if line is None or not line.startswith("Error:"):
        alice.fail(f"alice sent a line of 4097 bytes (no --max-line given) and expected an 'Error:' line.\n"
                   f"alice received {'nothing' if line is None else repr(line)}.",
                   "--max-line defaults to 4096 bytes (docs/PROTOCOL.md, R6).")
    alice.send_line("after")
    bob.expect_line("alice: after", cause="The long line must reach nobody, and alice stays connected.")


# ---- --handshake-timeout -----------------------------------------------------------

@pytest.mark.points(2)
def test_silent_connection_closed_after_handshake_timeout(start_server, connect):
    """A connection that sends no username within --handshake-timeout is closed; members are not."""
    start_server("--handshake-timeout", "0.5")
    alice, bob = join_all(connect, ["alice", "bob"])
    mute = connect("mute")
    mute.expect_closed(timeout=0.5 + DEFAULT_WAIT, cause=(
        "mute sent nothing for 0.5 s (--handshake-timeout 0.5): close its connection. A recv() with\n"
        "  a timeout (settimeout) while waiting for the name does it; set it back to None after."))
    alice.send_line("still here")
    bob.expect_line("alice: still here", cause=(
        "The handshake timeout is for the username only: members may stay quiet as long as they like."))


@pytest.mark.points(2)
def test_quiet_members_stay_connected(start_server, connect):
    """Members who stay quiet for 4 s (over --handshake-timeout 0.5) still receive and send."""
    start_server("--handshake-timeout", "0.5")
    alice, bob = join_all(connect, ["alice", "bob"])
    alice.story.add("the test", "let alice and bob stay quiet for 4 s (longer than any timeout of the server)")
    # The quiet time is what is tested: 4 s is over --handshake-timeout and over
    # the few seconds after which a server may drop a client that stopped reading.
    heard = {alice: alice.read_line(4.0)}  # nothing is due: this lets the quiet time pass
    heard[bob] = bob.read_line(0.2)        # what bob got meanwhile, if anything
    closed = [client.name for client in (alice, bob) if client.closed_by_server]
    if closed:
        lines = "".join(f"\n{client.name} received {line!r}." for client, line in heard.items() if line)
        alice.fail(f"alice and bob joined, then stayed quiet for 4 s; the server closed the connection of "
                    f"{' and '.join(closed)}.{lines}", QUIET_MEMBER_DROPPED)
    for client, line in heard.items():
        if line is not None:
            client.fail(f"alice and bob joined, then stayed quiet for 4 s, and nobody else spoke; "
                         f"{client.name} received {line!r}.",
                         QUIET_MEMBER_DROPPED if line.endswith(" exited the chat room") else None)
    alice.send_line("still here after the quiet")
    bob.expect_line("alice: still here after the quiet", cause=QUIET_MEMBER_DROPPED)
    bob.send_line("me too")
    alice.expect_line("bob: me too", cause=QUIET_MEMBER_DROPPED)


@pytest.mark.points(1)
def test_dribbling_connection_closed_after_handshake_timeout(start_server, connect):
    """A connection dribbling one byte at a time, never a whole name, is closed in time too."""
    start_server("--handshake-timeout", "0.5")
    alice, carol = join_all(connect, ["alice", "carol"])
    slow = connect("slow")
    slow.story.add("slow", "sends one byte every 0.1 s, never a newline")
    deadline = time.monotonic() + 0.5 + DEFAULT_WAIT  # the server's timeout, and a margin for load
    while time.monotonic() < deadline:
        try:
            slow.sock.sendall(b"s")
        except OSError:
            break  # closed, as it should be
        slow.sock.settimeout(0.1)
        try:
            if slow.sock.recv(4096) == b"":
                break
        except socket.timeout:
            continue
        except OSError:
            break
    else:
        slow.fail(f"slow kept the connection open for {0.5 + DEFAULT_WAIT} s (--handshake-timeout 0.5) "
                   f"without ever sending a whole name.",
                   "The timeout is for the whole username, not for each recv(): keep one deadline\n"
                   "  and give recv() only the time that is left.")
    connect_named(connect, "bob")
    alice.expect_line("bob joined the chat room!")


# ---- bad input ----------------------------------------------------------------------

@pytest.mark.points(2)
def test_invalid_utf8_becomes_replacement_characters(server, connect):
    """Bytes that are not UTF-8 arrive as U+FFFD; the sender stays connected."""
    alice, bob = join_all(connect, ["alice", "bob"])
    alice.send(b"caf\xe9 \xff\xfe ok \xe2\x82\n")
    bob.expect_line("alice: caf\ufffd \ufffd\ufffd ok \ufffd", cause=(
        "Decode with errors='replace': invalid bytes become U+FFFD instead of raising."))
    alice.send_line("still here")
    bob.expect_line("alice: still here", cause="Invalid UTF-8 must never disconnect its sender.")


@pytest.mark.points(2)
def test_control_characters_not_forwarded(server, connect):
    """Control characters (but tab) are removed from messages; a line of only them is blank."""
    alice, bob = join_all(connect, ["alice", "bob"])
    alice.send("a\x00b\x07c\td\x1b[31me\x7f f\x08g\rh\u009bi\n".encode())
    bob.expect_line("alice: abc\td[31me fghi", cause=(
        "Remove every control character (unicodedata.category(c) == 'Cc') except tab, keep the rest."))
    alice.send(b"\x07\x07\x1b\n")
    alice.send_line("next")
    bob.expect_line("alice: next", cause="A line of only control characters is blank once they are removed.")


# ---- slow readers --------------------------------------------------------------------

QUIET_MEMBER_DROPPED = (
    "The server closed a member that had only been quiet. Members may stay quiet as long as\n"
    "  they like: the handshake timeout is for the username only (settimeout(None) after it),\n"
    "  and only a client that stops *reading* while lines wait for it may be disconnected.")


def stuck_reader_cause(drains):
    """Why the lines did not reach fast, from what was seen: closed connections or a stall."""
    fast_drain, sender_drains = drains[0], drains[1:]
    if fast_drain.closed or any(drain.closed for drain in sender_drains):
        closed = [drain.client.name for drain in drains if drain.closed]
        return (f"The server closed {', '.join(closed)}, who kept reading all the time.\n  "
                + QUIET_MEMBER_DROPPED)
    return ("stuck never reads, so its socket fills up and a plain sendall() to it blocks\n"
            "  forever - in the thread of whoever is sending, so everyone waits. Never block\n"
            "  for long on one client: queue what its socket won't take, and disconnect it\n"
            "  if it stays stuck for a few seconds.")


LINE_SIZE = 3900  # under the default --max-line of 4096


@pytest.mark.points(4)
def test_stuck_reader_does_not_stall_others(server, connect):
    """A client that stops reading (small buffer) never stalls 10 MB of chat to the others."""
    stuck = connect("stuck", rcvbuf=4096)
    fast = connect("fast")
    join_pair(stuck, fast, timeout=DEFAULT_WAIT)  # the last time stuck ever reads
    senders = [connect_named(connect, f"s{i}") for i in range(3)]
    fast.expect_lines([f"{s.name} joined the chat room!" for s in senders], ordered=False)
    drains = [Drain(client) for client in [fast, *senders]]
    for drain in drains:
        drain.start()
    lines_each = 900  # 3 x 900 x 3.9 kB = 10.5 MB to each reader, far over the loopback buffers
    threads, errors = send_in_threads(senders, [burst(s, lines_each, LINE_SIZE) for s in senders])
    names = [s.name for s in senders]
    started = time.monotonic()
    try:
        # The others may wait while the server gives up on stuck (STUCK_GRACE), never longer.
        arrived = drains[0].wait_for(names, lines_each, stall=STUCK_GRACE + 3)
        elapsed = time.monotonic() - started
    finally:
        for drain in drains:
            drain.stop()
    if not arrived or errors:
        fast.fail("\n".join([drains[0].summary(names, lines_each)] + errors),
                   stuck_reader_cause(drains))
    if drains[0].disorder:
        fast.fail("Lines from one sender arrived out of order:\n  " + "\n  ".join(drains[0].disorder),
                   "Lines queued for a client must go out before any line sent directly after them.")
    unexpected = [line for line in drains[0].others if line != "stuck exited the chat room"]
    if unexpected:
        fast.fail(f"fast received lines it should not have: {unexpected[:5]}")
    fast.story.add("fast", f"received all {3 * lines_each} lines in {elapsed:.1f} s")


@pytest.mark.points(3)
def test_slow_reader_in_a_burst_is_not_dropped(server, connect):
    """A slow but steady reader receives a 6 MB burst in full: it is never disconnected."""
    slow = connect("slow", rcvbuf=8192)
    senders = [connect("s0")]
    join_pair(slow, senders[0], timeout=DEFAULT_WAIT)
    senders.append(join(connect, "s1", room=[slow]))
    drains = [Drain(slow, chunk=8192, pause=0.002)] + [Drain(client) for client in senders]
    for drain in drains:
        drain.start()
    lines_each = 800  # 2 x 800 x 3.9 kB = 6.2 MB
    threads, errors = send_in_threads(senders, [burst(s, lines_each, LINE_SIZE) for s in senders])
    names = [s.name for s in senders]
    try:
        arrived = drains[0].wait_for(names, lines_each, stall=STUCK_GRACE + 3)
    finally:
        for drain in drains:
            drain.stop()
    if not arrived or errors or drains[0].disorder:
        slow.fail(f"{drains[0].summary(names, lines_each)}\n" + "\n".join(errors + drains[0].disorder),
                   "slow reads all the time, just slower than the burst comes. Dropping a client the\n"
                   "  moment its queue is full also drops readers like this one: wait a little for\n"
                   "  room, and drop only a client that makes no progress for a few seconds.")


# ---- Ctrl+C --------------------------------------------------------------------------

@pytest.mark.points(3)
def test_ctrl_c_closes_connections_and_exits(server, connect):
    """SIGINT: every connection closed, exit status 0 within 2 s, no traceback."""
    alice, bob = join_all(connect, ["alice", "bob"])
    mute = connect("mute")  # connected, no name yet
    alice.send_line("before")
    bob.expect_line("alice: before")
    # POSIX: SIGINT. Windows: Ctrl+Break to the server's process group, which the harness's
    # launcher turns into Ctrl+C inside the server (grader/harness/process.py, interrupt).
    pressed = server.interrupt()
    alice.story.add("the test", pressed)
    status = server.wait_exit(2.0)
    if status is None:
        fail(f"The server did not exit within 2 s of Ctrl+C.\n{server.report()}\n"
             f"Likely cause: a thread that is not a daemon keeps the process alive, or the main thread\n"
             f"  is blocked somewhere that Ctrl+C does not interrupt.")
    if "Traceback" in server.stderr or status != 0:
        fail(f"After Ctrl+C the server exited with status {status}; it should exit with 0 and print no "
             f"traceback.\n{server.report()}\n"
             f"Likely cause: KeyboardInterrupt was not caught; catch it in main() and shut down.")
    for client in (alice, bob, mute):
        client.server = None  # it has exited, as it should; only the connection matters now
        client.expect_closed(1.0, cause="Ctrl+C must close every client connection.")


# ---- the join rule, many users, and the churn of stage 06 ------------------------------------

@pytest.mark.points(2)
def test_join_rule_when_two_join_at_once(start_server, connect):
    """Two clients send their names at once: exactly one hears the other join (5 times)."""
    start_server("--max-users", "20")
    check_join_rule(connect, rounds=5)


@pytest.mark.points(2)
def test_two_hundred_users(start_server, connect):
    """200 users at once (--max-users 250): all join, and a message reaches all 199 others."""
    start_server("--max-users", "250")
    names = [f"u{i:03}" for i in range(200)]
    clients = join_all(connect, names[:2])  # u000 is surely in before the others come
    clients += [connect_named(connect, name) for name in names[2:]]
    first = clients[0]
    first.expect_lines([f"{name} joined the chat room!" for name in names[2:]], timeout=20, ordered=False)
    first.send_line("hello all 200")
    for client in clients[1:]:
        got = client.collect_until(lambda line: line == "u000: hello all 200", 1, 20, "the message")
        if not got or got[-1] != "u000: hello all 200":
            client.fail(f"{client.name} expected 'u000: hello all 200' after the join lines; "
                         f"received {len(got)} lines, the last {got[-1:]!r}.",
                         "Does the server limit threads or connections below 200?")


@pytest.mark.points(3)
def test_churn_of_stage_06_still_handled(start_server, connect):
    """Stage 06's join/leave churn (with scheduling noise): no message lost, each leave line once."""
    start_server("--max-users", "50", noise=True)
    run_churn(connect, rounds=6, churners=6, messages=150)


@pytest.mark.points(3)
def test_churn_test_of_stage_06_passes(start_server, connect, story):
    """Stage 06's own churn test, run against this server (with --max-users 100)."""
    server = start_server("--max-users", "100", noise=True)
    check_every_message_exactly_once(server, connect, story)
