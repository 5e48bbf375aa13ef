"""Stage 04, another design: every client has an outbox and a writer thread.

Broadcasting never touches a socket: it puts the line in each receiver's
outbox (a queue.Queue), which never blocks. Each client's writer thread is the
only thread that ever sends to that client, so two lines can't get mixed on the
wire, and a slow client holds up nobody but its own writer.
"""

import argparse
import queue
import socket
import threading

CHUNK = 4096
CLOSE_OUTBOX = None  # put in an outbox: the writer thread stops


def parse_args():
    parser = argparse.ArgumentParser(description="Chat server: a reader and a writer thread per client.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def listen_on(host, port):
    # create_server(): SO_REUSEADDR on POSIX only (on Windows it would let a second server
    # bind this port). The timeout makes accept() return twice a second, so that Ctrl+C is
    # seen on Windows too, where it does not interrupt a blocked accept() (cpython #85609).
    listener = socket.create_server((host, port))
    listener.settimeout(0.5)
    return listener


def incoming_lines(sock):
    """Yield each whole line the client sends, as text, until it closes.

    A line is decoded only once its b"\\n" has come: a UTF-8 character cut in
    two between recv() calls is whole again by then.
    """
    buffer = bytearray()
    searched = 0  # bytes of buffer already known to hold no b"\\n"
    while True:
        end = buffer.find(b"\n", searched)
        if end < 0:
            searched = len(buffer)
            data = sock.recv(CHUNK)
            if not data:
                return  # closed; an unfinished line is no line
            buffer += data
            continue
        raw_line = bytes(buffer[:end])
        del buffer[:end + 1]
        searched = 0
        yield raw_line.removesuffix(b"\r").decode("utf-8", errors="replace")


class Client:
    """A named connection with an outbox, emptied onto the socket by its writer thread."""

    def __init__(self, sock, name):
        self.sock = sock
        self.name = name
        self.outbox = queue.Queue()
        self.writer = threading.Thread(target=self.write_outbox, daemon=True)

    def post(self, text):
        self.outbox.put(text)

    def write_outbox(self):
        while True:
            text = self.outbox.get()
            if text is CLOSE_OUTBOX:
                return
            try:
                self.sock.sendall((text + "\n").encode("utf-8"))
            except OSError:
                return  # the client has gone: its reader thread notices and cleans up


class Room:
    """Who is in the chat. Every change and every broadcast happens under one lock;
    posting to an outbox never blocks, so the lock is only ever held for a moment."""

    def __init__(self):
        self.lock = threading.Lock()
        self.clients = []

    def enter(self, newcomer):
        # Announcing and adding in one locked step: exactly the clients already
        # here hear the join line, and a client added later never does.
        with self.lock:
            for client in self.clients:
                client.post(f"{newcomer.name} joined the chat room!")
            self.clients.append(newcomer)

    def say(self, sender, text):
        with self.lock:
            for client in self.clients:
                if client is not sender:
                    client.post(f"{sender.name}: {text}")

    def forget(self, client):
        """Stage 04 announces no leaving: a client that went away is only taken off the list."""
        with self.lock:
            if client in self.clients:
                self.clients.remove(client)


def serve(sock, room):
    """The client's reader thread: its name, then its messages, then the clean-up."""
    client = None
    try:
        lines = incoming_lines(sock)
        name = next(lines, None)
        if name is None:
            return  # closed before giving a name
        client = Client(sock, name)
        client.writer.start()
        room.enter(client)
        for line in lines:
            if line.strip():  # blank lines are ignored
                room.say(client, line)
    except OSError:
        pass  # reset by the client
    finally:
        if client is not None:
            room.forget(client)
            client.post(CLOSE_OUTBOX)
        try:
            sock.shutdown(socket.SHUT_RDWR)  # also ends a sendall() the writer is stuck in
        except OSError:
            pass
        if client is not None:
            client.writer.join()  # the writer is done with the socket: now it may be closed
        sock.close()


def main():
    args = parse_args()
    listener = listen_on(args.host, args.port)
    host, port = listener.getsockname()[:2]
    print(f"Server started on {host}:{port}", flush=True)
    room = Room()
    try:
        while True:
            try:
                sock, _address = listener.accept()
            except (TimeoutError, ConnectionError):
                continue  # nobody came within the timeout, or a client gave up before we took it
            threading.Thread(target=serve, args=(sock, room), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
