"""Noise for the programs under test: imported by Python at start-up when this
folder is on PYTHONPATH (grader/harness/process.py puts it there).

The environment variable THREADED_CHAT_NOISE names the profiles, comma-separated:

race  Races hide when threads rarely switch at the wrong moment. This makes
      threads switch as often as CPython allows and sleeps a little, at random,
      around socket calls, which is where a chat server's threads interleave.
      A correct server only gets slower; a racy one fails on nearly every run.
      (start_server(noise=True) asks for it.)

slow  A correct program may be slow: a loaded grading machine, a design that
      hands lines between threads. This delays socket calls at random (a few
      milliseconds, often; tens of milliseconds, now and then) and holds back
      each join and leave line a little before it is sent, so that a test which
      needs a quick program fails here instead of on a busy day.
      (THREADED_CHAT_NOISE=slow in a test run's environment asks for it.)

Without the variable, the race profile is used. Pauses come only before a
call, or after one that has fully returned: a pause never changes what a call
does, on a blocking socket or a non-blocking one, so it can make a program
slower but never wrong. Only sitecustomize.py may live in this folder: every
module here can be imported by the program under test.
"""

import functools
import os
import random
import re
import socket
import sys
import time

PROFILE_VARIABLE = "THREADED_CHAT_NOISE"
DEFAULT_PROFILES = "race"

_random = random.Random()

# race: where threads interleave.
RACE_CHANCE = 0.3              # how often a socket call is delayed
RACE_LONGEST_PAUSE = 0.002     # seconds

# slow: a slow but correct program.
SLOW_CHANCE = 0.5              # how often a socket call is delayed a little...
SLOW_PAUSE = (0.001, 0.005)    # ...by this many seconds
STALL_CHANCE = 0.03            # how often it stalls instead...
STALL_PAUSE = (0.030, 0.080)   # ...for this long
ANNOUNCEMENT_PAUSE = (0.020, 0.060)  # before a join or leave line is sent

# A join or leave line of the chat protocol, in the bytes a server sends.
ANNOUNCEMENT = re.compile(rb" (joined the chat room!|exited the chat room)\r?\n")

RECEIVING = ("recv", "recv_into", "recvfrom", "recvfrom_into", "recvmsg", "accept")
SENDING = ("send", "sendall", "sendto", "sendmsg")
OTHERS = ("connect", "close", "shutdown")


def chosen_profiles():
    value = os.environ.get(PROFILE_VARIABLE, DEFAULT_PROFILES)
    return {name.strip() for name in value.split(",") if name.strip()}


# ---- pauses ----------------------------------------------------------------------

def race_pause(args=()):
    if _random.random() < RACE_CHANCE:
        time.sleep(_random.uniform(0, RACE_LONGEST_PAUSE))


def slow_pause(args=()):
    roll = _random.random()
    if roll < STALL_CHANCE:
        time.sleep(_random.uniform(*STALL_PAUSE))
    elif roll < STALL_CHANCE + SLOW_CHANCE:
        time.sleep(_random.uniform(*SLOW_PAUSE))


def announcement_pause(args):
    """Hold back a join or leave line: its recipients were chosen already, it arrives late."""
    if args and carries_announcement(args[0]):
        time.sleep(_random.uniform(*ANNOUNCEMENT_PAUSE))


def carries_announcement(data):
    """True if the data to send holds a join or leave line; never consumes or changes it."""
    if isinstance(data, (list, tuple)):  # sendmsg()'s buffers (an iterator is left alone)
        return any(carries_announcement(part) for part in data)
    try:
        return ANNOUNCEMENT.search(memoryview(data).tobytes()) is not None
    except TypeError:
        return False  # not bytes-like: the real call reports that


# ---- wrapping socket.socket's methods --------------------------------------------

def with_pauses(method, before, after):
    """The method, with pauses before the call and after it returns (or raises)."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        for pause in before:
            pause(args)
        try:
            return method(self, *args, **kwargs)
        finally:
            for pause in after:
                pause(args)
    return call


def pauses_for(name, profiles):
    """(before, after): the pauses around socket method `name` under these profiles."""
    before, after = [], []
    if "race" in profiles:
        before.append(race_pause)
        after.append(race_pause)
    if "slow" in profiles:
        # Before the call only: a pause after an accept() or recv() that a signal
        # interrupts (Ctrl+C) would lose what the call returned.
        before.append(slow_pause)
        if name in SENDING:
            before.append(announcement_pause)
    return before, after


def install(profiles):
    if "race" in profiles:
        sys.setswitchinterval(1e-6)
    # makefile() and socketserver reach the socket through these methods too
    # (recv_into, send, sendall), and selectors-based servers through send/recv.
    for name in RECEIVING + SENDING + OTHERS:
        method = getattr(socket.socket, name, None)
        before, after = pauses_for(name, profiles)
        if method is not None and (before or after):
            setattr(socket.socket, name, with_pauses(method, before, after))


def main():
    profiles = chosen_profiles()
    unknown = profiles - {"race", "slow"}
    if unknown:
        # A typo must not pass as "no noise": say so, and run without any.
        print(f"grader/noise: unknown {PROFILE_VARIABLE} profile(s) {sorted(unknown)}; "
              f"known: race, slow", file=sys.stderr, flush=True)
        return
    install(profiles)


main()
