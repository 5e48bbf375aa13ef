"""Stage 08: the chat server of stage 06, hardened against real clients.

Run it:   python server.py [--host HOST] [--port PORT]
                           [--max-users N] [--max-line BYTES] [--handshake-timeout SECONDS]
Try it:   nc localhost 9801   (in two or more terminals: type a name, then lines)

The shape is stage 06's: a thread per client, a ChatRoom under a lock,
broadcast() to a snapshot. What it adds:
  - at most --max-users members, each name valid and used once (checked and
    added under one lock, so two clients can never both take the last place);
  - a line longer than --max-line bytes is thrown away as it arrives, so the
    memory kept for one client stays bounded, and its sender gets an Error line;
  - a client must send its name within --handshake-timeout seconds;
  - invalid UTF-8 becomes U+FFFD; control characters (but tab) are removed;
  - a client that stops reading never stalls the others: each line is sent at
    once while the client keeps up, and queued, for a writer thread of its
    own, only when its socket is full; a client stuck for STUCK_AFTER seconds
    is disconnected;
  - Ctrl+C closes every connection and exits with status 0.
"""

import argparse
import collections
import socket
import threading
import time
import unicodedata

BUFFER_SIZE = 4096
ENCODING = "utf-8"
MAX_NAME_LENGTH = 32
# Bytes waiting for one client that is behind. Past this, its senders wait
# (briefly) for it to catch up: this bounds the memory a slow reader can cost.
QUEUE_LIMIT = 256 * 1024
# The writer thread sends queued lines in batches of up to this many bytes:
# one sendall() per batch, not per line, is what keeps a queue fast.
BATCH_SIZE = 64 * 1024
# A client that is behind and takes nothing for this long is disconnected.
STUCK_AFTER = 3.0
# Send without waiting where the platform can (Linux, macOS). Without it
# (Windows), every line goes through the writer thread: slower, still correct.
# ALTERNATIVE 08_no_dontwait: the one change from solutions/08_robust/server.py.
# 0 takes the code path for platforms without MSG_DONTWAIT (Windows): every line
# goes through the member's queue and writer thread, never sent directly.
DONT_WAIT = 0


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
    """A TCP socket bound to (host, port) and listening for connections."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Lets a restarted server bind the port at once, instead of failing with
    # "Address already in use" while old connections linger in TIME_WAIT.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    # The backlog is how many connections may wait for accept(), not how many
    # users may chat: the limit is --max-users, enforced by ChatRoom.join().
    listener.listen()
    return listener


class LineTooLong(Exception):
    """The client sent a line longer than the limit (it is being thrown away)."""


class LineReader:
    """Splits the byte stream of one connection into lines of at most max_line bytes.

    TCP delivers bytes, not messages: one recv() may return half a line, or
    several lines, or end in the middle of a multi-byte character. So bytes
    wait in a buffer until their '\\n' arrives, and only whole lines are decoded.
    The buffer never grows past max_line + BUFFER_SIZE: a longer line is
    thrown away as it arrives, up to its '\\n'.
    """

    def __init__(self, connection, max_line):
        self.connection = connection
        self.max_line = max_line
        self.buffer = bytearray()
        self.skipping = False  # inside a line that was too long: drop bytes up to its '\n'
        self.deadline = None   # while set, recv() gives up at this time.monotonic()

    def read_line(self):
        """The next line, without its '\\n' (or a trailing '\\r'); None once the client closed.

        Raises LineTooLong (once per long line) as soon as a line passes the limit.
        """
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                raw = bytes(self.buffer[:end])
                del self.buffer[:end + 1]
                if self.skipping:  # the tail of a long line: already reported
                    self.skipping = False
                    continue
                if len(raw) > self.max_line:
                    raise LineTooLong()
                # A whole line never ends inside a character; "replace" keeps bad
                # bytes from killing the client's thread.
                return raw.decode(ENCODING, "replace").removesuffix("\r")
            if self.skipping:
                self.buffer.clear()
            elif len(self.buffer) > self.max_line:
                self.buffer.clear()  # never keep more than the limit
                self.skipping = True
                raise LineTooLong()
            data = self.receive()
            if not data:  # the client closed; an unfinished last line is dropped
                return None
            self.buffer.extend(data)

    def receive(self):
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError()
            self.connection.settimeout(remaining)
        return self.connection.recv(BUFFER_SIZE)


class Member:
    """A client in the chat room: its connection, its name, and what it has yet to receive.

    Lines are sent at once while the client keeps up. What its socket will
    not take now waits in a queue, which a writer thread of its own sends in
    batches; lines from other senders go behind them, so the order holds.
    """

    def __init__(self, connection, name):
        self.connection = connection
        self.name = name
        # Several handler threads send to this client at once: everything
        # below is used under this lock, and `changed` signals any change.
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.queue = collections.deque()  # encoded lines waiting for the writer
        self.queued_bytes = 0             # in the queue, or being sent by the writer
        self.writing = False              # the writer is sending a batch (outside the lock)
        self.last_progress = time.monotonic()
        self.gone = False
        self.writer = threading.Thread(target=self.write_queued, daemon=True)
        self.writer.start()

    def send_line(self, text):
        """Send one line, or queue it; a client stuck too long is disconnected (never the sender)."""
        data = (text + "\n").encode(ENCODING)
        with self.lock:
            if self.gone:
                return
            if DONT_WAIT and not self.queue and not self.writing:
                data = self.send_what_fits(data)  # the fast path: nothing queued ahead
                if not data:
                    return
            if not self.wait_for_room(len(data)):
                self.drop()
                return
            if not self.queue and not self.writing:
                self.last_progress = time.monotonic()  # it is behind from now on
            self.queue.append(data)
            self.queued_bytes += len(data)
            self.changed.notify_all()

    def send_what_fits(self, data):
        """Send what the socket takes right now, without waiting; return the rest."""
        try:
            sent = self.connection.send(data, DONT_WAIT)
        except BlockingIOError:
            return data
        except OSError:
            self.drop()
            return b""
        return data[sent:]

    def wait_for_room(self, size):
        """Wait until the queue has room: True, or False if the client stays stuck.

        A fast reader in a burst frees room soon, so its senders wait a little;
        only a client that takes nothing for STUCK_AFTER seconds is given up.
        """
        while self.queued_bytes and self.queued_bytes + size > QUEUE_LIMIT:
            stuck_for = time.monotonic() - self.last_progress
            if self.gone or stuck_for >= STUCK_AFTER:
                return False
            self.changed.wait(STUCK_AFTER - stuck_for)
        return not self.gone

    def write_queued(self):
        """The writer thread: send the queue in batches, until the member is gone."""
        while True:
            with self.lock:
                while not self.queue and not self.gone:
                    self.changed.wait()
                if self.gone:
                    return
                batch = self.take_batch()
                self.writing = True
            try:
                self.connection.sendall(batch)
            except OSError:
                with self.lock:
                    self.drop()
                return
            with self.lock:
                self.writing = False
                self.queued_bytes -= len(batch)
                self.last_progress = time.monotonic()
                self.changed.notify_all()

    def take_batch(self):
        parts, size = [], 0
        while self.queue and (not parts or size + len(self.queue[0]) <= BATCH_SIZE):
            part = self.queue.popleft()
            parts.append(part)
            size += len(part)
        return b"".join(parts)

    def drop(self):
        """Give up on this client (call with the lock held): its handler then sees the end."""
        self.stop()
        disconnect(self.connection)

    def stop(self):
        """No more sending (call with the lock held); the writer thread ends."""
        self.gone = True
        self.queue.clear()
        self.queued_bytes = 0
        self.changed.notify_all()

    def close(self):
        with self.lock:
            self.stop()
        self.writer.join(1.0)


class ChatRoom:
    """The members and open connections, shared by every handler thread: every use goes through the lock."""

    def __init__(self, max_users):
        self._lock = threading.Lock()
        self._members = []
        self._connections = set()  # every open client connection, named or not
        self._all_closed = threading.Condition(self._lock)
        self.max_users = max_users

    def join(self, member):
        """Add the member: (None, the members who were in before it, who hear its join line).
        If the room is full or the name taken: (the Error line why, []).

        Checking, adding and taking the list for the join line are one step under
        the lock: two clients can't both get the last place, and the join line
        reaches exactly the members who were in the chat when this one was added.
        """
        with self._lock:
            if len(self._members) >= self.max_users:
                return f"Error: the chat room is full ({self.max_users} users)", []
            if any(other.name == member.name for other in self._members):
                return f"Error: the username {member.name!r} is already in use", []
            others = list(self._members)
            self._members.append(member)
            return None, others

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

    def opened(self, connection):
        with self._lock:
            self._connections.add(connection)

    def closed(self, connection):
        with self._lock:
            self._connections.discard(connection)
            self._all_closed.notify_all()

    def close_all(self, timeout):
        """Disconnect every client and wait (up to timeout) for their threads to finish."""
        deadline = time.monotonic() + timeout
        with self._lock:
            for connection in self._connections:
                disconnect(connection)
            while self._connections and time.monotonic() < deadline:
                self._all_closed.wait(deadline - time.monotonic())


def broadcast(room, text, sender):
    """Send a line to every member but the sender.

    The lock is held only to copy the list, never while sending: a slow
    client would otherwise hold up every other thread.
    """
    for member in room.everyone_but(sender):
        member.send_line(text)


def is_control(character):
    return unicodedata.category(character) == "Cc"


# The control characters (category Cc: U+0000-U+001F and U+007F-U+009F) but tab,
# as a str.translate() table that deletes them: one fast call per line.
CONTROL_CHARACTERS = {code: None for code in [*range(0x20), *range(0x7F, 0xA0)] if chr(code) != "\t"}


def remove_control_characters(text):
    """The text without control characters (escape codes, bells, NUL...), but tabs kept."""
    return text.translate(CONTROL_CHARACTERS)


def username_problem(name):
    """Why this name can't be used (an Error line), or None if it is fine."""
    if not name.strip():
        return "Error: the username is blank"
    if len(name) > MAX_NAME_LENGTH:
        return f"Error: the username is longer than {MAX_NAME_LENGTH} characters"
    if ":" in name:
        return "Error: the username contains ':'"
    if any(is_control(c) for c in name):
        return "Error: the username contains a control character"
    return None


def read_username(reader, timeout):
    """The client's first line, which must arrive within timeout seconds (else TimeoutError)."""
    reader.deadline = time.monotonic() + timeout
    try:
        return reader.read_line()
    finally:
        reader.deadline = None
        reader.connection.settimeout(None)


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
        room.closed(connection)


def serve_forever(listener, room, args):
    """Accept clients forever; each gets its own thread."""
    while True:
        connection, address = listener.accept()
        room.opened(connection)
        # daemon=True: these threads do not keep the process alive at Ctrl+C.
        thread = threading.Thread(target=handle_client, args=(connection, room, args), daemon=True)
        thread.start()


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
        # Every client sees its connection end; their threads finish their clean-up.
        room.close_all(timeout=1.0)


if __name__ == "__main__":
    main()
