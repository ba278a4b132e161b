"""SQLite schema, migrations and the `Tx` implementation: every statement the adapter runs.

Results must equal `MemoryStore`'s for every `Tx` method (the differential test checks it).
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from typing import Any

from shared.records import BRANCH, LEASE, TARGET, Lock, Message, Promise, Schedule, Task
from shared.storage.base import NO_RANGE, Created, ReadOnlyViolation, StorageError
from shared.storage.sql_common import CASCADE, LOCK_COLS, PROMISE_COLS, TASK_COLS, PortableQueries, glob_pattern

BUSY_TIMEOUT_MS = 5000

_dumps = json.JSONEncoder(separators=(",", ":")).encode  # prebuilt: json.dumps(**kw) builds one per call
_loads = json.loads


def _obj(s: str) -> dict:
    return {} if s == "{}" else _loads(s)  # empty value/tags are the common case

_ORIGIN = """json_extract(tags, '$."resonate:origin"')"""  # the expression promises_origin indexes
_WORKFLOW = f"COALESCE(NULLIF({_ORIGIN}, ''), id)"  # a promise's workflow key

# Append-only: (version, DDL). Applied in order inside one transaction at open; never edit a
# shipped entry, add a new version instead.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        "CREATE TABLE promises (id TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL, param TEXT NOT NULL,"
        " value TEXT NOT NULL, tags TEXT NOT NULL, target TEXT, branch TEXT, timeout_at INTEGER NOT NULL,"
        " created_at INTEGER NOT NULL, settled_at INTEGER)",
        "CREATE INDEX promises_due ON promises (timeout_at, id) WHERE state = 'pending'",
        "CREATE INDEX promises_due_target ON promises (timeout_at, id) WHERE state = 'pending' AND target IS NOT NULL",
        "CREATE INDEX promises_branch ON promises (branch, id) WHERE branch IS NOT NULL",
        "CREATE TABLE tasks (id TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL, version INTEGER NOT NULL,"
        " timer_type INTEGER, timer_at INTEGER, pid TEXT, ttl INTEGER)",
        "CREATE INDEX tasks_timer ON tasks (timer_at, id) WHERE timer_at IS NOT NULL",
        "CREATE INDEX tasks_pid ON tasks (pid, id) WHERE pid IS NOT NULL",
        "CREATE TABLE callbacks (awaited TEXT NOT NULL, awaiter TEXT NOT NULL, ready INTEGER NOT NULL,"
        " PRIMARY KEY (awaited, awaiter)) WITHOUT ROWID",
        "CREATE INDEX callbacks_awaiter ON callbacks (awaiter, ready)",
        "CREATE TABLE listeners (promise_id TEXT NOT NULL, address TEXT NOT NULL,"
        " PRIMARY KEY (promise_id, address)) WITHOUT ROWID",
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,"
        " kind TEXT NOT NULL, id TEXT NOT NULL, address TEXT NOT NULL, version INTEGER NOT NULL)",
        "CREATE TABLE schedules (id TEXT NOT NULL PRIMARY KEY, cron TEXT NOT NULL, promise_id TEXT NOT NULL,"
        " promise_timeout INTEGER NOT NULL, promise_param TEXT NOT NULL, promise_tags TEXT NOT NULL,"
        " created_at INTEGER NOT NULL, next_run_at INTEGER NOT NULL, last_run_at INTEGER)",
        "CREATE INDEX schedules_due ON schedules (next_run_at, id)",
        "CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)",
    ]),
    # failed deliveries per row; a row whose last allowed attempt failed is dead: kept, never sent
    # again (transports.http_push.max_attempts), until a new version of the message replaces it
    (2, [
        "ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE outbox ADD COLUMN dead INTEGER NOT NULL DEFAULT 0",
    ]),
    # the older server's REST API (docs/legacy-api.md): idempotency keys, the schedules' own
    # description, tags and key, and its distributed locks
    (3, [
        "ALTER TABLE promises ADD COLUMN ikey_create TEXT",
        "ALTER TABLE promises ADD COLUMN ikey_settle TEXT",
        "ALTER TABLE schedules ADD COLUMN description TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE schedules ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE schedules ADD COLUMN ikey TEXT",
        "CREATE TABLE locks (resource_id TEXT NOT NULL PRIMARY KEY, execution_id TEXT NOT NULL,"
        " process_id TEXT NOT NULL, ttl INTEGER NOT NULL, expires_at INTEGER NOT NULL)",
        "CREATE INDEX locks_process ON locks (process_id, resource_id)",
        "CREATE INDEX locks_due ON locks (expires_at, resource_id)",
    ]),
    # retention (shared/engine/retention.py): a workflow's promises by their origin tag, and the
    # outbox rows of deleted promises
    (4, [
        f"CREATE INDEX promises_origin ON promises ({_ORIGIN}, id)",
        "CREATE INDEX outbox_id ON outbox (id)",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

_P, _T, _L = PROMISE_COLS, TASK_COLS, LOCK_COLS
_S = ("id, cron, promise_id, promise_timeout, promise_param, promise_tags, created_at,"
      " next_run_at, last_run_at, description, tags, ikey")
_HAS_TAG = "EXISTS (SELECT 1 FROM json_each({col}) WHERE key = ? AND value = ?)"  # no JSON paths from keys
_INSERT_P = f"INSERT INTO promises ({_P}, target, branch) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_UPDATE_P = ("UPDATE promises SET state = ?, param = ?, value = ?, tags = ?, timeout_at = ?, created_at = ?,"
             " settled_at = ?, ikey_create = ?, ikey_settle = ?, target = ?, branch = ? WHERE id = ?")
_INSERT_T = f"INSERT INTO tasks ({_T}) VALUES (?,?,?,?,?,?,?)"
_UPDATE_T = "UPDATE tasks SET state = ?, version = ?, timer_type = ?, timer_at = ?, pid = ?, ttl = ? WHERE id = ?"
_UPSERT_S = (f"INSERT INTO schedules ({_S}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
             + ", ".join(f"{c} = excluded.{c}" for c in _S.replace(" ", "").split(",")[1:]))
_PUT_L = (f"INSERT INTO locks ({_L}) VALUES (?,?,?,?,?) ON CONFLICT(resource_id) DO UPDATE SET "
          + ", ".join(f"{c} = excluded.{c}" for c in _L.split(", ")[1:]))


def _promise(r: tuple) -> Promise:
    return Promise(r[0], r[1], _obj(r[2]), _obj(r[3]), _obj(r[4]), r[5], r[6], r[7], r[8], r[9])


def _schedule(r: tuple) -> Schedule:
    return Schedule(r[0], r[1], r[2], r[3], _obj(r[4]), _obj(r[5]), r[6], r[7], r[8], r[9], _obj(r[10]), r[11])


def _promise_row(p: Promise) -> tuple:
    return (p.id, p.state, _dumps(p.param), _dumps(p.value), _dumps(p.tags), p.timeout_at,
            p.created_at, p.settled_at, p.ikey_create, p.ikey_settle, p.tags.get(TARGET), p.tags.get(BRANCH))


def _schedule_row(s: Schedule) -> tuple:
    return (s.id, s.cron, s.promise_id, s.promise_timeout, _dumps(s.promise_param), _dumps(s.promise_tags),
            s.created_at, s.next_run_at, s.last_run_at, s.description, _dumps(s.tags), s.ikey)


_SAME = "outbox.version = excluded.version AND outbox.address = excluded.address"


def _msg_key(m: Message) -> str:
    return _dumps(m.key)  # JSON array: unambiguous for any id/address


def _error(e: sqlite3.Error) -> StorageError:
    return StorageError(f"sqlite: {type(e).__name__}: {e}")


class SqliteTx(PortableQueries):
    """`Tx` over one connection inside an open transaction. Read-only instances refuse writes
    before touching the database, so a read-first request fails fast and is re-run as a write."""

    __slots__ = ("_c", "writable")

    def __init__(self, conn: sqlite3.Connection, writable: bool) -> None:
        self._c = conn
        self.writable = writable

    def _x(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        try:
            return self._c.execute(sql, args)
        except sqlite3.Error as e:
            raise _error(e) from e

    def _w(self) -> None:
        if not self.writable:
            raise ReadOnlyViolation()

    def _insert(self, sql: str, row: tuple, what: str) -> None:
        self._w()
        try:
            self._c.execute(sql, row)
        except sqlite3.IntegrityError as e:
            if "UNIQUE" not in str(e):
                raise _error(e) from e
            raise StorageError(f"duplicate {what} {row[0]}") from e  # as MemoryStore raises
        except sqlite3.Error as e:
            raise _error(e) from e

    def _search(self, table: str, cols: str, state: str | None, tags: dict[str, str], tag_col: str,
                cursor: str | None, limit: int, pattern: str | None = None,
                states: Collection[str] | None = None, created: Created = NO_RANGE) -> sqlite3.Cursor:
        """Shared by the searches: filters, id > cursor, by id, at most limit."""
        where, args = ["1"], list[Any]()
        if created[0] is not None:
            where.append("created_at >= ?")
            args.append(created[0])
        if created[1] is not None:
            where.append("created_at < ?")
            args.append(created[1])
        if pattern is not None:  # GLOB: case-sensitive (LIKE is not), and a prefix uses the id index
            where.append("id GLOB ?")
            args.append(glob_pattern(pattern))
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if states is not None:
            where.append("state IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(list(states)))
        if cursor is not None:
            where.append("id > ?")
            args.append(cursor)
        for k, v in tags.items():
            if table == "promises" and k in (TARGET, BRANCH):  # indexed plain columns
                where.append("target = ?" if k == TARGET else "branch = ?")
            else:
                where.append(_HAS_TAG.format(col=tag_col))
                args.append(k)
            args.append(v)
        args.append(limit)
        return self._x(f"SELECT {cols} FROM {table} WHERE {' AND '.join(where)} ORDER BY id LIMIT ?", args)

    # promises ------------------------------------------------------------------------------
    def get_promise(self, id: str) -> Promise | None:
        r = self._x(f"SELECT {_P} FROM promises WHERE id = ?", (id,)).fetchone()
        return None if r is None else _promise(r)

    def get_promises(self, ids: Collection[str]) -> dict[str, Promise]:
        if not ids:
            return {}
        rows = self._x(f"SELECT {_P} FROM promises WHERE id IN (SELECT value FROM json_each(?))",
                       (json.dumps(list(ids)),)).fetchall()
        return {r[0]: _promise(r) for r in rows}

    def insert_promise(self, p: Promise) -> None:
        self._insert(_INSERT_P, _promise_row(p), "promise")

    def update_promise(self, p: Promise) -> None:
        self._w()
        # The whole record, not just state/value/settled_at: MemoryStore replaces (and upserts) too.
        row = _promise_row(p)
        if self._x(_UPDATE_P, row[1:] + row[:1]).rowcount == 0:
            self._x(_INSERT_P, row)

    def search_promises(self, state: str | None, tags: dict[str, str], cursor: str | None,
                        limit: int) -> list[Promise]:
        return [_promise(r) for r in self._search("promises", _P, state, tags, "tags", cursor, limit)]

    def promises_by_branch(self, branch: str) -> list[Promise]:
        return [_promise(r) for r in self._x(f"SELECT {_P} FROM promises WHERE branch = ? ORDER BY id", (branch,))]

    def due_promises(self, t: int, target_only: bool, limit: int) -> list[Promise]:
        # the literal predicates match the partial indexes promises_due / promises_due_target
        extra = " AND target IS NOT NULL" if target_only else ""
        sql = (f"SELECT {_P} FROM promises WHERE state = 'pending'{extra} AND timeout_at <= ?"
               " ORDER BY timeout_at, id LIMIT ?")
        return [_promise(r) for r in self._x(sql, (t, limit))]

    # retention -----------------------------------------------------------------------------
    def retention_page(self, before: int, after: str | None, limit: int) -> list[tuple[str, str, bool]]:
        cols = (f"SELECT id, {_WORKFLOW}, state <> 'pending' AND settled_at IS NOT NULL AND settled_at <= ?"
                " FROM promises")
        if after is None:
            rows = self._x(cols + " ORDER BY id LIMIT ?", (before, limit))
        else:
            rows = self._x(cols + " WHERE id > ? ORDER BY id LIMIT ?", (before, after, limit))
        return [(r[0], r[1], bool(r[2])) for r in rows]

    def workflow_promises(self, key: str, limit: int | None = None) -> list[Promise]:
        sql = (f"SELECT {_P} FROM promises WHERE {_ORIGIN} = ? AND ? <> ''"
               f" UNION ALL SELECT {_P} FROM promises WHERE id = ? AND COALESCE({_ORIGIN}, '') = ''"
               " ORDER BY id LIMIT ?")
        return [_promise(r) for r in self._x(sql, (key, key, key, -1 if limit is None else limit))]

    def delete_promises(self, ids: Collection[str]) -> int:
        if not ids:
            return 0
        self._w()
        within = "IN (SELECT value FROM json_each(?))"
        found = [r[0] for r in self._x(f"SELECT id FROM promises WHERE id {within}", (json.dumps(list(ids)),))]
        if not found:
            return 0
        arg = (json.dumps(found),)
        for table, col in CASCADE:
            self._x(f"DELETE FROM {table} WHERE {col} {within}", arg)
        return len(found)

    # tasks ---------------------------------------------------------------------------------
    def get_task(self, id: str) -> Task | None:
        r = self._x(f"SELECT {_T} FROM tasks WHERE id = ?", (id,)).fetchone()
        return None if r is None else Task(*r)

    def insert_task(self, t: Task) -> None:
        self._insert(_INSERT_T, (t.id, t.state, t.version, t.timer_type, t.timer_at, t.pid, t.ttl), "task")

    def update_task(self, t: Task) -> None:
        self._w()
        if self._x(_UPDATE_T, (t.state, t.version, t.timer_type, t.timer_at, t.pid, t.ttl, t.id)).rowcount == 0:
            self._x(_INSERT_T, (t.id, t.state, t.version, t.timer_type, t.timer_at, t.pid, t.ttl))  # upsert, as Memory

    def search_tasks(self, state: str | None, cursor: str | None, limit: int, prefix: str = "") -> list[Task]:
        pattern = prefix + "*" if prefix else None
        return [Task(*r) for r in self._search("tasks", _T, state, {}, "", cursor, limit, pattern)]

    def due_tasks(self, t: int, limit: int) -> list[Task]:
        sql = f"SELECT {_T} FROM tasks WHERE timer_at <= ? ORDER BY timer_at, id LIMIT ?"
        return [Task(*r) for r in self._x(sql, (t, limit))]

    def tasks_leased_by(self, pid: str) -> list[Task]:
        sql = (f"SELECT {_T} FROM tasks WHERE pid = ? AND state = 'acquired' AND timer_type = ?"
               " ORDER BY id")
        return [Task(*r) for r in self._x(sql, (pid, LEASE))]

    # callbacks -----------------------------------------------------------------------------
    def add_callback(self, awaited: str, awaiter: str, ready: bool) -> None:
        self._w()
        self._x("INSERT INTO callbacks (awaited, awaiter, ready) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                (awaited, awaiter, 1 if ready else 0))

    def mark_callbacks_ready(self, awaited: str) -> list[str]:
        self._w()
        rows = self._x("SELECT awaiter FROM callbacks WHERE awaited = ? ORDER BY awaiter", (awaited,)).fetchall()
        if rows:
            self._x("UPDATE callbacks SET ready = 1 WHERE awaited = ? AND ready = 0", (awaited,))
        return [r[0] for r in rows]

    def delete_callbacks(self, awaiter: str, ready_only: bool) -> None:
        self._w()
        self._x("DELETE FROM callbacks WHERE awaiter = ?" + (" AND ready = 1" if ready_only else ""), (awaiter,))

    def ready_counts(self, awaiters: list[str]) -> dict[str, int]:
        if not awaiters:
            return {}
        return dict(self._x("SELECT awaiter, count(*) FROM callbacks WHERE ready = 1 AND awaiter IN "
                            "(SELECT value FROM json_each(?)) GROUP BY awaiter", (json.dumps(awaiters),)).fetchall())

    # listeners -----------------------------------------------------------------------------
    def add_listener(self, promise_id: str, address: str) -> None:
        self._w()
        self._x("INSERT INTO listeners (promise_id, address) VALUES (?,?) ON CONFLICT DO NOTHING",
                (promise_id, address))

    def count_listeners(self, promise_id: str, other_than: str | None = None) -> int:
        if other_than is None:
            return self._x("SELECT count(*) FROM listeners WHERE promise_id = ?", (promise_id,)).fetchone()[0]
        return self._x("SELECT count(*) FROM listeners WHERE promise_id = ? AND address <> ?",
                       (promise_id, other_than)).fetchone()[0]

    def pop_listeners(self, promise_id: str) -> list[str]:
        self._w()
        rows = self._x("DELETE FROM listeners WHERE promise_id = ? RETURNING address", (promise_id,)).fetchall()
        return sorted(r[0] for r in rows)

    # outbox --------------------------------------------------------------------------------
    def enqueue(self, m: Message) -> None:
        self._w()
        # the upsert keeps seq, i.e. the replaced execute keeps its queue position
        # the same message again (a retry timer) keeps its failure count and dead mark
        on_conflict = ("DO UPDATE SET address = excluded.address, version = excluded.version,"
                       f" attempts = CASE WHEN {_SAME} THEN attempts ELSE 0 END,"
                       f" dead = CASE WHEN {_SAME} THEN dead ELSE 0 END"
                       if m.kind == "execute" else "DO NOTHING")
        self._x("INSERT INTO outbox (key, kind, id, address, version) VALUES (?,?,?,?,?)"
                f" ON CONFLICT(key) {on_conflict}", (_msg_key(m), m.kind, m.id, m.address, m.version))

    def outbox(self, limit: int | None = None) -> list[Message]:
        rows = self._x("SELECT kind, id, address, version FROM outbox ORDER BY seq LIMIT ?",
                       (-1 if limit is None else limit,))
        return [Message(*r) for r in rows]

    def outbox_page(self, after: int, limit: int) -> list[tuple[int, Message]]:
        rows = self._x("SELECT seq, kind, id, address, version FROM outbox WHERE seq > ? AND dead = 0"
                       " ORDER BY seq LIMIT ?", (after, limit))
        return [(r[0], Message(r[1], r[2], r[3], r[4])) for r in rows]

    def record_failure(self, m: Message, max_attempts: int) -> tuple[int, bool] | None:
        self._w()
        r = self._x("UPDATE outbox SET attempts = attempts + 1, dead = (? > 0 AND attempts + 1 >= ?)"
                    " WHERE key = ? AND kind = ? AND id = ? AND address = ? AND version = ? AND dead = 0"
                    " RETURNING attempts, dead",
                    (max_attempts, max_attempts, _msg_key(m), m.kind, m.id, m.address, m.version)).fetchone()
        return None if r is None else (r[0], bool(r[1]))

    def dead_messages(self) -> list[tuple[Message, int]]:
        rows = self._x("SELECT kind, id, address, version, attempts FROM outbox WHERE dead = 1 ORDER BY seq")
        return [(Message(r[0], r[1], r[2], r[3]), r[4]) for r in rows]

    def outbox_rows(self, dead_only: bool, after: int, limit: int) -> list[tuple[int, Message, int, bool]]:
        rows = self._x("SELECT seq, kind, id, address, version, attempts, dead FROM outbox WHERE seq > ?"
                       f"{' AND dead = 1' if dead_only else ''} ORDER BY seq LIMIT ?", (after, limit))
        return [(r[0], Message(r[1], r[2], r[3], r[4]), r[5], bool(r[6])) for r in rows]

    def revive_dead(self, seq: int | None) -> list[tuple[int, Message]]:
        self._w()
        rows = self._x("UPDATE outbox SET attempts = 0, dead = 0 WHERE dead = 1 AND (? IS NULL OR seq = ?)"
                       " RETURNING seq, kind, id, address, version", (seq, seq)).fetchall()
        return [(r[0], Message(r[1], r[2], r[3], r[4])) for r in sorted(rows)]

    def outbox_count(self) -> int:
        return self._x("SELECT count(*) FROM outbox").fetchone()[0]

    def ack(self, m: Message) -> bool:
        self._w()
        cur = self._x("DELETE FROM outbox WHERE key = ? AND kind = ? AND id = ? AND address = ? AND version = ?",
                      (_msg_key(m), m.kind, m.id, m.address, m.version))
        return cur.rowcount > 0

    # schedules -----------------------------------------------------------------------------
    def get_schedule(self, id: str) -> Schedule | None:
        r = self._x(f"SELECT {_S} FROM schedules WHERE id = ?", (id,)).fetchone()
        return None if r is None else _schedule(r)

    def insert_schedule(self, s: Schedule) -> None:
        self._w()  # MemoryStore overwrites an existing id; so does the upsert
        self._x(_UPSERT_S, _schedule_row(s))

    update_schedule = insert_schedule

    def delete_schedule(self, id: str) -> bool:
        self._w()
        return self._x("DELETE FROM schedules WHERE id = ?", (id,)).rowcount > 0

    def search_schedules(self, tags: dict[str, str], cursor: str | None, limit: int) -> list[Schedule]:
        return [_schedule(r) for r in self._search("schedules", _S, None, tags, "promise_tags", cursor, limit)]

    def due_schedules(self, t: int, limit: int) -> list[Schedule]:
        sql = f"SELECT {_S} FROM schedules WHERE next_run_at <= ? ORDER BY next_run_at, id LIMIT ?"
        return [_schedule(r) for r in self._x(sql, (t, limit))]

    # the older server's REST API -----------------------------------------------------------
    def search_promises_by_id(self, pattern: str, states: Collection[str] | None, tags: dict[str, str],
                              cursor: str | None, limit: int, created: Created = NO_RANGE) -> list[Promise]:
        return [_promise(r) for r in self._search("promises", _P, None, tags, "tags", cursor, limit, pattern, states,
                                                  created)]

    def search_schedules_by_id(self, pattern: str, tags: dict[str, str], cursor: str | None,
                               limit: int) -> list[Schedule]:
        return [_schedule(r) for r in self._search("schedules", _S, None, tags, "tags", cursor, limit, pattern)]

    def ready_awaited(self, awaiter: str) -> list[str]:
        rows = self._x("SELECT awaited FROM callbacks WHERE awaiter = ? AND ready = 1 ORDER BY awaited", (awaiter,))
        return [r[0] for r in rows]

    def get_lock(self, resource_id: str) -> Lock | None:
        r = self._x(f"SELECT {_L} FROM locks WHERE resource_id = ?", (resource_id,)).fetchone()
        return None if r is None else Lock(*r)

    def put_lock(self, lock: Lock) -> None:
        self._w()
        self._x(_PUT_L, (lock.resource_id, lock.execution_id, lock.process_id, lock.ttl, lock.expires_at))

    def delete_lock(self, resource_id: str) -> bool:
        self._w()
        return self._x("DELETE FROM locks WHERE resource_id = ?", (resource_id,)).rowcount > 0

    def locks_of_process(self, process_id: str) -> list[Lock]:
        rows = self._x(f"SELECT {_L} FROM locks WHERE process_id = ? ORDER BY resource_id", (process_id,))
        return [Lock(*r) for r in rows]

    def due_locks(self, t: int, limit: int) -> list[Lock]:
        rows = self._x(f"SELECT {_L} FROM locks WHERE expires_at <= ? ORDER BY expires_at, resource_id LIMIT ?",
                       (t, limit))
        return [Lock(*r) for r in rows]

    # timers, debug, snapshots ----------------------------------------------------------------
    def next_deadline(self, target_only: bool) -> int | None:
        extra = " AND target IS NOT NULL" if target_only else ""
        r = self._x(f"SELECT (SELECT min(timeout_at) FROM promises WHERE state = 'pending'{extra}),"
                    " (SELECT min(timer_at) FROM tasks), (SELECT min(next_run_at) FROM schedules),"
                    " (SELECT min(expires_at) FROM locks)").fetchone()
        cands = [x for x in r if x is not None]
        return min(cands) if cands else None

    def get_meta(self, key: str) -> str | None:
        r = self._x("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if r is None else r[0]

    def set_meta(self, key: str, value: str | None) -> None:
        self._w()
        if value is None:
            self._x("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._x("INSERT INTO meta (key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value))

    def _row_promise(self, r: Any) -> Promise:
        return _promise(r)

    def _select1(self) -> None:
        self._x("SELECT 1").fetchone()
