"""MySQL schema, migrations and the `Tx` implementation: every statement the adapter runs on
request paths (the outbox claims are in mysql_outbox.py).

Results must equal `MemoryStore`'s for every `Tx` method (the differential test checks it).

- Features MySQL 8.0 and MariaDB 10.11 both have: InnoDB, utf8mb4, JSON columns with stored
  generated columns (indexed), `FOR UPDATE SKIP LOCKED`, `ON DUPLICATE KEY UPDATE` with
  `VALUES(col)` (MySQL 8.0.20+ deprecates it in favour of a row alias MariaDB lacks; it still works).
- Strings are utf8mb4 in a binary NO PAD collation (`utf8mb4_0900_bin` on MySQL 8,
  `utf8mb4_nopad_bin` on MariaDB; picked when the tables are created): `ORDER BY id` and
  `id > cursor` follow code-point order as Python sorts, and `'a'` differs from `'a '` (the
  PAD SPACE `utf8mb4_bin` would make them one key).
- Ids, task ids, process ids, listener addresses and the indexed tags (resonate:target,
  resonate:origin, resonate:branch, generated from the JSON tags) are VARCHAR(255): the store
  declares `max_key_length = 255` and the service rejects longer ones with 400 before any
  transaction (shared/requests.py).
- param/value are their exact JSON text (LONGTEXT); tags are JSON so `JSON_CONTAINS` searches
  them (MySQL 8 normalizes a JSON document's key order, as Postgres' JSONB does).
- The outbox is unique on a SHA-256 of the message key, computed here (the key of an unblock
  holds an id and an address: too long for an index of its text).
- Row locks as on Postgres (postgres_tx.py): in a writable transaction `get_*` lock the row
  (`FOR UPDATE`, READ COMMITTED: no gap locks) and `due_*` lock what they return (`SKIP
  LOCKED`); a key a `get_*` found missing that a later insert finds present was inserted by a
  concurrent transaction meanwhile: the transaction is re-run.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from typing import Any

from shared.protocol import parse_address
from shared.records import LEASE, Lock, Message, Promise, Schedule, Task
from shared.storage.base import NO_RANGE, Busy, Created, ReadOnlyViolation, StorageError
from shared.storage.sql_common import (
    CASCADE,
    DEAD,
    LIKE_ESCAPE,
    LOCK_COLS,
    PROMISE_COLS,
    TASK_COLS,
    PortableQueries,
    created_range,
    like_pattern,
)
from shared.storage.sql_pool import ABORTED, BROKEN, OK, RETRY

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads

KEY_CHARS = 255  # VARCHAR(255) keys (`MySQLStore.max_key_length`)
# leases use the database's clock (the session time_zone is UTC)
DB_NOW = "CAST(UNIX_TIMESTAMP(SYSDATE(3)) * 1000 AS SIGNED)"
MIGRATION_LOCK = "GET_LOCK(CONCAT('resonate_migrate_', MD5(DATABASE())), 50)"  # named locks are per server
MIGRATION_UNLOCK = "RELEASE_LOCK(CONCAT('resonate_migrate_', MD5(DATABASE())))"

_K = f"VARCHAR({KEY_CHARS}) NOT NULL"
_KN = f"VARCHAR({KEY_CHARS}) NULL"


def _tag(name: str) -> str:
    return f"VARCHAR({KEY_CHARS}) AS (JSON_UNQUOTE(JSON_EXTRACT(tags, '$.\"{name}\"'))) STORED"


# Append-only: (version, DDL). MySQL commits each DDL statement by itself, so every statement is
# idempotent and a migration interrupted halfway is simply applied again; they run under the named
# MIGRATION_LOCK. Tables are created IF NOT EXISTS; MySQL 8 has no `ADD COLUMN IF NOT EXISTS`
# (MariaDB has), so an `ALTER TABLE <t> ADD COLUMN <c> ...` (one column per statement) is skipped
# by the runner when information_schema already lists the column (mysql.py, `_apply`).
# `{table}` is the table options (engine, charset, collation).
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        f"CREATE TABLE IF NOT EXISTS promises (id {_K} PRIMARY KEY, state VARCHAR(32) NOT NULL,"
        " param LONGTEXT NOT NULL, value LONGTEXT NOT NULL, tags JSON NOT NULL,"
        f" target {_tag('resonate:target')}, origin {_tag('resonate:origin')}, branch {_tag('resonate:branch')},"
        " timeout_at BIGINT NOT NULL, created_at BIGINT NOT NULL, settled_at BIGINT NULL,"
        " INDEX promises_due (state, timeout_at, id), INDEX promises_target (target, id),"
        " INDEX promises_origin (origin, id), INDEX promises_branch (branch, id)) {table}",
        f"CREATE TABLE IF NOT EXISTS tasks (id {_K} PRIMARY KEY, state VARCHAR(32) NOT NULL, version BIGINT NOT NULL,"
        f" timer_type BIGINT NULL, timer_at BIGINT NULL, pid {_KN}, ttl BIGINT NULL,"
        " INDEX tasks_timer (timer_at, id), INDEX tasks_pid (pid, id)) {table}",
        f"CREATE TABLE IF NOT EXISTS callbacks (awaited {_K}, awaiter {_K}, ready BOOLEAN NOT NULL,"
        " PRIMARY KEY (awaited, awaiter), INDEX callbacks_awaiter (awaiter, awaited)) {table}",
        f"CREATE TABLE IF NOT EXISTS listeners (promise_id {_K}, address {_K}, PRIMARY KEY (promise_id, address))"
        " {table}",
        # poll_group/poll_uni route poll:// rows; claimed_until is the claim's lease (DEAD: given up)
        "CREATE TABLE IF NOT EXISTS outbox (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
        f" key_hash BINARY(32) NOT NULL, kind VARCHAR(16) NOT NULL, id {_K}, address {_K}, version BIGINT NOT NULL,"
        f" poll_group {_KN}, poll_uni {_KN}, claimed_until BIGINT NOT NULL DEFAULT 0,"
        " notified_at BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL DEFAULT 0,"
        " attempts INT NOT NULL DEFAULT 0, UNIQUE INDEX outbox_key (key_hash),"
        " INDEX outbox_poll (poll_group, seq), INDEX outbox_push (claimed_until, seq)) {table}",
        f"CREATE TABLE IF NOT EXISTS schedules (id {_K} PRIMARY KEY, cron TEXT NOT NULL, promise_id TEXT NOT NULL,"
        " promise_timeout BIGINT NOT NULL, promise_param LONGTEXT NOT NULL, promise_tags JSON NOT NULL,"
        " created_at BIGINT NOT NULL, next_run_at BIGINT NOT NULL, last_run_at BIGINT NULL,"
        " INDEX schedules_due (next_run_at, id)) {table}",
        f"CREATE TABLE IF NOT EXISTS meta (k {_K} PRIMARY KEY, value LONGTEXT NOT NULL) {{table}}",
        # the SSE connections each process holds (shared/delivery/registry.py)
        f"CREATE TABLE IF NOT EXISTS poll_receivers (grp {_K}, id {_K}, instance VARCHAR(64) NOT NULL,"
        " expires_at BIGINT NOT NULL, principal TEXT NULL, PRIMARY KEY (grp, id, instance),"
        " INDEX poll_receivers_instance (instance)) {table}",
        # one row per registered (group, id): its row lock serializes registrations across instances
        f"CREATE TABLE IF NOT EXISTS poll_locks (grp {_K}, id {_K}, PRIMARY KEY (grp, id)) {{table}}",
        # announcements of poll rows (MySQL has no LISTEN/NOTIFY): listeners poll past their
        # last note id (mysql_outbox.py); the sweeper deletes notes older than a minute
        "CREATE TABLE IF NOT EXISTS outbox_notes (note BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
        f" seq BIGINT NOT NULL, address {_K}, created_at BIGINT NOT NULL, INDEX outbox_notes_age (created_at))"
        " {table}",
    ]),
    # the older server's REST API (docs/legacy-api.md): idempotency keys, the schedules' own
    # description, tags and key, and its distributed locks. TEXT and JSON take a default only
    # as an expression on MySQL 8 (8.0.13+), hence `DEFAULT ('')`, which MariaDB accepts too.
    (2, [
        "ALTER TABLE promises ADD COLUMN ikey_create LONGTEXT NULL",
        "ALTER TABLE promises ADD COLUMN ikey_settle LONGTEXT NULL",
        "ALTER TABLE schedules ADD COLUMN description LONGTEXT NOT NULL DEFAULT ('')",
        "ALTER TABLE schedules ADD COLUMN tags JSON NOT NULL DEFAULT ('{}')",
        "ALTER TABLE schedules ADD COLUMN ikey LONGTEXT NULL",
        f"CREATE TABLE IF NOT EXISTS locks (resource_id {_K} PRIMARY KEY, execution_id LONGTEXT NOT NULL,"
        f" process_id {_K}, ttl BIGINT NOT NULL, expires_at BIGINT NOT NULL,"
        " INDEX locks_process (process_id, resource_id), INDEX locks_due (expires_at, resource_id)) {table}",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# server error codes
RETRY_CODES = frozenset({1213, 1205})  # deadlock (transaction rolled back), lock wait timeout
DUPLICATE = 1062
BROKEN_CODES = frozenset({2006, 2013, 2003, 2055, 1053, 1927, 4031, 1317})  # gone away, lost, shutdown, killed

_P, _T, _L = PROMISE_COLS, TASK_COLS, LOCK_COLS
_S = ("id, cron, promise_id, promise_timeout, promise_param, promise_tags, created_at,"
      " next_run_at, last_run_at, description, tags, ikey")
_PV = ("%(id)s, %(state)s, %(param)s, %(value)s, %(tags)s, %(timeout_at)s, %(created_at)s, %(settled_at)s,"
       " %(ikey_create)s, %(ikey_settle)s")
_INSERT_P = f"INSERT INTO promises ({_P}) VALUES ({_PV})"
_UPSERT_P = _INSERT_P + " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in _P.split(", ")[1:])
_TV = "%(id)s, %(state)s, %(version)s, %(timer_type)s, %(timer_at)s, %(pid)s, %(ttl)s"
_INSERT_T = f"INSERT INTO tasks ({_T}) VALUES ({_TV})"
_UPSERT_T = _INSERT_T + " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in _T.split(", ")[1:])
_SV = ("%(id)s, %(cron)s, %(promise_id)s, %(promise_timeout)s, %(promise_param)s, %(promise_tags)s,"
       " %(created_at)s, %(next_run_at)s, %(last_run_at)s, %(description)s, %(tags)s, %(ikey)s")
_INSERT_S = f"INSERT INTO schedules ({_S}) VALUES ({_SV})"
_UPSERT_S = _INSERT_S + " ON DUPLICATE KEY UPDATE " + ", ".join(
    f"{c} = VALUES({c})" for c in _S.replace(" ", "").split(",")[1:])
_INSERT_L = (f"INSERT INTO locks ({_L}) VALUES (%(resource_id)s, %(execution_id)s, %(process_id)s, %(ttl)s,"
             " %(expires_at)s)")
_UPSERT_L = _INSERT_L + " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in _L.split(", ")[1:])
_INSERT_M = "INSERT INTO meta (k, value) VALUES (%(k)s, %(v)s)"
_UPSERT_M = _INSERT_M + " ON DUPLICATE KEY UPDATE value = VALUES(value)"

# Enqueue. MySQL evaluates ON DUPLICATE KEY UPDATE assignments left to right, each seeing the
# columns assigned before it: everything that compares with the old row comes before the
# assignments of version and address. `seq = LAST_INSERT_ID(seq)` reports the row's seq either way.
# An execute replaced by a new version is unclaimed, with a clean record; the same message again
# keeps its failure count, its dead mark and, for a push row, its claim (as postgres_tx.py).
_SAME = "version = VALUES(version) AND address = VALUES(address)"
_KEEP = f"{_SAME} AND (poll_group IS NULL OR claimed_until >= {DEAD})"
_ENQUEUE = ("INSERT INTO outbox (key_hash, kind, id, address, version, poll_group, poll_uni, created_at)"
            f" VALUES (%(h)s, %(kind)s, %(id)s, %(a)s, %(v)s, %(g)s, %(u)s, {DB_NOW}) ON DUPLICATE KEY UPDATE ")
_ENQUEUE_EXECUTE = _ENQUEUE + (
    f"created_at = IF({_KEEP}, created_at, VALUES(created_at)),"
    f" notified_at = IF({_KEEP}, notified_at, 0),"
    f" attempts = IF({_SAME}, attempts, 0),"
    f" claimed_until = IF({_KEEP}, claimed_until, 0),"
    " poll_group = VALUES(poll_group), poll_uni = VALUES(poll_uni), address = VALUES(address),"
    " version = VALUES(version), seq = LAST_INSERT_ID(seq)")
_ENQUEUE_UNBLOCK = _ENQUEUE + "seq = LAST_INSERT_ID(seq)"
_NOTE = f"INSERT INTO outbox_notes (seq, address, created_at) VALUES (%(s)s, %(a)s, {DB_NOW})"
_MATCH = "key_hash = %(h)s AND kind = %(kind)s AND id = %(id)s AND address = %(a)s AND version = %(v)s"


def key_hash(m: Message) -> bytes:
    return hashlib.sha256(_dumps(m.key).encode("utf-8", "surrogatepass")).digest()


def _obj(s: str) -> dict:
    return {} if s == "{}" else _loads(s)


def _promise(r: tuple) -> Promise:
    return Promise(r[0], r[1], _obj(r[2]), _obj(r[3]), _obj(r[4]), r[5], r[6], r[7], r[8], r[9])


def _schedule(r: tuple) -> Schedule:
    return Schedule(r[0], r[1], r[2], r[3], _obj(r[4]), _obj(r[5]), r[6], r[7], r[8], r[9], _obj(r[10]), r[11])


def _promise_args(p: Promise) -> dict[str, Any]:
    return {"id": p.id, "state": p.state, "param": _dumps(p.param), "value": _dumps(p.value), "tags": _dumps(p.tags),
            "timeout_at": p.timeout_at, "created_at": p.created_at, "settled_at": p.settled_at,
            "ikey_create": p.ikey_create, "ikey_settle": p.ikey_settle}


def _task_args(t: Task) -> dict[str, Any]:
    return {"id": t.id, "state": t.state, "version": t.version, "timer_type": t.timer_type, "timer_at": t.timer_at,
            "pid": t.pid, "ttl": t.ttl}


def _schedule_args(s: Schedule) -> dict[str, Any]:
    return {"id": s.id, "cron": s.cron, "promise_id": s.promise_id, "promise_timeout": s.promise_timeout,
            "promise_param": _dumps(s.promise_param), "promise_tags": _dumps(s.promise_tags),
            "created_at": s.created_at, "next_run_at": s.next_run_at, "last_run_at": s.last_run_at,
            "description": s.description, "tags": _dumps(s.tags), "ikey": s.ikey}


def _lock_args(lk: Lock) -> dict[str, Any]:
    return {"resource_id": lk.resource_id, "execution_id": lk.execution_id, "process_id": lk.process_id,
            "ttl": lk.ttl, "expires_at": lk.expires_at}


def _msg_args(m: Message) -> dict[str, Any]:
    return {"h": key_hash(m), "kind": m.kind, "id": m.id, "a": m.address, "v": m.version}


def error_code(e: BaseException) -> int:
    return e.args[0] if e.args and isinstance(e.args[0], int) else 0


def classify(e: BaseException) -> tuple[int, StorageError]:
    """(failure state, error to raise) for a PyMySQL error."""
    import pymysql

    code = error_code(e)
    text = e.args[1] if len(e.args) > 1 else str(e)
    err = f"mysql: {code} {text}".strip()
    if isinstance(e, pymysql.err.InterfaceError) or code in BROKEN_CODES or not isinstance(e, pymysql.err.MySQLError):
        return BROKEN, StorageError(f"mysql: connection lost: {e}" if not code else err)
    if code in RETRY_CODES:
        return RETRY, Busy(err)
    return ABORTED, StorageError(err)


class Conn:
    """One pooled PyMySQL connection and its cursor."""

    __slots__ = ("cur", "db", "gen")

    def __init__(self, db: Any, gen: int) -> None:
        self.db = db
        self.cur = db.cursor()
        self.gen = gen


class MyTx(PortableQueries):
    """`Tx` over one connection inside an open transaction. Read-only instances refuse writes
    before touching the database. After a database error the transaction is dead (`fail` set):
    later statements re-raise at once and the store never commits it. A duplicate key is not
    an error of the transaction (MySQL rolls back only that statement): `_put` reports it."""

    __slots__ = ("_absent", "_c", "committing", "error", "fail", "writable")

    def __init__(self, conn: Conn, writable: bool) -> None:
        self._c = conn
        self.writable = writable
        self._absent: set[tuple[str, str]] = set()
        self.fail = OK
        self.error: StorageError | None = None
        self.committing = False

    def _failed(self, state: int, err: StorageError) -> StorageError:
        if state > self.fail:
            self.fail, self.error = state, err
        return err

    def _run(self, sql: str, params: dict[str, Any] | None, dup_ok: bool = False) -> Any:
        """Execute; the cursor (rows, rowcount, lastrowid). None: a duplicate key with dup_ok."""
        if self.fail:
            raise self.error  # type: ignore[misc]
        cur = self._c.cur
        try:
            cur.execute(sql, params or None)
            return cur
        except UnicodeEncodeError as e:  # raised before anything is sent: the transaction is intact
            raise StorageError(f"mysql: cannot encode parameter: {e}") from e
        except Exception as e:
            if dup_ok and error_code(e) == DUPLICATE:
                return None
            raise self._failed(*classify(e)) from e
        except BaseException:  # e.g. gevent.Timeout mid-protocol: never reuse this connection
            self._failed(BROKEN, StorageError("mysql: interrupted mid-statement"))
            raise

    def _x(self, sql: str, **params: Any) -> Any:
        return self._run(sql, params).fetchall()

    def _n(self, sql: str, **params: Any) -> int:
        """Affected rows (an upsert: 1 inserted, 2 updated, 0 unchanged)."""
        return self._run(sql, params).rowcount

    def _simple(self, sql: str) -> None:
        self._run(sql, None)

    def _w(self) -> None:
        if not self.writable:
            raise ReadOnlyViolation()

    def _get(self, kind: str, sql: str, key: str) -> tuple | None:
        rows = self._x(sql + (" FOR UPDATE" if self.writable else ""), id=key)
        if rows:
            return rows[0]
        if self.writable:
            self._absent.add((kind, key))
        return None

    def _put(self, kind: str, key: str, insert: str, upsert: str | None, args: dict[str, Any]) -> bool:
        """Insert (upsert is None) or upsert the row. False: insert found an existing row."""
        self._w()
        if upsert is not None and (kind, key) not in self._absent:
            self._run(upsert, args)
            return True
        if self._run(insert, args, dup_ok=True) is not None:
            self._absent.discard((kind, key))
            return True
        if (kind, key) in self._absent:  # we saw no row, yet one exists: a concurrent insert won
            raise self._failed(RETRY, Busy(f"concurrent insert of {kind} {key}"))
        return False

    def _search(self, table: str, cols: str, state: str | None, tags: dict[str, str] | None, tag_col: str,
                cursor: str | None, limit: int, pattern: str | None = None,
                states: Collection[str] | None = None, created: Created = NO_RANGE) -> Any:
        where, args = ["TRUE"], dict[str, Any](limit=limit)
        clauses, bounds = created_range(created, "%({})s")
        where += clauses
        args.update(bounds)
        if pattern is not None:  # the binary collation: case-sensitive, and a prefix narrows the key range
            where.append(f"id LIKE %(pattern)s ESCAPE '{LIKE_ESCAPE}'")
            args["pattern"] = like_pattern(pattern)
        if state is not None:
            where.append("state = %(state)s")
            args["state"] = state
        if states is not None:
            if states:
                where.append("state IN %(states)s")
                args["states"] = tuple(states)
            else:
                where.append("FALSE")  # `IN ()` is not SQL
        if tags:
            if table == "promises":  # the generated columns' indexes narrow the scan
                for col, tag in (("target", "resonate:target"), ("origin", "resonate:origin"),
                                 ("branch", "resonate:branch")):
                    if tag in tags:
                        where.append(f"{col} = %({col})s")
                        args[col] = tags[tag]
            where.append(f"JSON_CONTAINS({tag_col}, %(tags)s)")
            args["tags"] = _dumps(tags)
        if cursor is not None:
            where.append("id > %(cursor)s")
            args["cursor"] = cursor
        return self._x(f"SELECT {cols} FROM {table} WHERE {' AND '.join(where)} ORDER BY id LIMIT %(limit)s", **args)

    def _lock(self) -> str:
        return " FOR UPDATE SKIP LOCKED" if self.writable else ""

    # promises ------------------------------------------------------------------------------
    def get_promise(self, id: str) -> Promise | None:
        r = self._get("promise", f"SELECT {_P} FROM promises WHERE id = %(id)s", id)
        return None if r is None else _promise(r)

    def get_promises(self, ids: Collection[str]) -> dict[str, Promise]:
        if not ids:
            return {}
        lock = " FOR UPDATE" if self.writable else ""
        found = {r[0]: _promise(r) for r in self._x(f"SELECT {_P} FROM promises WHERE id IN %(ids)s{lock}",
                                                     ids=tuple(ids))}
        if self.writable:
            self._absent.update(("promise", i) for i in ids if i not in found)
        return found

    def insert_promise(self, p: Promise) -> None:
        if not self._put("promise", p.id, _INSERT_P, None, _promise_args(p)):
            raise StorageError(f"duplicate promise {p.id}")

    def update_promise(self, p: Promise) -> None:
        self._put("promise", p.id, _INSERT_P, _UPSERT_P, _promise_args(p))

    def search_promises(self, state: str | None, tags: dict[str, str], cursor: str | None,
                        limit: int) -> list[Promise]:
        return [_promise(r) for r in self._search("promises", _P, state, tags, "tags", cursor, limit)]

    def promises_by_branch(self, branch: str) -> list[Promise]:
        return [_promise(r) for r in self._x(f"SELECT {_P} FROM promises WHERE branch = %(b)s ORDER BY id",
                                             b=branch)]

    def due_promises(self, t: int, target_only: bool, limit: int) -> list[Promise]:
        extra = " AND target IS NOT NULL" if target_only else ""
        sql = (f"SELECT {_P} FROM promises WHERE state = 'pending'{extra} AND timeout_at <= %(t)s"
               f" ORDER BY timeout_at, id LIMIT %(n)s{self._lock()}")
        return [_promise(r) for r in self._x(sql, t=t, n=limit)]

    # retention -----------------------------------------------------------------------------
    def retention_page(self, before: int, after: str | None, limit: int) -> list[tuple[str, str, bool]]:
        cols = ("SELECT id, COALESCE(NULLIF(origin, ''), id),"
                " state <> 'pending' AND settled_at IS NOT NULL AND settled_at <= %(before)s FROM promises")
        if after is None:
            rows = self._x(cols + " ORDER BY id LIMIT %(n)s", before=before, n=limit)
        else:
            rows = self._x(cols + " WHERE id > %(after)s ORDER BY id LIMIT %(n)s", before=before, after=after, n=limit)
        return [(r[0], r[1], bool(r[2])) for r in rows]

    def workflow_promises(self, key: str, limit: int | None = None) -> list[Promise]:
        """Rows locked in a write transaction: a settle racing the purge waits for it."""
        lock = " FOR UPDATE" if self.writable else ""
        sql = (f"SELECT {_P} FROM promises WHERE (origin = %(k)s AND %(k)s <> '')"
               f" OR (id = %(k)s AND COALESCE(origin, '') = '') ORDER BY id LIMIT %(n)s{lock}")
        return [_promise(r) for r in self._x(sql, k=key, n=2**63 - 1 if limit is None else limit)]

    def delete_promises(self, ids: Collection[str]) -> int:
        if not ids:
            return 0
        self._w()
        found = [r[0] for r in self._x("SELECT id FROM promises WHERE id IN %(ids)s FOR UPDATE", ids=tuple(ids))]
        for table, col in CASCADE:
            if found:
                self._n(f"DELETE FROM {table} WHERE {col} IN %(ids)s", ids=tuple(found))
        return len(found)

    # tasks ---------------------------------------------------------------------------------
    def get_task(self, id: str) -> Task | None:
        r = self._get("task", f"SELECT {_T} FROM tasks WHERE id = %(id)s", id)
        return None if r is None else Task(*r)

    def insert_task(self, t: Task) -> None:
        if not self._put("task", t.id, _INSERT_T, None, _task_args(t)):
            raise StorageError(f"duplicate task {t.id}")

    def update_task(self, t: Task) -> None:
        self._put("task", t.id, _INSERT_T, _UPSERT_T, _task_args(t))

    def search_tasks(self, state: str | None, cursor: str | None, limit: int, prefix: str = "") -> list[Task]:
        pattern = prefix + "*" if prefix else None
        return [Task(*r) for r in self._search("tasks", _T, state, None, "", cursor, limit, pattern)]

    def due_tasks(self, t: int, limit: int) -> list[Task]:
        sql = f"SELECT {_T} FROM tasks WHERE timer_at <= %(t)s ORDER BY timer_at, id LIMIT %(n)s{self._lock()}"
        return [Task(*r) for r in self._x(sql, t=t, n=limit)]

    def tasks_leased_by(self, pid: str) -> list[Task]:
        sql = (f"SELECT {_T} FROM tasks WHERE pid = %(pid)s AND state = 'acquired' AND timer_type = {LEASE}"
               " ORDER BY id")
        return [Task(*r) for r in self._x(sql, pid=pid)]

    # callbacks -----------------------------------------------------------------------------
    def add_callback(self, awaited: str, awaiter: str, ready: bool) -> None:
        self._w()
        self._n("INSERT INTO callbacks (awaited, awaiter, ready) VALUES (%(a)s, %(w)s, %(r)s)"
                " ON DUPLICATE KEY UPDATE awaited = awaited", a=awaited, w=awaiter, r=bool(ready))

    def mark_callbacks_ready(self, awaited: str) -> list[str]:
        self._w()
        self._n("UPDATE callbacks SET ready = TRUE WHERE awaited = %(a)s AND NOT ready", a=awaited)
        return [r[0] for r in self._x("SELECT awaiter FROM callbacks WHERE awaited = %(a)s ORDER BY awaiter",
                                      a=awaited)]

    def delete_callbacks(self, awaiter: str, ready_only: bool) -> None:
        self._w()
        self._n("DELETE FROM callbacks WHERE awaiter = %(w)s" + (" AND ready" if ready_only else ""), w=awaiter)

    def ready_counts(self, awaiters: list[str]) -> dict[str, int]:
        if not awaiters:
            return {}
        return {r[0]: r[1] for r in self._x("SELECT awaiter, count(*) FROM callbacks WHERE ready AND"
                                            " awaiter IN %(w)s GROUP BY awaiter", w=tuple(awaiters))}

    # listeners -----------------------------------------------------------------------------
    def add_listener(self, promise_id: str, address: str) -> None:
        self._w()
        self._n("INSERT INTO listeners (promise_id, address) VALUES (%(p)s, %(a)s)"
                " ON DUPLICATE KEY UPDATE promise_id = promise_id", p=promise_id, a=address)

    def count_listeners(self, promise_id: str, other_than: str | None = None) -> int:
        if other_than is None:
            return self._x("SELECT count(*) FROM listeners WHERE promise_id = %(p)s", p=promise_id)[0][0]
        return self._x("SELECT count(*) FROM listeners WHERE promise_id = %(p)s AND address <> %(a)s",
                       p=promise_id, a=other_than)[0][0]

    def pop_listeners(self, promise_id: str) -> list[str]:
        self._w()
        rows = self._x("SELECT address FROM listeners WHERE promise_id = %(p)s ORDER BY address FOR UPDATE",
                       p=promise_id)
        if rows:
            self._n("DELETE FROM listeners WHERE promise_id = %(p)s", p=promise_id)
        return [r[0] for r in rows]

    # outbox --------------------------------------------------------------------------------
    def enqueue(self, m: Message) -> None:
        """Upsert the row; a `poll://` row is announced in outbox_notes (read by the listeners of
        mysql_outbox.py once this transaction commits)."""
        self._w()
        addr = parse_address(m.address)
        poll = addr if addr is not None and addr.scheme == "poll" else None
        execute = m.kind == "execute"
        cur = self._run(_ENQUEUE_EXECUTE if execute else _ENQUEUE_UNBLOCK,
                        {**_msg_args(m), "g": poll.group if poll else None,
                         "u": poll.id if poll and poll.cast == "uni" else None})
        if poll is not None and (execute or cur.rowcount == 1):  # an unblock: announced when new only
            self._n(_NOTE, s=cur.lastrowid, a=m.address)

    def outbox(self, limit: int | None = None) -> list[Message]:
        lim = "" if limit is None else " LIMIT %(n)s"
        rows = self._x("SELECT kind, id, address, version FROM outbox ORDER BY seq" + lim, n=limit)
        return [Message(*r) for r in rows]

    def outbox_page(self, after: int, limit: int) -> list[tuple[int, Message]]:
        rows = self._x("SELECT seq, kind, id, address, version FROM outbox WHERE seq > %(after)s"
                       f" AND claimed_until < {DEAD} ORDER BY seq LIMIT %(n)s", after=after, n=limit)
        return [(r[0], Message(r[1], r[2], r[3], r[4])) for r in rows]

    def record_failure(self, m: Message, max_attempts: int) -> tuple[int, bool] | None:
        self._w()
        args = _msg_args(m)
        if not self._n(f"UPDATE outbox SET claimed_until = IF(%(max)s > 0 AND attempts + 1 >= %(max)s, {DEAD},"
                       f" claimed_until), attempts = attempts + 1 WHERE {_MATCH} AND claimed_until < {DEAD}",
                       max=max_attempts, **args):
            return None
        r = self._x(f"SELECT attempts, claimed_until >= {DEAD} FROM outbox WHERE key_hash = %(h)s", h=args["h"])[0]
        return r[0], bool(r[1])

    def dead_messages(self) -> list[tuple[Message, int]]:
        rows = self._x(f"SELECT kind, id, address, version, attempts FROM outbox WHERE claimed_until >= {DEAD}"
                       " ORDER BY seq")
        return [(Message(r[0], r[1], r[2], r[3]), r[4]) for r in rows]

    def outbox_rows(self, dead_only: bool, after: int, limit: int) -> list[tuple[int, Message, int, bool]]:
        rows = self._x(f"SELECT seq, kind, id, address, version, attempts, claimed_until >= {DEAD} FROM outbox"
                       f" WHERE seq > %(after)s{f' AND claimed_until >= {DEAD}' if dead_only else ''}"
                       " ORDER BY seq LIMIT %(n)s", after=after, n=limit)
        return [(r[0], Message(r[1], r[2], r[3], r[4]), r[5], bool(r[6])) for r in rows]

    def revive_dead(self, seq: int | None) -> list[tuple[int, Message]]:
        """No `UPDATE ... RETURNING` here: the dead rows are read locked, then made claimable at once."""
        self._w()
        where = f"claimed_until >= {DEAD}" + ("" if seq is None else " AND seq = %(seq)s")
        args = {} if seq is None else {"seq": seq}
        rows = self._x(f"SELECT seq, kind, id, address, version FROM outbox WHERE {where} ORDER BY seq FOR UPDATE",
                       **args)
        if rows:
            self._n(f"UPDATE outbox SET claimed_until = 0, attempts = 0 WHERE {where}", **args)
        return [(r[0], Message(r[1], r[2], r[3], r[4])) for r in rows]

    def outbox_count(self) -> int:
        return self._x("SELECT count(*) FROM outbox")[0][0]

    def ack(self, m: Message) -> bool:
        self._w()
        return bool(self._n(f"DELETE FROM outbox WHERE {_MATCH}", **_msg_args(m)))

    # schedules -----------------------------------------------------------------------------
    def get_schedule(self, id: str) -> Schedule | None:
        r = self._get("schedule", f"SELECT {_S} FROM schedules WHERE id = %(id)s", id)
        return None if r is None else _schedule(r)

    def insert_schedule(self, s: Schedule) -> None:
        self._put("schedule", s.id, _INSERT_S, _UPSERT_S, _schedule_args(s))  # MemoryStore overwrites

    update_schedule = insert_schedule

    def delete_schedule(self, id: str) -> bool:
        self._w()
        return bool(self._n("DELETE FROM schedules WHERE id = %(id)s", id=id))

    def search_schedules(self, tags: dict[str, str], cursor: str | None, limit: int) -> list[Schedule]:
        return [_schedule(r) for r in self._search("schedules", _S, None, tags, "promise_tags", cursor, limit)]

    def due_schedules(self, t: int, limit: int) -> list[Schedule]:
        sql = (f"SELECT {_S} FROM schedules WHERE next_run_at <= %(t)s ORDER BY next_run_at, id"
               f" LIMIT %(n)s{self._lock()}")
        return [_schedule(r) for r in self._x(sql, t=t, n=limit)]

    # the older server's REST API -----------------------------------------------------------
    def search_promises_by_id(self, pattern: str, states: Collection[str] | None, tags: dict[str, str],
                              cursor: str | None, limit: int, created: Created = NO_RANGE) -> list[Promise]:
        return [_promise(r) for r in self._search("promises", _P, None, tags, "tags", cursor, limit, pattern, states,
                                                  created)]

    def search_schedules_by_id(self, pattern: str, tags: dict[str, str], cursor: str | None,
                               limit: int) -> list[Schedule]:
        return [_schedule(r) for r in self._search("schedules", _S, None, tags, "tags", cursor, limit, pattern)]

    def ready_awaited(self, awaiter: str) -> list[str]:
        rows = self._x("SELECT awaited FROM callbacks WHERE awaiter = %(w)s AND ready ORDER BY awaited", w=awaiter)
        return [r[0] for r in rows]

    def get_lock(self, resource_id: str) -> Lock | None:
        r = self._get("lock", f"SELECT {_L} FROM locks WHERE resource_id = %(id)s", resource_id)
        return None if r is None else Lock(*r)

    def put_lock(self, lock: Lock) -> None:
        self._put("lock", lock.resource_id, _INSERT_L, _UPSERT_L, _lock_args(lock))

    def delete_lock(self, resource_id: str) -> bool:
        self._w()
        return bool(self._n("DELETE FROM locks WHERE resource_id = %(id)s", id=resource_id))

    def locks_of_process(self, process_id: str) -> list[Lock]:
        """(Locked in a write transaction, as get_lock: a heartbeat's put_lock then cannot revive a
        lock another transaction deleted meanwhile.)"""
        lock = " FOR UPDATE" if self.writable else ""
        rows = self._x(f"SELECT {_L} FROM locks WHERE process_id = %(p)s ORDER BY resource_id{lock}", p=process_id)
        return [Lock(*r) for r in rows]

    def due_locks(self, t: int, limit: int) -> list[Lock]:
        sql = (f"SELECT {_L} FROM locks WHERE expires_at <= %(t)s ORDER BY expires_at, resource_id"
               f" LIMIT %(n)s{self._lock()}")
        return [Lock(*r) for r in self._x(sql, t=t, n=limit)]

    # timers, debug, snapshots ----------------------------------------------------------------
    def next_deadline(self, target_only: bool) -> int | None:
        extra = " AND target IS NOT NULL" if target_only else ""
        rows = self._x(f"SELECT (SELECT min(timeout_at) FROM promises WHERE state = 'pending'{extra}),"
                       " (SELECT min(timer_at) FROM tasks), (SELECT min(next_run_at) FROM schedules),"
                       " (SELECT min(expires_at) FROM locks)")
        found = [v for v in rows[0] if v is not None]  # LEAST() is NULL if any argument is
        return min(found) if found else None

    def get_meta(self, key: str) -> str | None:
        r = self._get("meta", "SELECT value FROM meta WHERE k = %(id)s", key)
        return None if r is None else r[0]

    def set_meta(self, key: str, value: str | None) -> None:
        self._w()
        if value is None:
            self._n("DELETE FROM meta WHERE k = %(k)s", k=key)
        else:
            self._put("meta", key, _INSERT_M, _UPSERT_M, {"k": key, "v": value})

    def _row_promise(self, r: Any) -> Promise:
        return _promise(r)
