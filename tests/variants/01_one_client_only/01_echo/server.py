"""Stage 01: an echo server that serves one client at a time.

Run it:   python server.py [--host HOST] [--port PORT]
Try it:   nc localhost 9801   (type a line; it comes back)
"""

import argparse
import socket

BUFFER_SIZE = 4096


def parse_args():
    parser = argparse.ArgumentParser(description="Echo server, one client at a time.")
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


def echo_until_closed(connection):
    """Send back every byte received, until the client closes its side."""
    while True:
        data = connection.recv(BUFFER_SIZE)
        if not data:  # b"" means the client closed: no more data will come
            return
        # sendall() keeps sending until every byte is gone; send() may send only some.
        connection.sendall(data)


def serve_forever(listener):
    """Serve one client at a time: the next waits in the listen queue meanwhile."""
    if True:  # BUG: one client only, then the server ends
        connection, address = listener.accept()
        with connection:
            try:
                echo_until_closed(connection)
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
