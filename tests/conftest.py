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

# every server the suites start gets no REST-era SSE listener and no gRPC listener unless a test
# asks for one (their fixed default ports, 8002 and 50051, would collide between servers running
# side by side)
os.environ.setdefault("RESONATE_LEGACY__POLL_PORT", "0")
os.environ.setdefault("RESONATE_SERVER__GRPC_PORT", "0")
from tests.support.server import DEFAULT_BACKENDS, ServerProc, backend_names, backends, process_backends, start_server

# fixtures that start processes, open real sockets or need Postgres: their users are marked
PROCESS_FIXTURES = {"process_server", "process_rs", "main_server", "memory_server",
                    "auth_server", "ts_toolchain", "pubsub_emulator", "cloudsim"}
POSTGRES_FIXTURES = {"pg_url", "pg_template"}
# fixtures that start a cloud simulation: their users are marked `cloudsim`
CLOUDSIM_FIXTURES = {"cloudsim", "chaos_sim", "stream_sim", "private_sim"}


def _tiers(markexpr: str) -> tuple[bool, bool]:
    """Whether `-m` leaves tests marked `process` and tests marked `postgres` in the run."""
    if not markexpr:
        return True, True
    from _pytest.mark.expression import Expression  # pytest's own `-m` evaluator

    expr = Expression.compile(markexpr)
    return (expr.evaluate(lambda name, **_: name == "process"),
            expr.evaluate(lambda name, **_: name in ("process", "postgres")))


def pytest_report_header(config) -> list[str]:
    """What this run covers (the environment and `-m`, as the suites will read them)."""
    import os
    import re

    from tests.sdk.harness import check_ts_toolchain

    process, postgres = _tiers(config.option.markexpr or "")
    tiers = ["in-process"] + (["process (server processes, both SDKs)"] if process else []) + \
        (["postgres"] if postgres else [])
    names = [b for b in backend_names() if (b != "postgres" or postgres) and (b in ("inproc",) or process)]
    lines = [f"resonate: tiers {', '.join(tiers)}; server suites on {', '.join(names) or 'none'} "
             f"(RESONATE_TEST_BACKENDS={os.environ.get('RESONATE_TEST_BACKENDS', DEFAULT_BACKENDS)})"]
    if postgres:
        from tests.support.pg import ADMIN_URL

        lines.append(f"resonate: Postgres at {re.sub(r'(://[^:/@]*):[^@]*@', r'\1:***@', ADMIN_URL)} "
                     "(RESONATE_TEST_PG_URL)")
    if process:
        err = check_ts_toolchain()
        lines.append("resonate: TypeScript SDK " + (f"MISSING, its tests will fail: {err}" if err
                                                    else "@resonatehq/sdk 0.11.5 on Node 22"))
    return lines


def pytest_sessionstart(session) -> None:
    """`-q` (make test, make test-fast) hides pytest's header: print the lines above anyway, once
    (in the controller when pytest-xdist runs workers)."""
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if config.get_verbosity() == -1 and reporter is not None and not hasattr(config, "workerinput"):
        for line in pytest_report_header(config):
            reporter.write_line(line)
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
        if names & CLOUDSIM_FIXTURES:
            item.add_marker(pytest.mark.cloudsim)
        if item.get_closest_marker(marks.CLOUDSIM) is not None:  # pytest-xdist: one worker, in turn
            item.add_marker(pytest.mark.xdist_group("cloudsim"))
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
    travels escaped: pytest-xdist sends reports between processes as UTF-8. A failed browser
    test (tests/support/browser.py) saves screenshots of its pages first."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and getattr(item, "_browser_pages", None):  # the web console's tests: a screenshot
        from tests.support.browser import screenshot_on_failure

        screenshot_on_failure(item, rep)
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
