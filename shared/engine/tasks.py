"""task.* operations (docs/protocol.md#5-operations, task.get to task.search)."""
from __future__ import annotations

from typing import Any

from shared.engine.core import (
    Ctx,
    Resp,
    acquire,
    create_promise,
    held,
    lazy_timeout,
    preload,
    redispatch,
    set_timer,
    settle,
    task_wire,
    tasks_wire,
)
from shared.protocol import VERSION
from shared.records import LEASE, Task
from shared.requests import (
    CreateData,
    TaskAcquire,
    TaskContinue,
    TaskCreate,
    TaskFence,
    TaskFulfill,
    TaskGet,
    TaskHalt,
    TaskHeartbeat,
    TaskRelease,
    TaskSearch,
    TaskSuspend,
)
from shared.scope import within


def _touch_task(c: Ctx, id: str) -> Task | None:
    """LAZY_TIMEOUT of the task's promise, then the task as it stands."""
    lazy_timeout(c, [id])
    return c.tx.get_task(id)


def task_get(c: Ctx, r: TaskGet) -> Resp:
    t = _touch_task(c, r.id)
    if t is None:
        return 404, "Task not found"
    return 200, {"task": task_wire(c, t)}


def task_create(c: Ctx, r: TaskCreate) -> Resp:
    d = r.create
    p = lazy_timeout(c, [d.id])[d.id]
    if p is None:
        p, t = create_promise(c, d.id, d.timeout_at, d.param, d.tags, lease=(r.pid, r.ttl))
        assert t is not None
        pre = preload(c, d.id) if t.state == "acquired" else []
        return 200, {"task": task_wire(c, t), "promise": p.wire(), "preload": pre}
    t = c.tx.get_task(d.id)
    if t is None:
        return 422, "The promise does not have a resonate:target tag"
    if t.state == "fulfilled":
        return 200, {"task": task_wire(c, t), "promise": p.wire(), "preload": []}
    if t.state != "pending":
        return 409, "Already exists"
    t = acquire(c, t, r.pid, r.ttl)
    return 200, {"task": task_wire(c, t), "promise": p.wire(), "preload": preload(c, d.id)}


def task_acquire(c: Ctx, r: TaskAcquire) -> Resp:
    t = _touch_task(c, r.id)
    if t is None:
        return 404, "Task not found"
    if t.state != "pending":
        return 409, "Task is not pending"
    if t.version != r.version:
        return 409, "Version mismatch"
    t = acquire(c, t, r.pid, r.ttl)
    p = c.tx.get_promise(r.id)
    assert p is not None
    return 200, {"task": task_wire(c, t), "promise": p.wire(), "preload": preload(c, r.id)}


def task_release(c: Ctx, r: TaskRelease) -> Resp:
    t = _touch_task(c, r.id)
    if t is None:
        return 404, "Task not found"
    if not held(t, r.version):
        return 409, "Task version mismatch or invalid state"
    redispatch(c, t)
    return 200, {}


def task_fulfill(c: Ctx, r: TaskFulfill) -> Resp:
    t = _touch_task(c, r.id)
    if t is None:
        return 404, "Task not found"
    if not held(t, r.version):
        return 409, "Task version mismatch or invalid state"
    p = c.tx.get_promise(r.id)
    assert p is not None and p.pending
    p = settle(c, p, r.settle.state, r.settle.value)  # fulfils the task and drops its callbacks
    return 200, {"promise": p.wire()}


def task_suspend(c: Ctx, r: TaskSuspend) -> Resp:
    awaited = list(dict.fromkeys(r.awaited))
    touched = lazy_timeout(c, [r.id, *awaited])
    t = c.tx.get_task(r.id)
    if t is None:
        return 404, "Task not found"
    if not held(t, r.version):
        return 409, "Task is not acquired or version mismatch"
    promises = [touched[a] for a in awaited]
    if any(p is None for p in promises):
        return 422, "Awaited promise not found"
    c.tx.delete_callbacks(t.id, ready_only=True)
    if all(p.pending for p in promises):  # type: ignore[union-attr]
        for a in awaited:
            c.tx.add_callback(a, t.id, ready=False)
        set_timer(c, t, None, None, state="suspended")
        return 200, {}
    return 300, {"preload": preload(c, t.id)}


def task_fence(c: Ctx, r: TaskFence) -> Resp:
    op = r.op
    touched = lazy_timeout(c, [r.id, op.id])
    t = c.tx.get_task(r.id)
    if t is None:
        return 404, "Task not found"
    if not held(t, r.version):
        return 409, "Version mismatch"
    status, data = 200, None  # type: tuple[int, Any]
    p = touched[op.id]
    if isinstance(op, CreateData):
        if p is None:  # a step of the running task: never routed (docs/routing.md#what-is-routed)
            p, _ = create_promise(c, op.id, op.timeout_at, op.param, op.tags, route=False)
        data = {"promise": p.wire()}
    elif p is None:
        status, data = 404, "Promise not found"
    else:
        if p.pending:
            p = settle(c, p, op.state, op.value)
        data = {"promise": p.wire()}
    inner: dict[str, Any] = {"kind": r.action_kind,
                             "head": {"corrId": c.corr_id, "status": status, "version": VERSION}, "data": data}
    return 200, {"action": inner, "preload": preload(c, r.id)}


def task_heartbeat(c: Ctx, r: TaskHeartbeat) -> Resp:
    if not r.tasks:  # compat (docs/protocol.md#12-profiles): renew every lease the process holds (in scope)
        for t in c.tx.tasks_leased_by(r.pid):
            if within(c.scope, t.id):
                _renew(c, t)
        return 200, {}
    for id, version in r.tasks:
        if not id:
            continue
        found = c.tx.get_task(id)
        if found is not None and held(found, version) and found.timer_type == LEASE and found.pid == r.pid:
            _renew(c, found)
    return 200, {}


def _renew(c: Ctx, t: Task) -> None:
    """Extend an acquired task's lease by its ttl from now."""
    assert t.ttl is not None and t.pid is not None  # an acquired task holds a lease
    set_timer(c, t, LEASE, c.after(t.ttl), t.pid, t.ttl)


def task_halt(c: Ctx, r: TaskHalt) -> Resp:
    t = _touch_task(c, r.id)
    if t is None:
        return 404, "Task not found"
    if t.state == "fulfilled":
        return 409, "Task is fulfilled"
    if t.state != "halted":
        set_timer(c, t, None, None, state="halted")
    return 200, {}


def task_continue(c: Ctx, r: TaskContinue) -> Resp:
    t = _touch_task(c, r.id)
    if t is None:
        return 404, "Task not found"
    if t.state != "halted":
        return 409, "Task is not halted"
    redispatch(c, t)
    return 200, {}


def task_search(c: Ctx, r: TaskSearch) -> Resp:
    rows = c.tx.search_tasks(r.state, r.cursor, r.limit + 1)
    out: dict[str, Any] = {"tasks": tasks_wire(c, rows[: r.limit])}
    if len(rows) > r.limit:
        out["cursor"] = rows[r.limit - 1].id
    return 200, out
