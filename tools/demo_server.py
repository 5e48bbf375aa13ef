"""demo_server.py: a complete chat server to try clients against by hand.

    python tools/demo_server.py [--host HOST] [--port PORT]      (defaults 127.0.0.1 9801)

It speaks the chat protocol of docs/PROTOCOL.md as stages 04 to 06 define it: the first
line is the username, "NAME joined the chat room!" to the others, "NAME: TEXT" for every
non-blank line, "/exit" or a closed connection gives "NAME exited the chat room" once.
It prints what happens on its standard output. Ctrl+C stops it and closes every connection.

It is written with asyncio, one thread for everything, which is not how the course's
stages are built (a thread per client): it is here to talk to, not to copy from. It also
greets each newcomer with a line of its own ("(demo server) ..."), which the protocol has
not: a stage's tests fail it on purpose, so it is no answer to hand in.
Standard library only; the same on Linux, macOS and Windows.
"""

import argparse
import asyncio
import sys

LONGEST_LINE = 1024 * 1024  # bytes; asyncio's readline() refuses longer lines


def parse_args():
    parser = argparse.ArgumentParser(description="A chat server to try clients against.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


class Room:
    """The members, name -> StreamWriter. One thread runs everything, so no lock is needed."""

    def __init__(self):
        self.members = {}

    def tell_others(self, sender, text):
        # write() never waits: what a client doesn't read yet waits in memory, so a
        # client that stops reading holds up nobody (fine for a demo, unbounded for real use).
        for writer in list(self.members.values()):
            if writer is not sender:
                writer.write((text + "\n").encode("utf-8"))
        print(text, flush=True)


async def next_line(reader):
    """The next line as text, or None once the client is gone (an unfinished last line is dropped)."""
    try:
        raw = await reader.readline()
    except (ValueError, OSError):  # a line over LONGEST_LINE, or a reset
        return None
    if not raw.endswith(b"\n"):
        return None
    return raw[:-1].removesuffix(b"\r").decode("utf-8", "replace")


async def serve(room, reader, writer):
    try:
        name = await next_line(reader)
    except asyncio.CancelledError:
        name = None  # Ctrl+C before this client gave its name
    if name is None:
        writer.close()
        return
    if name in room.members:
        writer.write(f"Error: the username {name!r} is already in use\n".encode("utf-8"))
        writer.close()
        return
    room.tell_others(writer, f"{name} joined the chat room!")
    room.members[name] = writer
    others = ", ".join(sorted(set(room.members) - {name})) or "nobody yet"
    writer.write(f"(demo server) welcome, {name}; here: {others}\n".encode("utf-8"))
    try:
        while (line := await next_line(reader)) not in (None, "/exit"):
            if line.strip():
                room.tell_others(writer, f"{name}: {line}")
    except asyncio.CancelledError:
        pass  # Ctrl+C: the server is stopping; end quietly (no traceback)
    finally:
        del room.members[name]
        room.tell_others(writer, f"{name} exited the chat room")
        writer.close()


async def main():
    args = parse_args()
    sys.stdout.reconfigure(errors="replace")  # any name or message can be shown, whatever the console
    room = Room()
    server = await asyncio.start_server(lambda r, w: serve(room, r, w), args.host, args.port,
                                        limit=LONGEST_LINE)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"Server started on {host}:{port}", flush=True)
    try:
        async with server:
            await server.serve_forever()
    finally:
        for writer in room.members.values():  # Ctrl+C: every client sees its connection end
            writer.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
