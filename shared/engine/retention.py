"""Retention: deleting finished workflows (docs/operations.md#retention).

A workflow is every promise sharing one key: its `resonate:origin` tag, or its own id when it has
none. A workflow is finished at `before` when every promise of it is settled, the last one at or
before `before`; then it is deleted whole, with each promise's task, callbacks, listeners and
outbox rows (`Tx.delete_promises`). Never part of one that is still running: a workflow listed on
a snapshot is checked again inside the deleting transaction, so a promise created or settled
meanwhile keeps it. Schedules and locks are never deleted.

No clock here: the caller passes `before` (now minus the horizon).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.records import Promise
from shared.storage.base import Tx


@dataclass(frozen=True, slots=True)
class Pass:
    """What one transaction did: workflows deleted whole, promises deleted (some may belong to a
    workflow too large for one transaction, finished by the next), and how many of the listed
    keys it is done with (the next transaction starts after them)."""

    workflows: int
    promises: int
    consumed: int


def finished(members: Sequence[Promise], before: int) -> bool:
    """Every promise settled, the last at or before `before` (an empty workflow is gone already)."""
    return bool(members) and all(p.state != "pending" and p.settled_at is not None and p.settled_at <= before
                                 for p in members)


def purge_workflows(tx: Tx, keys: Sequence[str], before: int, max_promises: int, dry_run: bool = False) -> Pass:
    """Delete the finished workflows among `keys` (in order) until `max_promises` promises are
    deleted. A workflow larger than what is left of the budget is deleted in part when it comes
    first (the rest stays finished, and the next call continues it), else left to the next call.
    `dry_run`: count what would be deleted, without a budget, and delete nothing."""
    workflows = promises = consumed = 0
    for key in keys:
        members = tx.workflow_promises(key)
        if not finished(members, before):
            consumed += 1  # it changed since it was listed, or is gone: not ours to delete
            continue
        if dry_run:
            workflows, promises, consumed = workflows + 1, promises + len(members), consumed + 1
            continue
        room = max_promises - promises
        if len(members) > room:
            if promises == 0:  # alone too large for one transaction: its first `room` promises now
                promises = tx.delete_promises([p.id for p in members[:room]])
            break
        promises += tx.delete_promises([p.id for p in members])
        workflows, consumed = workflows + 1, consumed + 1
    return Pass(workflows, promises, consumed)
