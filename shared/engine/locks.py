"""The older server's distributed locks (docs/legacy-api.md#locks) as operations of the one engine.

A lock is held by an execution of a process until `expires_at`; a lock whose `expires_at <= now`
is as good as absent (anyone may take it; its holder can neither release nor extend it). No
polling sweep: every write records its expiry as a deadline (`Effects.add_deadline`), the
store's `next_deadline` includes lock expiry, and the background timeout pass deletes due locks
(`shared/engine/timeouts.py`).

A heartbeat names a process, not a lock, so it is confined here to the locks within the caller's
scope (a prefix token extends only its own tenant's locks of a process id another tenant may
share).
"""
from __future__ import annotations

from dataclasses import replace

from shared.engine.core import Ctx, Resp
from shared.records import Lock
from shared.requests_locks import LockAcquire, LockHeartbeat, LockRelease
from shared.scope import within

# the REST API's error codes (its HTTP status is the first three digits)
LOCK_HELD, LOCK_NOT_FOUND = 4034, 4042
MESSAGES = {LOCK_HELD: "The lock is already acquired", LOCK_NOT_FOUND: "The specified lock was not found"}


def fail(code: int) -> Resp:
    return code // 10, {"code": code, "message": MESSAGES[code]}


def _live(c: Ctx, lock: Lock | None) -> Lock | None:
    """The lock unless it has expired (the timer pass may not have deleted it yet)."""
    return lock if lock is not None and lock.expires_at > c.now else None


def acquire(c: Ctx, r: LockAcquire) -> Resp:
    """201 with the lock: taken now, or re-entered by its holder (process, ttl and expiry
    refreshed); 403 while another execution holds it."""
    held = _live(c, c.tx.get_lock(r.resource))
    if held is not None and held.execution_id != r.execution:
        return fail(LOCK_HELD)
    lock = Lock(r.resource, r.execution, r.process, r.ttl, c.after(r.ttl))
    c.tx.put_lock(lock)
    c.fx.add_deadline(lock.expires_at)
    return 201, {"lock": lock}


def release(c: Ctx, r: LockRelease) -> Resp:
    """204 released; 404 when that execution does not hold it (never did, someone else does, or
    its hold expired)."""
    held = _live(c, c.tx.get_lock(r.resource))
    if held is None or held.execution_id != r.execution:
        return fail(LOCK_NOT_FOUND)
    c.tx.delete_lock(r.resource)
    return 204, {}


def heartbeat(c: Ctx, r: LockHeartbeat) -> Resp:
    """Every unexpired lock of the process (within the caller's scope) now expires its own ttl
    from now; how many."""
    n = 0
    for lock in c.tx.locks_of_process(r.process):
        if _live(c, lock) is None or not within(c.scope, lock.resource_id):
            continue
        extended = replace(lock, expires_at=c.after(lock.ttl))
        c.tx.put_lock(extended)
        c.fx.add_deadline(extended.expires_at)
        n += 1
    return 200, {"locksAffected": n}
