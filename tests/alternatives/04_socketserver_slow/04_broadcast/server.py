"""Stage 04, another design: socketserver runs a handler thread per client, and
the chat takes its time, like a server that does some work (logging, say)
between deciding who hears a line and sending it.

The join rule still holds: the newcomer is added and the list of who hears
its join line is taken in one locked step; only the sending comes later.
"""

import argparse
import random
import socketserver
import threading
import time

ANNOUNCE_DELAY = (0.03, 0.08)  # seconds between taking the snapshot and sending a join line
MESSAGE_DELAY = (0.002, 0.01)  # seconds before each message is broadcast


def parse_args():
    parser = argparse.ArgumentParser(description="Chat server on socketserver, a thread per client.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def pause(bounds):
    time.sleep(random.uniform(*bounds))


class Member:
    def __init__(self, sock, name):
        self.sock = sock
        self.name = name
        self.send_lock = threading.Lock()  # one whole line at a time on this socket
        self.gone = False

    def send_line(self, text):
        data = (text + "\n").encode("utf-8")
        with self.send_lock:
            if self.gone:
                return  # its socket may be closed already (or its number reused)
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # its own handler thread will notice that it left

    def mark_gone(self):
        # Taken under the send lock: after this no thread is inside sendall(),
        # so socketserver may close the socket.
        with self.send_lock:
            self.gone = True


class Members:
    def __init__(self):
        self.lock = threading.Lock()
        self.members = []

    def add_and_list_others(self, newcomer):
        """Add the newcomer; return who was here before it: one step, so the join rule holds."""
        with self.lock:
            others = list(self.members)
            self.members.append(newcomer)
            return others

    def others_than(self, sender):
        with self.lock:
            return [member for member in self.members if member is not sender]

    def discard(self, member):
        with self.lock:
            if member in self.members:
                self.members.remove(member)


MEMBERS = Members()


class ChatHandler(socketserver.StreamRequestHandler):
    def handle(self):
        member = None
        try:
            name = self.next_line()
            if name is None:
                return
            member = Member(self.request, name)
            hearers = MEMBERS.add_and_list_others(member)
            pause(ANNOUNCE_DELAY)
            for other in hearers:
                other.send_line(f"{name} joined the chat room!")
            while (line := self.next_line()) is not None:
                if line.strip():
                    pause(MESSAGE_DELAY)
                    for other in MEMBERS.others_than(member):
                        other.send_line(f"{name}: {line}")
        except OSError:
            pass  # reset by the client
        finally:
            # Stage 04 announces no leaving: the member is just forgotten.
            if member is not None:
                MEMBERS.discard(member)
                member.mark_gone()

    def next_line(self):
        """The next whole line as text; None at the end of the stream."""
        raw_line = self.rfile.readline()
        if not raw_line.endswith(b"\n"):
            return None  # b"" or an unfinished line: the client closed
        return raw_line[:-1].removesuffix(b"\r").decode("utf-8", errors="replace")


class ChatServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    args = parse_args()
    with ChatServer((args.host, args.port), ChatHandler) as server:
        host, port = server.server_address[:2]
        print(f"Server started on {host}:{port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
