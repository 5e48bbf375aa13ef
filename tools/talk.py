"""talk.py: a tiny line client for trying the course's servers by hand (a stand-in for nc).

    python tools/talk.py [--host HOST] [--port PORT] [--escapes]

Every line you type is sent, ending in "\\n". Whatever the server sends is printed as it
arrives. At the end of your input (Ctrl+D; on Windows Ctrl+Z, then Enter) talk.py stops
sending (a half-close, like `nc -N`) and prints what still comes until the server closes
the connection. Ctrl+C quits at once.

Input may come from a pipe too, so a script of lines can be replayed:

    python -c "print('bob'); print('x' * 3000)" | python tools/talk.py

--escapes lets you type bytes a keyboard can't: \\xNN (one byte), \\e (escape), \\t, \\r,
\\n and \\\\. For example `caf\\xe9 \\e[31mred` sends b"caf\\xe9 \\x1b[31mred\\n".

Standard library only; the same on Linux, macOS and Windows.
"""

import argparse
import codecs
import os
import re
import socket
import sys
import threading

ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[etrn\\])")
NAMED_ESCAPES = {b"e": b"\x1b", b"t": b"\t", b"r": b"\r", b"n": b"\n", b"\\": b"\\"}


def parse_args():
    parser = argparse.ArgumentParser(description="Send typed lines to a server; print what it sends back.")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="the server's port (default: 9801)")
    parser.add_argument("--escapes", action="store_true",
                        help=r"turn \xNN, \e, \t, \r, \n and \\ in typed lines into those bytes")
    return parser.parse_args()


def unescape(line):
    """The bytes a line with backslash escapes stands for (b'caf\\\\xe9' -> b'caf\\xe9')."""
    def replace(match):
        code = match.group(1)
        return bytes([int(code[1:], 16)]) if code.startswith(b"x") else NAMED_ESCAPES[code]
    return ESCAPE.sub(replace, line)


def print_arrivals(sock, done):
    """Print what arrives, as it arrives; a character split between two recv()s is kept whole."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = "\n"
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                note = "the server closed the connection"
                break
            text = decoder.decode(data) or text
            sys.stdout.write(text)
            sys.stdout.flush()
    except OSError as error:
        note = str(error)
    # On a line of its own, even after an unfinished line from the server.
    print(("" if text.endswith("\n") else "\n") + f"[talk.py: {note}]", flush=True)
    done.set()


def send_typed_lines(sock, escapes, done):
    """Send each line of standard input (a missing last '\\n' added); at its end, half-close."""
    try:
        for line in sys.stdin.buffer:
            line = line.rstrip(b"\r\n")  # Windows consoles end lines with \r\n: send \n only
            if escapes:
                line = unescape(line)
            sock.sendall(line + b"\n")
        sock.shutdown(socket.SHUT_WR)  # "no more from me": the server's recv() returns b""
    except OSError as error:
        if not done.is_set():
            print(f"[talk.py: sending failed: {error}]", file=sys.stderr, flush=True)


def main():
    args = parse_args()
    # What arrives is shown even where this terminal's encoding cannot show every character.
    sys.stdout.reconfigure(errors="replace")
    try:
        sock = socket.create_connection((args.host, args.port), timeout=10)
    except OSError as error:
        print(f"talk.py: cannot connect to {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    sock.settimeout(None)
    done = threading.Event()  # set once the server has closed the connection
    # Both are daemon threads: when the main thread returns, the program ends, even
    # with one of them still blocked reading the keyboard or the socket.
    threading.Thread(target=print_arrivals, args=(sock, done), daemon=True).start()
    threading.Thread(target=send_typed_lines, args=(sock, args.escapes, done), daemon=True).start()
    try:
        while not done.wait(0.2):  # short waits, so that Ctrl+C is seen on Windows too
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit(), not sys.exit(): the thread reading the keyboard may still be blocked
    # inside stdin's buffer, and Python's normal shutdown would wait for that buffer's
    # lock and abort ("could not acquire lock ... possibly due to daemon threads").
    os._exit(status)
