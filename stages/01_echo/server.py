"""Stage 01: an echo server that serves one client at a time.

YOUR TASK: fill in the two functions marked TODO. The rest is done.

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
    # TODO (stage 01): create a TCP socket (AF_INET, SOCK_STREAM), set
    # SO_REUSEADDR, bind it to (host, port), call listen(), and return it.
    raise NotImplementedError("Stage 01: write create_listening_socket() in server.py")


def echo_until_closed(connection):
    """Send back every byte received, until the client closes its side."""
    # TODO (stage 01): loop: recv() up to BUFFER_SIZE bytes; b"" means the
    # client closed, so return; otherwise send every byte back (sendall).
    raise NotImplementedError("Stage 01: write echo_until_closed() in server.py")


def serve_forever(listener):
    """Serve one client at a time: the next waits in the listen queue meanwhile."""
    while True:
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
