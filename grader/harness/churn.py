"""Join/leave churn for chat servers (stages 06 and 08): clients come and go, in every way a
connection can end, while stable members chat; nothing may be lost, doubled or reordered.

    from grader.harness.chat import join_all
    from grader.harness.churn import run_churn
    alice, bob = join_all(connect, ["alice", "bob"])   # both surely in the room
    run_churn(connect, rounds=8, churners=6, messages=150)

Churners run on threads of their own, on raw sockets: each joins, maybe says something,
then leaves by /exit, by closing, or by a reset (RST). Meanwhile one stable member sends
numbered messages. Every stable listener must receive every message, in order, and for
every churner it heard join, exactly one leave line. The sender must stay connected.

How a listener's lines are checked (RoomLog, read_until_settled): read until every
message and every leave line that is due has come, however late (leave lines and
messages of different clients are concurrent: a leave may come after the last
message); then a sync line from a stable member, read in turn, shows that nothing
else (a duplicate) was on its way. Only the deadline ends the wait early; then a
probe line tells lines the server never sent from a server that stopped delivering.
"""

import collections
import random
import socket
import struct
import threading
import time

import pytest

from .chat import RawClient, Threads, exited, join, join_all, joined, said
from .client import fail, show

SYNC_MARK = "(sync "    # the test's own sync and probe lines start with this
PROBE_WAIT = 5.0        # after the deadline: how long a probe line may take
# Members are read one after another against one deadline. Once an earlier one used
# it up (lines it waited for never came), a later one still gets this long to read
# what the server has sent it already, so that nothing is wrongly counted as late.
MIN_READ = 2.0


# ---- what one stable member heard ----------------------------------------------------


class RoomLog:
    """The lines one stable member received, sorted as they come, and checked at the end.

    expected: {sender: [text, ...]}, the numbered messages each sender sends, in order.
    must_leave: names of clients this member never heard join (they were in before it)
    that each leave exactly once. Any other client heard joining must leave exactly once.
    ignore: names whose lines are not checked (a sender the server cut off, say).
    """

    def __init__(self, client, expected, must_leave=(), ignore=()):
        self.client = client
        self.ignore = set(ignore)
        self.expected = {sender: list(texts) for sender, texts in expected.items()
                         if sender != client.name and sender not in self.ignore}
        self.must_leave = [name for name in must_leave if name != client.name]
        self.texts = collections.defaultdict(list)   # sender -> texts received, in order
        self.joins = collections.Counter()
        self.leaves = collections.Counter()
        self.other = []
        self.late = []      # lines due that came only after the deadline

    def add(self, line):
        name, colon, text = line.partition(": ")
        if colon and text.startswith(SYNC_MARK):
            return  # a sync line (for this member or another one)
        if any(line.startswith(name + " ") or line.startswith(name + ":") for name in self.ignore):
            return
        if colon and name in self.expected:
            self.texts[name].append(text)
        elif line.endswith(" joined the chat room!"):
            self.joins[line[:-len(" joined the chat room!")]] += 1
        elif line.endswith(" exited the chat room"):
            self.leaves[line[:-len(" exited the chat room")]] += 1
        else:
            self.other.append(line)

    def churners(self):
        """Clients heard joining (not stable senders): each must leave exactly once."""
        return [name for name in self.joins if name not in self.expected]

    def due(self):
        """What is still due: the last message of each sender still here, and leave lines."""
        waiting = [said(sender, texts[-1]) for sender, texts in self.expected.items()
                   if texts and texts[-1] not in self.texts[sender] and not self.leaves[sender]]
        waiting += [exited(name) for name in self.must_leave + self.churners() if not self.leaves[name]]
        return waiting

    def done(self):
        return not self.due()

    def problems(self, probe_arrived):
        """[(kind, text)] of everything wrong; kind chooses the likely cause (see cause_for)."""
        found = []
        me = self.client.name
        for sender, expected in self.expected.items():
            if self.leaves[sender]:
                found.append(("innocent_left", f"{sender}, a sender that never left, was announced as leaving"))
            got = self.texts[sender]
            if got == expected:
                continue
            counts = collections.Counter(got)
            missing = [t for t in expected if t not in counts]
            arrived_after = [t for t in missing if expected.index(t) < max(
                (expected.index(g) for g in counts if g in expected), default=-1)]
            unarrived_tail = [t for t in missing if t not in arrived_after]
            twice = sorted(t for t, n in counts.items() if n > 1)
            strange = sorted(t for t in counts if t not in expected)
            if arrived_after:
                found.append(("lost_message", f"{len(arrived_after)} of {sender}'s {len(expected)} messages "
                                              f"never arrived though later ones did, e.g. "
                                              f"{show(arrived_after[:3], 200)}"))
            if unarrived_tail and not self.leaves[sender]:
                found.append(("stalled" if not probe_arrived else "lost_message",
                              f"{sender}'s messages from {show(unarrived_tail[0])} on never arrived"))
            if twice:
                found.append(("duplicate_message", f"{len(twice)} of {sender}'s messages arrived more than "
                                                   f"once, e.g. {show(twice[:3], 200)}"))
            if strange:
                found.append(("changed", f"{sender}'s messages arrived changed, e.g. {show(strange[:3], 200)}"))
            if not (missing or twice or strange):
                found.append(("order", f"{sender}'s messages arrived out of order: lines from one sender "
                                       f"must arrive in the order sent"))
        for name in self.must_leave + self.churners():
            count = self.leaves[name]
            if count > 1:
                found.append(("duplicate_leave", f"{me} heard {exited(name)!r} {count} times: a client "
                                                 f"leaves exactly once"))
            elif count == 0:
                found.append(("lost_leave" if probe_arrived else "stalled",
                              f"{name} left once, but {me} never heard {exited(name)!r}"))
        for name, count in self.joins.items():
            if count > 1:
                found.append(("duplicate_join", f"{me} heard {joined(name)!r} {count} times"))
        for name in self.leaves:
            if name not in self.joins and name not in self.must_leave and name not in self.expected:
                found.append(("lost_join", f"{me} heard {name} leave, but never heard it join"))
        if self.late:
            found.append(("late", f"{len(self.late)} lines came only after the deadline, e.g. "
                                  f"{show(self.late[:3], 200)}"))
        return found


def read_until_settled(log, sync_sender, deadline):
    """Read log.client until every line due has come, then until a sync line from
    sync_sender has come too (nothing else was on its way); again if the lines read
    meanwhile made more lines due (a join heard late: its leave is due too).

    True once settled; False at the deadline.
    """
    client = log.client
    deadline = max(deadline, time.monotonic() + MIN_READ)
    for round_number in range(1, 1000):
        for line in _lines_until(client, deadline, lambda: log.done()):
            log.add(line)
        if not log.done():
            return False
        sync = f"{SYNC_MARK}for {client.name}, {round_number})"
        sync_sender.send_line(sync)
        arrived = False
        for line in _lines_until(client, deadline, lambda: arrived):
            if line == said(sync_sender.name, sync):
                arrived = True
            else:
                log.add(line)
        if not arrived:
            return False
        if log.done():
            return True
    return False


def probe(log, sender, wait=PROBE_WAIT):
    """After the deadline: does a line sent now still reach log.client? Lines due that
    come meanwhile are noted as late. True if the probe line arrived."""
    text = f"{SYNC_MARK}probe for {log.client.name})"
    try:
        sender.send_line(text)
    except pytest.fail.Exception:  # the sender was cut off: what the member heard is reported
        return False
    arrived = False
    due = set(log.due())
    for line in _lines_until(log.client, time.monotonic() + wait, lambda: arrived):
        if line == said(sender.name, text):
            arrived = True
        else:
            if line in due:
                log.late.append(line)
            log.add(line)
    return arrived


def _lines_until(client, deadline, finished):
    while not finished():
        line = client.read_line(max(0.0, deadline - time.monotonic()))
        if line is None:
            return
        yield line


# What each kind of problem most likely means. Chosen from what was observed, so
# that a lost leave line is never blamed on the lock, nor a lost message on clean-up.
CAUSES = {
    "lost_message": (
        "A message went missing while later ones arrived: broadcast() skipped a member. Does every\n"
        "  use of the list of clients (add, remove, and the loop in broadcast) hold one lock, and\n"
        "  does broadcast() loop over a *copy* made under it? Removing from a list while a loop walks\n"
        "  it shifts the next member under the loop, and it is skipped: its messages, join and leave\n"
        "  lines go missing."),
    "lost_join": (
        "A join line went missing (its leave line came): broadcast() skipped a member. Does every use\n"
        "  of the list of clients hold one lock, and does each broadcast send to a copy made under it?"),
    "duplicate_message": (
        "A message reached the same member twice: is each line sent once, to a copy of the list made\n"
        "  under the lock?"),
    "changed": "Messages arrived changed: are two lines being mixed, or one line split?",
    "order": (
        "Lines from one sender must reach each member in the order sent: are lines to one member\n"
        "  sent from several threads, or queued, without one order?"),
    "duplicate_leave": (
        "A client must leave exactly once: is it removed and announced from two places (say, a\n"
        "  failed send in broadcast() and its own thread's clean-up)? Let remove() say whether *this*\n"
        "  call removed it, and announce the leave only then."),
    "duplicate_join": "A client was announced joining twice: send its join line once.",
    "lost_leave": (
        "A client that left was never announced, though the server went on delivering (a line sent\n"
        "  after the deadline arrived). Does every way a connection ends (/exit; a close: recv()\n"
        "  returns b''; a reset: recv() raises) lead to the same clean-up, remove then announce?\n"
        "  Or was it removed elsewhere (a failed send) without an announcement, so its own clean-up\n"
        "  found nothing to announce, or raised (see the server's tracebacks)?"),
    "stalled": (
        "The server stopped delivering to this member: lines due never came, and neither did a line\n"
        "  sent after the deadline. Is a server thread blocked for good (a sendall() to a client that\n"
        "  stopped reading, or a lock that is never released)?"),
    "late": "Lines came, but only after a deadline of many seconds: is a thread waiting for something?",
    "innocent_left": (
        "The server disconnected a sender that never left: a failed send to *another* client must\n"
        "  never disturb the sender (an error in broadcast() escaped into the sender's thread?)."),
}


def cause_for(kinds):
    """The likely cause for the kinds of problem seen, most telling first."""
    order = ["innocent_left", "lost_message", "lost_join", "duplicate_leave", "duplicate_join",
             "duplicate_message", "order", "changed", "lost_leave", "stalled", "late"]
    if kinds & {"lost_message", "lost_join"}:
        kinds = kinds - {"lost_leave"}  # a skipped member loses leave lines too: one cause
    chosen = [CAUSES[kind] for kind in order if kind in kinds]
    return "\n  Also: ".join(chosen[:2])


# ---- churn -------------------------------------------------------------------------


def _churner(address, name, how, errors):
    try:
        sock = socket.create_connection(address, timeout=5)
    except OSError as error:
        errors.append(f"{name} could not connect: {error}")
        return
    try:
        sock.sendall(f"{name}\nhello from {name}\n".encode())
        if how == "exit":
            sock.sendall(b"/exit\n")
        elif how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # a server under churn may reset us; the listeners' view is what is checked
    finally:
        sock.close()


def run_churn(connect, rounds=8, churners=6, messages=150, timeout=20.0, listeners=2):
    """Churn while 'speaker' sends `messages` numbered lines to `listeners` stable members."""
    speaker, *stable = join_all(connect, ["speaker"] + [f"listener{n}" for n in range(listeners)])
    story = speaker.story
    address = speaker.address
    errors = []
    ways = ("exit", "close", "reset")

    def churn():
        for round_number in range(rounds):
            threads = [threading.Thread(target=_churner, daemon=True,
                                        args=(address, f"c{round_number}x{i}", ways[(round_number + i) % 3], errors))
                       for i in range(churners)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)

    churn_thread = threading.Thread(target=churn, daemon=True)
    story.add("the test", f"started churn: {rounds} rounds of {churners} clients joining and leaving "
                          f"(by /exit, close and reset)")
    churn_thread.start()
    for number in range(messages):
        speaker.send_line(f"message {number:04}")
    story.add("speaker", f"sent 'message 0000' ... 'message {messages - 1:04}'")
    churn_thread.join(30)
    if errors:
        fail("Churn clients could not connect:\n  " + "\n  ".join(errors[:5]))
    expected = {"speaker": [f"message {number:04}" for number in range(messages)]}
    deadline = time.monotonic() + timeout
    for listener in stable:
        _check_listener(RoomLog(listener, expected), speaker, deadline, timeout)
    server = speaker.server
    if server is not None:
        server.assert_no_traceback("the churn")


def _check_listener(log, speaker, deadline, timeout):
    """Every message once and in order; for each churner heard joining, exactly one leave line.

    The speaker's sync line (it must stay connected through the churn) ends the reading.
    """
    settled = read_until_settled(log, speaker, deadline)
    probe_arrived = settled or probe(log, speaker)
    problems = log.problems(probe_arrived)
    if not settled and not problems:
        problems = [("stalled", f"the speaker's sync line never reached {log.client.name}: the speaker "
                                f"must stay connected through the churn")]
    if not problems:
        return
    listener = log.client
    heard = (f"{listener.name} received {sum(len(t) for t in log.texts.values())} messages, "
             f"{sum(log.joins.values())} join lines and {sum(log.leaves.values())} leave lines"
             + ("" if settled else f"; at the {timeout:.0f} s deadline it was still waiting for "
                                   f"{show(log.due()[:5], 300)}"))
    listener.fail(f"Under join/leave churn, {listener.name} did not get every message and leave line "
                   f"exactly once.\n{heard}.\n  - " + "\n  - ".join(text for _, text in problems[:8]),
                   cause_for({kind for kind, _ in problems}))


# ---- stage 06's churn test, also run against stage 08 ------------------------------

# Under noise a correct server can pause for over a second; wait for everything
# expected with one generous deadline, never for a quiet gap.
RACE_DEADLINE = 20.0
SENDERS = ["s1", "s2", "s3"]      # stable clients that send and receive throughout
RECEIVERS = ["r1", "r2", "r3"]    # stable clients that only receive
MESSAGES_EACH = 40
EARLY = [f"early{i:02}" for i in range(16)]  # joined before the stable clients; leave during the flood
CHURNERS = 3                       # threads that join and leave again and again
LEAVE_WAYS = ["exit", "close", "reset"]


def numbered(sender, i):
    return f"message {i:03d} from {sender}"


def room_sync_sender(listener, stable, dropped):
    """A stable client, other than the listener, that can still send the sync line."""
    return next(client for client in stable if client is not listener and client.name not in dropped)


def check_every_message_exactly_once(server, connect, story):
    """While senders talk, others join, /exit, close and reset: every message arrives exactly once.

    Early clients join first, so they sit before the stable clients in the server's list.
    """
    # The early clients join first, so they sit before the stable clients in the
    # server's list: removing them shifts the stable clients under a loop over it.
    first = join(connect, EARLY[0])
    early = [first] + [join(connect, name, room=[first]) for name in EARLY[1:]]
    story.add("the test", f"joined {len(EARLY)} early clients, who will leave during the flood")
    stable = []
    for name in RECEIVERS + SENDERS:
        stable.append(join(connect, name, room=[first] + stable))
    # Everyone before has seen each stable client join: all are in the server's list now.
    rng = random.Random()

    dropped = {}  # sender -> (message number, error) when the server cut it off

    def send_flood(client):
        for i in range(MESSAGES_EACH):
            try:
                client.sock.sendall((numbered(client.name, i) + "\n").encode())
            except OSError as error:
                dropped[client.name] = (i, error)
                return
            time.sleep(0.004)

    def early_leave():
        ways = [LEAVE_WAYS[i % 3] for i in range(len(early))]
        for client, how in zip(early, ways):
            time.sleep(rng.uniform(0.005, 0.02))
            raw = RawClient.wrap(client.sock, client.name)
            client.sock = None  # the test's clean-up must not close it again
            raw.leave(how)
            story.add(client.name, {"exit": "sent '/exit' and closed", "close": "closed the connection",
                                    "reset": "reset the connection"}[how])

    def churn(number):
        for round_ in range(5):
            name = f"churner{number}x{round_}"
            try:
                raw = RawClient(server.address, name)
            except OSError:
                continue  # the server is not accepting: assert_running() reports that
            time.sleep(rng.uniform(0, 0.02))
            try:
                if rng.random() < 0.5:
                    raw.send_line(f"chatter from {name}")
            except OSError:
                pass  # a churner cut off early is not what this test checks
            raw.leave(LEAVE_WAYS[(number + round_) % 3])

    threads = Threads()
    for client in stable[len(RECEIVERS):]:
        threads.start(send_flood, client)
    threads.start(early_leave)
    for number in range(CHURNERS):
        threads.start(churn, number)
    story.add("the test", f"{', '.join(SENDERS)} each sent {MESSAGES_EACH} numbered messages while the early "
                          f"clients left (/exit, close, reset) and {CHURNERS} threads joined and left "
                          f"5 clients each")
    threads.join(RACE_DEADLINE)

    deadline = time.monotonic() + RACE_DEADLINE
    report, kinds = [], set()
    for name, (number, error) in dropped.items():
        report.append(f"{name}: the server cut off this innocent sender ({error}) when it sent message "
                      f"{number}; an error in broadcast() escaped into the sender's own thread?")
        kinds.add("innocent_left")
    expected = {sender: [numbered(sender, i) for i in range(MESSAGES_EACH)] for sender in SENDERS}
    probe_until = None  # one probe window for all: a stalled server costs PROBE_WAIT once
    for client in stable:
        # Read until every message and every leave line due has come (a leave may come
        # after the last message: they are concurrent), then until a sync line: no more.
        log = RoomLog(client, expected, must_leave=EARLY, ignore=dropped)
        sync_sender = room_sync_sender(client, stable, dropped)
        settled = read_until_settled(log, sync_sender, deadline)
        if not settled:
            probe_until = probe_until or time.monotonic() + PROBE_WAIT
        problems = log.problems(probe_arrived=settled or probe(
            log, sync_sender, max(1.0, probe_until - time.monotonic())))
        if not settled and not problems:
            problems = [("stalled", f"the sync line from {sync_sender.name} never came")]
        if client.closed_by_server:
            problems.insert(0, ("innocent_left", f"the server closed {client.name}'s connection, "
                                                 f"but {client.name} never left"))
        if not settled:
            problems.append(("deadline", f"at the {RACE_DEADLINE:.0f} s deadline it still waited for "
                                     f"{show(log.due()[:4], 240)}"))
        kinds.update(kind for kind, _ in problems)
        report += [f"{client.name}: {text}" for _, text in problems]
    server.assert_running("the churn")
    tracebacks = server.stderr.count("Traceback (most recent call last)")
    if report and tracebacks:
        report.insert(0, f"the server printed {tracebacks} tracebacks (the last ones are below)")
    if not report:
        server.assert_no_traceback("the churn")
    else:
        fail("Under join/leave churn, the stable clients did not get every message and leave line exactly "
             "once:\n  - " + "\n  - ".join(report[:12])
             + f"\n\nLikely cause: {cause_for(kinds)}\n\nWhat the test did:\n{story.render()}\n\n"
               f"{server.report()}")
