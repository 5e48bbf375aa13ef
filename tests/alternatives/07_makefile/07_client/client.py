"""Stage 07, another design: the chat client with a file-like socket and a wake-up signal.

Run it:   python client.py [--host HOST] [--port PORT]   (defaults: 127.0.0.1 9801)

- A receiving thread iterates over sock.makefile("rb"): the file object does the
  framing (each item is one line), and the iteration ends when the server closes.
- The main thread reads standard input with sys.stdin.readline() and sends.
- Leaving (/exit, end of input, Ctrl+C): send /exit, then shutdown() the socket.
  On Linux and macOS that wakes the receiving thread. On Windows only closing
  the descriptor does (cpython #91913), and sock.close() would not close it
  while the makefile() object still refers to it: there the descriptor is
  detached from the socket and closed directly.
- The server closing: the receiving thread says so, then wakes the main thread,
  blocked in readline(), with a signal (SIGUSR1) whose handler raises ServerClosed,
  so the program ends by returning from main(). Where there is no such signal
  (Windows), it ends the process with os._exit() instead.

Who ends the chat, the user or the server, is decided once, under a lock: the
two endings never both happen.
"""

import argparse
import os
import signal
import socket
import sys
import threading

ENCODING = "utf-8"
CONNECT_TIMEOUT = 10  # seconds; an unreachable host should not hang us for minutes
EXIT_COMMAND = "/exit"
PROMPT = "Enter your username: "
WAKE_SIGNAL = getattr(signal, "SIGUSR1", None)
CAN_WAKE_MAIN = WAKE_SIGNAL is not None and hasattr(signal, "pthread_kill")


class ServerClosed(BaseException):
    """Raised in the main thread, inside readline(), when the server has closed the connection."""


def parse_args():
    parser = argparse.ArgumentParser(description="Chat client (makefile, and a signal to wake the main thread).")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="the server's port (default: 9801)")
    return parser.parse_args()


def without_newline(text):
    return text.removesuffix("\n").removesuffix("\r")


class Session:
    def __init__(self, sock):
        self.sock = sock
        self.incoming = sock.makefile("rb")  # keeps the descriptor open until it is closed too
        self.lock = threading.Lock()
        self.ending = None          # "left" or "server closed": whichever came first
        self.main_reading = False   # the main thread is inside its readline() (may be woken)
        self.main_thread = threading.main_thread()
        self.receiver = threading.Thread(target=self.receive, daemon=True)

    # ---- the receiving thread -----------------------------------------------

    def receive(self):
        try:
            for raw in self.incoming:  # one complete line per item (the last may lack '\n')
                # Decode whole lines only; flush=True because a pipe would keep output in a buffer.
                print(without_newline(raw.decode(ENCODING, "replace")), flush=True)
        except (OSError, ValueError):
            pass  # reset by the server, or the file closed as we leave
        if self.decide("server closed"):
            print("The server closed the connection", flush=True)
            self.wake_main()

    def wake_main(self):
        if not CAN_WAKE_MAIN:
            os._exit(0)  # nothing can wake the main thread's readline(); everything is flushed
        with self.lock:
            if self.main_reading:
                signal.pthread_kill(self.main_thread.ident, WAKE_SIGNAL)

    # ---- the main thread ---------------------------------------------------

    def decide(self, ending):
        """True for the first ending only: the user leaving, or the server closing."""
        with self.lock:
            if self.ending is None:
                self.ending = ending
                return True
            return False

    def on_wake_signal(self, signum, frame):
        # Raise only inside the reading window: anywhere else, the main thread is not blocked
        # and sees the ending by itself.
        if self.main_reading:
            raise ServerClosed()

    def read_typed_line(self):
        """The next line typed (without '\\n'), or None at the end of input."""
        with self.lock:
            if self.ending == "server closed":
                raise ServerClosed()
            self.main_reading = True
        try:
            line = sys.stdin.readline()
        finally:
            with self.lock:
                self.main_reading = False
        return without_newline(line) if line else None

    def send_line(self, text):
        # The server reads a byte stream: "\n" tells it where each message ends.
        self.sock.sendall((text + "\n").encode(ENCODING))

    def chat(self, username):
        """Send the name, then what is typed; return how the chat ended."""
        self.receiver.start()
        try:
            self.send_line(username)
            while True:
                try:
                    line = self.read_typed_line()
                except KeyboardInterrupt:  # Ctrl+C: leave politely
                    line = None
                if line is None or line == EXIT_COMMAND:
                    return self.leave()
                self.send_line(line)
        except ServerClosed:
            return "server closed"
        except OSError:  # a send failed: the server is gone; the receiving thread says so
            self.receiver.join(1.0)
            if self.decide("server closed"):
                print("The server closed the connection", flush=True)
            return "server closed"

    def leave(self):
        if not self.decide("left"):
            return "server closed"  # the server was first, and the receiving thread said so
        try:
            self.send_line(EXIT_COMMAND)
        except OSError:
            pass  # the server is gone already: we are leaving anyway
        print("You have left the chat", flush=True)
        return "left"

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the receiving thread (Linux, macOS)
        except OSError:
            pass  # already disconnected
        if sys.platform == "win32":
            socket.close(self.sock.detach())  # what wakes it on Windows: see the top
        self.receiver.join(1.0)
        self.incoming.close()
        self.sock.close()


def read_username():
    print(PROMPT, end="", flush=True)
    try:
        line = sys.stdin.readline()
    except KeyboardInterrupt:
        line = ""
    return without_newline(line) if line else None


def main():
    # A character the output's encoding lacks (a Windows pipe is cp1252) prints as '?'
    # instead of raising in the receiving thread; undecodable input becomes U+FFFD.
    sys.stdout.reconfigure(errors="replace")
    sys.stdin.reconfigure(errors="replace")
    args = parse_args()
    username = read_username()
    if username is None:
        print()
        return 0  # nothing typed, nothing to leave
    try:
        sock = socket.create_connection((args.host, args.port), timeout=CONNECT_TIMEOUT)
    except OSError as error:
        print(f"Error connecting to server: {error}", flush=True)
        return 1
    sock.settimeout(None)  # from now on, wait as long as it takes
    session = Session(sock)
    if CAN_WAKE_MAIN:
        signal.signal(WAKE_SIGNAL, session.on_wake_signal)
    session.chat(username)
    session.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)  # Ctrl+C while connecting or closing: no traceback
