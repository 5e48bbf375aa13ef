"""Stage 03: the line server, serving many clients at once, a thread each.

Every line a client sends (UTF-8 text ending in "\\n") comes back in upper
case. Each client has its own thread, so a silent client holds nobody up.

Run it:   python solutions/03_threads/server.py [--host HOST] [--port PORT]
Try it:   nc 127.0.0.1 9801   (type: hello  ->  HELLO)
"""

import argparse
import socket
import threading

BUFFER_SIZE = 4096
ACCEPT_TIMEOUT = 0.5  # seconds: accept() returns this often, so that Ctrl+C is seen (below)


def parse_args():
    parser = argparse.ArgumentParser(description="Threaded line server: replies to each line in upper case.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def create_listening_socket(host, port):
    """A TCP socket bound to (host, port) and listening, whose accept() waits at most ACCEPT_TIMEOUT."""
    # create_server() makes the socket, binds it and listens. On Linux and macOS it
    # sets SO_REUSEADDR first: a restarted server can bind its port at once, while
    # the old connections linger in TIME_WAIT. On Windows it sets nothing: there
    # TIME_WAIT does not block bind(), and SO_REUSEADDR would let a second server
    # bind a port that is still listening.
    listener = socket.create_server((host, port))
    listener.settimeout(ACCEPT_TIMEOUT)
    return listener


def decode_line(raw):
    """Bytes of one line (without its "\\n") as text, with a trailing "\\r" dropped."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    # Decoding a whole line is safe: a multi-byte character never contains the
    # byte b"\n", so it can't be cut in two by the split. A chunk from recv() can.
    return raw.decode("utf-8", errors="replace")


def read_lines(connection):
    """Yield each complete line the client sends, until it closes.

    recv() returns whatever bytes have arrived: part of a line, or several
    lines at once. Bytes wait in `pending` until their "\\n" arrives.
    """
    pending = bytearray()
    while True:
        data = connection.recv(BUFFER_SIZE)
        if not data:  # the client closed: an unfinished line is dropped
            return
        pending += data
        if b"\n" not in data:
            continue  # no line finished yet; don't rescan a long line
        *lines, rest = pending.split(b"\n")
        pending = bytearray(rest)
        for raw in lines:
            yield decode_line(raw)


def send_line(connection, text):
    connection.sendall((text + "\n").encode("utf-8"))


def reply_to_lines(connection):
    """Answer every line with the same line in upper case."""
    for line in read_lines(connection):
        send_line(connection, line.upper())


def serve_client(connection):
    """Runs in the client's own thread: answer its lines until it leaves."""
    with connection:
        try:
            reply_to_lines(connection)
        except ConnectionError:
            pass  # the client vanished (reset): only this thread ends


def start_client_thread(connection):
    # daemon=True: these threads don't keep the process alive when main() ends.
    thread = threading.Thread(target=serve_client, args=(connection,), daemon=True)
    thread.start()


def incoming_connections(listener):
    """Each client's connection, as it arrives, forever.

    Why not just wait in accept()? On Windows, Ctrl+C does not interrupt a
    blocked accept() (CPython issue #85609): the KeyboardInterrupt would wait
    for the next client. With the listener's timeout, accept() returns every
    ACCEPT_TIMEOUT seconds, and Ctrl+C stops the server within that time on every
    system; the standard library's socketserver polls every 0.5 s for the same reason.
    The connections it gives have no timeout: their recv() waits as long as it takes.
    """
    while True:
        try:
            connection, address = listener.accept()
        except TimeoutError:  # named socket.timeout before Python 3.10
            continue  # nobody came: wait again
        except ConnectionError:
            continue  # a client gave up before we took it (seen on Windows): not our problem
        yield connection


def serve_forever(listener):
    """Accept clients forever; each one is served by a thread of its own."""
    for connection in incoming_connections(listener):
        start_client_thread(connection)


def main():
    args = parse_args()
    listener = create_listening_socket(args.host, args.port)
    host, port = listener.getsockname()[:2]
    # flush=True: when output goes to a pipe, print() waits for a full buffer otherwise.
    print(f"Server started on {host}:{port}", flush=True)
    try:
        serve_forever(listener)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
