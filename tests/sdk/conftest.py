"""Fixtures for the SDK-compatibility tests (real SDK processes against the real server).

* `main_server` (module, SQLite and the cloud simulation): debug off, short task retry timeout so
  lease/recovery paths are fast.
* `memory_server` (module): `python -m local dev` (in-memory storage).
* `ts_toolchain` (session): FAILS (never skips) when Node 22 / @resonatehq/sdk 0.11.5 are
  missing -- tests/sdk/install_ts.sh is part of CI.
* `auth_server` (module): SQLite, inbound auth on (an Ed25519 key, `aud` = "resonate"); its
  `token` (role admin) authenticates the tests' own `server.rpc` calls, its `key` mints the
  SDK processes' tokens.
* `lang` (`py`, `ts`) and `sdk_env` / `sdk_env_memory` / `sdk_env_auth`: a per-test Harness for
  that SDK on that server. Every process it started is stopped at teardown; on failure, every
  process log and the server log are attached to the report. `sdk_env_auth` starts with no
  token: the test sets `h.token` (and `h.tokens`) before it starts a process.
"""
from __future__ import annotations

import pytest

from tests.sdk.auth_suite import AUTH_AUD
from tests.sdk.harness import Harness, check_ts_toolchain
from tests.support import marks
from tests.support.cloudsim import start_cloudsim
from tests.support.server import start_server
from tests.support.tokens import KeyPair, claims

RETRY_TIMEOUT_MS = 1000
SERVER_ARGS = ["--tasks-retry-timeout", str(RETRY_TIMEOUT_MS)]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every SDK test runs real worker processes against server processes."""
    here = str(config.rootpath / "tests" / "sdk")
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.process)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        h = getattr(item, "_sdk_harness", None)
        if h is not None:
            for title, text in h.all_logs():
                rep.sections.append((title, text if text else "<empty>"))


@pytest.fixture(scope="module", params=[marks.param("sqlite"), marks.param("cloudsim"), marks.param("mysql")])
def main_server(request, tmp_path_factory):
    """Every scenario runs against a SQLite server (the local server: one gevent process, the
    outbox delivery) and the cloud simulation as deployed by default (one base URL served by
    the api function's instances, SSE streams included, no path split; separate sweeper and
    dispatch function processes; one Postgres database, claims and NOTIFY across processes, the
    sweeper called every 60 s as Cloud Scheduler would). A local server over Postgres adds
    nothing an SDK can see: its delivery is the cloud's (conformance and tests/test_cluster_delivery.py
    run it), its HTTP and SSE the SQLite server's. A local server over MySQL: the same delivery
    over another database (claims and the notes table instead of NOTIFY)."""
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"sdk-{backend}")
    if backend == "cloudsim":
        srv = start_cloudsim(workdir, tick=60.0, window_ms=65_000,
                             env={"RESONATE_TASKS__RETRY_TIMEOUT": str(RETRY_TIMEOUT_MS)})
    else:
        srv = start_server(backend, workdir, debug=False, args=SERVER_ARGS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def memory_server(tmp_path_factory):
    srv = start_server("memory", tmp_path_factory.mktemp("sdk-memory"), debug=False, args=SERVER_ARGS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    key = KeyPair("ed25519")
    work = tmp_path_factory.mktemp("sdk-auth")
    srv = start_server("sqlite", work, debug=False, args=SERVER_ARGS,
                       env={"RESONATE_AUTH__PUBLICKEY": key.write(work), "RESONATE_AUTH__AUD": AUTH_AUD})
    srv.token = key.sign(claims(3600, role="admin", aud=AUTH_AUD))  # the tests' own assertions
    srv.key = key  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def ts_toolchain():
    err = check_ts_toolchain()
    if err:
        pytest.fail(f"TypeScript SDK toolchain not installed: {err}", pytrace=False)


def _harness(request, lang, server, tmp_path):
    alive = server.sim.running if server.backend == "cloudsim" else server.proc.poll() is None
    assert alive, f"server died:\n{server.logs()[-5000:]}"
    h = Harness(lang, server, tmp_path)
    request.node._sdk_harness = h
    return h


@pytest.fixture(params=["py", "ts"])
def lang(request) -> str:
    """The SDK under test: `py` (resonate-sdk) or `ts` (@resonatehq/sdk, needs the toolchain)."""
    if request.param == "ts":
        request.getfixturevalue("ts_toolchain")
    return request.param


def _env(request, lang, server, tmp_path):
    h = _harness(request, lang, server, tmp_path)
    yield h
    h.stop_all()


@pytest.fixture
def sdk_env(request, lang, main_server, tmp_path):
    yield from _env(request, lang, main_server, tmp_path)


@pytest.fixture
def sdk_env_memory(request, lang, memory_server, tmp_path):
    yield from _env(request, lang, memory_server, tmp_path)


@pytest.fixture
def sdk_env_auth(request, lang, auth_server, tmp_path):
    yield from _env(request, lang, auth_server, tmp_path)
