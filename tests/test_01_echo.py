"""Stage 01_echo: an echo server, one client at a time."""

import os

import pytest


@pytest.mark.points(2)
def test_echoes_a_line(server, connect):
    """A line sent comes back unchanged."""
    alice = connect("alice")
    alice.send(b"hello\n")
    alice.expect_line("hello")
