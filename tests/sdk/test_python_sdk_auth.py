"""The official Python SDK (resonate-sdk 0.8.1) against a server with inbound auth on.

The SDK sends its token (`Resonate(token=...)`, else `$RESONATE_TOKEN`) as `head.auth` on every
RPC and as `Authorization: Bearer` on its SSE stream. A worker whose token is confined to the
workflow's id prefix runs the whole workflow; one without a token never gets its stream.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.sdk import scenarios
from tests.sdk.harness import Harness
from tests.support.tokens import claims

pytestmark = pytest.mark.timeout(90)

# `auth_server` (tests/sdk/conftest.py): SQLite, an Ed25519 key, aud "resonate", admin `token`.


def _harness(request, srv, tmp_path: Path, token: str | None) -> Harness:
    h = Harness("py", srv, tmp_path, token=token)
    request.node._sdk_harness = h
    return h


def test_workflow_with_a_prefix_token(request, auth_server, tmp_path: Path) -> None:
    token = auth_server.key.sign(claims(3600, role="worker", prefix="nested-", aud=["resonate"], groups=["g-*"]))
    h = _harness(request, auth_server, tmp_path, token)
    try:
        scenarios.nested_steps(h)
    finally:
        h.stop_all()
    assert "Request rejected by auth" not in auth_server.logs()


def test_worker_without_a_token_is_refused(request, auth_server, tmp_path: Path) -> None:
    h = _harness(request, auth_server, tmp_path, None)
    try:
        w = h.worker("anon", f"g-{h.uid}", ready=False)
        with pytest.raises(AssertionError):
            w.wait_ready(timeout=8)
    finally:
        h.stop_all()
    assert "Auth rejected: no token provided endpoint=poll" in auth_server.logs()
