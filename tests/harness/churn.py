"""Join/leave churn for chat servers (stages 06 and 08): clients come and go, in every way a
connection can end, while stable members chat; nothing may be lost, doubled or reordered.

    from harness.churn import join, join_all, run_churn
    alice, bob = join_all(connect, ["alice", "bob"])   # both surely in the room
    run_churn(connect, rounds=8, churners=6, messages=150)

Churners run on threads of their own, on raw sockets: each joins, maybe says something,
then leaves by /exit, by closing, or by a reset (RST). Meanwhile one stable member sends
numbered messages. Every stable listener must receive every message, in order, and for
every churner it heard join, exactly one leave line. The sender must stay connected.
"""

import socket
import struct
import threading
import time

from .client import DEFAULT_WAIT
from .process import fail


def join(connect, name, server=None):
    """A client that connected and sent its username."""
    client = connect(name, server)
    client.send_line(name)
    return client


def join_all(connect, names):
    """Clients joined one after another; every earlier member reads each join line.

    The protocol has no "welcome" line, so the first two are a special case: the
    server may take the second name first, and then the second client hears of
    the first. After that, each newcomer joins a room whose members are known.
    """
    clients = [join(connect, names[0])]
    if len(names) > 1:
        first, second = clients[0], join(connect, names[1])
        seen = first_join_line(first, second, timeout=DEFAULT_WAIT)
        (second if seen is first else first).story.add("the test", "(the server took its name first)")
        clients.append(second)
    for name in names[2:]:
        newcomer = join(connect, name)
        for earlier in clients:
            earlier.expect_line(f"{name} joined the chat room!")
        clients.append(newcomer)
    return clients


def first_join_line(first, second, timeout):
    """Wait until one of two clients hears the other join; return the one that heard it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (first.closed_by_server or second.closed_by_server):
        first._check_server()  # a crashed or unfinished server fails at once
        for listener, joiner in ((first, second), (second, first)):
            if b"\n" in listener.buffer or listener._receive_some(time.monotonic() + 0.02):
                if b"\n" in listener.buffer:
                    listener.expect_line(f"{joiner.name} joined the chat room!")
                    return listener
    closed = second if second.closed_by_server else first
    other = first if closed is second else second
    closed.expect_line(f"{other.name} joined the chat room!")  # fails, with the story


def _churner(address, name, how, errors):
    try:
        sock = socket.create_connection(address, timeout=5)
    except OSError as error:
        errors.append(f"{name} could not connect: {error}")
        return
    try:
        sock.sendall(f"{name}\nhello from {name}\n".encode())
        if how == "exit":
            sock.sendall(b"/exit\n")
        elif how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # a server under churn may reset us; the listeners' view is what is checked
    finally:
        sock.close()


def run_churn(connect, rounds=8, churners=6, messages=150, timeout=20.0, listeners=2):
    """Churn while 'speaker' sends `messages` numbered lines to `listeners` stable members."""
    speaker, *stable = join_all(connect, ["speaker"] + [f"listener{n}" for n in range(listeners)])
    story = speaker.story
    address = speaker.address
    errors = []
    ways = ("exit", "close", "reset")

    def churn():
        for round_number in range(rounds):
            threads = [threading.Thread(target=_churner, daemon=True,
                                        args=(address, f"c{round_number}x{i}", ways[(round_number + i) % 3], errors))
                       for i in range(churners)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)

    churn_thread = threading.Thread(target=churn, daemon=True)
    story.add("the test", f"started churn: {rounds} rounds of {churners} clients joining and leaving "
                          f"(by /exit, close and reset)")
    churn_thread.start()
    for number in range(messages):
        speaker.send_line(f"message {number:04}")
    story.add("speaker", f"sent 'message 0000' ... 'message {messages - 1:04}'")
    churn_thread.join(30)
    if errors:
        fail("Churn clients could not connect:\n  " + "\n  ".join(errors[:5]))
    for listener in stable:
        _check_listener(listener, messages, timeout)
    speaker.send_line("still connected?")
    for listener in stable:
        _wait(listener, lambda state: "speaker: still connected?" in state["other"], timeout,
              "the speaker's last line", "The speaker must stay connected through the churn.")
    server = speaker.server
    if server is not None:
        server.assert_no_traceback("the churn")


def _check_listener(listener, messages, timeout):
    """Every message in order; for each churner heard joining, exactly one leave line."""
    state = {"next": 0, "joined": {}, "left": {}, "other": [], "bad": []}

    def done(state):
        return (state["next"] >= messages and
                all(state["left"].get(name, 0) == 1 for name in state["joined"]))

    _wait(listener, done, timeout, f"all {messages} messages and a leave line for every join",
          "Under churn, a message to the stable members was lost, or a leave line is missing.\n"
          "  Is the list of clients changed while another thread iterates over it, without a lock?",
          state=state)


def _wait(listener, condition, timeout, what, cause, state=None):
    state = state if state is not None else {"next": 0, "joined": {}, "left": {}, "other": [], "bad": []}
    deadline = time.monotonic() + timeout
    while not condition(state):
        line = listener.read_line(max(0.0, deadline - time.monotonic()))
        if line is None:
            _report(listener, state, what, cause)
        _classify(line, state)
        if state["bad"]:
            _report(listener, state, what, "; ".join(state["bad"][:3]))
    return state


def _classify(line, state):
    if line.startswith("speaker: message "):
        number = int(line.rsplit(" ", 1)[1])
        if number != state["next"]:
            state["bad"].append(f"'message {number:04}' arrived where 'message {state['next']:04}' was due")
        state["next"] = number + 1
    elif line.endswith(" joined the chat room!"):
        name = line[:-len(" joined the chat room!")]
        state["joined"][name] = state["joined"].get(name, 0) + 1
        if state["joined"][name] > 1:
            state["bad"].append(f"{name} was announced joining twice")
    elif line.endswith(" exited the chat room"):
        name = line[:-len(" exited the chat room")]
        state["left"][name] = state["left"].get(name, 0) + 1
        if state["left"][name] > 1:
            state["bad"].append(f"{name}'s leave line arrived twice: a client must leave exactly once")
        if name not in state["joined"]:
            state["bad"].append(f"{name} left without having joined")
    else:
        state["other"].append(line)


def _report(listener, state, what, cause):
    missing_leave = [n for n in state["joined"] if state["left"].get(n, 0) != 1]
    listener._fail(f"{listener.name} expected {what}.\n"
                   f"It received messages up to number {state['next'] - 1}; "
                   f"{len(state['joined'])} join lines, {sum(state['left'].values())} leave lines"
                   + (f"; no leave line yet for {missing_leave[:5]}" if missing_leave else "") + ".",
                   cause)
