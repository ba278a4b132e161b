"""The background timeout pass (docs/protocol.md#66-background-timeouts): promise timeouts, task
retries, lease expiry, schedules, lock expiry."""
from __future__ import annotations

from shared.engine.core import Ctx, redispatch, timeout_promises
from shared.engine.schedules import fire_due
from shared.records import LEASE, RETRY


def process_timeouts(c: Ctx, target_only: bool, limit: int) -> int:
    """Apply everything due at c.now, at most `limit` rows per step; returns the rows handled.

    The background loop calls it until it returns 0; `debug.tick` calls it once with no limit.
    """
    handled = 0
    expired = c.tx.due_promises(c.now, target_only, limit)
    if expired:
        timeout_promises(c, expired)
        c.fx.due += [("promise", p.timeout_at) for p in expired]
    handled += len(expired)
    due = c.tx.due_tasks(c.now, limit)
    for t in due:  # retries first, then leases (a lease expiring now yields exactly one execute)
        if t.timer_type == RETRY and t.state == "pending":
            redispatch(c, t)
            c.fx.due.append(("retry", t.timer_at))  # type: ignore[arg-type]
            handled += 1
    for t in due:
        if t.timer_type == LEASE and t.state == "acquired":
            redispatch(c, t)
            c.fx.due.append(("lease", t.timer_at))  # type: ignore[arg-type]
            handled += 1
    schedules = c.tx.due_schedules(c.now, limit)
    for s in schedules:
        c.fx.due.append(("schedule", s.next_run_at))
        fire_due(c, s)
    handled += len(schedules)
    locks = c.tx.due_locks(c.now, limit)  # the REST API's locks (docs/legacy-api.md#locks)
    for lk in locks:
        c.tx.delete_lock(lk.resource_id)
    handled += len(locks)
    return handled
