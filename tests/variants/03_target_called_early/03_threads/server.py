"""Stage 03: the line server, serving many clients at once, a thread each.

Every line a client sends (UTF-8 text ending in "\\n") comes back in upper
case. Each client has its own thread, so a silent client holds nobody up.

Run it:   python server.py [--host HOST] [--port PORT]
Try it:   nc localhost 9801   (type: hello  ->  HELLO)
"""

import argparse
import socket
import threading

BUFFER_SIZE = 4096


def parse_args():
    parser = argparse.ArgumentParser(description="Threaded line server: replies to each line in upper case.")
    parser.add_argument("--host", default="localhost", help="address to listen on (default: localhost)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def create_listening_socket(host, port):
    """A TCP socket bound to (host, port) and listening for connections."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Lets a restarted server bind the port at once, instead of failing with
    # "Address already in use" while old connections linger in TIME_WAIT.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen()
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
    thread = threading.Thread(target=serve_client(connection), daemon=True)  # BUG: calls it now, in the main thread
    thread.start()


def serve_forever(listener):
    """Accept clients forever; each one is served by a thread of its own."""
    while True:
        connection, address = listener.accept()
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
