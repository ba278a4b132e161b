"""debug.* operations (docs/protocol.md#debugstart and the kinds after it)."""
from __future__ import annotations

from typing import Any

from shared.delivery.messages import message_json
from shared.engine.core import Ctx, Resp, tasks_wire
from shared.engine.timeouts import process_timeouts
from shared.records import DEBUG_SESSION
from shared.requests import DebugReset, DebugSnap, DebugStart, DebugStop, DebugTick

__all__ = ["DEBUG_SESSION", "debug_reset", "debug_snap", "debug_start", "debug_stop", "debug_tick"]


def debug_start(c: Ctx, r: DebugStart) -> Resp:
    c.tx.set_meta(DEBUG_SESSION, "1")
    c.fx.debug_changed = True
    return 200, {}


def debug_stop(c: Ctx, r: DebugStop) -> Resp:
    c.tx.set_meta(DEBUG_SESSION, None)
    c.fx.debug_changed = True
    return 200, {}


def debug_reset(c: Ctx, r: DebugReset) -> Resp:
    c.tx.reset()
    return 200, {}


def debug_tick(c: Ctx, r: DebugTick) -> Resp:
    c.now = r.time
    process_timeouts(c, target_only=True, limit=2**62)  # the reference's target-gated tick
    return 200, []


def debug_snap(c: Ctx, r: DebugSnap) -> Resp:
    tx = c.tx
    promises = tx.all_promises()
    tasks = tx.all_tasks()
    by_id = {p.id: p for p in promises}
    outbox = tx.outbox()
    executes = sorted((m for m in outbox if m.kind == "execute"), key=lambda m: m.id)
    unblocks = sorted((m for m in outbox if m.kind == "unblock"), key=lambda m: (m.id, m.address))
    messages: list[dict[str, Any]] = [{"address": m.address, "message": message_json(m, None)} for m in executes]
    messages += [{"address": m.address, "message": message_json(m, by_id[m.id].wire())}
                 for m in unblocks if m.id in by_id]
    return 200, {
        "promises": [p.wire() for p in promises],
        "promiseTimeouts": [{"id": p.id, "timeout": p.timeout_at} for p in promises
                            if p.pending and p.target is not None],
        "callbacks": [{"awaiter": w, "awaited": a} for a, w, ready in tx.all_callbacks() if not ready],
        "listeners": [{"id": p, "address": a} for p, a in tx.all_listeners()],
        "tasks": tasks_wire(c, tasks),
        "taskTimeouts": [{"id": t.id, "type": t.timer_type, "timeout": t.timer_at} for t in tasks
                         if t.timer_at is not None],
        "messages": messages,
    }
