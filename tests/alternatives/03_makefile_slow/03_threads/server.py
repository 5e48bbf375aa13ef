"""Stage 03, another design: a thread per client that reads through a file object,
and that takes its time (30-80 ms) before each reply, like a server doing real work.

sock.makefile("rb") gives a buffered binary file over the socket: iterating
over it yields one line at a time, however the bytes arrived.
"""

import argparse
import random
import socket
import threading
import time

SHORTEST_THINK, LONGEST_THINK = 0.03, 0.08  # seconds spent "working" on each line


def parse_args():
    parser = argparse.ArgumentParser(description="Slow threaded line server: replies in upper case.")
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


def whole_lines(stream):
    """Each complete line of the binary stream as text, without "\\n" or a trailing "\\r"."""
    for raw_line in stream:
        if not raw_line.endswith(b"\n"):
            return  # the client closed in the middle of a line: that is no line
        yield raw_line.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", errors="replace")


def think():
    time.sleep(random.uniform(SHORTEST_THINK, LONGEST_THINK))


def talk_to(sock):
    """The client's thread: read its lines, answer each one in upper case."""
    stream = sock.makefile("rb")
    try:
        for line in whole_lines(stream):
            think()
            sock.sendall((line.upper() + "\n").encode("utf-8"))
    except OSError:
        pass  # the client reset the connection
    finally:
        # The file object holds the socket's descriptor open too: close both.
        stream.close()
        sock.close()


def main():
    args = parse_args()
    listener = listen_on(args.host, args.port)
    host, port = listener.getsockname()[:2]
    print(f"Server started on {host}:{port}", flush=True)
    try:
        while True:
            try:
                sock, _address = listener.accept()
            except (TimeoutError, ConnectionError):
                continue  # nobody came within the timeout, or a client gave up before we took it
            threading.Thread(target=talk_to, args=(sock,), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
