"""Stage 03_threads: the line server, many clients at once, a thread each (CONTRACT section 3)."""

import pytest

ONE_AT_A_TIME = ("While one client is connected, the server answers nobody else: it is still serving "
                 "one client at a time. Start a thread for each client, and go straight back to accept().")


@pytest.mark.points(2)
def test_second_client_served_while_first_stays_connected(server, connect):
    """A client is answered while another one stays connected and silent."""
    alice = connect("alice")
    alice.send_line("alice here")
    alice.expect_line("ALICE HERE")
    bob = connect("bob")
    bob.send_line("bob here")
    bob.expect_line("BOB HERE", hint=ONE_AT_A_TIME)
    alice.send_line("still here")
    alice.expect_line("STILL HERE")


@pytest.mark.points(2)
def test_silent_client_holds_nobody_up(server, connect):
    """A client that sent half a line and went quiet does not delay anyone."""
    alice = connect("alice")
    alice.send(b"half a li")
    bob = connect("bob")
    bob.send_line("not blocked")
    bob.expect_line("NOT BLOCKED", hint=ONE_AT_A_TIME)
    alice.send(b"ne\n")
    alice.expect_line("HALF A LINE")


@pytest.mark.points(2)
def test_clients_lines_do_not_mix(server, connect):
    """Each client has its own buffer: one client's half line never joins another's."""
    alice = connect("alice")
    bob = connect("bob")
    # A whole line and a half one in one packet: once alice's reply arrives, the
    # server has surely received her half line too, before bob sends anything.
    alice.send(b"alice's first\nalice's unfinished")
    alice.expect_line("ALICE'S FIRST")
    bob.send_line("bob's line")
    bob.expect_line("BOB'S LINE", hint=(
        "Bytes from another client got into this client's line. Keep each client's pending "
        "bytes in a variable of its own thread (a local), not in a global."))
    alice.send(b" line\n")
    alice.expect_line("ALICE'S UNFINISHED LINE")


@pytest.mark.points(3)
def test_fifty_clients_at_once(server, connect):
    """Fifty clients connected together each get their own replies."""
    clients = [connect(f"client{i:02}") for i in range(50)]
    for i, client in enumerate(clients):
        client.send_line(f"hello from {i}")
    for i, client in enumerate(clients):
        client.expect_line(f"HELLO FROM {i}", timeout=5, hint=ONE_AT_A_TIME)
    for i, client in enumerate(clients):
        client.send_line(f"bye from {i}")
    for i, client in enumerate(clients):
        client.expect_line(f"BYE FROM {i}", timeout=5)


@pytest.mark.points(2)
def test_framing_still_holds_with_many_clients(server, connect):
    """Lines split byte by byte from two clients at once are answered whole."""
    alice = connect("alice")
    bob = connect("bob")
    for byte_a, byte_b in zip(b"abcdefgh\n", b"12345678\n"):
        alice.sock.sendall(bytes([byte_a]))
        bob.sock.sendall(bytes([byte_b]))
    alice.story.add("alice and bob", "sent 'abcdefgh\\n' and '12345678\\n' one byte at a time, in turns")
    alice.expect_line("ABCDEFGH")
    bob.expect_line("12345678")


@pytest.mark.points(1)
def test_a_client_leaving_does_not_disturb_others(server, connect):
    """A client that closes or resets ends only its own thread."""
    alice = connect("alice")
    bob = connect("bob")
    alice.send_line("leaving")
    alice.expect_line("LEAVING")
    alice.reset()
    bob.send_line("still served")
    bob.expect_line("STILL SERVED")
    carol = connect("carol")
    carol.send_line("new arrival")
    carol.expect_line("NEW ARRIVAL")
