"""Extra fixtures for the conformance scenarios (the shared `server`/`rs` live in tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.support.server import ServerProc, backends, start_server


@pytest.fixture(params=backends())
def backend(request) -> str:
    """Storage adapter for tests that start a dedicated server."""
    return request.param


@pytest.fixture
def spawn(tmp_path: Path) -> Callable[..., ServerProc]:
    """Start dedicated servers (stopped at teardown): spawn(backend, debug=..., args=[...], env={...})."""
    started: list[ServerProc] = []

    def _spawn(backend: str, **kw) -> ServerProc:
        srv = start_server(backend, tmp_path / f"srv{len(started)}", **kw)
        started.append(srv)
        return srv

    yield _spawn
    for srv in started:
        srv.stop()


@pytest.fixture
def live(rs: ServerProc) -> ServerProc:
    """Fresh state with the background loops running (debug.stop after reset)."""
    assert rs.rpc("debug.stop", {})[0] == 200
    yield rs
    rs.rpc("debug.start", {})
