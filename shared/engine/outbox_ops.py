"""outbox.* operations: the operator's view of the outbox and the re-drive of dead rows
(`shared.requests_outbox`; docs/operations.md#dead-letters)."""
from __future__ import annotations

from typing import Any

from shared.engine.core import Ctx, Resp
from shared.records import Message
from shared.requests_outbox import OutboxRedrive, OutboxSearch


def message_wire(seq: int, m: Message, failures: int, dead: bool) -> dict[str, Any]:
    """One row as the CLI shows it; `id` is what `outbox.redrive` takes."""
    out: dict[str, Any] = {"id": seq, "kind": m.kind, "address": m.address, "attempts": failures, "dead": dead}
    if m.kind == "execute":
        out.update(taskId=m.id, version=m.version)
    else:
        out["promiseId"] = m.id
    return out


def outbox_search(c: Ctx, r: OutboxSearch) -> Resp:
    rows = c.tx.outbox_rows(r.dead, r.after, r.limit + 1)
    out: dict[str, Any] = {"messages": [message_wire(*row) for row in rows[: r.limit]]}
    if len(rows) > r.limit:
        out["cursor"] = str(rows[r.limit - 1][0])
    return 200, out


def outbox_redrive(c: Ctx, r: OutboxRedrive) -> Resp:
    """Dead rows become plain queued rows again (no failures counted) and go to delivery after
    the commit, like newly queued messages. Ids that name no dead row (delivered, replaced by a
    new version, never dead) are answered in `skipped` and change nothing."""
    redriven: list[dict[str, Any]] = []
    skipped: list[int] = []
    for seq in (None,) if r.ids is None else r.ids:
        revived = c.tx.revive_dead(seq)
        if not revived and seq is not None:
            skipped.append(seq)
        for row_seq, m in revived:
            redriven.append(message_wire(row_seq, m, 0, False))
            if m.kind == "unblock":
                p = c.tx.get_promise(m.id)
                if p is not None:
                    c.fx.payloads[p.id] = p.wire()
            c.fx.messages.append(m)
            c.fx.revived.append(m)
    return 200, {"redriven": redriven, "skipped": skipped}
