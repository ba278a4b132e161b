"""The SDK scenario suite (tests/sdk/scenarios.py) with inbound auth on, shared by
test_python_sdk_auth_suite.py and test_typescript_sdk_auth_suite.py.

Server: `auth_server` (tests/sdk/conftest.py): SQLite, an Ed25519 public key, `aud` "resonate";
the harness's own `server.rpc` assertions carry an admin token. Every SDK process gets its
token with `--token` (Python `Resonate(token=...)`, TypeScript `new Resonate({ token })`): both
send it as `head.auth` on every `POST /` and as `Authorization: Bearer` on their SSE stream.

Tokens. Both SDKs derive every id of a workflow from its root id (`root:1`, `root:1.2`, timers
and `ctx.promise()` ids alike, `root:d<hex>` for detached children), so a non-admin token whose
`prefix` is the scenario's root id (`nested-<uid>`, ...) covers everything a workflow's
processes do: task.create/acquire/fulfill/suspend/heartbeat, the children's
promise.create/settle and register_callback/listener. The worker groups (`g-<uid>`, `ga-<uid>`,
...) do not start with that prefix, so the tokens carry a `groups` claim naming them: it lets a
process open its SSE stream and address those groups (`poll://any@ga-<uid>` targets, its own
`poll://uni@g-<uid>/<pid>` listener). A schedule's promise-id template is covered when the part
before `{{.timestamp}}` (with `{{.id}}` expanded) starts with the prefix: the SDKs'
`{{.id}}-{{.timestamp}}` under a `sched-<uid>` prefix is. One exception gets an admin token:

* `promise.search` spans every tenant and is refused to every non-empty prefix: the search
  scenario runs as admin.

A refused process never gets its SSE stream (the workers print `SSE_REFUSED <status>` when
the poll request is answered 401/403) and every request it sends is answered 401.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pytest

from tests.sdk import scenarios
from tests.sdk.harness import Harness, b64json
from tests.support.tokens import KeyPair, claims

AUTH_AUD = "resonate"  # the `auth_server`'s RESONATE_AUTH__AUD


@dataclass(frozen=True)
class Case:
    run: Callable[[Harness], None]
    root: str | None  # the stem of the scenario's root id: token prefix f"{root}-{uid}"; None: admin
    admin: tuple[str, ...] = ()  # processes (by name) that need an admin token anyway


CASES: dict[str, Case] = {
    "nested_steps": Case(scenarios.nested_steps, "nested"),
    "rpc_to_worker_in_another_group": Case(scenarios.rpc_other_group, "xgroup"),
    "durable_sleep": Case(partial(scenarios.durable_sleep, ms=1500), "sleep"),
    "external_promise_raw_settle": Case(partial(scenarios.external_promise, via="raw"), "ext"),
    "external_promise_sdk_resolve": Case(partial(scenarios.external_promise, via="sdk"), "ext"),
    "fan_out_fan_in_50_children": Case(partial(scenarios.fan_out_in, n=50), "fan"),
    "failure_without_retries": Case(scenarios.failure_no_retry, "fail"),
    "same_id_runs_once": Case(scenarios.idempotent_run, "idem"),
    "recovery_after_worker_sigkill": Case(scenarios.recovery_after_kill, "rec"),
    "cron_schedule_fires_then_deleted": Case(scenarios.schedule_fires_then_deleted, "sched"),
    "promise_search_by_tags_with_paging": Case(scenarios.search_paging, None),
}


def admin_token(h: Harness) -> str:
    return h.server.key.sign(claims(3600, role="admin", aud=AUTH_AUD))  # type: ignore[attr-defined]


GROUPS = ("g", "ga", "gb", "gc", "gd", "gr", "g1", "g2", "g3")  # tests/sdk/scenarios.py: f"{stem}-{uid}"


def groups(h: Harness) -> list[str]:
    """The scenario's groups, and `default`: the TypeScript SDK's durable sleep creates its timer
    promise with the `target` option, whose default is the group `default` whatever group the
    worker serves (so a tenant running TypeScript sleeps needs that group, or a `target`)."""
    return [f"{g}-{h.uid}" for g in GROUPS] + ["default"]


def prefix_token(h: Harness, prefix: str, with_groups: bool = True) -> str:
    extra = {"groups": groups(h)} if with_groups else {}
    return h.server.key.sign(claims(3600, role="worker", prefix=prefix, aud=[AUTH_AUD], **extra))  # type: ignore[attr-defined]


def run_case(h: Harness, name: str) -> None:
    """One scenario with the tokens CASES names, and no auth refusal anywhere."""
    case = CASES[name]
    h.token = admin_token(h) if case.root is None else prefix_token(h, f"{case.root}-{h.uid}")
    h.tokens = {p: admin_token(h) for p in case.admin}
    mark = len(h.server.logs())
    case.run(h)  # ends with h.assert_wire_clean(): a 401/403 anywhere would fail it
    refusals = [line for line in h.server.logs()[mark:].splitlines()
                if "Auth rejected" in line or "Auth forbidden" in line or "Request rejected by auth" in line]
    assert not refusals, "the server refused requests of the scenario's processes:\n" + "\n".join(refusals[:20])


def refused(h: Harness, how: str) -> None:
    """A worker and a client with no token, or one the server cannot verify, register nothing
    and run nothing: SSE 401, every request 401, the server's state unchanged. With a valid
    token whose prefix does not cover the ids (`wrong_prefix`) the stream is accepted (its
    `groups` claim names the group) but every request is 403, with the same net effect; with the
    right prefix but no claim to the group (`foreign_group`) the stream is 403 and so is every
    request that names the group (the client's `poll://` target and listener address)."""
    srv = h.server
    group, root, existing = f"g-{h.uid}", f"denied-{h.uid}", f"existing-{h.uid}"  # outside root's prefix
    if how == "no_token":
        h.token, log_line = None, "Auth rejected: no token provided"
    elif how == "wrong_key":  # an admin token, but signed by a key the server does not know
        h.token = KeyPair("ed25519").sign(claims(3600, role="admin", aud=AUTH_AUD))
        log_line = "Auth rejected: token verification failed"
    elif how == "expired":  # the server's key and the right prefix, expired beyond the 60 s leeway
        h.token = srv.key.sign(claims(-120, role="worker", prefix=root, aud=AUTH_AUD))  # type: ignore[attr-defined]
        log_line = "Auth rejected: token verification failed"
    elif how == "wrong_prefix":  # valid, but for another tenant's ids
        h.token = prefix_token(h, f"other-{h.uid}")
        log_line = "Auth forbidden: resource ID does not match prefix"
    elif how == "foreign_group":  # the right ids, but a worker group the token has no claim to
        h.token = prefix_token(h, root, with_groups=False)
        log_line = "Auth forbidden: address group not permitted"
    else:
        raise ValueError(how)
    status, text = (403, "Forbidden") if how in ("wrong_prefix", "foreign_group") else (401, "Unauthorized")
    sse_status = 200 if how == "wrong_prefix" else status

    assert srv.rpc("promise.create", {"id": existing, "timeoutAt": int(time.time() * 1000) + 600_000,
                                      "param": {"headers": {}, "data": b64json("x")}, "tags": {}})[0] == 200
    before = sorted((p["id"], p["state"]) for p in h.search_all({}, limit=500))
    mark = len(srv.logs())

    w = h.worker("w1", group, ready=False)
    if sse_status != 200:
        with pytest.raises(AssertionError, match="refused its SSE stream"):
            w.wait_ready(timeout=20)
    else:
        w.wait_ready()
    c = h.client("c1", group, [
        {"op": "run", "id": root, "func": scenarios.fn(h, "nested"), "args": [3], "timeout": 2},
        {"op": "resolve", "id": existing, "value": {"by": "intruder"}},
    ])
    results = c.result(timeout=40)
    assert [r.get("ok") for r in results] == [False, False], results

    for p in (w, c):
        assert (f"SSE_REFUSED {sse_status}" in p.logs()) == (sse_status != 200), f"{p.name}: unexpected SSE outcome"
    sent = c.wire()
    assert {e.get("kind") for e in sent} >= {"task.create", "promise.settle"}, sent
    bad = [e for e in w.wire() + sent if e.get("head", {}).get("status") != status
           or e.get("_http_status", status) != status or e.get("data") != text]
    assert not bad, bad

    # Nothing was created, settled or run.
    assert srv.rpc("promise.get", {"id": root})[0] == 404
    assert srv.rpc("task.get", {"id": root})[0] == 404
    assert h.promise(existing)["state"] == "pending"
    assert sorted((p["id"], p["state"]) for p in h.search_all({}, limit=500)) == before
    assert not h.lines("nested-steps.log")
    log = srv.logs()[mark:]
    if status == 401:
        assert f"{log_line} endpoint=poll" in log, log[-3000:]
    if how == "foreign_group":
        assert "Auth forbidden: group not permitted endpoint=poll" in log, log[-3000:]
        assert f"{log_line} kind=task.create" in log, log[-3000:]  # its poll:// target
    else:
        assert f"{log_line} kind=task.create" in log, log[-3000:]
        assert f"{log_line} kind=promise.settle" in log, log[-3000:]


def schedule_template_outside_the_prefix(h: Harness) -> None:
    """A prefix token may create a schedule only when every promise it fires is inside the
    prefix: the part of the template before `{{.timestamp}}` must start with it. The SDKs'
    `{{.id}}-{{.timestamp}}` under a schedule id outside the prefix is refused: 403, no schedule."""
    sid = f"sched-{h.uid}"
    h.token = prefix_token(h, f"other-{h.uid}")
    mark = len(h.server.logs())
    c = h.client("creator", f"g-{h.uid}", [{"op": "schedule", "id": sid, "cron": "* * * * * *",
                                            "func": scenarios.fn(h, "scheduled_tick"), "args": [h.uid]}])
    [res] = c.result()
    assert res.get("ok") is False and "403" in res["error"], res
    assert [e["head"]["status"] for e in c.wire() if e.get("kind") == "schedule.create"] == [403], c.wire()
    assert h.server.rpc("schedule.get", {"id": sid})[0] == 404
    assert ("Auth forbidden: resource ID does not match prefix kind=schedule.create "
            f"prefix=other-{h.uid} resource_id={sid}") in h.server.logs()[mark:]
