"""The course's programs keep their promises on every system (what can be checked here).

- Every stage's reference server stops within 1 s of Ctrl+C while it waits in accept().
  On Linux and macOS SIGINT interrupts a blocked accept() anyway; on Windows it does not
  (CPython issue #85609), which is why every server's listening socket has a timeout: the
  code is there, and this check runs on every system of the course workflow.
"""

import time
from pathlib import Path

import pytest

from grader.course import load_stages
from grader.harness.process import Server

pytestmark = pytest.mark.selfcheck

ROOT = Path(__file__).resolve().parent.parent
SERVER_STAGES = [stage.slug for stage in load_stages(ROOT) if "server.py" in stage.programs]


@pytest.mark.parametrize("stage", SERVER_STAGES)
def test_reference_server_stops_on_ctrl_c_while_idle(stage):
    server = Server(ROOT / "solutions" / stage / "server.py")
    try:
        time.sleep(0.6)  # past one accept timeout (0.5 s): surely waiting in accept()
        pressed = time.monotonic()
        server.interrupt()
        status = server.wait_exit(1.0)
        took = time.monotonic() - pressed
        assert status is not None, f"solutions/{stage}/server.py still ran 1 s after Ctrl+C\n{server.report()}"
        assert not server.has_traceback(), f"a traceback on Ctrl+C:\n{server.report()}"
        assert took < 1.0
    finally:
        server.stop()
