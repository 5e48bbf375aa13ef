"""Scheduling noise for race tests: imported by Python at start-up when this
folder is on PYTHONPATH (the harness does that for start_server(noise=True)).

Races hide when threads rarely switch at the wrong moment. This makes threads
switch as often as CPython allows and sleeps a little, at random, around socket
calls, which is where a chat server's threads interleave. A correct server only
gets slower; a racy one fails on nearly every run.
"""

import random
import socket
import sys
import time

sys.setswitchinterval(1e-6)

_random = random.Random()
CHANCE = 0.3          # how often a socket call is delayed
LONGEST_PAUSE = 0.002  # seconds


def _pause():
    if _random.random() < CHANCE:
        time.sleep(_random.uniform(0, LONGEST_PAUSE))


def _noisy(method):
    def call(self, *args, **kwargs):
        _pause()
        try:
            return method(self, *args, **kwargs)
        finally:
            _pause()
    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


for _name in ("send", "sendall", "recv", "accept", "close", "shutdown"):
    setattr(socket.socket, _name, _noisy(getattr(socket.socket, _name)))
