"""Stage 07: the chat client, its bugs fixed.

Run it:   python client.py [--host HOST] [--port PORT]   (defaults: localhost 9801)

The main thread reads what you type and sends it; a second thread prints
what the server sends. Messages are lines: each ends with "\\n".
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


def parse_args():
    parser = argparse.ArgumentParser(description="Chat client.")
    parser.add_argument("--host", default="localhost", help="the server's address (default: localhost)")
    parser.add_argument("--port", type=int, default=9801, help="the server's port (default: 9801)")
    return parser.parse_args()


# ---- receiving: the background thread ----------------------------------------

def received_lines(sock):
    """Each complete line the server sends, as text; ends when the connection does."""
    pending = b""
    while True:
        try:
            chunk = sock.recv(BUFFER_SIZE)
        except OSError:  # reset by the server, or our own shutdown() as we leave
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


def print_incoming(sock, leaving):
    """Print every line received; if the server hangs up on us, end the program."""
    for line in received_lines(sock):
        # flush=True: when the output is a pipe, print() would otherwise keep it in a buffer.
        print(line, flush=True)
    if not leaving.is_set():
        server_closed()


def server_closed():
    print("The server closed the connection", flush=True)
    # The main thread is blocked in input(), and nothing portable can wake it,
    # so end the whole process from here. os._exit() skips Python's clean-up,
    # which is why everything printed was flushed first.
    os._exit(0)


# ---- sending: the main thread -------------------------------------------------

def send_line(sock, text):
    # The server reads a byte stream too: "\n" tells it where each message ends.
    sock.sendall(text.encode(ENCODING))  # (bug: no "\n")


def typed_lines():
    """Each line typed, until /exit or the end of the input (Ctrl+D; Ctrl+Z Enter on Windows)."""
    while True:
        try:
            line = input()
        except (EOFError, KeyboardInterrupt):  # no more input, or Ctrl+C: leave politely
            return
        if line == EXIT_COMMAND:
            return
        yield line


def chat(sock, username, leaving):
    """Send the username, then every line typed, then /exit."""
    try:
        send_line(sock, username)
        for line in typed_lines():
            send_line(sock, line)
    except OSError:  # the server is gone
        server_closed()
    leaving.set()  # from now on, the server closing the connection is expected
    try:
        send_line(sock, EXIT_COMMAND)
    except OSError:
        pass  # the server is gone already: we are leaving anyway


def leave(sock, receiver):
    print("You have left the chat", flush=True)
    try:
        # shutdown() wakes the receiving thread, blocked in recv(); close() alone would not.
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already disconnected
    receiver.join(timeout=1)
    sock.close()


def main():
    args = parse_args()
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
    receiver = threading.Thread(target=print_incoming, args=(sock, leaving), daemon=True)
    receiver.start()
    chat(sock, username, leaving)
    leave(sock, receiver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
