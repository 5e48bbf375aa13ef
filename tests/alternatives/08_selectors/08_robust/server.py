"""Stage 08, another design: one thread, non-blocking sockets, and a selector.

Run it:   python server.py [--host HOST] [--port PORT]
                           [--max-users N] [--max-line BYTES] [--handshake-timeout SECONDS]

There are no threads, so there is no lock: every change to the room happens
between two calls to select(), and "check the room, add the member, take the
list for its join line" is one step simply because nothing else runs meanwhile.

How one turn of the loop goes:
  1. wait in select() until a socket is ready or the next deadline passes
     (a handshake running out, or a client that is behind being stuck too long);
  2. accept new connections, read what is there, act on each complete line;
     lines for other clients are only appended to their output buffers;
  3. write each output buffer that has something new, with one send() each,
     so that everything a client is due from one turn leaves in one call.

Slow readers: the kernel takes what fits, the rest waits in the client's own
output buffer. When a buffer passes HIGH_WATER, the server stops reading from
everyone (the senders' own sockets then fill and their sendall() waits: TCP
back-pressure) until it drains below LOW_WATER. A reader that is merely
behind drains it; one that takes nothing for STUCK_AFTER seconds is
disconnected, and the others hear that it exited.
"""

import argparse
import re
import selectors
import signal
import socket
import time

ENCODING = "utf-8"
RECEIVE_SIZE = 65536
MAX_NAME_LENGTH = 32
HIGH_WATER = 256 * 1024  # bytes waiting for one client: past this, reading pauses
LOW_WATER = 64 * 1024    # ...and resumes once every such buffer is back under this
STUCK_AFTER = 3.0        # seconds without progress before a client that is behind is dropped
POLL_EVERY = 0.5         # seconds: select() returns at least this often (Ctrl+C on Windows)
LINE_TOO_LONG = object()  # what the line splitter yields for a line over the limit

# Control characters (Unicode category Cc) except tab: one regular expression per line.
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def parse_args():
    parser = argparse.ArgumentParser(description="Chat server: one thread, selectors, hardened.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    parser.add_argument("--max-users", type=int, default=10, help="most members at once (default: 10)")
    parser.add_argument("--max-line", type=int, default=4096, help="longest line in bytes (default: 4096)")
    parser.add_argument("--handshake-timeout", type=float, default=30.0,
                        help="seconds a new client has to send its name (default: 30)")
    return parser.parse_args()


def name_error(name):
    """The Error line that refuses this username, or None when it may be used (in-use is checked apart)."""
    reasons = [
        (name.strip() == "", "Error: a username cannot be blank"),
        (len(name) > MAX_NAME_LENGTH, f"Error: a username has at most {MAX_NAME_LENGTH} characters"),
        (":" in name, "Error: a username cannot contain ':'"),
        ("\t" in name or CONTROL_CHARACTERS.search(name) is not None,  # in a name, tab is refused too
         "Error: a username cannot contain control characters"),
    ]
    return next((error for refused, error in reasons if refused), None)


class Connection:
    """One client socket: what it has sent but not finished, and what it is due."""

    def __init__(self, sock, handshake_deadline):
        self.sock = sock
        self.name = None                  # set once it has joined the room
        self.handshake_deadline = handshake_deadline
        self.partial = bytearray()        # the unfinished line, never over max_line bytes
        self.skipping = False             # inside a line already reported too long
        self.output = bytearray()         # bytes due to this client, not yet taken by its socket
        self.last_progress = time.monotonic()
        self.closed = False
        self.events = 0                   # what the selector watches for it now

    def split_lines(self, data, max_line):
        """The complete lines in data (bytes, without '\\n'), or LINE_TOO_LONG for each over the limit.

        What is left after the last '\\n' is kept, but only while it can still be
        a valid line: past max_line bytes it is dropped as it arrives.
        """
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            piece = data[start:end]
            start = end + 1
            if self.skipping:  # the end of a line that was reported already
                self.skipping = False
                continue
            if len(self.partial) + len(piece) > max_line:
                self.partial.clear()
                yield LINE_TOO_LONG
                continue
            line = bytes(self.partial) + piece
            self.partial.clear()
            yield line
        rest = data[start:]
        if self.skipping:
            return
        if len(self.partial) + len(rest) > max_line:
            self.partial.clear()
            self.skipping = True
            yield LINE_TOO_LONG  # reported at once, not when its '\n' finally comes
        else:
            self.partial += rest


class ChatServer:
    def __init__(self, listener, args):
        self.listener = listener
        self.args = args
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)
        self.connections = {}   # socket -> Connection, every open client connection
        self.members = {}       # name -> Connection, in the order they joined
        self.to_flush = []      # connections given new output during this turn
        self.behind = set()     # connections whose output passed HIGH_WATER
        self.reading_paused = False

    # ---- the loop -------------------------------------------------------------

    def serve_forever(self):
        while True:
            for key, events in self.selector.select(self.seconds_to_next_deadline()):
                if key.fileobj is self.listener:
                    self.accept_all()
                else:
                    connection = key.data
                    if connection.closed:
                        continue  # lost earlier in this turn (a failed write, a stuck drop)
                    if events & selectors.EVENT_WRITE:
                        self.write(connection)
                    if events & selectors.EVENT_READ and not connection.closed:
                        self.read(connection)
            self.enforce_deadlines()
            self.flush_new_output()
            self.update_back_pressure()

    def seconds_to_next_deadline(self):
        # At most POLL_EVERY: on Windows Ctrl+C does not interrupt a blocked select()
        # (cpython #85609), and is seen only when it returns.
        deadlines = [c.handshake_deadline for c in self.connections.values() if c.name is None]
        deadlines += [c.last_progress + STUCK_AFTER for c in self.behind]
        now = time.monotonic()
        return max(0.0, min([now + POLL_EVERY, *deadlines]) - now)

    def enforce_deadlines(self):
        now = time.monotonic()
        for connection in list(self.connections.values()):
            if connection.name is None and now >= connection.handshake_deadline:
                self.refuse(connection, f"Error: no username within {self.args.handshake_timeout:g} seconds")
        for connection in list(self.behind):
            if now - connection.last_progress >= STUCK_AFTER:
                self.lose(connection)  # it took nothing for too long while everyone waited

    # ---- connections ----------------------------------------------------------

    def accept_all(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of file descriptors: try again on the next turn
            sock.setblocking(False)
            connection = Connection(sock, time.monotonic() + self.args.handshake_timeout)
            self.connections[sock] = connection
            self.watch(connection)

    def watch(self, connection):
        """Tell the selector what this connection waits for now."""
        if connection.closed:
            return
        wanted = 0
        if not self.reading_paused:
            wanted |= selectors.EVENT_READ
        if connection.output:
            wanted |= selectors.EVENT_WRITE
        if wanted == connection.events:
            return
        if connection.events == 0:
            self.selector.register(connection.sock, wanted, connection)
        elif wanted == 0:
            self.selector.unregister(connection.sock)
        else:
            self.selector.modify(connection.sock, wanted, connection)
        connection.events = wanted

    def close(self, connection):
        """Forget the connection and close it so that the client sees the end."""
        if connection.closed:
            return
        connection.closed = True
        if connection.events:
            self.selector.unregister(connection.sock)
            connection.events = 0
        self.connections.pop(connection.sock, None)
        self.behind.discard(connection)
        connection.output.clear()
        try:
            connection.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # reset by the client already
        connection.sock.close()

    def lose(self, connection):
        """The client is gone (/exit, closed, reset, stuck): tell the others once, then close."""
        if connection.closed:
            return
        was_member = connection.name is not None and self.members.get(connection.name) is connection
        if was_member:
            del self.members[connection.name]
        self.close(connection)
        if was_member:
            self.broadcast(f"{connection.name} exited the chat room", connection)

    def refuse(self, connection, error):
        """One Error line, then disconnect. Nothing was ever sent to it, so its socket takes the line now."""
        try:
            connection.sock.send((error + "\n").encode(ENCODING))
        except OSError:
            pass  # it has gone already
        self.close(connection)

    # ---- reading --------------------------------------------------------------

    def read(self, connection):
        try:
            data = connection.sock.recv(RECEIVE_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the client
            data = b""
        if not data:  # closed; an unfinished last line is dropped
            self.lose(connection)
            return
        for line in connection.split_lines(data, self.args.max_line):
            if connection.closed:
                return  # it left with /exit or was refused: the rest is not read
            if connection.name is None:
                self.handshake(connection, line)
            else:
                self.message(connection, line)

    def handshake(self, connection, line):
        if line is LINE_TOO_LONG:
            self.refuse(connection, "Error: the username is too long")
            return
        name = decode(line)
        error = name_error(name)
        if error is None and len(self.members) >= self.args.max_users:
            error = f"Error: the chat room is full ({self.args.max_users} users)"
        if error is None and name in self.members:
            error = f"Error: the username {name!r} is already in use"
        if error is not None:
            self.refuse(connection, error)
            return
        # One step, as nothing else runs in between: the members now are who hears the join line.
        connection.name = name
        self.broadcast(f"{name} joined the chat room!", connection)
        self.members[name] = connection

    def message(self, connection, line):
        if line is LINE_TOO_LONG:
            self.send_to(connection, f"Error: line longer than {self.args.max_line} bytes, not sent")
            return
        text = decode(line)
        if text == "/exit":
            self.lose(connection)
            return
        text = CONTROL_CHARACTERS.sub("", text)
        if text.strip():  # blank lines are ignored
            self.broadcast(f"{connection.name}: {text}", connection)

    # ---- writing --------------------------------------------------------------

    def broadcast(self, text, sender):
        data = (text + "\n").encode(ENCODING)
        for member in self.members.values():
            if member is not sender:
                self.queue(member, data)

    def send_to(self, connection, text):
        self.queue(connection, (text + "\n").encode(ENCODING))

    def queue(self, connection, data):
        """Append to the client's output; it is written at the end of this turn."""
        if not connection.output:
            connection.last_progress = time.monotonic()  # the clock for "stuck" starts now
            self.to_flush.append(connection)
        connection.output += data
        if len(connection.output) > HIGH_WATER:
            self.behind.add(connection)

    def flush_new_output(self):
        # A failed write loses a member, whose leave line is queued for others: loop until none is left.
        while self.to_flush:
            connection = self.to_flush.pop()
            if not connection.closed:
                self.write(connection)

    def write(self, connection):
        """Send what the socket takes now; the rest stays, and the selector says when to try again."""
        if not connection.output:
            self.watch(connection)
            return
        try:
            sent = connection.sock.send(connection.output)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # reset, or closed by the client
            self.lose(connection)
            return
        if sent:
            del connection.output[:sent]
            connection.last_progress = time.monotonic()
        if len(connection.output) > HIGH_WATER:
            self.behind.add(connection)
        elif len(connection.output) <= LOW_WATER:
            self.behind.discard(connection)
        self.watch(connection)

    def update_back_pressure(self):
        """Stop reading from everyone while some client is far behind; start again once none is."""
        paused = bool(self.behind)
        if paused != self.reading_paused:
            self.reading_paused = paused
            for connection in list(self.connections.values()):
                self.watch(connection)

    # ---- Ctrl+C ---------------------------------------------------------------

    def close_everything(self):
        for connection in list(self.connections.values()):
            self.close(connection)
        self.selector.close()


def decode(line):
    """Text of one whole line: bad UTF-8 becomes U+FFFD, a trailing '\\r' is dropped."""
    return line.decode(ENCODING, "replace").removesuffix("\r")


def create_listener(host, port):
    listener = socket.create_server((host, port), backlog=256)  # SO_REUSEADDR on POSIX only
    listener.setblocking(False)
    return listener


def main():
    args = parse_args()
    listener = create_listener(args.host, args.port)
    host, port = listener.getsockname()[:2]
    # flush=True: when output goes to a pipe, print() waits for a full buffer otherwise.
    print(f"Server started on {host}:{port}", flush=True)
    server = ChatServer(listener, args)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # Ctrl+C: close everything below and exit with status 0
    finally:
        # A second Ctrl+C during the clean-up must not print a traceback either.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        listener.close()
        server.close_everything()


if __name__ == "__main__":
    main()
