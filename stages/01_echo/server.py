"""Stage 01: an echo server that serves one client at a time.

YOUR TASK: fill in the two functions marked TODO. The rest is done.

Run it:   python stages/01_echo/server.py [--host HOST] [--port PORT]
Try it:   nc 127.0.0.1 9801   (type a line; it comes back)
"""

import argparse
import socket

BUFFER_SIZE = 4096
ACCEPT_TIMEOUT = 0.5  # seconds: accept() returns this often, so that Ctrl+C is seen (below)


def parse_args():
    parser = argparse.ArgumentParser(description="Echo server, one client at a time.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def create_listening_socket(host, port):
    """A TCP socket bound to (host, port) and listening, whose accept() waits at most ACCEPT_TIMEOUT."""
    # TODO (stage 01): make a TCP socket listening on (host, port): one call of
    # socket.create_server() does it. Give it a timeout of ACCEPT_TIMEOUT
    # seconds (incoming_connections() says why), and return it.
    raise NotImplementedError("Stage 01: write create_listening_socket() in server.py")


def echo_until_closed(connection):
    """Send back every byte received, until the client closes its side."""
    # TODO (stage 01): loop: recv() up to BUFFER_SIZE bytes; b"" means the
    # client closed, so return; otherwise send every byte back (sendall).
    raise NotImplementedError("Stage 01: write echo_until_closed() in server.py")


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
