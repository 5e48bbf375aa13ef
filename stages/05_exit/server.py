"""Stage 05: the chat, with /exit, and clients that vanish without saying goodbye.

A client's first line is its username; the others hear "NAME joined the chat
room!". Every later non-blank line reaches every other client as "NAME: TEXT".
A client leaves with the line /exit, by closing, or by a reset: either way the
others hear "NAME exited the chat room", once, and the server forgets it.

Starting point: the stage 04 solution. The parts marked TODO are yours (read
README.md): each raises NotImplementedError until you write it.

Run it:   python stages/05_exit/server.py [--host HOST] [--port PORT]
Try it:   nc 127.0.0.1 9801   (in two terminals: type a name, then lines)
"""

import argparse
import socket
import threading

BUFFER_SIZE = 4096
ACCEPT_TIMEOUT = 0.5  # seconds: accept() returns this often, so that Ctrl+C is seen (below)
EXIT_COMMAND = "/exit"


def parse_args():
    parser = argparse.ArgumentParser(description="Chat server: a thread per client.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def create_listening_socket(host, port):
    """A TCP socket bound to (host, port) and listening, whose accept() waits at most ACCEPT_TIMEOUT."""
    # create_server() makes the socket, binds it and listens. On Linux and macOS it
    # sets SO_REUSEADDR first: a restarted server can bind its port at once, while
    # the old connections linger in TIME_WAIT. On Windows it sets nothing: there
    # TIME_WAIT does not block bind(), and SO_REUSEADDR would let a second server
    # bind a port that is still listening.
    listener = socket.create_server((host, port))
    listener.settimeout(ACCEPT_TIMEOUT)
    return listener


def decode_line(raw):
    """Bytes of one line (without its "\\n") as text, with a trailing "\\r" dropped."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    # Decoding a whole line is safe: a multi-byte character never contains the
    # byte b"\n", so it can't be cut in two by the split. A chunk from recv() can.
    return raw.decode("utf-8", errors="replace")


def read_lines(connection):
    """Yield each complete line the client sends, until it closes.

    recv() returns whatever bytes have arrived: part of a line, or several
    lines at once. Bytes wait in `pending` until their "\\n" arrives.
    """
    pending = bytearray()
    while True:
        data = connection.recv(BUFFER_SIZE)
        if not data:  # the client closed: an unfinished line is dropped
            return
        pending += data
        if b"\n" not in data:
            continue  # no line finished yet; don't rescan a long line
        *lines, rest = pending.split(b"\n")
        pending = bytearray(rest)
        for raw in lines:
            yield decode_line(raw)


def send_line(connection, text):
    connection.sendall((text + "\n").encode("utf-8"))


# ---- the chat room (new in stage 04) -------------------------------------------


class Member:
    """A client who has given its username: its connection and its name."""

    def __init__(self, connection, name):
        self.connection = connection
        self.name = name
        # Several threads may send to this client at the same moment: one at a
        # time, so that two long lines never get mixed together on the wire.
        self.send_lock = threading.Lock()

    def send_line(self, text):
        """Send one line to this member; a broken connection is its own thread's problem."""
        try:
            with self.send_lock:
                send_line(self.connection, text)
        except OSError:
            pass  # this member has gone; its own thread notices and ends


class ChatRoom:
    """Everyone in the chat. Every thread uses it, so every use takes the lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self._members = []

    def add(self, member):
        """Put a member in the chat; return the members who were in before it.

        Adding and taking that list are one step, under the lock: exactly those
        members hear the join line. A list taken a moment later could hold a
        client that joined meanwhile, who would then hear of someone already there.
        """
        with self._lock:
            others = list(self._members)
            self._members.append(member)
            return others

    def remove(self, member):
        """Forget a member. True for the call that removed it, False if it was gone already."""
        # TODO: like add(), hold the lock.
        raise NotImplementedError("Stage 05: ChatRoom.remove()")

    def everyone_but(self, sender):
        """A copy of the list: others may join while we send, and sending is done outside the lock."""
        with self._lock:
            return [member for member in self._members if member is not sender]


def broadcast(room, text, sender):
    """Send a line to every member but the sender (never while holding the lock:
    one slow client would hold up every thread)."""
    for member in room.everyone_but(sender):
        member.send_line(text)


def receive_username(lines):
    """The client's first line is its username; None if it closed before sending one."""
    return next(lines, None)


def welcome(room, member):
    """Add the member, and tell the members who were in before it (outside the lock)."""
    for other in room.add(member):
        other.send_line(f"{member.name} joined the chat room!")


def relay_messages(lines, member, room):
    """Forward each non-blank line to the others as NAME: TEXT, in the order sent,
    until the client sends /exit or its connection ends."""
    for line in lines:
        # TODO: stop at the line EXIT_COMMAND (serve_client then says goodbye).
        if line.strip():  # blank lines are ignored
            broadcast(room, f"{member.name}: {line}", member)


def say_goodbye(room, member):
    """Forget the member and tell the others, exactly once, however it left:
    NAME exited the chat room"""
    # TODO
    raise NotImplementedError("Stage 05: say_goodbye()")


def close_connection(connection):
    """Close so that the client sees it at once.

    shutdown() sends the FIN now, on every system. close() alone may not: on
    Linux it sends nothing while another thread is still inside a call on this
    socket (a send() to this client from another client's thread, say), and the
    client would wait for its goodbye.
    Hint: shutdown() raises OSError when the client has gone already.
    """
    # TODO
    raise NotImplementedError("Stage 05: close_connection()")


def serve_client(connection, room):
    """Runs in the client's own thread: its username, its messages, then its goodbye."""
    member = None
    try:
        lines = read_lines(connection)
        name = receive_username(lines)
        if name is None:
            return
        member = Member(connection, name)
        welcome(room, member)
        relay_messages(lines, member, room)
    except ConnectionError:
        pass  # the client vanished (reset): it leaves like any other
    finally:
        # /exit, a close and a reset all end up here, so each leaves once.
        if member is not None:
            say_goodbye(room, member)
        close_connection(connection)


def start_client_thread(connection, room):
    # daemon=True: these threads don't keep the process alive when main() ends.
    thread = threading.Thread(target=serve_client, args=(connection, room), daemon=True)
    thread.start()


def incoming_connections(listener):
    """Each client's connection, as it arrives, forever.

    Why not just wait in accept()? On Windows, Ctrl+C does not interrupt a
    blocked accept() (CPython issue #85609): the KeyboardInterrupt would wait
    for the next client. With the listener's timeout, accept() returns every
    ACCEPT_TIMEOUT seconds, and Ctrl+C stops the server within that time on every
    system; the standard library's socketserver polls every 0.5 s for the same reason.
    The connections it gives have no timeout: their recv() waits as long as it takes.
    """
    while True:
        try:
            connection, address = listener.accept()
        except TimeoutError:  # named socket.timeout before Python 3.10
            continue  # nobody came: wait again
        except ConnectionError:
            continue  # a client gave up before we took it (seen on Windows): not our problem
        yield connection


def serve_forever(listener):
    """Accept clients forever; each one is served by a thread of its own."""
    room = ChatRoom()
    for connection in incoming_connections(listener):
        start_client_thread(connection, room)


def main():
    args = parse_args()
    listener = create_listening_socket(args.host, args.port)
    host, port = listener.getsockname()[:2]
    # flush=True: when output goes to a pipe, print() waits for a full buffer otherwise.
    print(f"Server started on {host}:{port}", flush=True)
    try:
        serve_forever(listener)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
