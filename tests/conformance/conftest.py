"""Extra fixtures for the conformance scenarios (`server`, `rs`, `live` are in tests/conftest.py)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.server import ServerProc, process_backends, start_server


@pytest.fixture(params=process_backends())
def backend(request) -> str:
    """Backend of tests that start a dedicated server process (memory, sqlite, postgres)."""
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
