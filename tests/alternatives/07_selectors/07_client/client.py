"""Stage 07, another design: the chat client in one thread, with selectors.

Run it:   python client.py [--host HOST] [--port PORT]   (defaults: 127.0.0.1 9801)

One loop waits, with a selector, on two things at once: standard input and
the socket. Whichever is ready is read without blocking; nothing else runs,
so there is no second thread to wake or to end.

Linux and macOS only: Windows cannot select() on standard input (there,
select() works only on sockets). The course's threaded client works everywhere.

Standard input is read with os.read() on its file descriptor, not with
input() or sys.stdin: those keep a buffer of their own, and a line waiting in
that buffer would not make the descriptor readable, so select() would never
report it.
"""

import argparse
import os
import selectors
import socket
import sys

ENCODING = "utf-8"
READ_SIZE = 4096
CONNECT_TIMEOUT = 10  # seconds; an unreachable host should not hang us for minutes
LEAVE_TIMEOUT = 2     # seconds to get our last bytes (/exit) out when leaving
EXIT_COMMAND = "/exit"
PROMPT = "Enter your username: "


def parse_args():
    parser = argparse.ArgumentParser(description="Chat client (one thread, selectors).")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="the server's port (default: 9801)")
    return parser.parse_args()


def show(text):
    # Encoded here with errors="replace": the output's encoding may lack a character
    # (ASCII under LC_ALL=C), and print() would raise. Flushed: a pipe keeps a buffer.
    sys.stdout.flush()  # anything print() wrote earlier goes first
    sys.stdout.buffer.write((text + "\n").encode(sys.stdout.encoding or ENCODING, "replace"))
    sys.stdout.buffer.flush()


class LineBuffer:
    """Bytes in, complete lines out: the same framing for the keyboard and the socket."""

    def __init__(self):
        self.pending = bytearray()

    def feed(self, data):
        """The complete lines (bytes, without '\\n') now available."""
        self.pending += data
        *lines, rest = bytes(self.pending).split(b"\n")
        self.pending = bytearray(rest)
        return lines

    def leftover(self):
        """What came after the last '\\n' (a last line with no newline), then nothing."""
        rest, self.pending = bytes(self.pending), bytearray()
        return rest


class Keyboard:
    """Standard input, read in pieces without blocking the loop, as lines of text."""

    def __init__(self):
        self.fd = sys.stdin.fileno()
        self.encoding = sys.stdin.encoding or ENCODING
        self.buffer = LineBuffer()
        self.ended = False

    def read_available(self):
        """The lines typed (text, without '\\n'); at the end of input, a last unfinished line too."""
        data = os.read(self.fd, READ_SIZE)
        if data:
            return [self.decode(line) for line in self.buffer.feed(data)]
        self.ended = True
        rest = self.buffer.leftover()
        return [self.decode(rest)] if rest else []

    def read_line_blocking(self):
        """One line (for the username, before there is a socket); None at the end of input."""
        while True:
            lines = self.read_available()
            if lines:
                # Lines typed ahead stay for the loop: put them back in front of the buffer.
                self.buffer.pending[:0] = b"".join(line.encode(self.encoding) + b"\n" for line in lines[1:])
                return lines[0]
            if self.ended:
                return None

    def typed_ahead(self):
        """Lines already read along with the username, not yet sent."""
        return [self.decode(line) for line in self.buffer.feed(b"")]

    def decode(self, raw):
        return raw.decode(self.encoding, "replace").removesuffix("\r")


class Chat:
    """The connection: received bytes become printed lines; typed lines become sent bytes."""

    def __init__(self, sock):
        self.sock = sock
        self.incoming = LineBuffer()
        self.outgoing = bytearray()

    def send_line(self, text):
        # The server reads a byte stream too: "\n" tells it where each message ends.
        self.outgoing += (text + "\n").encode(ENCODING)

    def write_some(self):
        """Send what the socket takes now (it is non-blocking); the rest waits for the next turn."""
        try:
            sent = self.sock.send(self.outgoing)
        except BlockingIOError:
            return
        del self.outgoing[:sent]

    def read_some(self):
        """Print every complete line that arrived; False once the server has closed the connection."""
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return True
        except OSError:  # reset by the server
            data = b""
        if not data:  # b"": closed for good. Asking again would return b"" at once, forever.
            rest = self.incoming.leftover()
            if rest:
                show(rest.decode(ENCODING, "replace"))  # a last line with no newline
            return False
        # Decode whole lines only: a character's bytes may be split between two recv()s.
        for line in self.incoming.feed(data):
            show(line.decode(ENCODING, "replace").removesuffix("\r"))
        return True

    def finish_sending(self):
        """Get what is still to send (our /exit) out before we close; give up after LEAVE_TIMEOUT."""
        try:
            self.sock.settimeout(LEAVE_TIMEOUT)
            self.sock.sendall(self.outgoing)
        except OSError:
            pass  # the server is gone already: we are leaving anyway
        self.outgoing.clear()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already disconnected
        self.sock.close()


def run(chat, keyboard):
    """The loop. Returns when the user leaves (/exit, end of input) or the server closes."""
    selector = selectors.DefaultSelector()
    selector.register(keyboard.fd, selectors.EVENT_READ, "keyboard")
    selector.register(chat.sock, selectors.EVENT_READ, "socket")
    watching_writes = False
    try:
        for line in keyboard.typed_ahead():
            if line == EXIT_COMMAND:
                return "left"
            chat.send_line(line)
        while True:
            # Watch for room in the socket only while something waits to be sent:
            # a socket is nearly always writable, and watching it for nothing would spin.
            if bool(chat.outgoing) != watching_writes:
                watching_writes = bool(chat.outgoing)
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if watching_writes else 0)
                selector.modify(chat.sock, events, "socket")
            for key, events in selector.select():
                if key.data == "socket":
                    if events & selectors.EVENT_WRITE:
                        chat.write_some()
                    if events & selectors.EVENT_READ and not chat.read_some():
                        return "server closed"
                else:
                    for line in keyboard.read_available():
                        if line == EXIT_COMMAND:
                            return "left"
                        chat.send_line(line)
                    if keyboard.ended:
                        return "left"  # end of input (Ctrl+D) leaves like /exit
    except ConnectionError:  # a send() failed: the server is gone
        return "server closed"
    except KeyboardInterrupt:  # Ctrl+C: leave politely
        return "left"
    finally:
        selector.close()


def main():
    args = parse_args()
    keyboard = Keyboard()
    print(PROMPT, end="", flush=True)
    try:
        username = keyboard.read_line_blocking()
    except KeyboardInterrupt:
        username = None
    if username is None:
        print()
        return 0  # nothing typed, nothing to leave
    try:
        sock = socket.create_connection((args.host, args.port), timeout=CONNECT_TIMEOUT)
    except OSError as error:
        print(f"Error connecting to server: {error}", flush=True)
        return 1
    sock.setblocking(False)
    chat = Chat(sock)
    chat.send_line(username)
    outcome = run(chat, keyboard)
    if outcome == "left":
        chat.send_line(EXIT_COMMAND)
        chat.finish_sending()
        show("You have left the chat")
    else:
        show("The server closed the connection")
    chat.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)  # Ctrl+C outside the loop (while connecting, or leaving): no traceback
