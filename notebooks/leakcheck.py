"""Check that a notebook leaves no thread running and no socket open.

First code cell:  import leakcheck; watch = leakcheck.start()
Last code cell:   leakcheck.finish(watch)

A leftover thread keeps a program (or the next demonstration) busy; a leftover socket keeps its
port. Each notebook promises to clean up after itself, and this is how it proves it.
Standard library only; works the same on Linux, macOS and Windows.
"""
import gc
import socket
import threading
import time
import weakref

GRACE = 2.0  # seconds a thread may take to finish after the last cell asked it to stop


def open_sockets():
    """Every socket object in this process that is still open."""
    return [o for o in gc.get_objects() if isinstance(o, socket.socket) and o.fileno() != -1]


def start():
    """Remember which threads and open sockets exist before the notebook makes its own."""
    return {
        "threads": set(threading.enumerate()),
        "sockets": weakref.WeakSet(open_sockets()),  # weak: an id() could be reused by a new socket
    }


def _is_ours(thread):
    # The Jupyter kernel may start daemon threads of its own while the notebook runs. A thread is
    # the notebook's if its function was defined in the notebook (module __main__). Any new
    # non-daemon thread counts too: it would keep a program from exiting.
    target = getattr(thread, "_target", None)
    return not thread.daemon or getattr(target, "__module__", None) == "__main__"


def finish(watch):
    """Assert that every thread the notebook started has ended and every socket it opened is closed."""
    deadline = time.monotonic() + GRACE
    for thread in set(threading.enumerate()) - watch["threads"]:
        if _is_ours(thread):
            thread.join(max(0.0, deadline - time.monotonic()))  # wait with a deadline, not a sleep
    threads = [t for t in set(threading.enumerate()) - watch["threads"] if _is_ours(t)]
    sockets = [s for s in open_sockets() if s not in watch["sockets"]]
    assert not threads, f"threads still running: {threads}"
    assert not sockets, f"sockets still open: {sockets}"
    print(f"Nothing left behind: {len(threads)} threads, {len(sockets)} sockets.")
