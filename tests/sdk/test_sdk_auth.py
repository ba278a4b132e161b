"""Both official SDKs (`lang`: py, ts) with inbound auth on: the scenario suite with tokens.

Every worker and client holds a token, prefix-restricted where the SDK's ids allow it (see
tests/sdk/auth_suite.py for which and why); processes without a valid token change nothing.
Server: `auth_server` (SQLite, Ed25519 key, aud "resonate", --tasks-retry-timeout 1000, one per
module; its admin `token` authenticates the tests' own `server.rpc` calls).

The last two tests are the Python SDK's own token plumbing (`Resonate(token=...)`, else
`$RESONATE_TOKEN`, sent as `head.auth` on every RPC and as `Authorization: Bearer` on its SSE
stream): a worker confined to the workflow's prefix runs the whole workflow; one without a token
never gets its stream.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.sdk import auth_suite, scenarios
from tests.sdk.harness import Harness
from tests.support.tokens import claims

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("case", list(auth_suite.CASES))
def test_scenario_with_tokens(sdk_env_auth, case):
    auth_suite.run_case(sdk_env_auth, case)


@pytest.mark.parametrize("how", ["no_token", "wrong_key", "expired", "wrong_prefix", "foreign_group"])
def test_processes_without_a_valid_token_change_nothing(sdk_env_auth, how):
    auth_suite.refused(sdk_env_auth, how)


def test_a_schedule_firing_outside_the_prefix_is_refused(sdk_env_auth):
    auth_suite.schedule_template_outside_the_prefix(sdk_env_auth)


def _py_harness(request, srv, tmp_path: Path, token: str | None) -> Harness:
    h = Harness("py", srv, tmp_path, token=token)
    request.node._sdk_harness = h
    return h


def test_py_workflow_with_a_prefix_token(request, auth_server, tmp_path: Path) -> None:
    token = auth_server.key.sign(claims(3600, role="worker", prefix="nested-", aud=["resonate"], groups=["g-*"]))
    start = len(auth_server.logs())  # the module's server: earlier tests' refusals are in its log
    h = _py_harness(request, auth_server, tmp_path, token)
    try:
        scenarios.nested_steps(h)
    finally:
        h.stop_all()
    assert "Request rejected by auth" not in auth_server.logs()[start:]


def test_py_worker_without_a_token_is_refused(request, auth_server, tmp_path: Path) -> None:
    start = len(auth_server.logs())
    h = _py_harness(request, auth_server, tmp_path, None)
    try:
        w = h.worker("anon", f"g-{h.uid}", ready=False)
        with pytest.raises(AssertionError):
            w.wait_ready(timeout=8)  # an absence: a refused stream never becomes ready
    finally:
        h.stop_all()
    assert "Auth rejected: no token provided endpoint=poll" in auth_server.logs()[start:]


# ── private deployments (docs/security.md#private-deployments) ─────────────────────────────────
# The cloud simulation in its default shape (one base URL, the api function) with Cloud Run's
# invoker check (`private=True`): the router refuses (403) any request without an identity
# token for the base URL and forwards X-Serverless-Authorization without its signature. Each
# SDK process sends that identity in X-Serverless-Authorization (tests/sdk/py/worker.py
# `identity_connections`, tests/sdk/ts/worker.mjs `withIdentity`) and its Resonate JWT as ever.


@pytest.fixture(scope="module")
def private_sim(tmp_path_factory):
    from tests.support.cloudsim import start_cloudsim
    from tests.support.tokens import KeyPair

    key = KeyPair("ed25519")
    work = tmp_path_factory.mktemp("sdk-private")
    srv = start_cloudsim(work, tick=60.0, window_ms=65_000, dispatch=0, private=True,
                         env={"RESONATE_AUTH__PUBLICKEY": key.write(work), "RESONATE_AUTH__AUD": auth_suite.AUTH_AUD,
                              "RESONATE_TASKS__RETRY_TIMEOUT": "1000"})
    google = KeyPair("rsa")  # plays Google: the simulated invoker check reads claims, not signatures
    srv.identity = google.sign(claims(3600, iss="https://accounts.google.com", aud=srv.url,  # type: ignore[attr-defined]
                                      email="sdk@proj.iam.gserviceaccount.com"))
    srv.session.headers["X-Serverless-Authorization"] = f"Bearer {srv.identity}"  # type: ignore[attr-defined]
    srv.token = key.sign(claims(3600, role="admin", aud=auth_suite.AUTH_AUD))
    srv.key = key  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.mark.postgres
def test_private_deployment_sdk_sends_x_serverless_authorization(request, lang, private_sim, tmp_path: Path) -> None:
    h = Harness(lang, private_sim, tmp_path)
    request.node._sdk_harness = h
    try:
        h.worker("anon", f"gx-{h.uid}", ready=False)  # no identity: Cloud Run refuses it before Resonate sees it
        with pytest.raises(AssertionError, match="refused its SSE stream"):
            h.workers[0].wait_ready(timeout=20)
        assert "invoker check refused GET" in (private_sim.sim.log_dir / "router.log").read_text()
        h.workers[0].stop()
        h.workers.clear()
        h.identity = private_sim.identity  # type: ignore[attr-defined]
        auth_suite.run_case(h, "nested_steps")  # a prefix token in head.auth / Authorization; no refusal
    finally:
        h.stop_all()
