"""Stage 03, another design: many clients at once with no threads at all.

One loop asks the operating system (through selectors) which sockets are
ready, and only then reads or writes them, so no call ever blocks: a silent
client costs nothing. Each client keeps its own bytes in and bytes out.
"""

import argparse
import selectors
import socket

CHUNK = 4096

# select() returns at least this often: on Windows Ctrl+C does not interrupt a
# blocked select() (cpython #85609), and is seen only when it returns.
POLL_EVERY = 0.5  # seconds


def parse_args():
    parser = argparse.ArgumentParser(description="Single-threaded line server: replies in upper case.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def listen_on(host, port):
    listener = socket.create_server((host, port))  # SO_REUSEADDR on POSIX only, not on Windows
    listener.setblocking(False)
    return listener


def decode(raw_line):
    """One whole line's bytes as text; a trailing "\\r" is dropped."""
    return raw_line.removesuffix(b"\r").decode("utf-8", errors="replace")


class Peer:
    """A connected client: bytes received but not yet a line, bytes not yet sent."""

    def __init__(self, sock):
        self.sock = sock
        self.incoming = bytearray()
        self.outgoing = bytearray()
        self.open = True


class UpperCaseServer:
    def __init__(self, listener):
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, data=None)

    def run(self):
        while True:
            for key, events in self.selector.select(POLL_EVERY):
                if key.data is None:
                    self.accept()
                    continue
                peer = key.data
                if events & selectors.EVENT_WRITE:
                    self.flush(peer)
                if events & selectors.EVENT_READ and peer.open:
                    self.receive(peer)

    def accept(self):
        try:
            sock, _address = self.listener.accept()
        except OSError:
            return  # gone before we took it (or no descriptor free): try again later
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, data=Peer(sock))

    def receive(self, peer):
        try:
            data = peer.sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self.drop(peer)  # reset by the client
            return
        if not data:
            self.drop(peer)  # closed; an unfinished line is dropped with it
            return
        peer.incoming += data
        *lines, rest = peer.incoming.split(b"\n")
        peer.incoming = bytearray(rest)
        for raw_line in lines:
            peer.outgoing += (decode(raw_line).upper() + "\n").encode("utf-8")
        if lines:
            self.flush(peer)

    def flush(self, peer):
        """Send what the socket takes now; wait for writability only while bytes remain."""
        try:
            sent = peer.sock.send(peer.outgoing)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.drop(peer)
            return
        del peer.outgoing[:sent]
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.outgoing else 0)
        if self.selector.get_key(peer.sock).events != wanted:
            self.selector.modify(peer.sock, wanted, data=peer)

    def drop(self, peer):
        peer.open = False
        self.selector.unregister(peer.sock)
        peer.sock.close()


def main():
    args = parse_args()
    listener = listen_on(args.host, args.port)
    host, port = listener.getsockname()[:2]
    print(f"Server started on {host}:{port}", flush=True)
    try:
        UpperCaseServer(listener).run()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
