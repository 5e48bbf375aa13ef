"""Stage 08 (starter): harden the chat server of stage 06 against real clients.

Run it:   python server.py [--host HOST] [--port PORT]
                           [--max-users N] [--max-line BYTES] [--handshake-timeout SECONDS]
Try it:   nc localhost 9801   (in two or more terminals: type a name, then lines)

This is the solution of stage 06, with the new flags parsed and a
NotImplementedError("Stage 08: ...") wherever a hardening goes. Fill them in,
in the order of README.md; `python -m pytest tests/test_08_robust.py` grades it.
"""

import argparse
import socket
import threading
import time
import unicodedata

BUFFER_SIZE = 4096
ENCODING = "utf-8"
MAX_NAME_LENGTH = 32


def parse_args():
    parser = argparse.ArgumentParser(description="Multi-user chat server, a thread per client, hardened.")
    parser.add_argument("--host", default="localhost", help="address to listen on (default: localhost)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    parser.add_argument("--max-users", type=int, default=10, help="most members at once (default: 10)")
    parser.add_argument("--max-line", type=int, default=4096, help="longest line in bytes (default: 4096)")
    parser.add_argument("--handshake-timeout", type=float, default=30.0,
                        help="seconds a new client has to send its name (default: 30)")
    return parser.parse_args()


def create_listening_socket(host, port):
    """A TCP socket bound to (host, port) and listening for connections."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Lets a restarted server bind the port at once, instead of failing with
    # "Address already in use" while old connections linger in TIME_WAIT.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen()
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

    def read_line(self):
        """The next line, without its '\\n' (or a trailing '\\r'); None once the client closed.

        TODO Stage 08: a line longer than self.max_line bytes must raise
        LineTooLong, as soon as the buffer passes the limit, and its bytes be
        thrown away as they arrive, up to its '\\n': the buffer stays bounded.
        """
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
        """Send one line, without ever stalling the sender for long (README.md, step 6).

        A plain sendall() blocks while this client's socket is full, so a client
        that stops reading would stall whoever sends to it, and then everyone.
        """
        raise NotImplementedError("Stage 08: send to a member without letting a slow reader stall the sender")

    def close(self):
        """This member has left: stop whatever sends to it (a writer thread, if you have one)."""


class ChatRoom:
    """The members, shared by every handler thread: every use goes through the lock."""

    def __init__(self, max_users):
        self._lock = threading.Lock()
        self._members = []
        self.max_users = max_users

    def join(self, member):
        """Add the member: (None, the members who were in before it, who hear its join line).
        If the room is full or the name taken: (the Error line why, []).

        Checking, adding and taking the list for the join line: one step, under the lock.
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


def broadcast(room, text, sender):
    """Send a line to every member but the sender.

    The lock is held only to copy the list, never while sending: a slow
    client would otherwise hold up every other thread.
    """
    for member in room.everyone_but(sender):
        member.send_line(text)


def remove_control_characters(text):
    """The text without control characters (escape codes, bells, NUL...), but tabs kept."""
    raise NotImplementedError("Stage 08: remove control characters (but tab) from messages")


def username_problem(name):
    """Why this name can't be used (an Error line), or None if it is fine."""
    raise NotImplementedError("Stage 08: refuse blank names, names over 32 characters, ':' or control characters")


def read_username(reader, timeout):
    """The client's first line, which must arrive within timeout seconds (else TimeoutError)."""
    raise NotImplementedError("Stage 08: read the username with a deadline (--handshake-timeout)")


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
    """Close a connection so that the client, and a recv() waiting on it, both notice.

    close() alone does not wake a recv() blocked in another thread, and sends
    no FIN until that recv() returns; shutdown() does both.
    """
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed, or reset by the client


def refuse(connection, error):
    """Tell a client why it can't join (one Error line); the caller then disconnects it."""
    try:
        connection.sendall((error + "\n").encode(ENCODING))
    except OSError:
        pass  # it has gone already


def admit(reader, connection, room, args):
    """The handshake: a valid name, in time, in a room with space.

    (The new Member, the members who hear its join line), or (None, []) if refused.
    """
    try:
        name = read_username(reader, args.handshake_timeout)
    except TimeoutError:
        refuse(connection, f"Error: no username within {args.handshake_timeout:g} seconds")
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
        member.close()
    refuse(connection, error)
    return None, []


def handle_client(connection, room, args):
    """One client's thread: its username, then its messages, then its clean-up."""
    member = None
    try:
        reader = LineReader(connection, args.max_line)
        member, others = admit(reader, connection, room, args)
        if member is None:
            return
        for other in others:  # sent outside the lock, like broadcast()
            other.send_line(f"{member.name} joined the chat room!")
        chat(reader, member, room)
    except OSError:
        pass  # reset by the client, or disconnected after a failed send
    finally:
        # However the connection ended (/exit, close, reset, failed send, stuck):
        if member is not None:
            leave(room, member)
            member.close()
        disconnect(connection)
        connection.close()


def serve_forever(listener, room, args):
    """Accept clients forever; each gets its own thread."""
    while True:
        connection, address = listener.accept()
        # daemon=True: these threads do not keep the process alive at Ctrl+C.
        thread = threading.Thread(target=handle_client, args=(connection, room, args), daemon=True)
        thread.start()


def shut_down(room):
    """Ctrl+C: close every client connection (named or not yet), so that each client sees
    the end, and let the handler threads finish, within about a second."""
    raise NotImplementedError("Stage 08: on Ctrl+C, close every client connection")


def main():
    args = parse_args()
    listener = create_listening_socket(args.host, args.port)
    host, port = listener.getsockname()[:2]
    # flush=True: when output goes to a pipe, print() waits for a full buffer otherwise.
    print(f"Server started on {host}:{port}", flush=True)
    room = ChatRoom(args.max_users)
    try:
        serve_forever(listener, room, args)
    except KeyboardInterrupt:
        pass  # Ctrl+C: close everything below, and exit with status 0
    finally:
        listener.close()
        shut_down(room)


if __name__ == "__main__":
    main()
