"""Stage 04_broadcast: the chat - username handshake, join line, messages to everyone else (docs/PROTOCOL.md, section 5)."""

import pytest

from grader.harness.chat import (CHAT_WAIT, DECODE_WHOLE_LINES, RECV_IS_NOT_A_MESSAGE, chat_cause,
                          expect_chat_line, expect_chat_lines, join, join_all, joined, said, send_in_pieces)
from grader.harness.client import show
from grader.harness.freeze import check_room_survives_a_stuck_reader

SENDER_GOT_ITS_OWN = "The sender must not get its own message back: send to everyone *but* the sender."


@pytest.mark.points(2)
def test_join_line_reaches_the_others(server, connect):
    """When a client joins, every other client receives NAME joined the chat room!"""
    alice = join(connect, "alice")
    bob = join(connect, "bob", room=[alice])
    join(connect, "carol", room=[alice, bob],
         cause="Every client already in the chat hears the newcomer join.")


@pytest.mark.points(1)
def test_joiner_does_not_get_its_own_join_line(server, connect):
    """The joiner does not receive its own join line."""
    alice = join(connect, "alice")
    bob = join(connect, "bob", room=[alice])
    alice.send_line("welcome bob")
    expect_chat_line(bob, said("alice", "welcome bob"),
                     cause="bob's first line should be alice's message. Does the joiner get its own join line?")


@pytest.mark.points(2)
def test_message_reaches_everyone_but_the_sender(server, connect):
    """A line reaches every other client as NAME: TEXT, and not the sender."""
    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])
    alice.send_line("hello everyone")
    expect_chat_line(bob, said("alice", "hello everyone"))
    expect_chat_line(carol, said("alice", "hello everyone"))
    bob.send_line("hi alice")
    expect_chat_line(alice, said("bob", "hi alice"), cause=SENDER_GOT_ITS_OWN)
    expect_chat_line(carol, said("bob", "hi alice"))


@pytest.mark.points(1)
def test_blank_lines_are_ignored(server, connect):
    """Blank lines are not forwarded."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.send(b"\n\r\n\n")
    bob.send_line("after the blanks")
    expect_chat_line(alice, said("bob", "after the blanks"),
                     cause="A blank line (nothing, or only '\\r', before the '\\n') is not forwarded.")


@pytest.mark.points(1)
def test_whitespace_only_lines_are_blank(server, connect):
    """Lines of only spaces or tabs are blank too: not forwarded."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.send(b"   \n\t \n \t\r\n", note="sent three lines of only spaces and tabs: b'   \\n\\t \\n \\t\\r\\n'")
    bob.send_line("after the spaces")
    expected = said("bob", "after the spaces")
    got = alice.read_line(CHAT_WAIT)
    if got == expected:
        return
    if got is None:
        alice.fail_missing(f"the line {expected!r}", CHAT_WAIT, None)
    forwarded_blank = got.startswith("bob: ") and not got[len("bob: "):].strip()
    alice.fail(f"alice expected the line {show(expected)}\n"
                f"alice received the line {show(got)}",
                "bob's line of only spaces or tabs was forwarded. It is blank as well: "
                "test line.strip(), not line == ''." if forwarded_blank else chat_cause(expected, got))


@pytest.mark.points(1)
def test_trailing_carriage_return_is_dropped(server, connect):
    """A line ending in \\r\\n (as telnet sends) is forwarded without the \\r, name included."""
    alice = join(connect, "alice")
    bob = connect("bob")
    bob.send(b"bob\r\n")
    expect_chat_line(alice, joined("bob"))
    bob.send(b"hi there\r\n")
    expect_chat_line(alice, said("bob", "hi there"))


@pytest.mark.points(2)
def test_lines_from_one_sender_keep_their_order(server, connect):
    """Thirty lines sent at once arrive, each once, in the order sent."""
    alice, bob = join_all(connect, ["alice", "bob"])
    texts = [f"line {i}" for i in range(30)]
    bob.send("".join(t + "\n" for t in texts).encode())
    expect_chat_lines(alice, [said("bob", t) for t in texts])


@pytest.mark.points(2)
def test_name_and_first_message_in_one_packet(server, connect):
    """A username and a first message sent together are a join and a message."""
    alice = join(connect, "alice")
    bob = connect("bob")
    bob.send(b"bob\nfirst words\n", note="sent b'bob\\nfirst words\\n' in one send()")
    expect_chat_lines(alice, [joined("bob"), said("bob", "first words")])


@pytest.mark.points(2)
def test_lines_split_and_joined_in_transit(server, connect):
    """Lines split across packets, and packets holding several lines, give whole messages."""
    alice, bob = join_all(connect, ["alice", "bob"])
    send_in_pieces(bob, [b"goo", b"d morning\nhow are", b" you?\nfine\n"])
    expect_chat_lines(alice, [said("bob", "good morning"), said("bob", "how are you?"), said("bob", "fine")],
                      cause=RECV_IS_NOT_A_MESSAGE)


@pytest.mark.points(1)
def test_long_message_arrives_whole(server, connect):
    """A 10000-character message arrives as one line."""
    alice, bob = join_all(connect, ["alice", "bob"])
    text = "".join(f"{i:04d} " for i in range(2000))
    bob.send_line(text)
    expect_chat_line(alice, said("bob", text), cause=RECV_IS_NOT_A_MESSAGE)


@pytest.mark.points(2)
def test_multibyte_character_split_across_packets(server, connect):
    """A UTF-8 character split between packets arrives intact, in the name too."""
    alice = join(connect, "alice")
    bob = connect("zoë")
    name = "zoë\n".encode("utf-8")
    send_in_pieces(bob, [name[:3], name[3:]])
    expect_chat_line(alice, joined("zoë"), cause=DECODE_WHOLE_LINES)
    data = "naïve café ☕\n".encode("utf-8")
    cut = data.index("☕".encode("utf-8")) + 2  # inside the three bytes of '☕'
    send_in_pieces(bob, [data[:cut], data[cut:]])
    expect_chat_line(alice, said("zoë", "naïve café ☕"), cause=DECODE_WHOLE_LINES)
    server.assert_no_traceback()


@pytest.mark.points(1)
def test_silent_client_holds_nobody_up(server, connect):
    """A client that has not sent its name yet does not stop the others from chatting."""
    alice = join(connect, "alice")
    shy = connect("shy")
    shy.send(b"sh")  # half a name, then silence
    bob = join(connect, "bob", room=[alice])
    bob.send_line("anyone there?")
    expect_chat_line(alice, said("bob", "anyone there?"))


@pytest.mark.points(2)
def test_stuck_reader_does_not_freeze_the_room(server, connect):
    """A client that stops reading may hold up lines to itself, never the lines it sends."""
    check_room_survives_a_stuck_reader(connect)


@pytest.mark.points(1)
def test_spaces_in_a_message_are_kept(server, connect):
    """Spaces and tabs at the start, inside and at the end of a message are forwarded as sent."""
    alice, bob = join_all(connect, ["alice", "bob"])
    text = "  two  spaces\tand a tab, then a space "
    bob.send_line(text)
    expect_chat_line(alice, said("bob", text), cause=(
        "Forward the line exactly as it arrived: remove only its '\\n' (and a '\\r' just before it).\n"
        "  Spaces are part of the message (docs/PROTOCOL.md, L3): use line.strip() only to decide\n"
        "  whether a line is blank, and forward the line itself."))
