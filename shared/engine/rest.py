"""The older server's REST API (docs/legacy-api.md) as operations of the one engine: promises
with idempotency keys and `Strict`, the search by id pattern, callbacks and subscriptions, and
tasks claimed, completed, dropped and kept alive by process.

They reuse the engine's procedures (lazy timeout, create, settle cascade, acquire, redispatch), so
a promise behaves identically whichever API touches it. What differs is the REST API's answer
to repeated and conflicting requests (its idempotency rules) and its task vocabulary: a REST
task is the engine task of a root promise, its `counter` the task's version while it waits to be
claimed (an acquired task at version v was claimed with counter v - 1).

Successful answers carry records (`Promise`, `Task`); the REST routes render them
(`shared/legacy/wire.py`). Failures carry the REST API's four-digit error code.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.engine.core import Ctx, Resp, acquire, create_promise, lazy_timeout, redispatch, set_timer, settle
from shared.legacy import ids
from shared.records import INVOKE, LEASE, TARGET, Task
from shared.requests_rest import (
    RestCallback,
    RestPromiseComplete,
    RestPromiseCreate,
    RestPromiseGet,
    RestPromiseSearch,
    RestSubscribe,
    RestTaskClaim,
    RestTaskComplete,
    RestTaskDrop,
    RestTaskHeartbeat,
)
from shared.scope import within

# the REST API's error codes (its HTTP status is the first three digits)
ALREADY_COMPLETED = {"resolved": 4030, "rejected": 4031, "rejected_canceled": 4032, "rejected_timedout": 4033}
PROMISE_NOT_FOUND, TASK_NOT_FOUND = 4040, 4043
PROMISE_EXISTS = 4090
TASK_CLAIMED, TASK_COMPLETED, TASK_COUNTER, TASK_STATE = 4035, 4036, 4037, 4038
MESSAGES = {
    4030: "The promise has already been resolved", 4031: "The promise has already been rejected",
    4032: "The promise has already been canceled", 4033: "The promise has already timed out",
    4035: "The task is already claimed", 4036: "The task is already completed",
    4037: "The task counter is invalid", 4038: "The task is in an invalid state",
    4040: "The specified promise was not found", 4043: "The specified task was not found",
    4090: "A promise with this identifier already exists",
}


def fail(code: int) -> Resp:
    return code // 10, {"code": code, "message": MESSAGES[code]}


def _matches(stored: str | None, ikey: str | None) -> bool:
    """An idempotency key matches only when both are present and equal."""
    return ikey is not None and stored == ikey


# ---- promises ------------------------------------------------------------------------------


def get(c: Ctx, r: RestPromiseGet) -> Resp:
    p = lazy_timeout(c, [r.id])[r.id]
    return (200, {"promise": p}) if p is not None else fail(PROMISE_NOT_FOUND)


def create(c: Ctx, r: RestPromiseCreate) -> Resp:
    """201 created; 200 deduplicated (the stored promise, never changed); 409 otherwise."""
    d = r.create
    p = lazy_timeout(c, [d.id])[d.id]
    if p is None:
        p, task = create_promise(c, d.id, d.timeout_at, d.param, d.tags, lease=r.lease, ikey=r.ikey)
        out: dict[str, Any] = {"promise": p}
        if r.lease is not None:
            out["task"] = task if task is not None and task.state == "acquired" else None
        return 201, out
    if _matches(p.ikey_create, r.ikey) and (p.pending or not r.strict):
        return 200, {"promise": p, "task": None} if r.lease is not None else {"promise": p}
    return fail(PROMISE_EXISTS)


def complete(c: Ctx, r: RestPromiseComplete) -> Resp:
    """201 settled now; 200 a repeat (same key) or a late non-strict completion of a timed-out
    promise; 403 already completed otherwise; 404 unknown."""
    s = r.settle
    before = c.tx.get_promise(s.id)
    if before is None:
        return fail(PROMISE_NOT_FOUND)
    p = lazy_timeout(c, [s.id])[s.id]
    assert p is not None
    if before.pending and not p.pending:  # it timed out just now
        if p.state == "resolved" or r.strict or r.always_timed_out:
            return fail(ALREADY_COMPLETED[p.state])
        return 200, {"promise": p}
    if p.pending:
        return 201, {"promise": settle(c, p, s.state, s.value, ikey=r.ikey)}
    if _matches(p.ikey_settle, r.ikey) and (not r.strict or p.state == s.state):
        return 200, {"promise": p}
    if p.state == "rejected_timedout" and not r.strict and not r.always_timed_out:
        return 200, {"promise": p}
    return fail(ALREADY_COMPLETED[p.state])


def search(c: Ctx, r: RestPromiseSearch) -> Resp:
    rows = c.tx.search_promises_by_id(r.pattern, r.states, r.tags, r.cursor, r.limit + 1)
    rows = [p for p in rows if within(c.scope, p.id)]  # belt and braces: the route scopes the pattern
    more = len(rows) > r.limit
    page = rows[: r.limit]
    return 200, {"promises": page, "cursor": page[-1].id if more else None}


def callback(c: Ctx, r: RestCallback) -> Resp:
    """Resume the root promise's task when `promise` settles. 201 registered (or already there);
    200 with no callback when the promise (or the root) is settled already: the caller goes on.
    The resume goes to `recv` (e.g. `poll://any@group/<the caller's process>`: that process has
    the run in memory, another would replay it) when the REST API routed the root (its
    `resonate:invoke` tag: the engine's `resonate:target` is derived, and the last registration
    names it); an envelope protocol root keeps its own target."""
    if r.promise == r.root:
        return 400, {"code": 4000, "message": "A promise cannot await itself"}
    touched = lazy_timeout(c, [r.promise, r.root])
    p, root = touched[r.promise], touched[r.root]
    if p is None or root is None:
        return fail(PROMISE_NOT_FOUND)
    if not p.pending or not root.pending:
        return 200, {"promise": p, "callback": None}
    task = c.tx.get_task(root.id)
    if task is None or task.state == "fulfilled":
        return 400, {"code": 4000, "message": "The root promise has no task to resume"}
    if INVOKE in root.tags and root.target != r.address:  # resume where the caller asked (its process first)
        c.tx.update_promise(replace(root, tags={**root.tags, TARGET: r.address}))
    c.tx.add_callback(p.id, root.id, ready=False)
    cb = {"id": ids.resume_id(root.id, p.id), "promiseId": p.id, "rootPromiseId": root.id,
          "timeout": r.timeout, "createdOn": c.now}
    return 201, {"promise": p, "callback": cb}


def subscribe(c: Ctx, r: RestSubscribe) -> Resp:
    """Notify the address when `promise` settles: 201 registered; 200 with no callback when it
    is settled already."""
    p = lazy_timeout(c, [r.promise])[r.promise]
    if p is None:
        return fail(PROMISE_NOT_FOUND)
    if not p.pending:
        return 200, {"promise": p, "callback": None}
    cap = c.cfg.max_listeners
    if c.tx.count_listeners(p.id, other_than=r.address) >= cap:
        return 400, {"code": 4000, "message": f"Too many subscriptions on this promise (max {cap})"}
    c.tx.add_listener(p.id, r.address)
    cb = {"id": f"__notify:{p.id}:{r.subscriber}", "promiseId": p.id, "timeout": r.timeout, "createdOn": c.now}
    return 201, {"promise": p, "callback": cb}


# ---- tasks -----------------------------------------------------------------------------------


def _task(c: Ctx, task_id: str) -> tuple[ids.TaskRef | None, Task | None]:
    ref = ids.parse(task_id)
    if ref is None:
        return None, None
    lazy_timeout(c, [ref.root])
    return ref, c.tx.get_task(ref.root)


def _leased(c: Ctx, t: Task, counter: int) -> bool:
    """Claimed with this counter, and the lease has not lapsed."""
    return (t.state == "acquired" and t.version == counter + 1 and t.timer_type == LEASE
            and t.timer_at is not None and t.timer_at > c.now)


def claim(c: Ctx, r: RestTaskClaim) -> Resp:
    """201 with the root promise (and, for a resume, the leaf that settled); 403 when it is not
    waiting to be claimed with this counter; 404 unknown."""
    ref, t = _task(c, r.id)
    if ref is None or t is None:
        return fail(TASK_NOT_FOUND)
    if t.state != "pending":
        return fail(TASK_CLAIMED if t.state == "acquired" else TASK_COMPLETED)
    if t.version != r.counter:
        return fail(TASK_COUNTER)
    leaf = c.tx.get_promise(ref.leaf) if ref.leaf is not None else None
    if ref.leaf is not None and (leaf is None or leaf.pending):
        return fail(TASK_STATE)
    acquire(c, t, r.pid, r.ttl)
    root = c.tx.get_promise(ref.root)
    assert root is not None
    out: dict[str, Any] = {"type": "resume" if leaf is not None else "invoke", "root": root}
    if leaf is not None:
        out["leaf"] = leaf
    return 201, out


def complete_task(c: Ctx, r: RestTaskComplete) -> Resp:
    """The claimer is done with this run: the root promise settled (its task is fulfilled
    already), or it waits on callbacks (suspended; resumed at once if one is ready). 201 now,
    200 completed before (any counter), 403 not claimed with this counter (or the lease lapsed).
    With `settle` the claimer also settles the root promise (`_settle_root`)."""
    ref, t = _task(c, r.id)
    if ref is None or t is None:
        return fail(TASK_NOT_FOUND)
    if r.settle is not None:
        return _settle_root(c, r, ref.root, t)
    if t.state in ("fulfilled", "suspended", "halted"):
        return 200, {"task": t}
    if not _leased(c, t, r.counter):
        return fail(TASK_COUNTER if t.state == "acquired" else TASK_STATE)
    if c.tx.ready_awaited(t.id):
        t = redispatch(c, t)
    else:
        t = set_timer(c, t, None, None, state="suspended")
    return 201, {"task": t}


def _settle_root(c: Ctx, r: RestTaskComplete, root: str, t: Task) -> Resp:
    """Settle the root promise as the claimer of this run (the settle cascade fulfills the task):
    201 now; 200 when it is settled already in this state (a repeat); 403 when it is settled in
    another state (timed out, say), or the task is not claimed with this counter."""
    assert r.settle is not None
    state, value = r.settle
    p = c.tx.get_promise(root)
    assert p is not None
    if not p.pending:
        return (200, {"task": t}) if p.state == state else fail(ALREADY_COMPLETED[p.state])
    if not _leased(c, t, r.counter):
        return fail(TASK_COUNTER if t.state == "acquired" else TASK_STATE)
    settle(c, p, state, value)
    t2 = c.tx.get_task(t.id)
    return 201, {"task": t2 if t2 is not None else t}


def drop(c: Ctx, r: RestTaskDrop) -> Resp:
    """Give a claimed task back (sent again with a new counter); 200 also when it was not claimed."""
    ref, t = _task(c, r.id)
    if ref is None or t is None:
        return fail(TASK_NOT_FOUND)
    if t.state == "acquired":
        if t.version != r.counter + 1:
            return fail(TASK_COUNTER)
        redispatch(c, t)
    elif t.state == "pending" and t.version != r.counter:
        return fail(TASK_COUNTER)
    return 200, {}


def heartbeat(c: Ctx, r: RestTaskHeartbeat) -> Resp:
    """Extend the lease of every task the process holds (a lapsed lease too, until the timer
    hands the task to someone else); how many."""
    n = 0
    for t in c.tx.tasks_leased_by(r.pid):
        if within(c.scope, t.id) and t.ttl is not None:
            set_timer(c, t, LEASE, c.after(t.ttl), t.pid, t.ttl)
            n += 1
    return 200, {"tasksAffected": n}

