"""Stage 02: a line server. TCP carries bytes, not messages: we make lines.

Every line the client sends (UTF-8 text ending in "\\n") comes back in upper
case, however the bytes were split or joined on their way. One client at a time.

YOUR TASK: fill in the two functions marked TODO. The rest is done.

Run it:   python stages/02_lines/server.py [--host HOST] [--port PORT]
Try it:   nc 127.0.0.1 9801   (type: hello  ->  HELLO)
"""

import argparse
import socket

BUFFER_SIZE = 4096
ACCEPT_TIMEOUT = 0.5  # seconds: accept() returns this often, so that Ctrl+C is seen (below)


def parse_args():
    parser = argparse.ArgumentParser(description="Line server: replies to each line in upper case.")
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
    # TODO (stage 02): drop one trailing b"\r", then decode UTF-8 with
    # errors="replace" so that bad bytes can't crash the server.
    raise NotImplementedError("Stage 02: write decode_line() in server.py")


def read_lines(connection):
    """Yield each complete line the client sends, until it closes.

    recv() returns whatever bytes have arrived: part of a line, or several
    lines at once. Bytes wait in `pending` until their "\\n" arrives.
    """
    # TODO (stage 02): keep a bytearray of pending bytes; after each recv(),
    # split off every complete line, yield decode_line(line) for each, and
    # keep the unfinished rest. Return when recv() returns b"".
    raise NotImplementedError("Stage 02: write read_lines() in server.py")


def send_line(connection, text):
    connection.sendall((text + "\n").encode("utf-8"))


def reply_to_lines(connection):
    """Answer every line with the same line in upper case."""
    for line in read_lines(connection):
        send_line(connection, line.upper())


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
    """Serve one client at a time: the next waits in the listen queue meanwhile.

    (On Windows, Ctrl+C also waits while a connected client is silent: recv()
    is not interrupted either. From stage 03 on, clients get threads of their
    own, and the main thread only ever waits in accept().)
    """
    for connection in incoming_connections(listener):
        with connection:
            try:
                reply_to_lines(connection)
            except ConnectionError:
                pass  # the client vanished (reset); serve the next one


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
