"""The REST API's JSON shapes (docs/legacy-api.md#objects): promises, tasks, the messages its
SSE listener sends, and its error body. Its clients index `param` and `value` unconditionally and
choke on `"data": ""` or `null` members, so empty members are omitted and both are always objects.
"""
from __future__ import annotations

from typing import Any

from shared.legacy import ids
from shared.records import INVOKE, TARGET, TIMER, Promise, Task
from shared.requests_rest import TIMEOUT_TAG

DOCS = "https://docs.resonatehq.io/reference/error-codes"


def _value(v: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if v.get("headers"):
        out["headers"] = v["headers"]
    if v.get("data"):
        out["data"] = v["data"]
    return out


def tags_out(tags: dict[str, str]) -> dict[str, str]:
    """The tags as the client sent them: the engine's `resonate:target`/`resonate:timer` derived from
    `resonate:invoke`/`resonate:timeout` are not shown."""
    hide = [k for k, src in ((TARGET, INVOKE), (TIMER, TIMEOUT_TAG)) if src in tags]
    return {k: v for k, v in tags.items() if k not in hide} if hide else tags


def promise(p: Promise) -> dict[str, Any]:
    out: dict[str, Any] = {"id": p.id, "state": p.state.upper(), "param": _value(p.param),
                           "value": _value(p.value), "timeout": p.timeout_at, "tags": tags_out(p.tags),
                           "createdOn": p.created_at}
    if p.ikey_create is not None:
        out["idempotencyKeyForCreate"] = p.ikey_create
    if p.ikey_settle is not None:
        out["idempotencyKeyForComplete"] = p.ikey_settle
    if p.settled_at is not None:
        out["completedOn"] = p.settled_at
    return out


def promise_of_wire(w: dict[str, Any]) -> dict[str, Any]:
    """The REST shape of a promise in the envelope protocol's wire form (an unblock's payload)."""
    return promise(Promise(w["id"], w["state"], w.get("param") or {}, w.get("value") or {}, w.get("tags") or {},
                           w["timeoutAt"], w["createdAt"], w.get("settledAt")))


def counter(t: Task) -> int:
    """A task's counter: its version while it waits to be claimed, the version it was claimed
    with afterwards (acquiring bumps the engine's version)."""
    return t.version if t.state == "pending" else max(t.version - 1, 0)


def task(t: Task, task_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": task_id or ids.invoke_id(t.id), "counter": counter(t)}
    if t.state == "acquired":
        out["processId"] = t.pid
        out["timeout"] = t.timer_at
    return out


def href(base: str, task_id: str, n: int) -> dict[str, str]:
    return {verb: f"{base}/tasks/{verb}/{task_id}/{n}" for verb in ("claim", "complete", "heartbeat")}


def error(code: int, message: str) -> dict[str, Any]:
    detail = {"@type": "RequestError", "message": message, "domain": "request",
              "metadata": {"url": f"{DOCS}#{code}"}}
    return {"error": {"code": code, "message": message, "details": [detail]}}
