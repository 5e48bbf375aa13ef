"""A test client's socket read in the background, its lines counted in bulk.

For tests that move megabytes (a flood, a burst, a stuck reader): lines are split in
bulk, never one Python string per recv(), and a subclass's count() sees each batch.
"""

import select
import threading
import time


class BackgroundReader(threading.Thread):
    """Reads `client`'s socket until the server closes it or stop() is called.

    Subclasses define count(lines) (complete lines, without b"\\n"), called with the
    `changed` condition held; waiters use wait_until(). `pause` after each recv() makes
    a slow but steady reader.
    """

    def __init__(self, client, chunk=65536, pause=0.0):
        super().__init__(daemon=True)
        self.client = client
        self.chunk = chunk
        self.pause = pause
        self.received = 0              # bytes
        self.closed_by_server = False
        self.error = None              # an OSError other than a reset, if one ended the reading
        self.ended = False             # the reading thread has ended (closed, or stopped by the test)
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        # Whatever the client object already received but did not return as a line.
        self._rest = bytes(client.buffer)
        client.buffer.clear()

    def count(self, lines):
        raise NotImplementedError

    def run(self):
        sock = self.client.sock
        try:
            while not self.stopping.is_set():
                # select(), not a socket timeout: another thread may be sending on this
                # socket, and a timeout would apply to its sendall() too.
                readable, _, _ = select.select([sock], [], [], 0.1)
                if not readable:
                    continue
                try:
                    data = sock.recv(self.chunk)
                except (ConnectionResetError, ConnectionAbortedError):
                    data = b""
                if not data:
                    self.closed_by_server = True
                    break
                self.received += len(data)
                lines = (self._rest + data).split(b"\n")
                self._rest = lines.pop()
                with self.changed:
                    self.count(lines)
                    self.changed.notify_all()
                if self.pause:
                    time.sleep(self.pause)
        except OSError as error:  # the socket was closed under us at the end of the test
            self.error = error
        finally:
            with self.changed:
                self.ended = True
                self.changed.notify_all()

    def wait_until(self, condition, timeout):
        """Wait until condition() (called under the lock), the deadline, or the reading ended.

        A server that crashed, or raised NotImplementedError, fails the test at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self.changed:
                if condition():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.ended:
                    return False
                self.changed.wait(min(remaining, 0.1))
            self.client.check_server()

    def stop(self):
        self.stopping.set()
        self.join(2)
