"""Stage 05, another design: a thread per client reading through a file object,
and announcing joins and leaves slowly, as a server that logs or checks
something first would.

The rules still hold however slow the sending is:
  - a newcomer is added, and the list of who hears its join line is taken, in
    one locked step (and a leaver is removed, and the list of who hears its
    leave line taken, in one locked step);
  - only the call that removed a member announces it, so it leaves once.
"""

import argparse
import random
import socket
import threading
import time

EXIT_COMMAND = "/exit"
ANNOUNCE_DELAY = (0.03, 0.08)  # seconds between taking the snapshot and sending a join/leave line


def parse_args():
    parser = argparse.ArgumentParser(description="Chat server with /exit, a thread per client.")
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


def lines_from(stream):
    """Each whole line of a binary file object as text; stops at the end of the stream."""
    for raw_line in stream:
        if not raw_line.endswith(b"\n"):
            return  # closed in the middle of a line: not a line
        yield raw_line[:-1].removesuffix(b"\r").decode("utf-8", errors="replace")


def hang_up(sock):
    """Send the FIN now, and wake this socket's reader thread from its read."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed or reset already


class Member:
    def __init__(self, sock, name):
        self.sock = sock
        self.name = name
        self.send_lock = threading.Lock()
        self.closed = False

    def send_line(self, text):
        data = (text + "\n").encode("utf-8")
        with self.send_lock:
            if self.closed:
                return
            try:
                self.sock.sendall(data)
            except OSError:
                # Broken: let its own thread find out (its read returns b"") and
                # announce the leave; the sender carries on.
                hang_up(self.sock)

    def close(self, stream):
        # Under the send lock: no other thread is in sendall() on this socket
        # when it closes, and none will try afterwards.
        with self.send_lock:
            self.closed = True
            hang_up(self.sock)
            stream.close()  # the file object holds the descriptor open too
            self.sock.close()


class Room:
    def __init__(self):
        self.lock = threading.Lock()
        self.members = []

    def add(self, newcomer):
        """Add the newcomer and return who hears its join line: one step."""
        with self.lock:
            hearers = list(self.members)
            self.members.append(newcomer)
            return hearers

    def remove(self, leaver):
        """Remove the leaver and return who hears its leave line; None if it was gone already."""
        with self.lock:
            if leaver not in self.members:
                return None
            self.members.remove(leaver)
            return list(self.members)

    def all_but(self, sender):
        with self.lock:
            return [member for member in self.members if member is not sender]


def announce(hearers, text):
    time.sleep(random.uniform(*ANNOUNCE_DELAY))  # the slow part: after the snapshot, before sending
    for member in hearers:
        member.send_line(text)


def chat(sock, room):
    """The client's thread: name, messages, then leaving, whichever way it happens."""
    stream = sock.makefile("rb")
    member = None
    try:
        lines = lines_from(stream)
        name = next(lines, None)
        if name is None:
            return
        member = Member(sock, name)
        announce(room.add(member), f"{name} joined the chat room!")
        for line in lines:
            if line == EXIT_COMMAND:
                break
            if line.strip():
                for other in room.all_but(member):
                    other.send_line(f"{name}: {line}")
    except OSError:
        pass  # reset by the client
    finally:
        if member is None:
            stream.close()
            sock.close()
        else:
            hearers = room.remove(member)
            member.close(stream)  # the leaver first: it need not wait for the announcement
            if hearers is not None:
                announce(hearers, f"{member.name} exited the chat room")


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
            threading.Thread(target=chat, args=(sock, room), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
