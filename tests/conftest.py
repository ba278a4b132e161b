from __future__ import annotations

import pytest

from tests.support.server import ServerProc, backends, start_server


@pytest.fixture(scope="session", params=backends())
def server(request, tmp_path_factory) -> ServerProc:
    """One debug-enabled server per storage adapter, shared by the conformance tests."""
    srv = start_server(request.param, tmp_path_factory.mktemp(f"srv-{request.param}"), debug=True)
    yield srv
    srv.stop()


@pytest.fixture
def rs(server: ServerProc) -> ServerProc:
    """A server inside a fresh debug session: background loops paused, state wiped."""
    assert server.rpc("debug.start", {})[0] == 200
    assert server.rpc("debug.reset", {})[0] == 200
    return server
