"""Stage 03_threads: the line server, many clients at once, a thread each (docs/PROTOCOL.md, sections 1 and 4)."""

import ast
import socket

import pytest

from grader.harness.client import DEFAULT_WAIT, likely_cause, show

ONE_AT_A_TIME = ("{silent} got no reply while {busy} stays connected: the server is still busy\n"
                 "  with {busy}, serving one client at a time. Start a thread for each client, and go\n"
                 "  straight back to accept(). (If you did start one: is its target called too early,\n"
                 "  as in Thread(target=serve_client(connection))? Pass the function and its arguments:\n"
                 "  Thread(target=serve_client, args=(connection,)).)")
TARGET_CALLED_EARLY = (
    "{silent} got no reply while {busy} stays connected: the thread's target is called too early.\n"
    "  server.py line {line}: Thread(target={call}, ...)\n"
    "  calls {call} right away, in the main thread, which serves {busy} until it leaves;\n"
    "  only then is the Thread made, with the call's result (None) as its target.\n"
    "  Pass the function itself and its arguments separately: Thread(target={name}, args=(...,)).")


def early_target_calls(stage_dir):
    """Thread(target=f(x)) calls in the graded server.py, as (line number, call text, f's name)."""
    try:
        source = (stage_dir / "server.py").read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return []
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _called_name(node.func) == "Thread"):
            continue
        for keyword in node.keywords:
            if keyword.arg == "target" and isinstance(keyword.value, ast.Call):
                call = ast.get_source_segment(source, keyword.value) or "..."
                found.append((node.lineno, call, _called_name(keyword.value.func) or "the_function"))
    return found


def _called_name(func):
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def not_served_cause(stage_dir, silent, busy):
    """Why `silent` gets no reply while `busy` stays connected, fitted to the code."""
    early = early_target_calls(stage_dir)
    if not early:
        return ONE_AT_A_TIME.format(silent=silent, busy=busy)
    line, call, name = early[0]
    return TARGET_CALLED_EARLY.format(silent=silent, busy=busy, line=line, call=call, name=name)


def mixed_with(other, other_bytes):
    """wrong_line_cause for expect_reply: another client's bytes in this client's line."""
    def cause(got):
        if other_bytes in got:
            return (f"{other}'s bytes ({other_bytes!r}) are in this line: bytes from another client got\n"
                    "  into this client's line. Keep each client's pending bytes in a variable of its\n"
                    "  own thread (a local), not in a global.")
        return None
    return cause


def expect_reply(client, expected, silent_cause, wrong_line_cause=None, timeout=DEFAULT_WAIT):
    """The client's next line must be `expected`; the cause given fits what was observed.

    silent_cause: for no reply at all; wrong_line_cause(got): for a wrong line.
    """
    got = client.read_line(timeout)
    if got == expected:
        return got
    if got is None:
        # Silence and a closed connection are different stories: the harness tells the latter.
        client.fail_missing(f"the line {expected!r}", timeout,
                             None if client.closed_by_server else silent_cause)
    cause = wrong_line_cause(got) if wrong_line_cause else None
    client.fail(f"{client.name} expected the line {show(expected)}\n"
                 f"{client.name} received the line {show(got)}",
                 cause or likely_cause(expected, got))


@pytest.mark.points(2)
def test_second_client_served_while_first_stays_connected(server, connect, stage_dir):
    """A client is answered while another one stays connected and silent."""
    alice = connect("alice")
    alice.send_line("alice here")
    alice.expect_line("ALICE HERE")
    bob = connect("bob")
    bob.send_line("bob here")
    expect_reply(bob, "BOB HERE", not_served_cause(stage_dir, "bob", "alice"))
    alice.send_line("still here")
    alice.expect_line("STILL HERE")


@pytest.mark.points(2)
def test_silent_client_holds_nobody_up(server, connect, stage_dir):
    """A client that sent half a line and went quiet does not delay anyone."""
    alice = connect("alice")
    alice.send(b"half a li")
    bob = connect("bob")
    bob.send_line("not blocked")
    expect_reply(bob, "NOT BLOCKED", not_served_cause(stage_dir, "bob", "alice"),
                 mixed_with("alice", "HALF A LI"))
    alice.send(b"ne\n")
    alice.expect_line("HALF A LINE")


@pytest.mark.points(2)
def test_clients_lines_do_not_mix(server, connect, stage_dir):
    """Each client has its own buffer: one client's half line never joins another's."""
    alice = connect("alice")
    bob = connect("bob")
    # A whole line and a half one in one packet: once alice's reply arrives, the
    # server has surely received her half line too, before bob sends anything.
    alice.send(b"alice's first\nalice's unfinished")
    alice.expect_line("ALICE'S FIRST")
    bob.send_line("bob's line")
    expect_reply(bob, "BOB'S LINE", not_served_cause(stage_dir, "bob", "alice"),
                 mixed_with("alice", "ALICE'S UNFINISHED"))
    alice.send(b" line\n")
    alice.expect_line("ALICE'S UNFINISHED LINE")


@pytest.mark.points(3)
def test_fifty_clients_at_once(server, connect, stage_dir):
    """Fifty clients connected together each get their own replies."""
    # The first client is answered before the others connect: a server that cannot
    # serve even one client is reported as such, with its error, not as "could not connect".
    first = connect("client00")
    first.send_line("hello from 0")
    first.expect_line("HELLO FROM 0")
    clients = [first]
    for i in range(1, 50):
        if server.exited():
            first.fail(f"The server stopped after {i} clients had connected.")
        clients.append(connect(f"client{i:02}"))
    for i, client in enumerate(clients[1:], 1):
        client.send_line(f"hello from {i}")
    for i, client in enumerate(clients[1:], 1):
        expect_reply(client, f"HELLO FROM {i}", not_served_cause(stage_dir, client.name, "client00"))
    for i, client in enumerate(clients):
        client.send_line(f"bye from {i}")
    for i, client in enumerate(clients):
        client.expect_line(f"BYE FROM {i}")


@pytest.mark.points(2)
def test_framing_still_holds_with_many_clients(server, connect, stage_dir):
    """Lines split byte by byte from two clients at once are answered whole."""
    alice = connect("alice")
    bob = connect("bob")
    # Both are served before the bytes start: a server that serves nobody, or one
    # client at a time, is reported here with a cause that fits.
    alice.send_line("ready")
    alice.expect_line("READY")
    bob.send_line("ready")
    expect_reply(bob, "READY", not_served_cause(stage_dir, "bob", "alice"))
    send_bytes_in_turns([alice, bob], [b"abcdefgh\n", b"12345678\n"])
    alice.expect_line("ABCDEFGH")
    bob.expect_line("12345678")


def send_bytes_in_turns(clients, datas):
    """Each client sends its data one byte at a time, the clients taking turns.

    TCP_NODELAY sends each byte in a packet of its own, so the server's recv()
    calls see the lines in pieces, and the two clients' pieces interleaved.
    """
    for client in clients:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    story = clients[0].story
    story.add(" and ".join(c.name for c in clients),
              "sent " + " and ".join(show(d) for d in datas) + " one byte at a time, in turns")
    for position in range(max(len(d) for d in datas)):
        for client, data in zip(clients, datas):
            if position < len(data):
                # Client.send reports a connection the server closed or reset
                # (with the server's error output), not a bare exception.
                client.send(data[position:position + 1])
                story.steps.pop()  # one step for the whole exchange, above


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
