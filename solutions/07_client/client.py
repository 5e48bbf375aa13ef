"""Stage 07: the chat client, its bugs fixed.

Run it:   python solutions/07_client/client.py [--host HOST] [--port PORT]   (defaults: 127.0.0.1 9801)

The main thread reads what you type and sends it; a second thread prints
what the server sends. Messages are lines: each ends with "\\n".
At a terminal it is a little more polished (see Screen): your own lines show
as "you: TEXT", and a line that arrives while you type does not cut into
what you are typing.
"""

import argparse
import os
import socket
import sys
import threading

ENCODING = "utf-8"
BUFFER_SIZE = 4096
CONNECT_TIMEOUT = 10  # seconds; an unreachable host should not hang us for minutes
EXIT_COMMAND = "/exit"
PROMPT = "you: "         # at a terminal only: what you type stays on screen as "you: TEXT"
ERASE_LINE = "\r\x1b[K"  # back to the start of the line, then erase to its end (ANSI terminals)


def parse_args():
    parser = argparse.ArgumentParser(description="Chat client.")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="the server's port (default: 9801)")
    return parser.parse_args()


def survive_any_encoding():
    """Print '?' for a character the output cannot show, instead of raising an error.

    print() encodes text with the output's encoding: UTF-8 on Linux and macOS,
    but on Windows, when the output is a pipe or a file, the ANSI code page
    (cp1252 in Western Europe), which has no '✓' and no '日'. The error would
    kill the receiving thread, and with it our only way to notice that the
    server has gone. Input gets the same care: a byte its encoding cannot
    decode becomes the replacement character U+FFFD rather than an error.
    """
    sys.stdout.reconfigure(errors="replace")
    sys.stdin.reconfigure(errors="replace")


# ---- the screen ---------------------------------------------------------------

def import_readline():
    """The readline module, or None where there is none (Windows' Python has none)."""
    try:
        import readline  # from now on input() edits the line with it
    except ImportError:
        return None
    return readline


class Screen:
    """Where the chat is shown, and where typed lines come from.

    Through pipes (as in the tests) it shows every line as it is, with no prompt.
    At a terminal, input() shows the prompt "you: ", so each line you send stays
    on screen as "you: TEXT". A line received while you type is printed above
    the line you are typing, which is then drawn again: readline tells us what
    is typed so far. Without readline (Windows) that cannot be known, so the
    received line goes on a fresh line and the prompt follows it; what you had
    typed is not lost, and is sent whole when you press Enter.
    """

    def __init__(self):
        self.at_terminal = sys.stdin.isatty() and sys.stdout.isatty()
        self.readline = import_readline() if self.at_terminal else None
        self.prompt = PROMPT if self.at_terminal else ""
        self.typing = False  # True while the main thread waits in input()

    def read_line(self):
        """The next line typed; EOFError at the end of the input."""
        self.typing = True
        try:
            return input(self.prompt)
        finally:
            self.typing = False

    def end_typed_line(self):
        """After Ctrl+D or Ctrl+C at the prompt: go to a fresh line for what follows."""
        if self.at_terminal:
            print(flush=True)

    def show(self, line):
        """Print a line received, without cutting into what is being typed."""
        if not (self.at_terminal and self.typing):
            # flush=True: when the output is a pipe, print() would otherwise keep it in a buffer.
            print(line, flush=True)
        elif self.readline is not None:
            typed = self.readline.get_line_buffer()
            # Erase the prompt and the half-typed text, print the line in their
            # place, then draw both again below it, where readline carries on.
            # (readline.redisplay() alone would draw nothing: readline believes
            # the screen still shows its line, and redraws only what changed.)
            self._write(f"{ERASE_LINE}{line}\n{self.prompt}{typed}")
        else:
            self._write(f"\n{line}\n{self.prompt}")

    def show_last(self, line):
        """The client's last word, as the program ends: no prompt after it."""
        if not (self.at_terminal and self.typing):
            print(line, flush=True)
        elif self.readline is not None:
            self._write(f"{ERASE_LINE}{line}\n")
        else:
            self._write(f"\n{line}\n")

    def _write(self, text):
        sys.stdout.write(text)
        sys.stdout.flush()


# ---- receiving: the background thread ----------------------------------------

def received_lines(sock):
    """Each complete line the server sends, as text; ends when the connection does."""
    pending = b""
    while True:
        try:
            chunk = sock.recv(BUFFER_SIZE)
        except OSError:  # reset by the server, or our own shutdown() or close() as we leave
            return
        if not chunk:  # b"": the server closed the connection. Looping on would spin forever.
            return
        # TCP delivers a stream of bytes, not messages: one recv() may hold part
        # of a line, or several lines. Keep the unfinished end for next time.
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            # Decode whole lines only: a character's bytes may be split across two recv()s.
            yield line.decode(ENCODING, errors="replace").rstrip("\r")


def print_incoming(sock, leaving, screen):
    """Print every line received; if the server hangs up on us, end the program."""
    for line in received_lines(sock):
        screen.show(line)
    if not leaving.is_set():
        server_closed(screen)


def server_closed(screen):
    screen.show_last("The server closed the connection")
    # The main thread is blocked in input(), and nothing portable can wake it,
    # so end the whole process from here. os._exit() skips Python's clean-up,
    # which is why everything printed was flushed first.
    os._exit(0)


# ---- sending: the main thread -------------------------------------------------

def send_line(sock, text):
    # The server reads a byte stream too: "\n" tells it where each message ends.
    sock.sendall((text + "\n").encode(ENCODING))


def typed_lines(screen):
    """Each line typed, until /exit or the end of the input (Ctrl+D; Ctrl+Z Enter on Windows)."""
    while True:
        try:
            line = screen.read_line()
        except (EOFError, KeyboardInterrupt):  # no more input, or Ctrl+C: leave politely
            screen.end_typed_line()
            return
        if line == EXIT_COMMAND:
            return
        yield line


def chat(sock, username, leaving, screen):
    """Send the username, then every line typed, then /exit."""
    try:
        send_line(sock, username)
        for line in typed_lines(screen):
            send_line(sock, line)
    except OSError:  # the server is gone
        server_closed(screen)
    leaving.set()  # from now on, the server closing the connection is expected
    try:
        send_line(sock, EXIT_COMMAND)
    except OSError:
        pass  # the server is gone already: we are leaving anyway


def stop_receiving(sock):
    """Wake the receiving thread from its recv(), on every system.

    shutdown() does it on Linux and macOS: recv() returns b"". On Windows it
    does not, and only close() does (CPython issue #91913): recv() then raises
    OSError. Either way received_lines() ends.
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already disconnected
    if sys.platform == "win32":
        sock.close()


def leave(sock, receiver):
    print("You have left the chat", flush=True)
    stop_receiving(sock)
    receiver.join(timeout=1)
    sock.close()


def main():
    survive_any_encoding()
    args = parse_args()
    screen = Screen()
    try:
        username = input("Enter your username: ")
    except (EOFError, KeyboardInterrupt):
        print()
        return 0  # nothing typed, nothing to leave
    try:
        sock = socket.create_connection((args.host, args.port), timeout=CONNECT_TIMEOUT)
    except OSError as error:
        print(f"Error connecting to server: {error}", flush=True)
        return 1
    sock.settimeout(None)  # from now on, wait as long as it takes

    leaving = threading.Event()
    # A daemon thread does not keep the program alive once the main thread is done.
    receiver = threading.Thread(target=print_incoming, args=(sock, leaving, screen), daemon=True)
    receiver.start()
    chat(sock, username, leaving, screen)
    leave(sock, receiver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
