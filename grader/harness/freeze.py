"""A room must not freeze when one client stops reading (stages 04 and 06).

    from grader.harness.freeze import check_room_survives_a_stuck_reader
    check_room_survives_a_stuck_reader(connect)

The README asks for broadcasting "without holding a lock while you send". A
server that sends while it holds the room's lock works in every small test,
and freezes the whole room as soon as one client stops reading:

  - `stuck` joins with a small receive buffer, then never reads again;
  - `talker` floods the room with far more than the loopback buffers hold,
    so the server's sendall() to stuck blocks, in talker's server thread;
  - `observer` reads everything, all the time (a thread of the test);
  - once the observer's count of talker's lines stops growing (a sign that
    talker's thread is blocked on stuck), stuck sends one line.

Stuck's own line goes to everyone *but* stuck, so it never needs stuck's full
socket: every correct design delivers it (a thread per client with a lock per
member, a queue and a writer thread per client, one thread with selectors and
output buffers). Only a server whose blocked send still holds a lock that
stuck's thread needs (the room's) never delivers it.

What the test may not require: that talker's lines keep reaching the observer.
A correct thread-per-client server may send to stuck before the observer, and
the order of the room is not specified.
"""

import socket
import threading
import time

from .background import BackgroundReader
from .chat import join, join_pair, said
from .client import DEFAULT_WAIT

LINE_TEXT_SIZE = 4000   # under stage 08's --max-line default, in case a student's server has one
FLOOD_LINES = 3200      # 3200 x ~4 kB = 12.8 MB: far over what loopback buffers absorb (a few MB)
# The sign that talker's server thread is blocked: the observer's count stood
# still this long. It only decides when to test; a correct server passes
# whatever it decides (see STUCK_LINE_DEADLINE).
STALL = 1.0
STALL_DEADLINE = 30.0
MAX_NUDGES = 5          # blank lines stuck may send to settle the sign (see wait_until_talker_is_blocked)
# A correct server of any design delivers stuck's line at once, or (a queue-based
# server that kept the flood flowing) after the rest of the flood, <= 12.8 MB to a
# reader that drains at full speed. Generous, because the grading machine is busy.
STUCK_LINE_DEADLINE = 15.0
STUCK_TEXT = "I stopped reading, but I still talk"

FROZEN = ("The room froze while one client stopped reading: is a lock held while sending?\n"
          "  stuck never reads, so once its socket is full a sendall() to it blocks - in talker's\n"
          "  thread. That may hold up lines *to* stuck; it must not hold up the room. stuck's own\n"
          "  line goes to everyone but stuck, so nothing needs its socket, yet it never arrived:\n"
          "  some lock that stuck's thread needs (the room's?) stays held during that blocked send.\n"
          "  Is broadcast() sending inside `with lock:`, or does everyone_but() yield members while\n"
          "  it holds the lock (a generator)? Copy the list under the lock, release it, then send.")


class Observer(BackgroundReader):
    """Reads one client's socket all the time, counting talker's lines cheaply."""

    def __init__(self, client, talker_name, wanted_line):
        super().__init__(client, chunk=262144)
        self.talker_prefix = f"{talker_name}: ".encode("utf-8")
        self.wanted = wanted_line.encode("utf-8")
        self.talker_lines = 0
        self.other_lines = []       # lines that are neither talker's nor the wanted one (first few)
        self.got_wanted = False
        self.last_growth = time.monotonic()

    def count(self, lines):
        for line in lines:
            if line.startswith(self.talker_prefix):
                self.talker_lines += 1
                self.last_growth = time.monotonic()
            elif line.rstrip(b"\r") == self.wanted:
                self.got_wanted = True
            elif len(self.other_lines) < 5:
                self.other_lines.append(line[:80].decode("utf-8", "replace"))


class Flood(threading.Thread):
    """Sends FLOOD_LINES long lines from one client, in the background.

    The server may never read them all (that is the point): the send blocks, and
    stop() ends it by shutting the socket down, which wakes a blocked send.
    """

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        filler = "x" * LINE_TEXT_SIZE
        self.data = "".join(f"flood {n:05} {filler}\n" for n in range(FLOOD_LINES)).encode("ascii")

    def run(self):
        try:
            self.client.sock.sendall(self.data)
        except OSError:
            pass  # shut down by stop(), or closed by the server: the observer's view is what counts

    def stop(self):
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(5)


def join_three(connect):
    """stuck (small receive buffer), observer and talker, all surely in the room."""
    # SO_RCVBUF must be set before connect(): the window is agreed on then.
    stuck = connect("stuck", rcvbuf=4096)
    observer = connect("observer")
    # No helper client (join() would add a "witness" that never reads: a second
    # stuck reader, which a correct server may block on too).
    join_pair(stuck, observer)
    talker = join(connect, "talker", room=[stuck, observer])
    return stuck, observer, talker


def check_room_survives_a_stuck_reader(connect):
    """Fail (with FROZEN) unless stuck's line reaches the observer while talker is blocked on stuck."""
    stuck, observer, talker = join_three(connect)
    story = observer.story
    story.add("stuck", "stopped reading (from here on it never reads again)")
    wanted = said("stuck", STUCK_TEXT)
    watch = Observer(observer, "talker", wanted)
    flood = Flood(talker)
    watch.start()
    flood.start()
    story.add("talker", f"started sending {FLOOD_LINES} lines of {LINE_TEXT_SIZE} characters "
                        f"({len(flood.data) / 1e6:.1f} MB), from a thread; observer reads all the time")
    try:
        stuck_sent = wait_until_talker_is_blocked(watch, stuck)
        if stuck_sent:
            stuck_sent = send_from_stuck(stuck, STUCK_TEXT)
        if stuck_sent:
            arrived = watch.wait_until(lambda: watch.got_wanted, STUCK_LINE_DEADLINE)
        else:
            # The server disconnected stuck (allowed, if unusual before stage 08): then
            # the room is not frozen if the whole flood reaches the observer.
            arrived = watch.wait_until(lambda: watch.talker_lines == FLOOD_LINES, STUCK_LINE_DEADLINE)
    finally:
        flood.stop()
        watch.stop()
    if not arrived:
        report_frozen(observer, watch, wanted, stuck_sent)
    story.add("observer", f"received the line {wanted!r}" if stuck_sent else "received all of talker's lines")


def wait_until_talker_is_blocked(watch, stuck):
    """Wait for the sign that talker's server thread is blocked sending to stuck.

    Only a precondition for catching a server that sends under a lock: a correct
    server passes whatever this decides. Returns False if stuck could not send.

    The sign: the observer's count of talker's lines stands still. But on Linux a
    send blocked on a full socket is woken when data arrives on that connection,
    and may fit a few more lines: that would let a server that sends under its
    lock release it for a moment. So stuck sends blank lines (ignored, says the
    protocol) until one of them no longer sets talker's lines moving.
    """
    if not watch.wait_until(lambda: watch.talker_lines > 0, DEFAULT_WAIT):
        watch.client.fail_missing(f"talker's lines (talker sends {FLOOD_LINES}); none arrived", DEFAULT_WAIT,
                                   "Are messages forwarded to the others as NAME: TEXT?")
    stalled = wait_for_stall(watch)
    nudges = 0
    while stalled and nudges < MAX_NUDGES:
        before = talker_lines(watch)
        if not send_from_stuck(stuck, "", quiet=True):
            return False
        nudges += 1
        if not watch.wait_until(lambda: watch.talker_lines > before, STALL):
            break
        stalled = wait_for_stall(watch)
    seen = talker_lines(watch)
    if not stalled:
        watch.client.story.add("observer", f"had received {seen} of talker's lines (the count never stood still)")
        return True
    watch.client.story.add("observer", f"had received {seen} of talker's lines, and then no more for {STALL} s, "
                                       f"even after stuck sent {nudges} blank line(s)")
    return True


def talker_lines(watch):
    with watch.changed:
        return watch.talker_lines


def wait_for_stall(watch):
    """True once the observer got some of talker's lines and then none for STALL seconds."""
    def stalled():
        return watch.talker_lines > 0 and time.monotonic() - watch.last_growth >= STALL
    return watch.wait_until(stalled, STALL_DEADLINE)


def send_from_stuck(stuck, text, quiet=False):
    """stuck sends a line (it stopped reading, not sending); False if the server closed it."""
    try:
        stuck.sock.sendall((text + "\n").encode("utf-8"))
    except OSError as error:
        stuck.story.add("stuck", f"could not send the line {text!r}: {error}")
        return False
    if not quiet:
        stuck.story.add("stuck", f"sent the line {text!r}")
    return True


def report_frozen(observer, watch, wanted, stuck_sent):
    with watch.changed:
        seen, others, closed = watch.talker_lines, list(watch.other_lines), watch.closed_by_server
    head = [f"observer expected the line {wanted!r} within {STUCK_LINE_DEADLINE:.0f} s of stuck sending it.",
            f"observer received {seen} of talker's {FLOOD_LINES} lines, and not stuck's line."]
    if others:
        head.append(f"It also received: {others}")
    if closed:
        head.append("The server closed observer's connection.")
    if not stuck_sent:
        head.append("stuck could not even send: the server closed its connection, "
                    "and talker's lines stopped reaching observer all the same.")
    observer.fail("\n".join(head), FROZEN)
