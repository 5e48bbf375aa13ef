"""Fixtures of the graded tests: the stage folder, servers, clients, the story of a test.

What is graded (--impl), points, the scoreboard and results.json are the course's
pytest plugin, grader/plugin.py, installed with the course's requirements.
"""

import os

import pytest

from grader.plugin import impl_of, impl_root, stage_of
from grader.harness.client import Client, Story, fail
from grader.harness.process import Server


@pytest.fixture(scope="session")
def impl_dir(request):
    """The folder being graded (stages/, solutions/ or --impl PATH)."""
    return impl_root(request.config)


@pytest.fixture
def stage_dir(request, impl_dir):
    """This test file's stage folder inside the graded folder, e.g. stages/01_echo."""
    stage = stage_of(request.path)
    if stage is None:
        raise RuntimeError(f"{request.path.name} is not named after a stage")
    folder = impl_dir / stage
    if not folder.is_dir():
        impl = impl_of(request.config)
        notes = [note for note in (impl.intake.notes if impl.intake else []) if note.startswith(stage)]
        fail(f"There is no {stage}/ in what is graded ({impl.describe()}): this stage is missing."
             + "".join(f"\n  note: {note}" for note in notes))
    return folder


@pytest.fixture
def story():
    """The steps this test took, replayed in failure messages."""
    return Story()


@pytest.fixture
def start_server(stage_dir, story):
    """start_server(*extra_args, noise=False) runs this stage's server.py; always stopped after."""
    servers = []

    def start(*args, noise=False, env=None, program="server.py"):
        server = Server(stage_dir / program, args, env=env, noise=noise)
        servers.append(server)
        if story.server is None:
            story.server = server
        slow = "slow" in os.environ.get("THREADED_CHAT_NOISE", "")
        how = "".join(["with scheduling noise, " if noise else "", "in slow mode, " if slow else ""])
        story.add("the test", f"started the server ({how}port {server.port})")
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server):
    """This stage's server, running, on a free port."""
    return start_server()


@pytest.fixture
def connect(story):
    """connect(name, server) opens a named test client; all are closed after the test."""
    clients = []

    def open_client(name, server=None, rcvbuf=None):
        target = server or story.server
        client = Client(name, target.address, story, server=target, rcvbuf=rcvbuf)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close(note="(closed by the test's clean-up)")
