"""Stage 06: the original assignment's chat server, with its races and bugs fixed.

Run it:   python solutions/06_races/server.py [--host HOST] [--port PORT]
Try it:   nc 127.0.0.1 9801   (in two or more terminals: type a name, then lines)

The shape is the original's: a thread per client, a list of clients shared by
every thread, broadcast() sending to all but the sender. What changed:
  - the shared list lives in a ChatRoom that only touches it under a lock, and
    broadcast() sends to a snapshot of it, outside the lock (a join line goes
    to the snapshot taken in the same locked step as the add);
  - messages are lines, read with a LineReader, not whatever one recv() returned;
  - a client leaves exactly once, however its connection ends;
  - a failed send never disturbs the sender; no bare except.
"""

import argparse
import socket
import sys
import threading

BUFFER_SIZE = 4096
ACCEPT_TIMEOUT = 0.5  # seconds: accept() returns this often, so that Ctrl+C is seen (below)
ENCODING = "utf-8"


def parse_args():
    parser = argparse.ArgumentParser(description="Multi-user chat server, a thread per client.")
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


class LineReader:
    """Splits the byte stream of one connection into lines.

    TCP delivers bytes, not messages: one recv() may return half a line, or
    several lines, or end in the middle of a multi-byte character. So bytes
    wait in a buffer until their '\\n' arrives, and only whole lines are decoded.
    """

    def __init__(self, connection):
        self.connection = connection
        self.buffer = bytearray()

    def read_line(self):
        """The next line, without its '\\n' (or a trailing '\\r'); None once the client closed."""
        while b"\n" not in self.buffer:
            data = self.connection.recv(BUFFER_SIZE)
            if not data:  # the client closed; an unfinished last line is dropped
                return None
            self.buffer.extend(data)
        raw, _, rest = self.buffer.partition(b"\n")
        self.buffer = bytearray(rest)
        # A whole line never ends inside a character; "replace" keeps bad bytes
        # from killing the client's thread.
        return raw.decode(ENCODING, "replace").removesuffix("\r")


class Member:
    """A client in the chat room: its connection and its name."""

    def __init__(self, connection, name):
        self.connection = connection
        self.name = name
        # Several handler threads may send to this client at the same moment;
        # one at a time, so that two long lines never interleave.
        self.send_lock = threading.Lock()

    def send_line(self, text):
        """Send one line; if that fails, disconnect this member (never the sender)."""
        data = (text + "\n").encode(ENCODING)
        try:
            with self.send_lock:
                self.connection.sendall(data)
        except OSError:
            # This member's connection is broken. Its own handler thread does
            # the clean-up: disconnect() wakes it from recv().
            disconnect(self.connection)


class ChatRoom:
    """The members, shared by every handler thread: every use goes through the lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self._members = []

    def add(self, member):
        """Add a member; return the members who were in before it (they hear its join line).

        One step under the lock: the join line reaches exactly the clients in the
        chat when this one was added, never one who joined a moment later.
        """
        with self._lock:
            others = list(self._members)
            self._members.append(member)
            return others

    def remove(self, member):
        """Forget a member. True for the call that removed it, False if it was already gone."""
        with self._lock:
            if member not in self._members:
                return False
            self._members.remove(member)
            return True

    def everyone_but(self, sender):
        """A snapshot: other threads may join or leave while we send to it."""
        with self._lock:
            return [member for member in self._members if member is not sender]


def broadcast(room, text, sender):
    """Send a line to every member but the sender.

    The lock is held only to copy the list, never while sending: a slow
    client would otherwise hold up every other thread.
    """
    for member in room.everyone_but(sender):
        member.send_line(text)


def chat(reader, member, room):
    """Forward the member's lines to the others, until /exit or the connection closes."""
    while True:
        line = reader.read_line()
        if line is None or line == "/exit":
            return
        if line.strip():  # blank lines are ignored
            broadcast(room, f"{member.name}: {line}", member)


def leave(room, member):
    """Remove the member and tell the others, exactly once."""
    if room.remove(member):
        broadcast(room, f"{member.name} exited the chat room", member)


def disconnect(connection):
    """End a connection so that the client, and a recv() waiting on it in another thread, both notice.

    shutdown() sends the FIN at once on every system. On Linux and macOS it also
    wakes a recv() blocked in another thread (it returns b""); on Windows it does
    not, and only close() does (CPython issue #91913), so there we close too.
    Elsewhere the socket's own thread closes it when it is done with it.
    """
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed, or reset by the client
    if sys.platform == "win32":
        connection.close()  # its own thread's recv() then raises OSError


def handle_client(connection, room):
    """One client's thread: its username, then its messages, then its clean-up."""
    member = None
    try:
        reader = LineReader(connection)
        name = reader.read_line()
        if name is None:
            return  # left before giving a name: nobody heard of it
        member = Member(connection, name)
        for other in room.add(member):  # sent outside the lock, like broadcast()
            other.send_line(f"{name} joined the chat room!")
        chat(reader, member, room)
    except OSError:
        pass  # reset by the client, or disconnected after a failed send
    finally:
        # However the connection ended (/exit, close, reset, failed send):
        if member is not None:
            leave(room, member)
        disconnect(connection)
        connection.close()


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


def serve_forever(listener, room):
    """Accept clients forever; each gets its own thread."""
    for connection in incoming_connections(listener):
        # daemon=True: these threads do not keep the process alive at Ctrl+C.
        thread = threading.Thread(target=handle_client, args=(connection, room), daemon=True)
        thread.start()


def main():
    args = parse_args()
    listener = create_listening_socket(args.host, args.port)
    host, port = listener.getsockname()[:2]
    # flush=True: when output goes to a pipe, print() waits for a full buffer otherwise.
    print(f"Server started on {host}:{port}", flush=True)
    try:
        serve_forever(listener, ChatRoom())
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
