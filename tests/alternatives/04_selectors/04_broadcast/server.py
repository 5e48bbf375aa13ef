"""Stage 04, another design: the chat in one thread, with selectors.

The loop waits until some socket is ready, then reads or writes it without
blocking. Everything happens in this one thread, so the list of members needs
no lock: adding a newcomer and sending its join line to the members already
there happen in one go, before any other event is looked at.
"""

import argparse
import selectors
import socket

CHUNK = 4096

# select() returns at least this often: on Windows Ctrl+C does not interrupt a
# blocked select() (cpython #85609), and is seen only when it returns.
POLL_EVERY = 0.5  # seconds


def parse_args():
    parser = argparse.ArgumentParser(description="Single-threaded chat server (selectors).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def listen_on(host, port):
    listener = socket.create_server((host, port))  # SO_REUSEADDR on POSIX only, not on Windows
    listener.setblocking(False)
    return listener


class Connection:
    def __init__(self, sock):
        self.sock = sock
        self.name = None          # set by the first line
        self.incoming = bytearray()
        self.outgoing = bytearray()
        self.open = True


class ChatLoop:
    def __init__(self, listener):
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, data=None)
        self.members = []  # connections that gave a name

    def run(self):
        while True:
            for key, events in self.selector.select(POLL_EVERY):
                if key.data is None:
                    self.accept()
                    continue
                conn = key.data
                if events & selectors.EVENT_WRITE and conn.open:
                    self.flush(conn)
                if events & selectors.EVENT_READ and conn.open:
                    self.receive(conn)

    def accept(self):
        try:
            sock, _address = self.listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, data=Connection(sock))

    def receive(self, conn):
        try:
            data = conn.sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # reset: the same as a close here
        if not data:
            self.drop(conn)
            return
        conn.incoming += data
        if b"\n" not in data:
            return
        *raw_lines, rest = conn.incoming.split(b"\n")
        conn.incoming = bytearray(rest)
        for raw_line in raw_lines:
            if not conn.open:
                return
            self.on_line(conn, raw_line.removesuffix(b"\r").decode("utf-8", errors="replace"))

    def on_line(self, conn, line):
        if conn.name is None:
            conn.name = line
            self.broadcast(f"{line} joined the chat room!", conn)
            self.members.append(conn)
        elif line.strip():  # blank lines are ignored
            self.broadcast(f"{conn.name}: {line}", conn)

    def broadcast(self, text, sender):
        data = (text + "\n").encode("utf-8")
        for member in list(self.members):  # a failed send may drop a member meanwhile
            if member is not sender and member.open:
                member.outgoing += data
                self.flush(member)

    def flush(self, conn):
        try:
            sent = conn.sock.send(conn.outgoing)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.drop(conn)
            return
        del conn.outgoing[:sent]
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outgoing else 0)
        if self.selector.get_key(conn.sock).events != wanted:
            self.selector.modify(conn.sock, wanted, data=conn)

    def drop(self, conn):
        """Stage 04 announces no leaving: the connection is closed and forgotten."""
        conn.open = False
        if conn in self.members:
            self.members.remove(conn)
        self.selector.unregister(conn.sock)
        conn.sock.close()


def main():
    args = parse_args()
    listener = listen_on(args.host, args.port)
    host, port = listener.getsockname()[:2]
    print(f"Server started on {host}:{port}", flush=True)
    try:
        ChatLoop(listener).run()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
