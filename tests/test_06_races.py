"""Stage 06_races: the original assignment's server, its races and bugs fixed (docs/PROTOCOL.md).

The functional tests pin down each of the original's bugs on its own; the race
tests run the server with scheduling noise (many thread switches, little random
pauses around socket calls), so that the races they were built for show up on
every run measured (docs/INSTRUCTORS.md, Measured trust); others may show on some runs only.
"""

import time

import pytest

from grader.harness.chat import (CHAT_WAIT, DECODE_WHOLE_LINES, RECV_IS_NOT_A_MESSAGE,
                          Threads, check_join_rule, exited, expect_chat_line,
                          expect_chat_lines, fail_unexpected_line, join, join_all, joined, said,
                          send_in_pieces)
from grader.harness.churn import check_every_message_exactly_once
from grader.harness.client import fail, show

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
                     cause="bob's next line should be alice's message: did the sender get its own line back?")


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
    expect_chat_line(alice, said("bob", "good morning"), cause="Only part of the line was forwarded? "
                     + RECV_IS_NOT_A_MESSAGE)


@pytest.mark.points(2)
def test_lines_in_one_packet_are_separate_messages(server, connect):
    """Three lines sent in one packet are three messages, in order."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.send(b"one\ntwo\nthree\n")
    expected = [said("bob", "one"), said("bob", "two"), said("bob", "three")]
    deadline = time.monotonic() + CHAT_WAIT
    for line in expected:
        got = alice.read_line(max(0.0, deadline - time.monotonic()))
        if got != line:
            report_lines_in_one_packet(alice, line, got, expected)


def report_lines_in_one_packet(alice, expected, got, all_expected):
    """alice's line `got` (None: nothing) is not the `expected` one of bob's three."""
    if got is None:
        alice.fail_missing(f"the line {expected!r}", CHAT_WAIT,
                            "bob's three lines came in one packet: one recv() returned all three. Split what\n"
                            "  arrives on '\\n' and forward each line; the bytes after the first '\\n' are not\n"
                            "  thrown away, they are the next lines.")
    if said("bob", got) in all_expected:
        cause = (f"{got!r} arrived without 'bob: ' in front: the three lines were forwarded as one\n"
                 f"  message, 'bob: one\\ntwo\\nthree', whose newlines cut it up again at alice's end.\n  "
                 + RECV_IS_NOT_A_MESSAGE)
    elif "one" in got and "two" in got:
        cause = ("Several lines were forwarded as one message. " + RECV_IS_NOT_A_MESSAGE)
    elif got in all_expected:
        cause = "The right lines arrived out of order: lines from one sender arrive in the order sent."
    else:
        cause = None
    alice.fail(f"bob sent b'one\\ntwo\\nthree\\n' in one packet.\n"
                f"alice expected the line {show(expected)}\nalice received the line {show(got)}", cause)


@pytest.mark.points(2)
def test_long_message_arrives_whole(server, connect):
    """A 5000-character message arrives as one line."""
    alice, bob = join_all(connect, ["alice", "bob"])
    text = "".join(f"{i:04d} " for i in range(1000))[:5000]  # ends with a space
    bob.send_line(text)
    got = alice.read_line(CHAT_WAIT)
    if got != said("bob", text):
        fail_unexpected_line(alice, said("bob", text), got, CHAT_WAIT, long_message_cause(text, got))


def long_message_cause(text, got):
    """Why alice's line is not bob's 5000-character message, judged from what arrived."""
    if got is None:
        return "A long message must arrive as one line, once its '\\n' has come. " + RECV_IS_NOT_A_MESSAGE
    _, _, got_text = got.partition(": ")
    if got_text == text.rstrip():
        return ("The message arrived whole, but without its trailing space: the server strips the line.\n"
                "  Drop only the '\\n' (and a '\\r' before it); spaces are part of the message.")
    if got_text.strip() and text.startswith(got_text.strip()):
        return "Only the start of the long message was forwarded. " + RECV_IS_NOT_A_MESSAGE
    return None


@pytest.mark.points(2)
def test_multibyte_character_split_across_packets(server, connect):
    """A UTF-8 character split between two packets arrives intact; the sender stays."""
    alice, bob = join_all(connect, ["alice", "bob"])
    data = "café ☕ ok\n".encode("utf-8")
    cut = data.index("é".encode("utf-8")) + 1  # inside the two bytes of 'é'
    send_in_pieces(bob, [data[:cut], data[cut:]], pause=0.2)
    expect_chat_line(alice, said("bob", "café ☕ ok"), cause=DECODE_WHOLE_LINES)
    bob.send_line("still here")
    expect_chat_line(alice, said("bob", "still here"), cause=DECODE_WHOLE_LINES)
    server.assert_no_traceback()


@pytest.mark.points(2)
def test_exit_announced_and_connection_closed(server, connect):
    """/exit: the others hear NAME exited the chat room, and the connection is closed."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.send_line("/exit")
    expect_chat_line(alice, exited("bob"))
    bob.expect_closed(timeout=CHAT_WAIT, cause="After /exit the server closes the connection.")


@pytest.mark.points(2)
def test_close_without_exit_announced_once(server, connect):
    """A client that just closes is announced as leaving, once; the others carry on."""
    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])
    bob.close()
    expect_chat_line(alice, exited("bob"), cause=LEFT_WITHOUT_EXIT)
    carol.send_line("is bob gone?")
    expect_chat_line(alice, said("carol", "is bob gone?"),
                     cause="The leave line came twice? A client must leave exactly once.")
    server.assert_no_traceback()


@pytest.mark.points(2)
def test_reset_announced_once(server, connect):
    """A client that resets its connection is announced once; no traceback."""
    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])
    bob.reset()
    expect_chat_line(alice, exited("bob"), cause=LEFT_WITHOUT_EXIT)
    carol.send_line("after the reset")
    expect_chat_line(alice, said("carol", "after the reset"),
                     cause="The leave line came twice? A client must leave exactly once.")
    server.assert_no_traceback()
    server.assert_running()


@pytest.mark.points(1)
def test_connection_without_a_name_receives_nothing(server, connect):
    """A connection that has not sent its name yet receives no messages and no join lines."""
    alice, bob = join_all(connect, ["alice", "bob"])
    carol = connect("carol")  # connected; her name comes later
    carol.story.add("carol", "connected, and sends no name yet")
    bob.send_line("before carol's name (1)")
    expect_chat_line(alice, said("bob", "before carol's name (1)"))
    dave = join(connect, "dave", room=[alice, bob])  # a join line, also before carol's name
    bob.send_line("before carol's name (2)")
    expect_chat_line(alice, said("bob", "before carol's name (2)"))
    expect_chat_line(dave, said("bob", "before carol's name (2)"))
    carol.send_line("carol")
    for member in (alice, bob, dave):
        expect_chat_line(member, joined("carol"))
    bob.send_line("after carol's name")
    expect_chat_line(carol, said("bob", "after carol's name"), cause=(
        "A connection is in the chat only once it has sent its name (docs/PROTOCOL.md, C5): until\n"
        "  then it receives nothing. The original adds every socket to `clients` as soon as it\n"
        "  connects; add a client once it has given its name, in the same locked step that takes\n"
        "  the list for its join line."))


# ---- races: many threads at once, with scheduling noise ---------------------------------


@pytest.mark.points(2)
def test_join_rule_when_two_join_at_once(server, connect):
    """Two clients send their names at once: exactly one hears the other join (5 times)."""
    check_join_rule(connect, rounds=5)


@pytest.mark.points(6)
def test_churn_every_message_exactly_once(start_server, connect, story):
    """While senders talk, others join, /exit, close and reset: every message arrives exactly once."""
    check_every_message_exactly_once(start_server(noise=True), connect, story)


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
    from grader.harness.freeze import check_room_survives_a_stuck_reader
    check_room_survives_a_stuck_reader(connect)
