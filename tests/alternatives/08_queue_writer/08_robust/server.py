"""Stage 08, another design: socketserver, a reading thread and a writer thread per client.

Run it:   python server.py [--host HOST] [--port PORT]
                           [--max-users N] [--max-line BYTES] [--handshake-timeout SECONDS]

- socketserver.ThreadingTCPServer accepts, and runs ChatHandler.handle() in a
  thread per client. It reads lines with rfile.readline(limit), so no line is
  ever kept past --max-line bytes: the rest of a long one is read and dropped.
- Every line for a client goes into its own bounded queue.Queue; the client's
  writer thread takes out what is there and sends it with one sendall(). A
  sender whose put() finds the queue full waits: a reader that is only behind
  makes room soon. If the client has taken nothing for STUCK_AFTER seconds,
  the sender gives up on it and disconnects it.
- The handshake has one deadline, kept by a threading.Timer: if the name has
  not arrived when it fires, it refuses the client and disconnects it, however
  the bytes were dribbling in.
- The room's lock covers "check the limits, add the member, take the list of
  who hears the join line" as one step.
"""

import argparse
import queue
import socket
import socketserver
import threading
import time
import unicodedata

ENCODING = "utf-8"
MAX_NAME_LENGTH = 32
QUEUE_LINES = 256        # lines waiting for one client; past this, its senders wait for room
BATCH_BYTES = 64 * 1024  # the writer sends up to this much in one sendall()
STUCK_AFTER = 3.0        # seconds without progress before a client that is behind is dropped
DISCARD_CHUNK = 65536    # how much of an over-long line is read (and thrown away) at a time

# Category Cc is U+0000-U+001F and U+007F-U+009F; tab stays in messages.
CONTROL_CODES = [code for code in range(0xA0) if unicodedata.category(chr(code)) == "Cc"]
DELETE_CONTROLS = dict.fromkeys(code for code in CONTROL_CODES if code != ord("\t"))


def parse_args():
    parser = argparse.ArgumentParser(description="Chat server: socketserver, a writer thread per client.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="port to listen on; 0 picks a free one")
    parser.add_argument("--max-users", type=int, default=10, help="most members at once (default: 10)")
    parser.add_argument("--max-line", type=int, default=4096, help="longest line in bytes (default: 4096)")
    parser.add_argument("--handshake-timeout", type=float, default=30.0,
                        help="seconds a new client has to send its name (default: 30)")
    return parser.parse_args()


def disconnect(sock):
    """End the connection both ways: the client sees the end, and a recv() blocked on it returns."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


class Outbox:
    """What one client is due, and the writer thread that sends it."""

    def __init__(self, sock):
        self.sock = sock
        self.lines = queue.Queue(QUEUE_LINES)
        self.gone = threading.Event()
        self.last_progress = time.monotonic()
        self.writer = threading.Thread(target=self.write_forever, daemon=True)
        self.writer.start()

    def put(self, data):
        """Queue one encoded line; wait while the queue is full, but give up on a stuck client."""
        while not self.gone.is_set():
            if self.lines.empty():
                self.last_progress = time.monotonic()  # it had nothing to do: it is not stuck
            waited_enough = self.last_progress + STUCK_AFTER - time.monotonic()
            try:
                self.lines.put(data, timeout=max(0.05, waited_enough))
                return
            except queue.Full:
                if time.monotonic() - self.last_progress >= STUCK_AFTER:
                    self.give_up()
                    return

    def write_forever(self):
        while True:
            batch = self.next_batch()
            if batch is None:
                return
            try:
                self.sock.sendall(batch)
            except OSError:
                self.give_up()
                return
            self.last_progress = time.monotonic()

    def next_batch(self):
        """Wait for a line, then take whatever else is queued, up to BATCH_BYTES; None once gone."""
        first = self.lines.get()
        if first is None or self.gone.is_set():
            return None
        parts, size = [first], len(first)
        while size < BATCH_BYTES:
            try:
                part = self.lines.get_nowait()
            except queue.Empty:
                break
            if part is None:
                break  # the stop signal; this batch still goes, the next get() sees gone
            parts.append(part)
            size += len(part)
        return b"".join(parts)

    def give_up(self):
        """Stop sending and disconnect: the client's own handler then sees the end and announces it."""
        self.stop()
        disconnect(self.sock)

    def stop(self):
        self.gone.set()
        # Empty the queue: senders waiting in put() for room get it at once (and then
        # see `gone`), instead of waiting out their timeout for a client that has left.
        while True:
            try:
                self.lines.get_nowait()
            except queue.Empty:
                break
        try:
            self.lines.put_nowait(None)  # wakes the writer if it waits in get()
        except queue.Full:
            pass  # a sender's line took the place; the writer gets it and then sees `gone`


class Room:
    """The members by name, and every open connection; one lock for all of it."""

    def __init__(self, max_users):
        self.max_users = max_users
        self.lock = threading.Lock()
        self.members = {}          # name -> Outbox
        self.open_sockets = set()  # every client connection, named or not
        self.all_closed = threading.Condition(self.lock)

    def admit(self, name, outbox):
        """(None, who hears the join line), or (the Error line, None). One locked step."""
        with self.lock:
            if len(self.members) >= self.max_users:
                return f"Error: the room is full, at most {self.max_users} users", None
            if name in self.members:
                return f"Error: {name!r} is taken, choose another username", None
            listeners = list(self.members.values())
            self.members[name] = outbox
            return None, listeners

    def remove(self, name, outbox):
        """True only for the call that removed this member."""
        with self.lock:
            if self.members.get(name) is not outbox:
                return False
            del self.members[name]
            return True

    def others(self, outbox):
        with self.lock:
            return [other for other in self.members.values() if other is not outbox]

    def opened(self, sock):
        with self.lock:
            self.open_sockets.add(sock)

    def closed(self, sock):
        with self.lock:
            self.open_sockets.discard(sock)
            self.all_closed.notify_all()

    def disconnect_all(self, wait):
        """Disconnect everyone, then wait (at most `wait` seconds) for their handlers to finish."""
        give_up_at = time.monotonic() + wait
        with self.lock:
            for sock in self.open_sockets:
                disconnect(sock)
            while self.open_sockets and time.monotonic() < give_up_at:
                self.all_closed.wait(give_up_at - time.monotonic())


def send_to_all(outboxes, text):
    data = (text + "\n").encode(ENCODING)
    for outbox in outboxes:
        outbox.put(data)


def bad_username(name):
    """The Error line for a name that can never be used, else None."""
    if name.strip() == "":
        return "Error: the username is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"Error: usernames are {MAX_NAME_LENGTH} characters at most"
    if ":" in name:
        return "Error: ':' is not allowed in a username"
    if any(ord(c) in CONTROL_CODES for c in name):  # tab included
        return "Error: control characters are not allowed in a username"
    return None


class LineTooLong(Exception):
    pass


class ChatHandler(socketserver.StreamRequestHandler):
    """One client's thread. self.rfile reads its bytes; its Outbox writes to it."""

    def handle(self):
        room, settings = self.server.room, self.server.settings
        self.name, self.outbox = None, None
        room.opened(self.request)
        try:
            if self.handshake(room, settings):
                self.chat(room, settings)
        except (OSError, ValueError):
            pass  # reset, disconnected by a Timer or a give_up(), or rfile closed under us
        finally:
            if self.outbox is not None:
                if room.remove(self.name, self.outbox):
                    send_to_all(room.others(self.outbox), f"{self.name} exited the chat room")
                self.outbox.stop()
            disconnect(self.request)
            room.closed(self.request)

    def read_line(self, max_line):
        """The next line as text (None at the end of the stream); LineTooLong for one over max_line bytes."""
        raw = self.rfile.readline(max_line + 1)  # at most one byte more than allowed
        if not raw:
            return None
        if not raw.endswith(b"\n"):
            if len(raw) <= max_line:
                return None  # an unfinished last line, then the end: dropped
            self.skip_rest_of_line()
            raise LineTooLong()
        return raw[:-1].decode(ENCODING, "replace").removesuffix("\r")

    def skip_rest_of_line(self):
        """Read and drop bytes up to the next '\\n': only DISCARD_CHUNK of them are held at a time."""
        while True:
            piece = self.rfile.readline(DISCARD_CHUNK)
            if not piece or piece.endswith(b"\n"):
                return

    def handshake(self, room, settings):
        """Read and check the username within the deadline; join the room. True once a member."""
        state = {"named": False, "timed_out": False}
        state_lock = threading.Lock()

        def out_of_time():
            with state_lock:
                if state["named"]:
                    return
                state["timed_out"] = True
            self.refuse(f"Error: no username within {settings.handshake_timeout:g} seconds")

        timer = threading.Timer(settings.handshake_timeout, out_of_time)
        timer.daemon = True
        timer.start()
        try:
            name = self.read_line(settings.max_line)
        except LineTooLong:
            name, error = "", "Error: the username is too long"
        else:
            error = None
        finally:
            timer.cancel()
        with state_lock:
            if state["timed_out"]:
                return False  # refused already
            state["named"] = True
        if name is None:
            return False  # left without a name: nobody heard of it
        error = error or bad_username(name)
        if error is None:
            outbox = Outbox(self.request)
            error, listeners = room.admit(name, outbox)
            if error is None:
                self.name, self.outbox = name, outbox
                send_to_all(listeners, f"{name} joined the chat room!")
                return True
            outbox.stop()
        self.refuse(error)
        return False

    def refuse(self, error):
        """One Error line (nothing else is ever sent to a non-member), then disconnect."""
        try:
            self.request.sendall((error + "\n").encode(ENCODING))
        except OSError:
            pass
        disconnect(self.request)

    def chat(self, room, settings):
        while True:
            try:
                line = self.read_line(settings.max_line)
            except LineTooLong:
                self.outbox.put(f"Error: lines are at most {settings.max_line} bytes; not sent\n".encode(ENCODING))
                continue
            if line is None or line == "/exit":
                return
            line = line.translate(DELETE_CONTROLS)
            if line.strip():  # blank lines are ignored
                send_to_all(room.others(self.outbox), f"{self.name}: {line}")


class ChatServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True      # handler threads do not keep the process alive at Ctrl+C
    request_queue_size = 256   # listen() backlog: many clients may connect at once

    def __init__(self, address, settings):
        super().__init__(address, ChatHandler)
        self.settings = settings
        self.room = Room(settings.max_users)

    def handle_error(self, request, client_address):
        pass  # a client's trouble ends its own thread only; the server prints no traceback


def main():
    settings = parse_args()
    server = ChatServer((settings.host, settings.port), settings)
    host, port = server.server_address[:2]
    # flush=True: when output goes to a pipe, print() waits for a full buffer otherwise.
    print(f"Server started on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # Ctrl+C: disconnect everyone below, and exit with status 0
    finally:
        server.server_close()
        server.room.disconnect_all(wait=1.0)


if __name__ == "__main__":
    main()
