"""Stage 06, another design: asyncio, a coroutine per client, one thread.

Coroutines switch only at an `await`, so code with no `await` in it runs in
one go: adding a newcomer and writing its join line to the members already
there cannot be interleaved with anything else. Each write() only appends to
the client's transport buffer; drain() waits while a slow reader's buffer is
full, in the *sender's* coroutine, which is fine since nothing else waits
for it.
"""

import argparse
import asyncio

EXIT_COMMAND = "/exit"
# StreamReader.readline() fails on a line longer than its limit (64 KiB by
# default): the chat forwards lines of any length, so the limit is raised.
LINE_LIMIT = 16 * 1024 * 1024


def parse_args():
    parser = argparse.ArgumentParser(description="Multi-user chat server (asyncio).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    return parser.parse_args()


class Room:
    def __init__(self):
        self.writers = {}  # StreamWriter -> name, in join order

    def tell_others(self, sender, text):
        """Write a line to every member but the sender: no await, so in one go."""
        data = (text + "\n").encode("utf-8")
        for writer in list(self.writers):
            if writer is not sender and not writer.is_closing():
                writer.write(data)

    async def catch_up(self, sender):
        """Let the transports' buffers empty before this sender goes on.

        A receiver that fails here is closed; its own coroutine then sees the
        end of its stream and announces the leave.
        """
        for writer in list(self.writers):
            if writer is not sender and not writer.is_closing():
                try:
                    await writer.drain()
                except (ConnectionError, OSError):
                    writer.close()

    async def client_connected(self, reader, writer):
        name = None
        try:
            name = await self.next_line(reader)
            if name is None:
                return
            self.tell_others(writer, f"{name} joined the chat room!")
            self.writers[writer] = name
            while (line := await self.next_line(reader)) not in (None, EXIT_COMMAND):
                if line.strip():
                    self.tell_others(writer, f"{name}: {line}")
                    await self.catch_up(writer)
        except (ConnectionError, OSError):
            pass  # reset by the client
        except ValueError:
            pass  # a line over LINE_LIMIT: readline() gives up, and so does this client
        finally:
            if self.writers.pop(writer, None) is not None:
                self.tell_others(writer, f"{name} exited the chat room")
            writer.close()

    @staticmethod
    async def next_line(reader):
        """The next whole line as text; None at the end of the stream."""
        raw_line = await reader.readline()
        if not raw_line.endswith(b"\n"):
            return None  # b"" at the end, or an unfinished last line: no line
        return raw_line[:-1].removesuffix(b"\r").decode("utf-8", errors="replace")


async def serve(host, port):
    room = Room()
    server = await asyncio.start_server(room.client_connected, host, port, limit=LINE_LIMIT,
                                        reuse_address=True)
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    print(f"Server started on {bound_host}:{bound_port}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    args = parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
