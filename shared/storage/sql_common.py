"""What reads the same on every SQL adapter: reset and the snapshot reads, the dead-row mark.

An adapter's Tx mixes this in and provides `_x(sql)` (run a statement, return its rows),
`_w()` (refuse writes in a read-only transaction) and `_row_promise(row)` (decode a promise row).
"""
from __future__ import annotations

from typing import Any

from shared.records import Promise, Task

PROMISE_COLS = "id, state, param, value, tags, timeout_at, created_at, settled_at"
TASK_COLS = "id, state, version, timer_type, timer_at, pid, ttl"
DATA_TABLES = ("promises", "tasks", "callbacks", "listeners", "outbox", "schedules")
DEAD = 2 ** 62  # outbox.claimed_until of a row given up: never claimed again (the cluster outboxes)


class PortableQueries:
    def _x(self, sql: str) -> Any: ...
    def _w(self) -> None: ...
    def _row_promise(self, r: Any) -> Promise:
        raise NotImplementedError  # each adapter decodes its own rows

    def reset(self) -> None:
        self._w()
        for table in DATA_TABLES:
            self._x(f"DELETE FROM {table}")

    def all_promises(self) -> list[Promise]:
        return [self._row_promise(r) for r in self._x(f"SELECT {PROMISE_COLS} FROM promises ORDER BY id")]

    def all_tasks(self) -> list[Task]:
        return [Task(*r) for r in self._x(f"SELECT {TASK_COLS} FROM tasks ORDER BY id")]

    def all_callbacks(self) -> list[tuple[str, str, bool]]:
        rows = self._x("SELECT awaited, awaiter, ready FROM callbacks ORDER BY awaiter, awaited")
        return [(a, w, bool(r)) for a, w, r in rows]

    def all_listeners(self) -> list[tuple[str, str]]:
        return [(p, a) for p, a in self._x("SELECT promise_id, address FROM listeners ORDER BY promise_id, address")]
