"""What reads the same on every SQL adapter: reset and the snapshot reads, the dead-row mark, the
REST API's id patterns as LIKE/GLOB patterns.

An adapter's Tx mixes this in and provides `_x(sql)` (run a statement, return its rows),
`_w()` (refuse writes in a read-only transaction) and `_row_promise(row)` (decode a promise row).
"""
from __future__ import annotations

from typing import Any

from shared.records import Promise, Task

PROMISE_COLS = "id, state, param, value, tags, timeout_at, created_at, settled_at, ikey_create, ikey_settle"
TASK_COLS = "id, state, version, timer_type, timer_at, pid, ttl"
LOCK_COLS = "resource_id, execution_id, process_id, ttl, expires_at"
DATA_TABLES = ("promises", "tasks", "callbacks", "listeners", "outbox", "schedules", "locks")
# what a deleted promise takes with it (Tx.delete_promises): (table, column naming its id)
CASCADE = (("promises", "id"), ("tasks", "id"), ("callbacks", "awaited"), ("callbacks", "awaiter"),
           ("listeners", "promise_id"), ("outbox", "id"))
DEAD = 2 ** 62  # outbox.claimed_until of a row given up: never claimed again (the cluster outboxes)


LIKE_ESCAPE = "!"  # `LIKE ? ESCAPE '!'`: no backslash, whose meaning in literals differs between servers


def like_pattern(pattern: str) -> str:
    """The REST API's id pattern (`*`: any run of characters, the rest literal) as a LIKE pattern
    escaped with LIKE_ESCAPE; case-sensitive only on a binary / "C" collated column."""
    def lit(part: str) -> str:
        return "".join(LIKE_ESCAPE + ch if ch in "%_" + LIKE_ESCAPE else ch for ch in part)

    return "%".join(lit(part) for part in pattern.split("*"))


def glob_pattern(pattern: str) -> str:
    """The same as a GLOB pattern (SQLite: case-sensitive, unlike its LIKE): GLOB's own
    wildcards, when literal, become one-character classes (`[*]`, `[?]`, `[[]`)."""
    def lit(part: str) -> str:
        return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in part)

    return "*".join(lit(part) for part in pattern.split("*"))


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


def created_range(created: tuple[int | None, int | None], param: str) -> tuple[list[str], dict[str, int]]:
    """The WHERE clauses and named arguments of a creation-time range [from, to) (None: unbounded);
    `param` formats a placeholder from its name (`:{}` for pg8000, `%({})s` for PyMySQL)."""
    clauses, args = [], {}
    for name, op, bound in (("after", ">=", created[0]), ("before", "<", created[1])):
        if bound is not None:
            clauses.append(f"created_at {op} {param.format(name)}")
            args[name] = bound
    return clauses, args
