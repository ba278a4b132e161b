"""A server is ready only on its own socket: a port picked free can be bound first by another
process, whose answers must not pass for the new server's (`local.simprocs.listens`, used by the
cloud simulation's readiness probe and by the test servers)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import tests.support.server as server_support
from local.simprocs import free_port, listens
from tests.support.server import start_server

pytestmark = pytest.mark.process


@pytest.fixture
def squatter():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not listens(proc.pid, port):
        assert time.monotonic() < deadline and proc.poll() is None, "the squatter never listened"
        time.sleep(0.05)
    yield proc, port
    proc.kill()
    proc.wait()


def test_listens_tells_the_owner_from_everyone_else(squatter) -> None:
    proc, port = squatter
    assert listens(proc.pid, port)
    assert not listens(os.getpid(), port)
    assert not listens(proc.pid, free_port())


def test_a_server_whose_port_was_taken_starts_on_another(squatter, tmp_path, monkeypatch) -> None:
    _, taken = squatter
    picks = iter([taken])
    real = server_support.free_port
    monkeypatch.setattr(server_support, "free_port", lambda: next(picks, None) or real())
    srv = start_server("memory", tmp_path)
    try:
        assert srv.port != taken and listens(srv.proc.pid, srv.port)
        assert srv.rpc("promise.get", {"id": "nope"})[0] == 404  # our server answered, not the squatter
    finally:
        srv.stop()
