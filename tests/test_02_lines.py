"""Stage 02_lines: a line protocol over a byte stream (docs/PROTOCOL.md, sections 1 and 4).

Each UTF-8 line ending in "\\n" comes back in upper case, however its bytes
were split or joined in transit.
"""

import pytest

from grader.harness.client import DEFAULT_WAIT, show

CHUNK_AS_LINE = ("Each recv() returns whatever bytes have arrived so far: part of a line, or several "
                 "lines. Keep the bytes in a buffer and reply only when a '\\n' completes a line.")


@pytest.mark.points(2)
def test_replies_to_a_line_in_upper_case(server, connect):
    """A line comes back in upper case, ending in a newline."""
    alice = connect("alice")
    alice.send_line("hello, lines")
    alice.expect_line("HELLO, LINES")
    alice.expect_no_more(window=0.2)


@pytest.mark.points(2)
def test_waits_for_the_end_of_the_line(server, connect):
    """Half a line gets no reply until its newline arrives."""
    alice = connect("alice")
    alice.send(b"not fini")
    alice.expect_no_more(window=0.3, cause="The server replied before the line was complete. " + CHUNK_AS_LINE)
    alice.send(b"shed yet\n")
    alice.expect_line("NOT FINISHED YET", cause=CHUNK_AS_LINE)


@pytest.mark.points(2)
def test_line_sent_one_byte_at_a_time(server, connect):
    """A line whose bytes arrive one by one is answered once, whole."""
    alice = connect("alice")
    alice.send_slowly(b"split me up\n", pause=0.01)
    alice.expect_line("SPLIT ME UP", cause=CHUNK_AS_LINE)
    alice.expect_no_more(window=0.2)


@pytest.mark.points(2)
def test_several_lines_in_one_packet(server, connect):
    """Three lines sent in one packet get three replies, in order."""
    alice = connect("alice")
    alice.send(b"one\ntwo\nthree\n")
    alice.expect_lines(["ONE", "TWO", "THREE"], cause=CHUNK_AS_LINE)
    alice.expect_no_more(window=0.2)


@pytest.mark.points(2)
def test_multibyte_character_split_across_packets(server, connect):
    """A UTF-8 character cut in two between packets arrives whole."""
    alice = connect("alice")
    data = "d\u00e9j\u00e0 vu \u2713\n".encode("utf-8")  # "déjà vu ✓"
    cut = data.index("\u00e9".encode("utf-8")) + 1           # between the two bytes of "é"
    alice.send(data[:cut])
    alice.expect_no_more(window=0.2, cause="The server replied before the line was complete. " + CHUNK_AS_LINE)
    alice.send(data[cut:])
    alice.expect_line("D\u00c9J\u00c0 VU \u2713", cause=(
        "A multi-byte character can be cut between two recv() calls, and decoding half of it fails "
        "or gives '\\ufffd'. Split the bytes into lines first, then decode each whole line."))


@pytest.mark.points(1)
def test_crlf_line_ending(server, connect):
    """A line ending in "\\r\\n" (as telnet sends) is answered without the "\\r"."""
    alice = connect("alice")
    alice.send(b"from telnet\r\n")
    alice.expect_line("FROM TELNET")


@pytest.mark.points(1)
def test_empty_line(server, connect):
    """An empty line is a line too: it gets an empty reply."""
    alice = connect("alice")
    alice.send(b"\nafter\n")
    alice.expect_lines(["", "AFTER"], cause=(
        "The empty line got no reply: an empty line (b'\\n' alone) is a line too, and its reply is "
        "an empty line. Is it skipped, or taken for the end of the connection?"))


@pytest.mark.points(2)
def test_line_far_longer_than_one_recv(server, connect):
    """A 200 kB line arrives in many recv() calls and is answered as one line."""
    alice = connect("alice")
    text = "abcdefghij" * 20_000
    alice.send((text + "\n").encode(), note=f"sent one line of {len(text)} characters")
    alice.expect_line(text.upper(), timeout=10, cause=CHUNK_AS_LINE)


@pytest.mark.points(1)
def test_many_lines_answered_in_order(server, connect):
    """A thousand lines sent at once come back, each once, in order."""
    alice = connect("alice")
    lines = [f"line {i}" for i in range(1000)]
    alice.send(("\n".join(lines) + "\n").encode(), note="sent 1000 lines in one sendall()")
    alice.expect_lines([line.upper() for line in lines], timeout=10)


@pytest.mark.points(1)
def test_serves_the_next_client_after_one_closes(server, connect):
    """After a client closes, the next one is served."""
    alice = connect("alice")
    alice.send_line("first")
    alice.expect_line("FIRST")
    bob = connect("bob")
    bob.send_line("second")
    alice.close()
    bob.expect_line("SECOND", timeout=3, cause="After one client closes, go back to accept() for the next.")


@pytest.mark.points(1)
def test_invalid_utf8_becomes_replacement_characters(server, connect):
    """Bytes that are not UTF-8 come back as U+FFFD; the connection goes on."""
    alice = connect("alice")
    alice.send(b"caf\xe9 ok\n", note="sent b'caf\\xe9 ok\\n' (0xE9 alone is not UTF-8)")
    alice.expect_line("CAF\ufffd OK", cause=(
        "Decode each whole line with errors='replace': bytes that are not UTF-8 become U+FFFD\n"
        "  instead of raising UnicodeDecodeError (docs/PROTOCOL.md, L5)."))
    alice.send_line("still here")
    alice.expect_line("STILL HERE")


@pytest.mark.points(1)
def test_unfinished_last_line_is_dropped(server, connect):
    """Bytes after the last newline, when the client closes, are no line: they get no answer."""
    alice = connect("alice")
    alice.send(b"complete\nunfinish")
    alice.expect_line("COMPLETE")
    alice.half_close()
    line = alice.read_line(DEFAULT_WAIT)
    if line is not None or alice.buffer:
        got = f"the line {show(line)}" if line is not None else show(bytes(alice.buffer))
        alice.fail(f"alice sent b'complete\\nunfinish' and then closed her side. After 'COMPLETE', "
                   f"nothing more was due: b'unfinish' never got its newline.\n"
                   f"alice received {got}",
                   "An unfinished last line is not a line (docs/PROTOCOL.md, L6): when recv() returns "
                   "b'',\n  drop what is left in the buffer, and close.")
    alice.expect_closed(cause="When the client has closed its side (recv() returns b''), close the connection.")
