"""Stage 06, another design: no threads, so no races.

The original assignment's bugs came from threads sharing a list. Here a single
loop serves every client: selectors tells it which sockets are ready, and it
reads or writes only those, never blocking. Nothing is shared between threads,
so nothing needs a lock; what still matters:
  - framing: bytes wait in each client's own buffer until their "\\n" comes;
  - output: a line for a client goes into its output buffer, written out
    whenever its socket can take more, so a slow reader holds up nobody;
  - leaving: every way out (/exit, close, reset, a failed send) goes through
    drop(), which runs once per connection and announces its member once.
"""

import argparse
import selectors
import socket

CHUNK = 65536
EXIT_COMMAND = "/exit"
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE

# select() returns at least this often: on Windows Ctrl+C does not interrupt a
# blocked select() (cpython #85609), and is seen only when it returns.
POLL_EVERY = 0.5  # seconds


def parse_args():
    parser = argparse.ArgumentParser(description="Single-threaded multi-user chat server (selectors).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def listen_on(host, port):
    listener = socket.create_server((host, port))  # SO_REUSEADDR on POSIX only, not on Windows
    listener.setblocking(False)
    return listener


def text_of(raw_line):
    return raw_line.removesuffix(b"\r").decode("utf-8", errors="replace")


class Session:
    """One connection: its name once given, its pending input and output."""

    def __init__(self, sock):
        self.sock = sock
        self.name = None
        self.unread = bytearray()
        self.unsent = bytearray()
        self.alive = True


class ChatServer:
    def __init__(self, listener):
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, READ)
        self.members = {}  # socket -> Session, for the sessions that gave a name, in join order

    def serve_forever(self):
        while True:
            for key, events in self.selector.select(POLL_EVERY):
                if key.fileobj is self.listener:
                    self.accept()
                    continue
                session = key.data
                if events & WRITE and session.alive:
                    self.write(session)
                if events & READ and session.alive:
                    self.read(session)

    def accept(self):
        try:
            sock, _address = self.listener.accept()
        except OSError:
            return  # the client gave up already, or no descriptor is free now
        sock.setblocking(False)
        self.selector.register(sock, READ, Session(sock))

    def read(self, session):
        try:
            data = session.sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # a reset ends the session like a close
        if not data:
            self.drop(session)
            return
        start = len(session.unread)
        session.unread += data
        if session.unread.find(b"\n", start) < 0:
            return
        *raw_lines, rest = session.unread.split(b"\n")
        session.unread = bytearray(rest)
        for raw_line in raw_lines:
            if not session.alive:
                break  # /exit: the rest is never read
            self.handle(session, text_of(raw_line))

    def handle(self, session, line):
        if session.name is None:
            session.name = line
            # One go, with no other event in between: exactly the members here
            # now hear the join line.
            self.tell_others(session, f"{line} joined the chat room!")
            self.members[session.sock] = session
        elif line == EXIT_COMMAND:
            self.drop(session)
        elif line.strip():
            self.tell_others(session, f"{session.name}: {line}")

    def tell_others(self, sender, text):
        data = (text + "\n").encode("utf-8")
        for member in self.members.values():
            if member is not sender:
                if not member.unsent:
                    self.selector.modify(member.sock, READ | WRITE, member)
                member.unsent += data

    def write(self, session):
        try:
            sent = session.sock.send(session.unsent)
        except BlockingIOError:
            return
        except OSError:
            self.drop(session)  # broken: it leaves like any other
            return
        del session.unsent[:sent]
        if not session.unsent:
            self.selector.modify(session.sock, READ, session)

    def drop(self, session):
        if not session.alive:
            return
        session.alive = False
        self.selector.unregister(session.sock)
        if self.members.pop(session.sock, None) is not None:
            self.tell_others(session, f"{session.name} exited the chat room")
        try:
            session.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # reset already
        session.sock.close()


def main():
    args = parse_args()
    listener = listen_on(args.host, args.port)
    host, port = listener.getsockname()[:2]
    print(f"Server started on {host}:{port}", flush=True)
    try:
        ChatServer(listener).serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
