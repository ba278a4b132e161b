"""console.* operations: the web console's read-only views (`shared.requests_console`;
docs/console.md). Every row a view returns lies within the caller's scope: the decoded prefix
was checked against the token already, and rows are filtered again here, so that a `*` in an
id prefix (a wildcard to the stores' id patterns) can never widen what a prefix token sees.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from shared import cron
from shared.engine.core import Ctx, Resp
from shared.records import LEASE, ORIGIN, PARENT, Promise, Schedule, Task
from shared.requests_console import ConsolePromise, ConsolePromises, ConsoleSchedules, ConsoleTasks, ConsoleWorkers
from shared.scope import within

MAX_GRAPH = 1000  # promises of one workflow the call graph shows
NEXT_RUNS = 3


def _label(p: Promise) -> str | None:
    """The function a promise runs, when its param is the SDKs' JSON `{"func": ...}` (small ones only)."""
    data = p.param.get("data")
    if not isinstance(data, str) or len(data) > 4096:
        return None
    try:
        obj = json.loads(base64.b64decode(data, validate=True))
    except (ValueError, binascii.Error):
        return None
    func = obj.get("func") if isinstance(obj, dict) else None
    return func if isinstance(func, str) else None


def _summary(p: Promise) -> dict[str, Any]:
    out: dict[str, Any] = {"id": p.id, "state": p.state, "tags": p.tags, "timeoutAt": p.timeout_at,
                           "createdAt": p.created_at}
    if p.settled_at is not None:
        out["settledAt"] = p.settled_at
    label = _label(p)
    if label is not None:
        out["func"] = label
    return out


def _task(t: Task) -> dict[str, Any]:
    out: dict[str, Any] = {"id": t.id, "state": t.state, "version": t.version}
    if t.timer_at is not None:
        out["leaseExpiresAt" if t.timer_type == LEASE else "retryAt"] = t.timer_at
    if t.pid is not None:
        out.update(pid=t.pid, ttl=t.ttl)
    return out


def _listing[T: (Promise, Task, Schedule)](c: Ctx, r: ConsolePromises | ConsoleTasks | ConsoleSchedules,
                                            rows: list[T], name: str, render: Callable[[T], dict[str, Any]]) -> Resp:
    """One page of a list (`rows`: up to limit + 1 read after the cursor): the rows within the
    prefix and the caller's scope, and the next page's cursor (the last row read, so a row
    filtered out here never stops the paging)."""
    page = [x for x in rows[: r.limit] if x.id.startswith(r.prefix) and within(c.scope, x.id)]
    out: dict[str, Any] = {name: [render(x) for x in page]}
    if len(rows) > r.limit:
        out["cursor"] = rows[r.limit - 1].id
    return 200, out


def promises(c: Ctx, r: ConsolePromises) -> Resp:
    rows = c.tx.search_promises_by_id(r.prefix + "*", r.states, r.tags, r.cursor, r.limit + 1,
                                      (r.created_after, r.created_before))
    return _listing(c, r, rows, "promises", _summary)


def promise(c: Ctx, r: ConsolePromise) -> Resp:
    """The promise, its task, and the call graph of its workflow: every promise of the same origin
    (`resonate:origin`, the root's id), each with its parent (`resonate:parent`)."""
    p = c.tx.get_promise(r.id)
    if p is None or not within(c.scope, p.id):
        return 404, "Promise not found"
    task = c.tx.get_task(p.id)
    root = p.tags.get(ORIGIN) or p.id
    members = c.tx.workflow_promises(root, MAX_GRAPH + 1)
    nodes = []
    for m in (m for m in members[:MAX_GRAPH] if within(c.scope, m.id)):
        node = _summary(m)
        node.pop("tags")
        parent = m.tags.get(PARENT)
        if parent and parent != m.id:
            node["parent"] = parent
        nodes.append(node)
    graph = {"root": root, "nodes": nodes, "truncated": len(members) > MAX_GRAPH}
    return 200, {"promise": p.wire(), "task": None if task is None else _task(task), "graph": graph}


def tasks(c: Ctx, r: ConsoleTasks) -> Resp:
    return _listing(c, r, c.tx.search_tasks(r.state, r.cursor, r.limit + 1, r.prefix), "tasks", _task)


def _schedule(s: Schedule) -> dict[str, Any]:
    runs, at = [], s.next_run_at
    for _ in range(NEXT_RUNS):
        runs.append(at)
        try:
            at = cron.next_after(s.cron, at)
        except cron.CronError:
            break
        if at >= cron.NEVER:
            break
    return {**s.wire(), "nextRuns": runs}


def schedules(c: Ctx, r: ConsoleSchedules) -> Resp:
    rows = c.tx.search_schedules_by_id(r.prefix + "*", {}, r.cursor, r.limit + 1)
    return _listing(c, r, rows, "schedules", _schedule)


def workers(c: Ctx, r: ConsoleWorkers) -> Resp:
    """The workers holding an SSE stream now, by group (`Ctx.presence`: this process's streams,
    or every process's through the shared database's receiver registry)."""
    groups: dict[str, list[str]] = {}
    for group, id in sorted(c.presence() if c.presence is not None else ()):
        groups.setdefault(group, []).append(id)
    return 200, {"groups": [{"group": g, "workers": ids} for g, ids in groups.items()]}
