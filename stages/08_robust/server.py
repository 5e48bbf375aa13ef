"""Stage 08 (starter): harden the chat server of stage 06 against real clients.

Run it:   python stages/08_robust/server.py [--host HOST] [--port PORT]
              [--max-users N] [--max-line BYTES] [--handshake-timeout SECONDS]
Try it:   nc 127.0.0.1 9801   (in two or more terminals: type a name, then lines)

This is the solution of stage 06, with the new flags parsed and a
NotImplementedError("Stage 08: ...") wherever a hardening goes. Fill them in,
in the order of README.md; `python -m pytest tests/test_08_robust.py` grades it.
"""

import argparse
import socket
import sys
import threading
import time
import unicodedata

BUFFER_SIZE = 4096
ACCEPT_TIMEOUT = 0.5  # seconds: accept() returns this often, so that Ctrl+C is seen (below)
ENCODING = "utf-8"
MAX_NAME_LENGTH = 32


def parse_args():
    parser = argparse.ArgumentParser(description="Multi-user chat server, a thread per client, hardened.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    parser.add_argument("--max-users", type=int, default=10, help="most members at once (default: 10)")
    parser.add_argument("--max-line", type=int, default=4096, help="longest line in bytes (default: 4096)")
    parser.add_argument("--handshake-timeout", type=float, default=30.0,
                        help="seconds a new client has to send its name (default: 30)")
    return parser.parse_args()


def create_listening_socket(host, port):
    """A TCP socket bound to (host, port) and listening, whose accept() waits at most ACCEPT_TIMEOUT."""
    # create_server() makes the socket, binds it and listens. On Linux and macOS it
    # sets SO_REUSEADDR first: a restarted server can bind its port at once, while
    # the old connections linger in TIME_WAIT. On Windows it sets nothing: there
    # TIME_WAIT does not block bind(), and SO_REUSEADDR would let a second server
    # bind a port that is still listening. The backlog of listen() is how many
    # connections may wait for accept(), not how many users may chat: --max-users is.
    listener = socket.create_server((host, port))
    listener.settimeout(ACCEPT_TIMEOUT)
    return listener


class LineTooLong(Exception):
    """The client sent a line longer than the limit (it is being thrown away)."""


class LineReader:
    """Splits the byte stream of one connection into lines.

    TCP delivers bytes, not messages: one recv() may return half a line, or
    several lines, or end in the middle of a multi-byte character. So bytes
    wait in a buffer until their '\\n' arrives, and only whole lines are decoded.
    """

    def __init__(self, connection, max_line):
        self.connection = connection
        self.max_line = max_line
        self.buffer = bytearray()

    def read_line(self, deadline=None):
        """The next line, without its '\\n' (or a trailing '\\r'); None once the client closed.

        TODO Stage 08: a line longer than self.max_line bytes must raise
        LineTooLong, as soon as the buffer passes the limit, and its bytes be
        thrown away as they arrive, up to its '\\n': the buffer stays bounded.
        """
        while b"\n" not in self.buffer:
            data = self.receive(deadline)
            if not data:  # the client closed; an unfinished last line is dropped
                return None
            self.buffer.extend(data)
        raw, _, rest = self.buffer.partition(b"\n")
        self.buffer = bytearray(rest)
        # A whole line never ends inside a character; "replace" keeps bad bytes
        # from killing the client's thread.
        return raw.decode(ENCODING, "replace").removesuffix("\r")

    def receive(self, deadline):
        """What recv() returns; with a deadline, it waits only for the time left until it.

        deadline is a time.monotonic() value, or None (wait as long as it takes).
        Once it has passed: raise TimeoutError.
        """
        if deadline is None:
            return self.connection.recv(BUFFER_SIZE)
        raise NotImplementedError("Stage 08: read the username by a deadline (--handshake-timeout)")


class Outbox:
    """What one client has yet to receive, sent so that a slow reader never stalls its senders.

    Several handler threads may send to this client at the same moment.
    """

    def __init__(self, connection):
        self.connection = connection

    def send(self, data):
        """Send the bytes, without ever stalling the sender for long (README.md, step 6).

        A plain sendall() blocks while this client's socket is full, so a client
        that stops reading would stall whoever sends to it, and then everyone.
        """
        raise NotImplementedError("Stage 08: send to a client without letting a slow reader stall the sender")

    def disconnect(self):
        """Nothing more is sent to this client: its writer thread (if you have one) ends and its connection is shut."""
        disconnect(self.connection)


class Member:
    """A client in the chat room: its name, and its outbox."""

    def __init__(self, connection, name):
        self.name = name
        self.outbox = Outbox(connection)

    def send_line(self, text):
        """Send one line to this client; a slow reader never stalls the caller for long."""
        self.outbox.send((text + "\n").encode(ENCODING))


class ChatRoom:
    """The members and open connections, shared by every handler thread: every use goes through the lock."""

    def __init__(self, max_users):
        self._lock = threading.Lock()
        self._members = []
        self.max_users = max_users

    def join(self, member):
        """Add the member: (None, the members who were in before it, who hear its join line).
        If the room is full or the name taken: (the Error line why, []).

        Checking, adding and taking the list for the join line are one step under
        the lock: two clients can't both get the last place, and the join line
        reaches exactly the members who were in the chat when this one was added.
        """
        raise NotImplementedError("Stage 08: admit at most max_users members, each name only once")

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

    def connected(self, connection):
        """A client connected (README.md, step 7: keep track of every open connection)."""

    def disconnected(self, connection):
        """A client's connection is closed, and its thread has done its clean-up."""

    def disconnect_all(self, timeout):
        """Ctrl+C: disconnect every client (named or not yet), so that each client sees the
        end, and wait (up to timeout seconds) for their threads to finish."""
        raise NotImplementedError("Stage 08: on Ctrl+C, disconnect every client")


def broadcast(room, text, sender):
    """Send a line to every member but the sender.

    The lock is held only to copy the list, never while sending: a slow
    client would otherwise hold up every other thread.
    """
    for member in room.everyone_but(sender):
        member.send_line(text)


def is_control(character):
    """A control character: Unicode category Cc, that is U+0000-U+001F and U+007F-U+009F."""
    return unicodedata.category(character) == "Cc"


def remove_control_characters(text):
    """The text without control characters (escape codes, bells, NUL...), but tabs kept."""
    raise NotImplementedError("Stage 08: remove control characters (but tab) from messages")


def username_problem(name):
    """Why this name can't be used (an Error line), or None if it is fine."""
    raise NotImplementedError("Stage 08: refuse blank names, names over 32 characters, ':' or control characters")


def chat(reader, member, room):
    """Forward the member's lines to the others, until /exit or the connection closes."""
    while True:
        try:
            line = reader.read_line()
        except LineTooLong:
            member.send_line(f"Error: line longer than {reader.max_line} bytes, not sent")
            continue
        if line is None or line == "/exit":
            return
        line = remove_control_characters(line)
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
    Neither call waits for the client: disconnect() never blocks.
    """
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed, or reset by the client
    if sys.platform == "win32":
        connection.close()  # its own thread's recv() then raises OSError


def refuse(connection, error):
    """Tell a client why it can't join (one Error line); the caller then disconnects it."""
    try:
        connection.sendall((error + "\n").encode(ENCODING))
    except OSError:
        pass  # it has gone already


def admit(reader, connection, room, handshake_timeout):
    """The handshake: a valid name, in time, in a room with space.

    (The new Member, the members who hear its join line), or (None, []) if refused.
    """
    try:
        name = reader.read_line(deadline=time.monotonic() + handshake_timeout)
    except TimeoutError:
        refuse(connection, f"Error: no username within {handshake_timeout:g} seconds")
        return None, []
    except LineTooLong:
        refuse(connection, "Error: the username is too long")
        return None, []
    if name is None:
        return None, []  # left before giving a name: nobody heard of it
    error = username_problem(name)
    if error is None:
        member = Member(connection, name)
        error, others = room.join(member)
        if error is None:
            return member, others
    refuse(connection, error)
    return None, []


def handle_client(connection, room, max_line, handshake_timeout):
    """One client's thread: its username, then its messages, then its clean-up."""
    member = None
    try:
        reader = LineReader(connection, max_line)
        member, others = admit(reader, connection, room, handshake_timeout)
        if member is None:
            return
        for other in others:  # sent outside the lock, like broadcast()
            other.send_line(f"{member.name} joined the chat room!")
        chat(reader, member, room)
    except OSError:
        pass  # reset by the client, or disconnected after a failed send
    finally:
        # However the connection ended (/exit, close, reset, failed send, stuck, Ctrl+C):
        if member is not None:
            leave(room, member)
            member.outbox.disconnect()  # its writer thread, if it has one, ends
        disconnect(connection)
        connection.close()
        room.disconnected(connection)


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


def serve_forever(listener, room, max_line, handshake_timeout):
    """Accept clients forever; each gets its own thread."""
    for connection in incoming_connections(listener):
        room.connected(connection)
        # daemon=True: these threads do not keep the process alive at Ctrl+C.
        thread = threading.Thread(target=handle_client, args=(connection, room, max_line, handshake_timeout),
                                  daemon=True)
        thread.start()


def main():
    args = parse_args()
    listener = create_listening_socket(args.host, args.port)
    host, port = listener.getsockname()[:2]
    # flush=True: when output goes to a pipe, print() waits for a full buffer otherwise.
    print(f"Server started on {host}:{port}", flush=True)
    room = ChatRoom(args.max_users)
    try:
        serve_forever(listener, room, args.max_line, args.handshake_timeout)
    except KeyboardInterrupt:
        pass  # Ctrl+C: close everything below, and exit with status 0
    finally:
        listener.close()
        # Every client sees its connection end; their threads finish their clean-up.
        room.disconnect_all(timeout=1.0)


if __name__ == "__main__":
    main()
