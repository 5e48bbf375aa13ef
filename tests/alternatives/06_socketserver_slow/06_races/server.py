"""Stage 06, another design: socketserver runs a handler thread per client,
and the server is slow to announce, as one that logs or checks something
between deciding who hears a line and sending it.

What keeps it right, however slow the sending:
  - adding a newcomer and taking the list of who hears its join line is one
    locked step; so is removing a leaver and taking the list for its leave line;
  - only the call that removed a member announces it: it leaves once;
  - lines are sent outside the room's lock, to a snapshot, one whole line at a
    time per member (its send lock); a failed send only hangs that member up;
  - a member's socket is closed only under its send lock, after marking it
    gone, so no other thread is ever inside sendall() on a closed socket.
"""

import argparse
import random
import socket
import socketserver
import threading
import time

EXIT_COMMAND = "/exit"
ANNOUNCE_DELAY = (0.03, 0.08)  # seconds between the snapshot and sending a join/leave line
MESSAGE_DELAY = (0.001, 0.005)  # seconds before each message's broadcast


def parse_args():
    parser = argparse.ArgumentParser(description="Multi-user chat server on socketserver.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def dawdle(bounds):
    time.sleep(random.uniform(*bounds))


def shut(sock):
    """FIN now, and wake the thread reading this socket."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed or reset already


class Member:
    def __init__(self, sock, name):
        self.sock = sock
        self.name = name
        self.send_lock = threading.Lock()
        self.gone = False

    def deliver(self, text):
        with self.send_lock:
            if self.gone:
                return
            try:
                self.sock.sendall((text + "\n").encode("utf-8"))
            except OSError:
                shut(self.sock)  # its handler wakes up, and announces the leave

    def hang_up(self):
        with self.send_lock:
            self.gone = True
            shut(self.sock)


class Room:
    def __init__(self):
        self.lock = threading.Lock()
        self.members = []

    def admit(self, newcomer):
        with self.lock:
            hearers = list(self.members)
            self.members.append(newcomer)
        return hearers

    def dismiss(self, leaver):
        """Remove the leaver and return who hears it leave; None if it was gone already."""
        with self.lock:
            if leaver not in self.members:
                return None
            self.members.remove(leaver)
            return list(self.members)

    def others_than(self, member):
        with self.lock:
            return [other for other in self.members if other is not member]


def announce(hearers, text):
    dawdle(ANNOUNCE_DELAY)
    for member in hearers:
        member.deliver(text)


class ChatHandler(socketserver.StreamRequestHandler):
    room = Room()

    def handle(self):
        member = None
        try:
            name = self.next_line()
            if name is None:
                return
            member = Member(self.request, name)
            announce(self.room.admit(member), f"{name} joined the chat room!")
            while (line := self.next_line()) not in (None, EXIT_COMMAND):
                if line.strip():
                    dawdle(MESSAGE_DELAY)
                    for other in self.room.others_than(member):
                        other.deliver(f"{name}: {line}")
        except OSError:
            pass  # reset by the client
        finally:
            if member is not None:
                hearers = self.room.dismiss(member)
                member.hang_up()  # then socketserver closes the socket
                if hearers is not None:
                    announce(hearers, f"{member.name} exited the chat room")

    def next_line(self):
        raw_line = self.rfile.readline()
        if not raw_line.endswith(b"\n"):
            return None  # the end of the stream (an unfinished line is no line)
        return raw_line[:-1].removesuffix(b"\r").decode("utf-8", errors="replace")


class ChatServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128  # many clients may connect at once


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
