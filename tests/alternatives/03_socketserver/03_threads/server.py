"""Stage 03, another design: the standard library's socketserver does the threads.

ThreadingTCPServer accepts connections and runs a handler for each one in a
thread of its own. The handler reads lines with rfile.readline(), which keeps
the framing (bytes waiting for their "\\n") inside a buffered file object.
"""

import argparse
import socketserver


def parse_args():
    parser = argparse.ArgumentParser(description="Line server on socketserver: replies in upper case.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


def text_of(raw_line):
    """A line read with its b"\\n" as text: newline and a trailing "\\r" dropped."""
    raw_line = raw_line[:-1]
    if raw_line.endswith(b"\r"):
        raw_line = raw_line[:-1]
    return raw_line.decode("utf-8", errors="replace")


class UpperCaseHandler(socketserver.StreamRequestHandler):
    """One client, in its own thread: each line comes back in upper case."""

    def handle(self):
        try:
            self.answer_lines()
        except OSError:
            pass  # reset by the client: only this client's thread ends

    def answer_lines(self):
        while True:
            raw_line = self.rfile.readline()
            # At the end of the stream readline() returns b"" or an unfinished
            # line without b"\n": neither is a line, so both end the talk.
            if not raw_line.endswith(b"\n"):
                return
            reply = text_of(raw_line).upper() + "\n"
            self.wfile.write(reply.encode("utf-8"))


class LineServer(socketserver.ThreadingTCPServer):
    # Restart at once on the same port, even with old connections in TIME_WAIT.
    allow_reuse_address = True
    # Handler threads must not keep the process alive after Ctrl+C.
    daemon_threads = True


def main():
    args = parse_args()
    with LineServer((args.host, args.port), UpperCaseHandler) as server:
        host, port = server.server_address[:2]
        print(f"Server started on {host}:{port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
