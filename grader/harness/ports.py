"""Taking turns at the protocol's default port.

Every test runs its programs on a free port (--port 0), but the tests of the defaults must
use 127.0.0.1:9801 itself. Grading runs side by side on one machine (grade_all -j 2, two
Python versions in CI) would then take that port from each other: a test would have to be
skipped, and a student would get 0 of 0 points instead of 1 of 1. So the runs take turns,
holding a lock file while they use the port; a program that is not a grading run and holds
the port still makes the test skip, saying so.
"""

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

TURN_WAIT = 180.0  # seconds: another run's test of the defaults takes a few


def _try_lock(handle):
    """Take the lock without waiting; True if taken."""
    if sys.platform == "win32":
        import msvcrt
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def port_turn(port, wait=TURN_WAIT):
    """Hold the machine-wide turn at `port` (waiting for other grading runs to finish with it)."""
    path = Path(tempfile.gettempdir()) / f"threaded-chat-port-{port}.lock"
    try:
        # Readable and writable by every user: runs of several users share the turn.
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield  # no lock file here: go on without taking turns
        return
    with os.fdopen(descriptor, "r+b") as handle:
        deadline = time.monotonic() + wait
        while not _try_lock(handle):
            if time.monotonic() > deadline:
                break  # another run held it too long: try the port anyway
            time.sleep(0.2)
        yield  # the lock goes with the file's closing
