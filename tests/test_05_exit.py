"""Stage 05_exit: /exit and abrupt disconnects - leave line once, clean-up, no traceback (docs/PROTOCOL.md, section 5)."""

import pytest

from grader.harness.chat import CHAT_WAIT, exited, expect_chat_line, expect_chat_lines, join, join_all, said

ONCE = "A client must leave exactly once: is the leave line sent from two places (say, /exit and the clean-up)?"
LEFT_WITHOUT_EXIT = ("A client that closes (recv() returns b'') or resets its connection (recv() raises\n"
                     "  ConnectionResetError) without /exit leaves just like one that sent /exit.")


def sync(sender, receivers, text="(sync)"):
    """sender says `text`; each receiver's next line must be it: nothing unexpected came before."""
    sender.send_line(text)
    for receiver in receivers:
        expect_chat_line(receiver, said(sender.name, text), cause=ONCE)


@pytest.mark.points(2)
def test_exit_is_announced_to_the_others(server, connect):
    """/exit: every other client receives NAME exited the chat room."""
    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])
    bob.send_line("/exit")
    cause = "The line /exit is a command, not a message: announce that the client left."
    expect_chat_line(alice, exited("bob"), cause=cause)
    expect_chat_line(carol, exited("bob"), cause=cause)
    sync(carol, [alice])


@pytest.mark.points(2)
def test_exit_closes_the_connection(server, connect):
    """After /exit the server closes that connection."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.send_line("/exit")
    expect_chat_line(alice, exited("bob"))
    bob.expect_closed(timeout=CHAT_WAIT, cause=(
        "After /exit the server closes the connection. If you close() it while another thread may\n"
        "  still use the socket, shutdown(socket.SHUT_RDWR) first: close() alone sends no FIN then."))


@pytest.mark.points(1)
def test_exit_with_carriage_return(server, connect):
    """/exit ending in \\r\\n (as telnet sends it) works too."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.send(b"/exit\r\n")
    expect_chat_line(alice, exited("bob"), cause="Drop the trailing '\\r' before comparing the line with '/exit'.")


@pytest.mark.points(1)
def test_last_words_before_exit(server, connect):
    """A message and /exit sent together: the message, then the leave line."""
    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])
    bob.send(b"last words\n/exit\n")
    expect_chat_lines(alice, [said("bob", "last words"), exited("bob")])
    sync(carol, [alice])


@pytest.mark.points(2)
def test_close_without_exit_is_announced_once(server, connect):
    """A client that just closes its connection is announced as leaving, once."""
    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])
    bob.close()
    expect_chat_line(alice, exited("bob"), cause=LEFT_WITHOUT_EXIT)
    expect_chat_line(carol, exited("bob"), cause=LEFT_WITHOUT_EXIT)
    sync(carol, [alice])
    server.assert_no_traceback()


@pytest.mark.points(2)
def test_reset_is_announced_once(server, connect):
    """A client that resets its connection is announced once; no traceback."""
    alice, bob, carol = join_all(connect, ["alice", "bob", "carol"])
    bob.reset()
    expect_chat_line(alice, exited("bob"), cause=LEFT_WITHOUT_EXIT)
    sync(carol, [alice])
    server.assert_no_traceback()
    server.assert_running()


@pytest.mark.points(1)
def test_half_close_is_a_goodbye(server, connect):
    """A client that stops sending (FIN) but still reads is announced, then disconnected."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.half_close()
    expect_chat_line(alice, exited("bob"), cause=LEFT_WITHOUT_EXIT)
    bob.expect_closed(timeout=CHAT_WAIT, cause="Once recv() returned b'', close the connection.")


@pytest.mark.points(1)
def test_leaving_before_giving_a_name(server, connect):
    """A connection that closes or resets before sending a name is never announced."""
    alice, bob = join_all(connect, ["alice", "bob"])
    quiet = connect("quiet")
    quiet.close()
    rude = connect("rude")
    rude.send(b"ru")  # half a name
    rude.reset()
    sync(bob, [alice], "nobody else here?")
    # Nothing tells a client when the server has dealt with those two, so give a
    # traceback a moment to show (a correct server prints none: this only waits).
    server.wait_for(server.has_traceback, 0.5)
    server.assert_no_traceback()


@pytest.mark.points(3)
def test_many_leave_at_once(server, connect):
    """Nine clients leave together (/exit, close, reset): each is announced exactly once."""
    alice, bob = join_all(connect, ["alice", "bob"])
    leavers = []
    for i in range(9):
        leavers.append(join(connect, f"leaver{i}", room=[alice, bob]))
    for i, leaver in enumerate(leavers):
        how = i % 3
        if how == 0:
            leaver.send_line("/exit")
        elif how == 1:
            leaver.close()
        else:
            leaver.reset()
    alice.expect_lines([exited(leaver.name) for leaver in leavers], ordered=False,
                       timeout=CHAT_WAIT, cause=LEFT_WITHOUT_EXIT)
    sync(bob, [alice])
    server.assert_no_traceback()
    server.assert_running()


@pytest.mark.points(1)
def test_name_free_again_after_leaving(server, connect):
    """After bob leaves, a new bob can join and chat: the old one is forgotten."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.reset()
    expect_chat_line(alice, exited("bob"), cause=LEFT_WITHOUT_EXIT)
    new_bob = join(connect, "bob", room=[alice])
    new_bob.send_line("I'm back")
    expect_chat_line(alice, said("bob", "I'm back"))
    alice.send_line("welcome back")
    expect_chat_line(new_bob, said("alice", "welcome back"))
    server.assert_no_traceback()


@pytest.mark.points(1)
def test_exit_must_be_the_whole_line(server, connect):
    """Only the whole line /exit leaves: ' /exit', '/exit ', '/EXIT' and '/exit now' are messages."""
    alice, bob = join_all(connect, ["alice", "bob"])
    texts = [" /exit", "/exit ", "/EXIT", "/exit now"]
    for text in texts:
        bob.send_line(text)
    expect_chat_lines(alice, [said("bob", text) for text in texts], cause=(
        "Only the line '/exit' itself is the command (docs/PROTOCOL.md, C10, C11): compare the whole\n"
        "  line, after removing the '\\r' before its '\\n', not line.strip() or line.lower().\n"
        "  Anything else is an ordinary message, forwarded as it was sent."))
    sync(bob, [alice], "still here")


@pytest.mark.points(1)
def test_unfinished_last_line_is_not_forwarded(server, connect):
    """A client that closes after half a line: the others hear only that it left."""
    alice, bob = join_all(connect, ["alice", "bob"])
    bob.send(b"half a mess", note="sent b'half a mess' (no newline)")
    bob.close()
    expect_chat_line(alice, exited("bob"), cause=(
        "bob closed his connection in the middle of a line. An unfinished last line is not a\n"
        "  line (docs/PROTOCOL.md, L6): forward nothing of it; the others hear only the leave line."))
