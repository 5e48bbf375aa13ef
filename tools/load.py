"""Load generator: how fast does a chat server deliver, and how long does a line take?

    python tools/load.py --impl solutions --stages 06_races 08_robust \\
                         --receivers 50 --senders 5 --lines 200

For each stage named, it starts that stage's server.py (from --impl: stages, solutions or a
folder laid out like stages/) on port 0 through the graded tests' own runner
(grader/harness/process.py), and always stops it and its children afterwards.
Then R receivers and S senders join (receivers first, then senders). Each sender sends M
numbered, timestamped lines as fast as it can; every member but the sender receives each
one, so R*S*M + S*(S-1)*M lines are due. It prints, per stage:

    lines/s   lines delivered per second, from the first send to the last delivery
    p50, p99  the latency of a line, from just before its send to its arrival (ms)
    lost      lines due that never arrived (waiting ends after --quiet seconds without any)

and, with two stages or more, each one's throughput and p99 relative to the first.
--repeat N runs each stage N times (alternating) and reports the median run.
For servers with a --max-users flag (08_robust) it passes one large enough for everybody.

The clients run in this one process: receivers on one selector thread, each sender on a
thread of its own (plus one reading what the others send it). On a small machine this
process competes with the server for the CPU, so compare stages within one run rather
than across machines. Standard library only.
"""

import argparse
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from grader.harness.process import ProgramError, Server

ROOT = Path(__file__).resolve().parent.parent
IMPLS = {"stages": ROOT / "stages", "solutions": ROOT / "solutions"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Measure a chat server's throughput and latency.")
    parser.add_argument("--impl", default="solutions", help="stages, solutions or a folder like stages/")
    parser.add_argument("--stages", nargs="+", default=["06_races", "08_robust"], help="stage folders")
    parser.add_argument("--receivers", type=int, default=50, help="R: members that only listen")
    parser.add_argument("--senders", type=int, default=5, help="S: members that send")
    parser.add_argument("--lines", type=int, default=200, help="M: lines each sender sends")
    parser.add_argument("--size", type=int, default=60, help="bytes per line, about (default 60)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per stage; the median is reported")
    parser.add_argument("--quiet", type=float, default=5.0, help="give up after this long with no delivery")
    return parser.parse_args(argv)


# ---- the server --------------------------------------------------------------

def start_server(program, clients):
    """The stage's server on a free port, through the same runner as the graded tests."""
    args = []
    if "--max-users" in subprocess.run([sys.executable, str(program), "--help"],
                                       capture_output=True, text=True, timeout=30).stdout:
        args = ["--max-users", str(clients + 10)]
    try:
        return Server(program, args)
    except ProgramError as error:
        raise SystemExit(f"{program}: {error}")


# ---- the clients ---------------------------------------------------------------

class Tally:
    """Deliveries counted on every receiving thread (each keeps its own list; merged at the end)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []   # seconds, one per delivered line
        self.last = 0.0       # perf_counter of the latest delivery

    def add(self, latencies, now):
        with self.lock:
            self.latencies.extend(latencies)
            self.last = max(self.last, now)


def parse_chunk(rest, data, now):
    """Split received bytes into lines; the latencies of the numbered ones, and what's left over."""
    lines = (rest + data).split(b"\n")
    rest = lines.pop()
    latencies = []
    for line in lines:
        # "sNN: SEQ STAMP PADDING": anything else (join lines) is not counted
        if line[:1] == b"s" and line[3:5] == b": ":
            stamp = line.split(b" ", 3)[2]
            latencies.append(now - int(stamp) / 1e9)
    return rest, latencies


def connect(port, name):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(None)
    sock.sendall(f"{name}\n".encode())
    return sock


def wait_for_line(sock, wanted, timeout=10):
    """Read sock until the line `wanted` arrives (used only while joining)."""
    sock.settimeout(timeout)
    buffer = b""
    try:
        while wanted not in buffer.split(b"\n"):
            data = sock.recv(65536)
            if not data:
                raise SystemExit(f"the server closed a connection while waiting for {wanted!r}")
            buffer += data
    except socket.timeout:
        raise SystemExit(f"no {wanted!r} within {timeout} s: did every client get in?") from None
    finally:
        sock.settimeout(None)


def receive_all(socks, tally, stop):
    """The receivers: one selector thread reading every receiver socket."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, [b""])
    while not stop.is_set():
        for key, _ in selector.select(0.1):
            try:
                data = key.fileobj.recv(262144)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                continue
            now = time.perf_counter()
            key.data[0], latencies = parse_chunk(key.data[0], data, now)
            if latencies:
                tally.add(latencies, now)
    selector.close()


def receive_one(sock, tally, stop):
    """What a sender receives (the other senders' lines), on its own thread."""
    sock.settimeout(0.1)
    rest = b""
    while not stop.is_set():
        try:
            data = sock.recv(262144)
        except socket.timeout:
            continue
        except OSError:
            return
        if not data:
            return
        now = time.perf_counter()
        rest, latencies = parse_chunk(rest, data, now)
        if latencies:
            tally.add(latencies, now)


def send_lines(sock, lines, size, go, first_send):
    go.wait()
    padding = b"x" * max(0, size - 30)
    first_send.append(time.perf_counter())
    for number in range(lines):
        sock.sendall(b"%06d %d %s\n" % (number, time.perf_counter_ns(), padding))


def measure(program, args):
    """One run against one server: a dict of the figures."""
    clients = args.receivers + args.senders
    server = start_server(program, clients)
    socks = []
    stop = threading.Event()
    threads = []
    try:
        # time.perf_counter_ns() is the send stamp: same process, same clock as the receivers.
        first = connect(server.port, "r000")
        socks.append(first)
        time.sleep(0.2)  # r000 is surely in the room before anyone else asks
        names = [f"r{i:03}" for i in range(1, args.receivers)] + [f"s{i:02}" for i in range(args.senders)]
        for name in names:
            socks.append(connect(server.port, name))
            wait_for_line(first, f"{name} joined the chat room!".encode())
        receivers, senders = socks[:args.receivers], socks[args.receivers:]
        tally = Tally()
        go = threading.Event()
        first_send = []
        threads.append(threading.Thread(target=receive_all, args=(receivers, tally, stop), daemon=True))
        for sock in senders:
            threads.append(threading.Thread(target=receive_one, args=(sock, tally, stop), daemon=True))
            threads.append(threading.Thread(target=send_lines, daemon=True,
                                            args=(sock, args.lines, args.size, go, first_send)))
        for thread in threads:
            thread.start()
        due = args.lines * (args.receivers * args.senders + args.senders * (args.senders - 1))
        go.set()
        last_count, last_change = 0, time.monotonic()
        while True:
            time.sleep(0.05)
            with tally.lock:
                count = len(tally.latencies)
            if count >= due:
                break
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > args.quiet:
                break
        stop.set()
        with tally.lock:
            latencies = sorted(tally.latencies)
            elapsed = tally.last - min(first_send) if first_send and latencies else float("nan")
        return {
            "delivered": len(latencies),
            "lost": due - len(latencies),
            "seconds": elapsed,
            "rate": len(latencies) / elapsed if latencies else 0.0,
            "p50": percentile(latencies, 50) * 1000,
            "p99": percentile(latencies, 99) * 1000,
        }
    finally:
        stop.set()
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass
        server.stop()
        for thread in threads:
            thread.join(1)


def percentile(sorted_values, pct):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def main(argv=None):
    args = parse_args(argv)
    root = IMPLS.get(args.impl, Path(args.impl).expanduser().resolve())
    programs = {}
    for stage in args.stages:
        program = root / stage / "server.py"
        if not program.is_file():
            raise SystemExit(f"no {program}")
        programs[stage] = program
    print(f"load: {args.receivers} receivers, {args.senders} senders x {args.lines} lines of "
          f"~{args.size} bytes; {args.impl}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    runs = {stage: [] for stage in args.stages}
    for _ in range(args.repeat):
        for stage, program in programs.items():  # alternating, so drift hits every stage alike
            result = measure(program, args)
            runs[stage].append(result)
            if args.repeat > 1:
                print(f"  run: {stage:<12} {format_row(result)}", flush=True)
    print(f"{'stage':<14}{'delivered':>10}{'lost':>7}{'seconds':>9}{'lines/s':>11}{'p50 ms':>9}{'p99 ms':>9}")
    medians = {}
    for stage, results in runs.items():
        median = sorted(results, key=lambda r: r["rate"])[len(results) // 2]
        medians[stage] = median
        print(f"{stage:<14}{median['delivered']:>10}{median['lost']:>7}{median['seconds']:>9.2f}"
              f"{median['rate']:>11,.0f}{median['p50']:>9.1f}{median['p99']:>9.1f}")
    base_stage = args.stages[0]
    base = medians[base_stage]
    for stage in args.stages[1:]:
        result = medians[stage]
        print(f"{stage} vs {base_stage}: throughput {result['rate'] / base['rate']:.2f}x, "
              f"p50 {result['p50'] / base['p50']:.2f}x, p99 {result['p99'] / base['p99']:.2f}x")
    return 1 if any(r["lost"] for r in medians.values()) else 0


def format_row(result):
    return (f"{result['delivered']} delivered, {result['lost']} lost, {result['rate']:,.0f} lines/s, "
            f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
