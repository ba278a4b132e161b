"""promise.* operations (docs/protocol.md#5-operations, promise.get to promise.search)."""
from __future__ import annotations

from shared.engine.core import Ctx, Resp, create_promise, lazy_timeout, redispatch, settle
from shared.requests import PromiseCreate, PromiseGet, PromiseSearch, PromiseSettle, RegisterCallback, RegisterListener


def promise_get(c: Ctx, r: PromiseGet) -> Resp:
    p = lazy_timeout(c, [r.id])[r.id]
    if p is None:
        return 404, "Promise not found"
    return 200, {"promise": p.wire()}


def promise_create(c: Ctx, r: PromiseCreate) -> Resp:
    d = r.create
    p = lazy_timeout(c, [d.id])[d.id]
    if p is None:
        p, _ = create_promise(c, d.id, d.timeout_at, d.param, d.tags)
    return 200, {"promise": p.wire()}


def promise_settle(c: Ctx, r: PromiseSettle) -> Resp:
    s = r.settle
    p = lazy_timeout(c, [s.id])[s.id]
    if p is None:
        return 404, "Promise not found"
    if p.pending:
        p = settle(c, p, s.state, s.value)
    return 200, {"promise": p.wire()}


def promise_register_callback(c: Ctx, r: RegisterCallback) -> Resp:
    touched = lazy_timeout(c, [r.awaited, r.awaiter])
    awaited = touched[r.awaited]
    if awaited is None:
        return 404, "Awaited promise not found"
    awaiter = touched[r.awaiter]
    if awaiter is None:
        return 422, "Awaiter promise not found"
    if awaiter.target is None:
        return 422, "Awaiter promise has no resonate:target tag"
    if awaiter.pending:
        if awaited.pending:
            c.tx.add_callback(awaited.id, awaiter.id, ready=False)
        else:
            t = c.tx.get_task(awaiter.id)
            if t is not None and t.state == "suspended":
                t = redispatch(c, t)
            if t is not None and t.state in ("pending", "acquired"):
                c.tx.add_callback(awaited.id, awaiter.id, ready=True)
    return 200, {"promise": awaited.wire()}


def promise_register_listener(c: Ctx, r: RegisterListener) -> Resp:
    p = lazy_timeout(c, [r.awaited])[r.awaited]
    if p is None:
        return 404, "Awaited promise not found"
    if p.pending:
        cap = c.cfg.max_listeners  # an address already registered does not count twice
        if c.tx.count_listeners(p.id, other_than=r.address) >= cap:
            return 400, f"Too many listeners on this promise (max {cap})"
        c.tx.add_listener(p.id, r.address)
    return 200, {"promise": p.wire()}


def promise_search(c: Ctx, r: PromiseSearch) -> Resp:
    rows = c.tx.search_promises(r.state, r.tags, r.cursor, r.limit + 1)
    out: dict = {"promises": [p.wire() for p in rows[: r.limit]]}
    if len(rows) > r.limit:
        out["cursor"] = rows[r.limit - 1].id
    return 200, out
