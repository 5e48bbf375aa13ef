"""Stage 06_races: the original assignment's server, its races and bugs fixed (CONTRACT section 4).

The functional tests pin down each of the original's bugs on its own; the race
tests run the server with scheduling noise (many thread switches, little random
pauses around socket calls), so that a race shows up on nearly every run.
"""

import collections
import random
import time

import pytest

from harness.chat import (CHAT_WAIT, DECODE_WHOLE_LINES, RECV_IS_NOT_A_MESSAGE,
                          RawClient, Threads, exited, expect_chat_line, expect_chat_lines, join,
                          join_all, joined, said, send_in_pieces)
from harness.client import show
from harness.process import fail

# Under noise a correct server can pause for over a second; the race tests wait
# for everything they expect with one generous deadline, never for a quiet gap.
RACE_DEADLINE = 20.0

LEFT_WITHOUT_EXIT = ("A client that closes its connection (recv() returns b'') or resets it (recv() raises\n"
                     "  ConnectionResetError) without sending /exit must leave like one that sent /exit:\n"
                     "  the others hear it once, and the server forgets it.")


# ---- the protocol, one rule at a time ------------------------------------------------


@pytest.mark.points(1)
def test_join_and_message(server, connect):
    """A join line and a message reach the other client; the sender gets neither back."""
    alice = join(connect, "alice")
    bob = join(connect, "bob", room=[alice])
    bob.send_line("hello alice")
    expect_chat_line(alice, said("bob", "hello alice"))
    alice.send_line("hello bob")
    expect_chat_line(bob, said("alice", "hello bob"),
                     hint="bob's next line should be alice's message: did the sender get its own line back?")


@pytest.mark.points(2)
def test_name_and_first_message_in_one_packet(server, connect):
    """A username and a first message sent together are a join and a message."""
    alice = join(connect, "alice")
    bob = connect("bob")
    bob.send(b"bob\nhi everyone\n", note="sent b'bob\\nhi everyone\\n' in one send()")
    expect_chat_lines(alice, [joined("bob"), said("bob", "hi everyone")])


@pytest.mark.points(2)
def test_message_split_across_packets(server, connect):
    """A line that arrives in pieces is forwarded once, whole."""
    alice, bob = join_all(connect, ["alice", "bob"])
    send_in_pieces(bob, [b"good ", b"morn", b"ing\n"])
    expect_chat_line(alice, said("bob", "good morning"), hint="Only part of the line was forwarded? "
                     + RECV_IS_NOT_A_MESSAGE)


@pytest.mark.points(2)
def test_lines_in_one_packet_are_separate_messages(server, connect):
    """Three lines sent in one packet are three messages, in order."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.send(b"one\ntwo\nthree\n")
    expect_chat_lines(alice, [said("bob", "one"), said("bob", "two"), said("bob", "three")])


@pytest.mark.points(2)
def test_long_message_arrives_whole(server, connect):
    """A 5000-character message arrives as one line."""
    alice, bob = join_all(connect, ["alice", "bob"])
    text = "".join(f"{i:04d} " for i in range(1000))[:5000]
    bob.send_line(text)
    expect_chat_line(alice, said("bob", text), hint="A long message must arrive as one line. "
                     + RECV_IS_NOT_A_MESSAGE)


@pytest.mark.points(2)
def test_multibyte_character_split_across_packets(server, connect):
    """A UTF-8 character split between two packets arrives intact; the sender stays."""
    alice, bob = join_all(connect, ["alice", "bob"])
    data = "café ☕ ok\n".encode("utf-8")
    cut = data.index("é".encode("utf-8")) + 1  # inside the two bytes of 'é'
    send_in_pieces(bob, [data[:cut], data[cut:]], pause=0.2)
    expect_chat_line(alice, said("bob", "café ☕ ok"), hint=DECODE_WHOLE_LINES)
    bob.send_line("still here")
    expect_chat_line(alice, said("bob", "still here"), hint=DECODE_WHOLE_LINES)
    server.assert_no_traceback()


@pytest.mark.points(2)
def test_exit_announced_and_connection_closed(server, connect):
    """/exit: the others hear NAME exited the chat room, and the connection is closed."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.send_line("/exit")
    expect_chat_line(alice, exited("bob"))
    bob.expect_closed(timeout=CHAT_WAIT, hint="After /exit the server closes the connection.")


@pytest.mark.points(2)
def test_close_without_exit_announced_once(server, connect):
    """A client that just closes is announced as leaving, once; the others carry on."""
    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])
    bob.close()
    expect_chat_line(alice, exited("bob"), hint=LEFT_WITHOUT_EXIT)
    carol.send_line("is bob gone?")
    expect_chat_line(alice, said("carol", "is bob gone?"),
                     hint="The leave line came twice? A client must leave exactly once.")
    server.assert_no_traceback()


@pytest.mark.points(2)
def test_reset_announced_once(server, connect):
    """A client that resets its connection is announced once; no traceback."""
    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])
    bob.reset()
    expect_chat_line(alice, exited("bob"), hint=LEFT_WITHOUT_EXIT)
    carol.send_line("after the reset")
    expect_chat_line(alice, said("carol", "after the reset"),
                     hint="The leave line came twice? A client must leave exactly once.")
    server.assert_no_traceback()
    server.assert_running()


# ---- races: many threads at once, with scheduling noise ---------------------------------

SENDERS = ["s1", "s2", "s3"]      # stable clients that send and receive throughout
RECEIVERS = ["r1", "r2", "r3"]    # stable clients that only receive
MESSAGES_EACH = 40
EARLY = [f"early{i:02}" for i in range(16)]  # joined before the stable clients; leave during the flood
CHURNERS = 3                       # threads that join and leave again and again
LEAVE_WAYS = ["exit", "close", "reset"]


def numbered(sender, i):
    return f"message {i:03d} from {sender}"


def collect_room_lines(client, senders, deadline):
    """Read until `client` has seen every other sender's last message (or the deadline).

    A sender announced as leaving (disconnected in the middle of the flood) is
    waited for no more: its last message may never come.
    """
    last = {s: said(s, numbered(s, MESSAGES_EACH - 1)) for s in senders if s != client.name}
    waiting_for = set(last.values())
    got = []
    while waiting_for:
        line = client.read_line(max(0.0, deadline - time.monotonic()))
        if line is None:
            break
        got.append(line)
        waiting_for.discard(line)
        for sender, message in last.items():
            if line == exited(sender):
                waiting_for.discard(message)
    return got, waiting_for


def check_room_lines(client, got, waiting_for, senders, early, churner_names):
    """Every message exactly once, in order per sender; every leaver announced once."""
    by_sender = collections.defaultdict(list)
    other = collections.Counter()
    for line in got:
        name, colon, text = line.partition(": ")
        if colon and name in SENDERS:
            by_sender[name].append(text)
        else:
            other[line] += 1
    problems = []
    for sender in senders:
        if sender == client.name:
            continue
        if other[exited(sender)]:
            problems.append(f"{sender}, a sender that never left, was announced as leaving: the server "
                            f"disconnected an innocent sender (an error in broadcast() escaped into "
                            f"the sender's own thread?)")
        expected = [numbered(sender, i) for i in range(MESSAGES_EACH)]
        texts = by_sender[sender]
        if texts == expected:
            continue
        counts = collections.Counter(texts)
        lost = [t for t in expected if t not in counts]
        twice = sorted(t for t, n in counts.items() if n > 1)
        strange = sorted(t for t in counts if t not in expected)
        if lost:
            problems.append(f"{len(lost)} of {sender}'s {MESSAGES_EACH} messages never arrived, e.g. "
                            f"{show(lost[:3], 200)}")
        if twice:
            problems.append(f"{len(twice)} of {sender}'s messages arrived more than once, e.g. {show(twice[:3], 200)}")
        if strange:
            problems.append(f"{sender}'s messages arrived changed, e.g. {show(strange[:3], 200)}")
        if not (lost or twice or strange):
            problems.append(f"{sender}'s messages arrived out of order: lines from one sender must arrive "
                            f"in the order sent")
    for name in early:
        count = other[exited(name)]
        if count != 1:
            problems.append(f"{name} left once, but {client.name} heard {exited(name)!r} {count} times")
    for name in churner_names:
        joins, leaves = other[joined(name)], other[exited(name)]
        if (joins, leaves) not in ((0, 0), (1, 1)):
            problems.append(f"{name} joined and left once, but {client.name} heard it join {joins} "
                            f"and leave {leaves} times")
    if waiting_for and not problems:
        problems.append(f"still waiting for {show(sorted(waiting_for), 200)} after {RACE_DEADLINE:.0f} s")
    return problems


RACE_CAUSE = (
    "Several threads use the list of clients at once. Does every use of it (add, remove,\n"
    "  and the loop in broadcast) hold one lock? Does broadcast() loop over a *copy* of the\n"
    "  list, so that a client removed meanwhile does not shift the others under the loop (the\n"
    "  next client is then skipped)? Is each client removed exactly once, and does a failed\n"
    "  send only mark that client, never disturb the sender?")


@pytest.mark.points(6)
def test_churn_every_message_exactly_once(start_server, connect, story):
    """While senders talk, others join, /exit, close and reset: every message arrives exactly once."""
    server = start_server(noise=True)
    # The early clients join first, so they sit before the stable clients in the
    # server's list: removing them shifts the stable clients under a loop over it.
    first = join(connect, EARLY[0])
    early = [first] + [join(connect, name, room=[first]) for name in EARLY[1:]]
    story.add("the test", f"joined {len(EARLY)} early clients, who will leave during the flood")
    stable = []
    for name in RECEIVERS + SENDERS:
        stable.append(join(connect, name, room=[first] + stable))
    # Everyone before has seen each stable client join: all are in the server's list now.
    churner_names = []
    rng = random.Random()

    dropped = {}  # sender -> (message number, error) when the server cut it off

    def send_flood(client):
        for i in range(MESSAGES_EACH):
            try:
                client.sock.sendall((numbered(client.name, i) + "\n").encode())
            except OSError as error:
                dropped[client.name] = (i, error)
                return
            time.sleep(0.004)

    def early_leave():
        ways = [LEAVE_WAYS[i % 3] for i in range(len(early))]
        for client, how in zip(early, ways):
            time.sleep(rng.uniform(0.005, 0.02))
            raw = RawClient.wrap(client.sock, client.name)
            client.sock = None  # the test's clean-up must not close it again
            raw.leave(how)
            story.add(client.name, {"exit": "sent '/exit' and closed", "close": "closed the connection",
                                    "reset": "reset the connection"}[how])

    def churn(number):
        for round_ in range(5):
            name = f"churner{number}x{round_}"
            churner_names.append(name)
            try:
                raw = RawClient(server.address, name)
            except OSError:
                continue  # the server is not accepting: assert_running() reports that
            time.sleep(rng.uniform(0, 0.02))
            try:
                if rng.random() < 0.5:
                    raw.send_line(f"chatter from {name}")
            except OSError:
                pass  # a churner cut off early is not what this test checks
            raw.leave(LEAVE_WAYS[(number + round_) % 3])

    threads = Threads()
    for client in stable[len(RECEIVERS):]:
        threads.start(send_flood, client)
    threads.start(early_leave)
    for number in range(CHURNERS):
        threads.start(churn, number)
    story.add("the test", f"{', '.join(SENDERS)} each sent {MESSAGES_EACH} numbered messages while the early "
                          f"clients left (/exit, close, reset) and {CHURNERS} threads joined and left "
                          f"5 clients each")
    threads.join(RACE_DEADLINE)

    deadline = time.monotonic() + RACE_DEADLINE
    report = []
    for name, (number, error) in dropped.items():
        report.append(f"{name}: the server cut off this innocent sender ({error}) when it sent message "
                      f"{number}; an error in broadcast() escaped into the sender's own thread?")
    for client in stable:
        still_sending = [s for s in SENDERS if s not in dropped]
        got, waiting_for = collect_room_lines(client, still_sending, deadline)
        # Without a sender's last message, the test cannot know when all lines have come:
        # the leave lines are checked only when every sender got through.
        problems = check_room_lines(client, got, waiting_for, still_sending,
                                    [] if dropped else EARLY, [] if dropped else churner_names)
        if client.closed_by_server:
            problems.insert(0, f"the server closed {client.name}'s connection, but {client.name} never left")
        report += [f"{client.name}: {problem}" for problem in problems]
    server.assert_running("the churn")
    tracebacks = server.stderr.count("Traceback (most recent call last)")
    if report and tracebacks:
        report.insert(0, f"the server printed {tracebacks} tracebacks (the last ones are below)")
    if not report:
        server.assert_no_traceback("the churn")
    else:
        fail("Under join/leave churn, the stable clients did not get every message exactly once:\n  - "
             + "\n  - ".join(report[:12])
             + f"\n\nLikely cause: {RACE_CAUSE}\n\nWhat the test did:\n{story.render()}\n\n"
               f"{server.report()}")


@pytest.mark.points(4)
def test_concurrent_large_messages_arrive_whole(start_server, connect, story):
    """Large messages sent at once by several senders reach a receiver whole, never mixed."""
    server = start_server(noise=True)
    names = ["alice", "bob", "carol", "dave"]
    clients = join_all(connect, names)
    receiver, senders = clients[0], clients[1:]
    sizes = [20000, 30011, 25003]
    texts = {}
    for sender, size, mark in zip(senders, sizes, "aé☕"):
        body = (f"{sender.name} says " + mark * size)
        texts[sender.name] = [body + " (1)", body + " (2)"]

    def send_both(client):
        data = "".join(t + "\n" for t in texts[client.name]).encode()
        client.sock.sendall(data)

    threads = Threads()
    for sender in senders:
        threads.start(send_both, sender)
    story.add("the test", "bob, carol and dave each sent two long lines (20-90 KB, UTF-8) at the same moment")
    threads.join(RACE_DEADLINE)
    expected = [said(name, t) for name in texts for t in texts[name]]
    got = []
    deadline = time.monotonic() + RACE_DEADLINE
    while len(got) < len(expected):
        line = receiver.read_line(max(0.0, deadline - time.monotonic()))
        if line is None:
            break
        got.append(line)
        if line not in expected:
            break
    if sorted(got) != sorted(expected):
        wrong = [line for line in got if line not in expected]
        what = (f"a line that is none of them: {show(wrong[0], 160)}" if wrong
                else f"only {len(got)} of the {len(expected)} lines")
        fail(f"alice expected 6 long lines, each whole, but received {what}.\n\n"
             f"Likely cause: {RECV_IS_NOT_A_MESSAGE}\n  Or two threads sent to alice at the same moment "
             f"and their bytes got mixed: send each line with one sendall(), one thread at a time per "
             f"client (a lock per client).\n\nWhat the test did:\n{story.render()}\n\n{server.report()}")
    for name in texts:
        mine = [line for line in got if line.startswith(name + ": ")]
        if mine != [said(name, t) for t in texts[name]]:
            fail(f"{name}'s two long lines reached alice out of order: lines from one sender must "
                 f"arrive in the order sent.\n\nWhat the test did:\n{story.render()}")
    server.assert_no_traceback()


# ---- a client that stops reading (appended; shared with stage 04 in harness/freeze.py) ----


@pytest.mark.points(2)
def test_stuck_reader_does_not_freeze_the_room(server, connect):
    """A client that stops reading may hold up lines to itself, never the lines it sends."""
    from harness.freeze import check_room_survives_a_stuck_reader
    check_room_survives_a_stuck_reader(connect)
