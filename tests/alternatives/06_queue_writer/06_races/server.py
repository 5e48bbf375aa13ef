"""Stage 06, another design: a reader and a writer thread per client, and queues.

The original's races came from many threads sending to sockets while a shared
list changed under them. Here:
  - the room's list changes, and is read, only under its lock; while holding
    it a thread only *posts* lines to outboxes (queue.Queue), which never
    blocks, so nobody waits long for the lock;
  - each client's writer thread is the only one that sends to it, so lines
    never mix; it sends whatever lines have piled up in one sendall();
  - a client leaves in one place (the reader's `finally:`), and the room
    announces only the call that took it out: once, whatever happened.
"""

import argparse
import queue
import socket
import threading

CHUNK = 4096
EXIT_COMMAND = "/exit"
STOP_WRITING = None  # posted last: the writer thread ends


def parse_args():
    parser = argparse.ArgumentParser(description="Multi-user chat server: reader and writer threads per client.")
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


class LineSplitter:
    """Bytes in, whole lines out: the framing of one connection."""

    def __init__(self):
        self.partial = bytearray()

    def feed(self, data):
        """The lines that `data` completes, as text (without "\\n" or a trailing "\\r")."""
        self.partial += data
        if b"\n" not in data:
            return []
        *raw_lines, rest = self.partial.split(b"\n")
        self.partial = bytearray(rest)
        return [raw.removesuffix(b"\r").decode("utf-8", errors="replace") for raw in raw_lines]


def read_lines(sock):
    splitter = LineSplitter()
    while data := sock.recv(CHUNK):
        yield from splitter.feed(data)


def hang_up(sock):
    """shutdown() sends the FIN now and wakes a thread blocked on the socket."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed or reset already


class Client:
    def __init__(self, sock, name):
        self.sock = sock
        self.name = name
        self.outbox = queue.Queue()
        self.writer = threading.Thread(target=self.keep_writing, daemon=True)

    def post(self, line):
        self.outbox.put(line)

    def next_batch(self):
        """Wait for a line, then take every line already waiting behind it."""
        batch = [self.outbox.get()]
        while batch[-1] is not STOP_WRITING:
            try:
                batch.append(self.outbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def keep_writing(self):
        while True:
            batch = self.next_batch()
            stopping = batch[-1] is STOP_WRITING
            lines = batch[:-1] if stopping else batch
            try:
                if lines:
                    self.sock.sendall("".join(line + "\n" for line in lines).encode("utf-8"))
            except OSError:
                # This client is broken: wake its reader, which announces the leave.
                hang_up(self.sock)
                return
            if stopping:
                return


class Room:
    def __init__(self):
        self.lock = threading.Lock()
        self.clients = []

    def post_to_others(self, sender, line):
        for client in self.clients:
            if client is not sender:
                client.post(line)

    def join(self, newcomer):
        with self.lock:  # the join line's hearers are exactly the clients here when it is added
            self.post_to_others(newcomer, f"{newcomer.name} joined the chat room!")
            self.clients.append(newcomer)

    def say(self, sender, text):
        with self.lock:
            self.post_to_others(sender, f"{sender.name}: {text}")

    def leave(self, leaver):
        with self.lock:
            if leaver not in self.clients:
                return  # left already: announced once
            self.clients.remove(leaver)
            self.post_to_others(leaver, f"{leaver.name} exited the chat room")


def talk(sock, room):
    client = None
    try:
        lines = read_lines(sock)
        name = next(lines, None)
        if name is None:
            return  # gone before giving a name: nobody hears of it
        client = Client(sock, name)
        client.writer.start()
        room.join(client)
        for line in lines:
            if line == EXIT_COMMAND:
                break
            if line.strip():
                room.say(client, line)
    except OSError:
        pass  # reset, or hung up by its writer after a failed send
    finally:
        if client is not None:
            room.leave(client)
            client.post(STOP_WRITING)
        hang_up(sock)
        if client is not None:
            client.writer.join()  # the socket is closed only when no thread uses it
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
            except TimeoutError:
                continue  # nobody came within the listener's timeout
            except ConnectionError:
                continue  # the client gave up while waiting to be accepted
            threading.Thread(target=talk, args=(sock, room), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
