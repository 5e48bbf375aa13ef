"""Stage 08: the chat server of stage 06, hardened against real clients.

Run it:   python solutions/08_robust/server.py [--host HOST] [--port PORT]
              [--max-users N] [--max-line BYTES] [--handshake-timeout SECONDS]
Try it:   nc 127.0.0.1 9801   (in two or more terminals: type a name, then lines)

The shape is stage 06's: a thread per client, a ChatRoom under a lock,
broadcast() to a snapshot. What it adds:
  - at most --max-users members, each name valid and used once (checked and
    added under one lock, so two clients can never both take the last place);
  - a line longer than --max-line bytes is thrown away as it arrives, so the
    memory kept for one client stays bounded, and its sender gets an Error line;
  - a client must send its name within --handshake-timeout seconds;
  - invalid UTF-8 becomes U+FFFD; control characters (but tab) are removed;
  - a client that stops reading never stalls the others: each member has an
    Outbox that sends at once while the client keeps up, and queues, for a
    writer thread of its own, only what its socket won't take; a client stuck
    for STUCK_AFTER seconds is disconnected;
  - Ctrl+C closes every connection and exits with status 0, on every system.
"""

import argparse
import collections
import os
import socket
import sys
import threading
import time
import unicodedata

BUFFER_SIZE = 4096
ACCEPT_TIMEOUT = 0.5  # seconds: accept() returns this often, so that Ctrl+C is seen (below)
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
# THREADED_CHAT_NO_DONTWAIT=1 takes the Windows path here too, to test it.
DONT_WAIT = 0 if os.environ.get("THREADED_CHAT_NO_DONTWAIT") == "1" else getattr(socket, "MSG_DONTWAIT", 0)


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

    def read_line(self, deadline=None):
        """The next line, without its '\\n' (or a trailing '\\r'); None once the client closed.

        Raises LineTooLong (once per long line) as soon as a line passes the limit,
        and TimeoutError if a deadline (a time.monotonic() value) passes first.
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
            data = self.receive(deadline)
            if not data:  # the client closed; an unfinished last line is dropped
                return None
            self.buffer.extend(data)

    def receive(self, deadline):
        """What recv() returns; with a deadline, it waits only for the time left until it."""
        if deadline is None:
            return self.connection.recv(BUFFER_SIZE)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError()
        self.connection.settimeout(remaining)
        try:
            return self.connection.recv(BUFFER_SIZE)
        finally:
            self.connection.settimeout(None)  # back to waiting as long as it takes


class Outbox:
    """What one client has yet to receive, sent so that a slow reader never stalls its senders.

    send() sends at once while the client keeps up: one send() that does not
    wait (MSG_DONTWAIT), in the sender's own thread. What the socket won't take
    now waits in a queue, which a writer thread of this outbox sends in
    batches; while anything is queued, later lines go behind it, so the order
    holds. The queue is bounded: a sender that finds it full waits for room,
    and a client that takes nothing for STUCK_AFTER seconds is disconnected.
    """

    def __init__(self, connection):
        self.connection = connection
        # Several handler threads send to this client at once: everything
        # below is used under this lock, and `changed` signals any change.
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.queue = collections.deque()  # encoded lines waiting for the writer
        self.queued_bytes = 0             # in the queue, or being sent by the writer
        self.writing = False              # the writer is sending a batch (outside the lock)
        self.last_progress = time.monotonic()
        self.writer = None                # started when something is first queued
        self.disconnected = False

    def send(self, data):
        """Send the bytes, or queue them; never waits for long, whatever the client does."""
        with self.lock:
            if self.disconnected:
                return
            if DONT_WAIT and not self.queue and not self.writing:
                data = self.send_what_fits(data)  # the fast path: nothing queued ahead
                if not data:
                    return
            if not self.wait_for_room(len(data)):
                self.disconnect_locked()  # stuck: give up on it, never on the sender
                return
            self.enqueue(data)

    def disconnect(self):
        """Nothing more is sent to this client: its writer thread ends and its connection is shut."""
        with self.lock:
            self.disconnect_locked()

    # ---- the sender's side (called with the lock held) ----

    def send_what_fits(self, data):
        """Send what the socket takes right now, without waiting; return the rest."""
        try:
            sent = self.connection.send(data, DONT_WAIT)
        except BlockingIOError:
            return data
        except OSError:
            self.disconnect_locked()
            return b""
        return data[sent:]

    def wait_for_room(self, size):
        """Wait until the queue has room: True, or False if the client stays stuck.

        A fast reader in a burst frees room soon, so its senders wait a little;
        only a client that takes nothing for STUCK_AFTER seconds is given up.
        """
        while self.queued_bytes and self.queued_bytes + size > QUEUE_LIMIT:
            stuck_for = time.monotonic() - self.last_progress
            if self.disconnected or stuck_for >= STUCK_AFTER:
                return False
            self.changed.wait(STUCK_AFTER - stuck_for)
        return not self.disconnected

    def enqueue(self, data):
        if not self.queue and not self.writing:
            self.last_progress = time.monotonic()  # it is behind from now on
        self.queue.append(data)
        self.queued_bytes += len(data)
        if self.writer is None:
            self.writer = threading.Thread(target=self.write_queued, daemon=True)
            self.writer.start()
        self.changed.notify_all()

    def disconnect_locked(self):
        """disconnect(), for a caller that holds the lock already."""
        self.disconnected = True
        self.queue.clear()
        self.queued_bytes = 0
        self.changed.notify_all()  # wakes the writer thread (it ends) and waiting senders
        disconnect(self.connection)

    # ---- the writer thread ----

    def write_queued(self):
        """Send the queue in batches, until the client is disconnected."""
        while True:
            with self.lock:
                while not self.queue and not self.disconnected:
                    self.changed.wait()
                if self.disconnected:
                    return
                batch = self.take_batch()
                self.writing = True
            try:
                self.connection.sendall(batch)
            except OSError:
                self.disconnect()
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
        self._connections = set()  # every open client connection, named or not
        self._all_disconnected = threading.Condition(self._lock)
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

    def connected(self, connection):
        with self._lock:
            self._connections.add(connection)

    def disconnected(self, connection):
        with self._lock:
            self._connections.discard(connection)
            self._all_disconnected.notify_all()

    def disconnect_all(self, timeout):
        """Disconnect every client, and wait (up to timeout) for their threads to finish.

        Nothing here waits on a client: disconnect() never blocks, and the wait has a deadline.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            for connection in self._connections:
                disconnect(connection)
            while self._connections and time.monotonic() < deadline:
                self._all_disconnected.wait(deadline - time.monotonic())


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


# The control characters but tab, as a str.translate() table that deletes them: one
# fast call per line (a loop over each character was the bottleneck under load).
# Every control character is below U+00A0, so the table holds them all.
CONTROL_CHARACTERS_BUT_TAB = {code: None for code in range(0xA0) if is_control(chr(code)) and chr(code) != "\t"}


def remove_control_characters(text):
    """The text without control characters (escape codes, bells, NUL...), but tabs kept."""
    return text.translate(CONTROL_CHARACTERS_BUT_TAB)


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
