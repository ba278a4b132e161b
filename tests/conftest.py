"""Shared fixtures and test selection.

Servers: `server` (one per backend of RESONATE_TEST_BACKENDS, shared by the whole session; `inproc`
answers in this process, see tests/support/server.py) and `process_server` (the same over real
processes, for tests that need a socket). `rs` / `process_rs`: a fresh debug session on them; `live` / `process_live`: fresh state with
the background loops running.

Marks (tests/support/marks.py): `process`, `postgres` and `mysql` are set at collection from
module `pytestmark`, the backend params and the fixtures below; `make test-fast` deselects them.
"""
from __future__ import annotations

import os

import pytest

from tests.support import marks
from tests.support.server import ServerProc, backends, process_backends, start_server

# fixtures that start processes, open real sockets or need Postgres: their users are marked
PROCESS_FIXTURES = {"process_server", "process_rs", "main_server", "memory_server",
                    "auth_server", "ts_toolchain", "pubsub_emulator", "cloudsim"}
POSTGRES_FIXTURES = {"pg_url", "pg_template"}
MYSQL_FIXTURES = {"my_url", "my_server"}
# MySQL runs the conformance, bad-input, background, outbound-policy and SDK suites, the store
# contract, the differential seed, crash, outage and cluster delivery; these server suites,
# which exercise the HTTP and auth layers more than the store, stay on the other backends
# (RESONATE_TEST_MYSQL_ALL=1 runs them on MySQL too: about 2 minutes more on 2 workers)
MYSQL_SPARED = {"test_strict_profile.py", "test_tenant_isolation.py", "test_hostile_input.py", "test_auth.py",
                "test_metrics.py"}


def _mysql_param(item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(v == "mysql" or (isinstance(v, tuple) and v[:1] == ("mysql",)) for v in params.values())


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    if not os.environ.get("RESONATE_TEST_MYSQL_ALL"):
        spared = [i for i in items if i.path.name in MYSQL_SPARED and _mysql_param(i)]
        if spared:
            config.hook.pytest_deselected(items=spared)
            items[:] = [i for i in items if not (i.path.name in MYSQL_SPARED and _mysql_param(i))]
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & PROCESS_FIXTURES:
            item.add_marker(pytest.mark.process)
        if names & POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if names & MYSQL_FIXTURES:
            item.add_marker(pytest.mark.mysql)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    marks.set_current(item)  # start_server / create_database check the marks of the current test
    try:
        yield
    finally:
        marks.set_current(None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Captured output with lone surrogates (the hostile-input tests log them, escaped or not)
    travels escaped: pytest-xdist sends reports between processes as UTF-8."""
    outcome = yield
    rep = outcome.get_result()
    rep.sections = [(name, text.encode("utf-8", "backslashreplace").decode("utf-8")) for name, text in rep.sections]
    if isinstance(rep.longrepr, str):
        rep.longrepr = rep.longrepr.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.fixture(scope="session", params=backends())
def server(request, tmp_path_factory) -> ServerProc:
    """One debug-enabled server per backend, shared by the conformance tests."""
    srv = start_server(request.param, tmp_path_factory.mktemp(f"srv-{request.param}"), debug=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="session", params=process_backends())
def process_server(request, tmp_path_factory) -> ServerProc:
    """The same, as real processes (memory instead of inproc): for SSE streams and raw sockets."""
    srv = start_server(request.param, tmp_path_factory.mktemp(f"psrv-{request.param}"), debug=True)
    yield srv
    srv.stop()


def fresh_session(srv: ServerProc) -> ServerProc:
    """`srv` inside a fresh debug session: background loops paused, state wiped."""
    assert srv.rpc("debug.start", {})[0] == 200
    assert srv.rpc("debug.reset", {})[0] == 200
    return srv


@pytest.fixture
def rs(server: ServerProc) -> ServerProc:
    """A server inside a fresh debug session: background loops paused, state wiped."""
    return fresh_session(server)


@pytest.fixture
def process_rs(process_server: ServerProc) -> ServerProc:
    return fresh_session(process_server)


@pytest.fixture
def live(rs: ServerProc) -> ServerProc:
    """Fresh state with the background loops running (debug.stop after reset)."""
    assert rs.rpc("debug.stop", {})[0] == 200
    yield rs
    rs.rpc("debug.start", {})


@pytest.fixture
def process_live(process_rs: ServerProc) -> ServerProc:
    """`live` on a server process (for SSE streams)."""
    assert process_rs.rpc("debug.stop", {})[0] == 200
    yield process_rs
    process_rs.rpc("debug.start", {})
