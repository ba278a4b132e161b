"""The shared procedures (docs/protocol.md#6-shared-procedures): the only place that knows how
state changes cascade.

Every function takes a `Ctx` (the open transaction, the request's `now`, the profile and the
effects collector). Nothing here reads the clock or does I/O beyond the transaction.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from shared.config_routes import Compiled, first_target
from shared.protocol import I64_MAX
from shared.records import DELAY, INVOKE, LEASE, RETRY, TARGET, TIMER, Effects, Message, Promise, Task
from shared.scope import within
from shared.storage.base import Tx, ordered_ids

Resp = tuple[int, Any]
SCOPE = "resonate:scope"  # the SDKs' tag: `local` marks a step the SDK runs and settles in-process


@dataclass(frozen=True, slots=True)
class EngineConfig:
    retry_timeout: int = 30000  # R
    # tasks of promises routed by the REST API's `resonate:invoke` tag: re-sent sooner when
    # nobody claims them (its SDKs drop streams without closing them; legacy.claim_timeout)
    claim_timeout: int = 5000
    strict: bool = False  # strict profile (docs/protocol.md#12-profiles); compat otherwise
    schedule_catch_up_cap: int = 1000
    max_listeners: int = 1000  # per promise (promises.max_listeners)
    routes: Compiled = ()  # tasks.routes, compiled (`shared.config_routes`; `routed` below)

    @property
    def timeouts_target_only(self) -> bool:
        """Background promise timeouts: every pending promise in compat, only those with a target in
        strict (docs/protocol.md#66-background-timeouts)."""
        return self.strict


@dataclass(slots=True)
class Ctx:
    tx: Tx
    now: int
    cfg: EngineConfig
    corr_id: str = ""
    scope: str | None = None  # the caller's id prefix (a prefix token); None: unrestricted
    fx: Effects = field(default_factory=Effects)
    # the (group, worker id) pairs holding an SSE stream now (the console's workers view); None: no hub
    presence: Callable[[], Iterable[tuple[str, str]]] | None = None

    def after(self, ms: int) -> int:
        """now + ms, saturated to the 64-bit range that every store can hold."""
        return sat(self.now + ms)


def sat(t: int) -> int:
    return min(t, I64_MAX)


def timeout_state(tags: dict[str, str]) -> str:
    return "resolved" if tags.get(TIMER) == "true" else "rejected_timedout"


def task_wire(c: Ctx, t: Task) -> dict[str, Any]:
    return tasks_wire(c, [t])[0]


def tasks_wire(c: Ctx, tasks: list[Task]) -> list[dict[str, Any]]:
    """Wire shapes with `resumes` (ready callbacks), counted for the whole list in one query."""
    counts = c.tx.ready_counts([t.id for t in tasks if t.state != "fulfilled"])
    return [t.wire(counts.get(t.id, 0) if t.state != "fulfilled" else 0) for t in tasks]


def set_timer(c: Ctx, t: Task, kind: int | None, at: int | None, pid: str | None = None,
              ttl: int | None = None, **changes: Any) -> Task:
    t2 = replace(t, timer_type=kind, timer_at=at, pid=pid, ttl=ttl, **changes)
    c.tx.update_task(t2)
    if at is not None:
        c.fx.add_deadline(at)
    return t2


def enqueue_execute(c: Ctx, task_id: str, version: int, address: str | None) -> None:
    if address is None:
        return
    m = Message("execute", task_id, address, version)
    c.tx.enqueue(m)
    c.fx.messages.append(m)


def timeout_promises(c: Ctx, expired: list[Promise]) -> list[Promise]:
    """The three phases of the lazy timeout (docs/protocol.md#61-lazy-timeout), also step 1 of the
    background pass, in order (phase order avoids spurious resumes)."""
    settled = []
    for p in expired:
        p2 = replace(p, state=timeout_state(p.tags), settled_at=p.timeout_at)
        c.tx.update_promise(p2)
        settled.append(p2)
    for p in settled:
        fulfill_task(c, p.id)
    for p in settled:
        resume_awaiters(c, p.id)
        unblock_listeners(c, p)
    return settled


def lazy_timeout(c: Ctx, ids: list[str]) -> dict[str, Promise | None]:
    """The lazy timeout (docs/protocol.md#61-lazy-timeout); returns the touched promises as they stand afterwards."""
    found: dict[str, Promise | None] = {}
    expired = []
    for id in ordered_ids(ids):
        p = found[id] = c.tx.get_promise(id)
        if p is not None and p.pending and c.now >= p.timeout_at:
            expired.append(p)
    if expired:
        for p in timeout_promises(c, expired):
            found[p.id] = p
    return found


def settle(c: Ctx, p: Promise, state: str, value: dict[str, Any], ikey: str | None = None) -> Promise:
    """The settle cascade (docs/protocol.md#62-settle-cascade); precondition: p is pending.
    `ikey`: the REST API's idempotency key of the settling request (docs/legacy-api.md)."""
    p2 = replace(p, state=state, value=value, settled_at=c.now, ikey_settle=ikey)
    c.tx.update_promise(p2)
    fulfill_task(c, p.id)
    resume_awaiters(c, p.id)
    unblock_listeners(c, p2)
    return p2


def fulfill_task(c: Ctx, id: str) -> None:
    t = c.tx.get_task(id)
    if t is not None and t.state != "fulfilled":
        set_timer(c, t, None, None, state="fulfilled")
        c.tx.delete_callbacks(id, ready_only=False)


def resume_awaiters(c: Ctx, awaited: str) -> None:
    for awaiter in c.tx.mark_callbacks_ready(awaited):
        t = c.tx.get_task(awaiter)
        if t is not None and t.state == "suspended":
            redispatch(c, t)


def retry_after(c: Ctx, tags: dict[str, str]) -> int:
    """ms until an unclaimed execute is sent again."""
    return min(c.cfg.claim_timeout, c.cfg.retry_timeout) if INVOKE in tags else c.cfg.retry_timeout


def redispatch(c: Ctx, t: Task) -> Task:
    """Pending again, a fresh retry timer, an execute at the same version to the promise's target
    (docs/protocol.md#63-resume-and-redispatch): a resume, and equally release, continue, retry
    timeouts and lease expiry."""
    p = c.tx.get_promise(t.id)
    t2 = set_timer(c, t, RETRY, c.after(retry_after(c, p.tags if p else {})), state="pending")
    enqueue_execute(c, t.id, t.version, p.target if p else None)
    return t2


def unblock_listeners(c: Ctx, p: Promise) -> None:
    for address in c.tx.pop_listeners(p.id):
        m = Message("unblock", p.id, address)
        c.tx.enqueue(m)
        c.fx.payloads[p.id] = p.wire()
        c.fx.messages.append(m)


def routed(c: Ctx, id: str, tags: dict[str, str]) -> dict[str, str]:
    """The operator's routing rules (tasks.routes, docs/routing.md): tags without a target whose
    promise id matches a rule get its target (the first match), stored like any other tag. Not
    for the promises an SDK settles itself, whatever their id: local steps (`resonate:scope` =
    `local`, both SDK generations tag them so) and timers."""
    if not c.cfg.routes or TARGET in tags or tags.get(SCOPE) == "local" or tags.get(TIMER) == "true":
        return tags
    target = first_target(c.cfg.routes, id)
    return tags if target is None else {**tags, TARGET: target}


def create_promise(c: Ctx, id: str, timeout_at: int, param: dict[str, Any], tags: dict[str, str], *,
                   lease: tuple[str, int] | None = None, fired_at: int | None = None,
                   ikey: str | None = None, route: bool = True) -> tuple[Promise, Task | None]:
    """create_promise (docs/protocol.md#65-create_promise). `lease` makes the task born acquired
    (task.create); `fired_at` marks a schedule firing (createdAt = the instant, no delay honoured);
    `ikey`: the REST API's idempotency key of the creating request (docs/legacy-api.md);
    `route`: apply the routing rules (`routed`; every create but a running task's own steps)."""
    if route:
        tags = routed(c, id, tags)
    target = tags.get(TARGET)
    now = c.now
    if now >= timeout_at:
        created = fired_at if fired_at is not None else timeout_at
        p = Promise(id, timeout_state(tags), param, {}, tags, timeout_at, created, timeout_at, ikey_create=ikey)
        c.tx.insert_promise(p)
        task = Task(id, "fulfilled", 0) if target is not None else None
        if task:
            c.tx.insert_task(task)
        return p, task
    p = Promise(id, "pending", param, {}, tags, timeout_at, fired_at if fired_at is not None else now,
                ikey_create=ikey)
    c.tx.insert_promise(p)
    c.fx.add_deadline(timeout_at)
    if target is None:
        return p, None
    if lease is not None:
        pid, ttl = lease
        task = Task(id, "acquired", 1, LEASE, c.after(ttl), pid, ttl)
        c.tx.insert_task(task)
        c.fx.add_deadline(task.timer_at)  # type: ignore[arg-type]
        return p, task
    delay = int(tags[DELAY]) if DELAY in tags and fired_at is None else None
    if delay is not None and now < delay:
        task = Task(id, "pending", 0, RETRY, delay)
        c.tx.insert_task(task)
        c.fx.add_deadline(delay)
        return p, task
    task = Task(id, "pending", 0, RETRY, c.after(retry_after(c, tags)))
    c.tx.insert_task(task)
    c.fx.add_deadline(task.timer_at)  # type: ignore[arg-type]
    enqueue_execute(c, id, 0, target)
    return p, task


def acquire(c: Ctx, t: Task, pid: str, ttl: int) -> Task:
    t2 = set_timer(c, t, LEASE, c.after(ttl), pid, ttl, state="acquired", version=t.version + 1)
    c.tx.delete_callbacks(t.id, ready_only=True)
    return t2


def preload(c: Ctx, task_id: str) -> list[dict[str, Any]]:
    """The preload (docs/protocol.md#64-preload): the promises sharing the task promise's branch, as stored; never one
    outside the caller's scope (an admin may have put another tenant's promise on the branch)."""
    p = c.tx.get_promise(task_id)
    branch = p.branch if p else None
    if not branch:
        return []
    return [x.wire() for x in c.tx.promises_by_branch(branch)
            if x.id != task_id and within(c.scope, x.id)]


def held(t: Task | None, version: int) -> bool:
    return t is not None and t.state == "acquired" and t.version == version
