"""Testing a chat *client* (stage 07): the test plays the server.

A ScriptedServer listens on 127.0.0.1, accepts the client's one connection,
records every byte the client sends, and sends exactly what the test says,
split into packets the way the test says. Like the course's chat server, it
closes the connection when the client sends the line '/exit'.

A ClientSession starts the scripted server and the student's client.py
(standard input and output are pipes), types lines into it, waits for what
it prints, and on failure tells the student what the test typed, what was
expected, what the client printed, what the server received, and a likely
cause. Every wait has a deadline; stop() always ends both.
"""

import socket
import threading
import time
from pathlib import Path

from .client import DEFAULT_WAIT, Story, show
from .client import fail
from .process import START_DEADLINE, Program, tail

PROMPT = "Enter your username: "
SERVER = "the scripted server"


class ScriptedServer:
    """A one-connection TCP server driven by the test."""

    def __init__(self, story, close_on_exit=True):
        self.story = story
        self.close_on_exit = close_on_exit
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(0.05)  # so that the accepting thread notices stop()
        self.port = self.listener.getsockname()[1]
        self.connection = None
        self.received = bytearray()
        self.client_closed = False  # the client closed (or reset) its connection
        self.server_closed = False  # this server closed the connection
        self._stopping = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # ---- the server's thread ----------------------------------------------

    def _serve(self):
        while True:
            if self._stopping:
                return
            try:
                connection, _ = self.listener.accept()
                break
            except socket.timeout:
                continue
            except OSError:
                return  # the listener was closed by stop()
        connection.settimeout(None)
        # Each send() of the test leaves as its own packet.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._changed:
            if self._stopping:
                connection.close()
                return
            self.connection = connection
            self._changed.notify_all()
        self.story.add("the client", "connected to the scripted server")
        while True:
            try:
                chunk = connection.recv(65536)
            except OSError:
                chunk = b""
            with self._changed:
                if not chunk:
                    if not self.server_closed:
                        self.client_closed = True
                        self.story.add("the client", "closed its connection")
                    self._changed.notify_all()
                    return
                self.received.extend(chunk)
                self._changed.notify_all()
            if self.close_on_exit and "/exit" in self.lines():
                self.close_connection("closed the connection after the line '/exit', "
                                      "as the chat server does")

    # ---- what the client sent -------------------------------------------------

    def lines(self):
        """The complete lines received so far, as text ('\\r' before '\\n' dropped)."""
        text = bytes(self.received).decode("utf-8", "backslashreplace")
        return [line.rstrip("\r") for line in text.split("\n")[:-1]]

    def wait(self, condition, timeout, give_up=lambda: False):
        """Wait until condition() is true, give_up() is true, or the deadline; return condition()."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if condition():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or give_up():
                    return condition()
                self._changed.wait(min(remaining, 0.05))

    # ---- what the test makes it do ------------------------------------------

    def send(self, data, note=None):
        """Send bytes in one packet."""
        self.send_pieces([data], 0, note or f"sent {show(data)}")

    def send_pieces(self, pieces, pause, note):
        """Send each piece as its own packet, pausing between them.

        A client that has closed its connection makes the rest unsendable: that
        goes into the story, and the test fails on what the client printed.
        """
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(pause)  # pacing the sender, so the client reads each piece apart
            try:
                self.connection.sendall(piece)
            except OSError as error:
                self.story.add(SERVER, f"{note}, but only {i} of {len(pieces)} pieces: "
                                       f"the client had closed its connection ({error})")
                return False
        self.story.add(SERVER, note)
        return True

    def close_connection(self, note="closed the connection (shutdown, then close)"):
        with self._changed:
            connection = self.connection
            if connection is None or self.server_closed:
                return
            self.server_closed = True
            self._changed.notify_all()
        try:
            # shutdown() sends the FIN now and wakes our own thread's recv();
            # close() alone would do neither while that recv() is blocked.
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        connection.close()
        if note:
            self.story.add(SERVER, note)

    def stop(self):
        self._stopping = True
        self.close_connection(note=None)
        self.listener.close()
        self._thread.join(2)


class ClientProgram(Program):
    """The student's client.py, with its standard input as a pipe the test types into."""

    def __init__(self, path, port, encoding="utf-8"):
        # Program leaves PYTHONUNBUFFERED out: a client that forgets flush=True fails.
        super().__init__(path, ["--host", "127.0.0.1", "--port", port], stdin=True,
                         label="client", encoding=encoding)

    def type(self, text):
        """Type a line; False if the client no longer reads its input."""
        try:
            self.proc.stdin.write((text + "\n").encode("utf-8"))
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def end_input(self):
        """End of standard input (like Ctrl+D at a terminal)."""
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def runnable_threads(self):
        """How many of the program's threads are running or waiting for a CPU (Linux only, else None).

        A thread blocked in recv() or input() sleeps (state S); a thread in a busy loop is
        always runnable (state R), however busy the machine is, whereas its share of the
        CPU falls when other programs compete for it.
        """
        try:
            tasks = list(Path(f"/proc/{self.pid}/task").iterdir())
        except OSError:
            return None
        runnable = 0
        for task in tasks:
            try:
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            runnable += state == "R"
        return runnable

    def prompted(self):
        return PROMPT in self.stdout

    def printed_lines(self):
        """The complete lines printed after the prompt ('\\r' dropped)."""
        text = self.stdout.replace("\r\n", "\n")
        if PROMPT in text:
            text = text.split(PROMPT, 1)[1]
        return text.split("\n")[:-1]


def in_order(expected, lines):
    """True if every expected line appears in lines, whole and in this order."""
    position = 0
    for line in lines:
        if position < len(expected) and line == expected[position]:
            position += 1
    return position == len(expected)


class ClientSession:
    """A scripted server and the student's client, run together by one test."""

    def __init__(self, stage_dir, story=None):
        self.stage_dir = stage_dir
        self.story = story or Story()
        self.server = None
        self.client = None
        self._blocker = None

    # ---- starting ---------------------------------------------------------------

    def start(self, encoding="utf-8"):
        """Start the scripted server, then the client pointed at it (encoding: see Program)."""
        self.server = ScriptedServer(self.story)
        self.story.add("the test", f"started the scripted server on 127.0.0.1:{self.server.port}")
        return self._start_client(self.server.port, encoding)

    def start_unreachable(self):
        """Start the client pointed at a port where nothing listens.

        The port is held by a socket that is bound but not listening, so nobody
        else can take it during the test, and connecting to it is refused.
        """
        self._blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._blocker.bind(("127.0.0.1", 0))
        port = self._blocker.getsockname()[1]
        self.story.add("the test", f"chose port {port}, where no server listens")
        return self._start_client(port)

    def _start_client(self, port, encoding="utf-8"):
        self.client = ClientProgram(self.stage_dir / "client.py", port, encoding)
        self.story.add("the test", f"started: python client.py --host 127.0.0.1 --port {port}")
        return self.client

    def stop(self):
        if self.client is not None:
            self.client.stop()
        if self.server is not None:
            self.server.stop()
        if self._blocker is not None:
            self._blocker.close()

    # ---- driving the client -------------------------------------------------------

    def type(self, text):
        if self.client.type(text):
            self.story.add("the test", f"typed the line {text!r}")
        else:
            self.story.add("the test", f"tried to type {text!r}, but the client no longer reads its input")

    def end_input(self):
        self.client.end_input()
        self.story.add("the test", "ended the client's standard input (like Ctrl+D)")

    def wait_prompt(self, timeout=START_DEADLINE):
        """The client must print the prompt; a client that exits first fails at once."""
        if self.client.wait_for(self.client.prompted, timeout):
            self.story.add("the client", f"printed the prompt {PROMPT!r}")
            return
        if self.client.exited():
            self.fail(f"The test waited for the prompt {PROMPT!r}, but the client exited first.",
                      "The client stopped before asking for the username; its standard error "
                      "(below) says why.")
        self.fail(f"The test waited {timeout:.0f} s for the prompt {PROMPT!r} on the client's "
                  f"standard output.",
                  f"The client must print {PROMPT!r} before reading the name. "
                  f"input({PROMPT!r}) does that, and flushes it. With print(), pass end='' and "
                  f"flush=True: output to a pipe waits in a buffer otherwise.")

    def login(self, name="alice"):
        """Prompt, type the name, and wait for the server to receive it.

        Lenient about the newline after the name, so that a client that forgets
        it fails the tests about framing, not every test of the stage.
        """
        self.wait_prompt()
        self.type(name)
        server, raw = self.server, name.encode("utf-8")
        if server.wait(lambda: bytes(server.received).startswith(raw), 2.0,
                       give_up=lambda: server.client_closed or self.client.exited()):
            self.story.add(SERVER, f"received the username {name!r}")
            return
        self.fail(f"The scripted server expected to receive the username {name!r} first.\n"
                  f"It received: {show(bytes(server.received), 300)}",
                  self._sending_cause([name], server.lines()))

    def expect_server_lines(self, expected, what=None, timeout=DEFAULT_WAIT):
        """The scripted server must receive exactly these lines, in this order."""
        server = self.server
        got_all = server.wait(lambda: len(server.lines()) >= len(expected), timeout,
                              give_up=lambda: server.client_closed or self.client.exited())
        got = server.lines()
        if got_all and got[:len(expected)] == expected:
            self.story.add(SERVER, f"received the lines {show(expected, 200)}")
            return
        head = (f"The scripted server expected to receive {what or 'these lines'}: "
                f"{show(expected, 300)}\n"
                f"It received the lines: {show(got, 300)}")
        self.fail(head, self._sending_cause(expected, got))

    def _sending_cause(self, expected, got):
        received = bytes(self.server.received)
        if self.server.connection is None:
            return ("The client never connected to the scripted server. Does it connect to the "
                    "--host and --port it was given, after reading the username?")
        if received and not received.endswith(b"\n"):
            joined = "".join(expected)
            if not got and joined.encode("utf-8").startswith(received.rstrip(b"\r")):
                return ("The bytes arrived, but without '\\n' after each message. The server reads "
                        "a byte stream: '\\n' is how it knows where a message ends. Send "
                        "(text + '\\n').encode('utf-8') - the username included.")
            return ("Some bytes arrived after the last '\\n' with no '\\n' of their own: every "
                    "message, the username included, must end with '\\n'.")
        if not received:
            return "The client connected but sent nothing."
        if got[:len(expected)] != expected and sorted(got[:len(expected)]) == sorted(expected):
            return "The lines arrived out of order: send them in the order they were typed."
        return None

    def expect_printed(self, expected, timeout=3.0, cause=None):
        """These lines must appear on the client's standard output, whole and in this order."""
        client = self.client
        if client.wait_for(lambda: in_order(expected, client.printed_lines()), timeout):
            self.story.add("the client", f"printed the lines {show(expected, 200)}")
            return
        printed = client.printed_lines()
        self.fail(f"The client should have printed these lines, each whole and on its own line, "
                  f"in this order: {show(expected, 300)}\n"
                  f"It printed (after the prompt) the lines: {show(printed, 400)}",
                  cause or self._printing_cause(expected, printed))

    def _printing_cause(self, expected, printed):
        stderr = self.client.stderr
        if "UnicodeDecodeError" in stderr:
            return ("A character's bytes were split between two recv() calls, and decoding that "
                    "chunk failed. Collect bytes until a whole line ('\\n') has arrived, then "
                    "decode the line.")
        if not "".join(printed).strip():
            if self.client.exited():
                return "The client exited; its standard error (below) may say why."
            return ("Nothing was printed. When standard output is a pipe (as in this test, or "
                    "`python client.py | tee log`), print() keeps its output in a buffer: use "
                    "print(..., flush=True).")
        if any(line and line != wanted and wanted.startswith(line)
               for line in printed for wanted in expected):
            return ("A line was printed in pieces: each recv() was printed as it came. TCP "
                    "delivers bytes, not messages: keep what arrives in a buffer and print only "
                    "complete lines (up to each '\\n').")
        return None

    def expect_leaves(self, how):
        """After /exit or end of input: '/exit' sent, the goodbye printed, status 0, no traceback."""
        client, server = self.client, self.server
        goodbye = "You have left the chat"

        def exit_sent():
            # Only that '/exit' is the last thing sent: the framing has tests of its own.
            return bytes(server.received).rstrip(b"\r\n").endswith(b"/exit")

        deadline = time.monotonic() + DEFAULT_WAIT
        server.wait(exit_sent, DEFAULT_WAIT, give_up=lambda: server.client_closed or client.exited())
        status = client.wait_exit(max(0.1, deadline - time.monotonic()))
        server.wait(exit_sent, 0.2)  # the last bytes of a client that just exited may be in flight
        sent, said_goodbye = exit_sent(), goodbye in client.printed_lines()
        traceback = "Traceback (most recent call last)" in client.stderr
        if sent and said_goodbye and status == 0 and not traceback:
            self.story.add("the client", f"sent '/exit', printed {goodbye!r} and exited with status 0")
            return
        expected = (f"After {how}, the test expected the client to send '/exit' (as the last "
                    f"thing it sends), print {goodbye!r}, and exit with status 0 within {DEFAULT_WAIT:g} s, "
                    f"printing no traceback.")
        found = [
            f"The scripted server received: {show(bytes(server.received), 300)}"
            + ("" if sent else "   <- no '/exit' at the end"),
            f"The client printed (after the prompt): {show(client.printed_lines(), 300)}"
            + ("" if said_goodbye else f"   <- no {goodbye!r}"),
            ("The client is still running." if status is None
             else f"The client exited with status {status}.")
            + ("" if status == 0 else "   <- expected status 0"),
        ]
        if traceback:
            found.append("The client printed a traceback (below).")
        self.fail(expected + "\n" + "\n".join(found), self._leaving_cause(status, traceback))

    def _leaving_cause(self, status, traceback):
        stderr = self.client.stderr
        if "EOFError" in stderr:
            return ("input() raises EOFError when standard input ends (Ctrl+D; Ctrl+Z Enter on "
                    "Windows). Catch it and leave as if '/exit' had been typed.")
        if status is None:
            return ("The client did not exit. A thread that is not a daemon keeps the program "
                    "alive: is the receiving thread still blocked in recv()? On Linux close() "
                    "does not wake it, sock.shutdown(socket.SHUT_RDWR) does (on Windows only "
                    "close() does: do both). Or make it a daemon thread.")
        if traceback:
            return "An exception escaped; catch it where it happens."
        return None

    # ---- failing ------------------------------------------------------------------

    def fail(self, head, cause=None):
        parts = [head]
        if cause:
            parts.append(f"Likely cause: {cause}")
        parts.append("What the test did:\n" + self.story.render())
        client = self.client
        if client is not None:
            parts.append(f"{client.describe_exit()}\n"
                         f"  Its standard output (repr): {show(client.stdout, 600)}\n"
                         f"  Its standard error:\n{tail(client.stderr)}")
        if self.server is not None:
            parts.append(f"The scripted server received (repr): {show(bytes(self.server.received), 400)}")
        fail("\n\n".join(parts))
