"""Postgres schema, migrations and the `Tx` implementation: every statement the adapter runs.

Results must equal `MemoryStore`'s for every `Tx` method (the differential test checks it).

- Ids and other ordered strings are `TEXT COLLATE "C"`: every `ORDER BY id` and `id > cursor`
  follows code-point order (as Python sorts) whatever the database's default collation, and the
  primary-key indexes still serve those orderings.
- param/value are stored as their exact JSON text (JSONB would turn 1e300 into an integer);
  tags are JSONB so `tags @> $1` searches use a GIN index. JSONB normalizes key order only.
- In a writable transaction `get_*` lock the row (`FOR UPDATE`) and `due_*` lock what they
  return (`FOR UPDATE SKIP LOCKED`), so concurrent requests on one id serialize and sweepers
  split the due rows. A `get_*` that found nothing cannot lock; if a later write of that key
  finds a row after all, a concurrent transaction created it meanwhile: the transaction is
  marked for retry instead of overwriting (or reporting a duplicate of) the other's row.
"""
from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from pg8000.exceptions import DatabaseError

from shared.protocol import parse_address
from shared.records import BRANCH, LEASE, TARGET, Lock, Message, Promise, Schedule, Task
from shared.storage.base import NO_RANGE, Created, ReadOnlyViolation, StorageError
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

try:
    from shared.storage.base import Busy
except ImportError:  # pragma: no cover - older base.py
    class Busy(StorageError):  # type: ignore[no-redef]
        """Contention retries ran out; nothing was committed (answer 503)."""

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads

NOTIFY_CHANNEL = "resonate_outbox"
DB_NOW = "(extract(epoch from clock_timestamp()) * 1000)::bigint"  # leases use the database's clock
MIGRATION_LOCK = 0x7265736F6E617465  # pg_advisory_xact_lock key ("resonate"), per database

_C = 'TEXT COLLATE "C" NOT NULL'
_ORIGIN = "tags->>'resonate:origin'"  # the expression promises_origin indexes
_WORKFLOW = f"COALESCE(NULLIF({_ORIGIN}, ''), id) COLLATE \"C\""  # a promise's workflow key
# Append-only: (version, DDL). Applied in order inside one transaction, under MIGRATION_LOCK;
# never edit a shipped entry, add a new version instead.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        f"CREATE TABLE promises (id {_C} PRIMARY KEY, state TEXT NOT NULL, param TEXT NOT NULL,"
        " value TEXT NOT NULL, tags JSONB NOT NULL, target TEXT, branch TEXT COLLATE \"C\","
        " timeout_at BIGINT NOT NULL, created_at BIGINT NOT NULL, settled_at BIGINT)",
        "CREATE INDEX promises_due ON promises (timeout_at, id) WHERE state = 'pending'",
        "CREATE INDEX promises_due_target ON promises (timeout_at, id) WHERE state = 'pending' AND target IS NOT NULL",
        "CREATE INDEX promises_branch ON promises (branch, id) WHERE branch IS NOT NULL",
        "CREATE INDEX promises_tags ON promises USING GIN (tags jsonb_path_ops)",
        f"CREATE TABLE tasks (id {_C} PRIMARY KEY, state TEXT NOT NULL, version BIGINT NOT NULL,"
        " timer_type BIGINT, timer_at BIGINT, pid TEXT, ttl BIGINT)",
        "CREATE INDEX tasks_timer ON tasks (timer_at, id) WHERE timer_at IS NOT NULL",
        "CREATE INDEX tasks_pid ON tasks (pid, id) WHERE pid IS NOT NULL",
        f"CREATE TABLE callbacks (awaited {_C}, awaiter {_C}, ready BOOLEAN NOT NULL, PRIMARY KEY (awaited, awaiter))",
        "CREATE INDEX callbacks_awaiter ON callbacks (awaiter, awaited)",
        f"CREATE TABLE listeners (promise_id {_C}, address {_C}, PRIMARY KEY (promise_id, address))",
        "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,"
        " id TEXT NOT NULL, address TEXT NOT NULL, version BIGINT NOT NULL)",
        f"CREATE TABLE schedules (id {_C} PRIMARY KEY, cron TEXT NOT NULL, promise_id TEXT NOT NULL,"
        " promise_timeout BIGINT NOT NULL, promise_param TEXT NOT NULL, promise_tags JSONB NOT NULL,"
        " created_at BIGINT NOT NULL, next_run_at BIGINT NOT NULL, last_run_at BIGINT)",
        "CREATE INDEX schedules_due ON schedules (next_run_at, id)",
        "CREATE INDEX schedules_tags ON schedules USING GIN (promise_tags jsonb_path_ops)",
        f"CREATE TABLE meta (key {_C} PRIMARY KEY, value TEXT NOT NULL)",
    ]),
    # cluster delivery (shared/delivery/cluster.py): poll rows are routed by group and NOTIFYed;
    # every row is claimed (a lease, on the database's clock) by the one process sending it
    (2, [
        "ALTER TABLE outbox ADD COLUMN poll_group TEXT COLLATE \"C\", ADD COLUMN poll_uni TEXT COLLATE \"C\","
        " ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0, ADD COLUMN notified_at BIGINT NOT NULL DEFAULT 0,"
        " ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0, ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "UPDATE outbox SET poll_group = substring(address from '^[pP][oO][lL][lL]://(?:uni|any)@([^/]+)'),"
        " poll_uni = substring(address from '^[pP][oO][lL][lL]://uni@[^/]+/(.*)$')",
        "CREATE INDEX outbox_poll ON outbox (poll_group, seq) WHERE poll_group IS NOT NULL",
        "CREATE INDEX outbox_push ON outbox (claimed_until, seq) WHERE poll_group IS NULL",
        # the SSE connections each process holds (refreshed while alive), so that an unblock
        # with no receiver anywhere is dropped at once, as on a single server
        f"CREATE TABLE poll_receivers (grp {_C}, id {_C}, instance {_C}, expires_at BIGINT NOT NULL,"
        " PRIMARY KEY (grp, id, instance))",
        "CREATE INDEX poll_receivers_instance ON poll_receivers (instance)",
    ]),
    # poll authorization: who holds each registered SSE connection (a digest of the token's
    # principal; NULL with auth off), so a worker id held on one instance is refused to another
    # principal on any other (shared/delivery/cluster.py)
    (3, [
        "ALTER TABLE poll_receivers ADD COLUMN principal TEXT",
    ]),
    # the older server's REST API (docs/legacy-api.md): idempotency keys, the schedules' own
    # description, tags (searched with @>, as promise_tags) and key, and its distributed locks
    (4, [
        "ALTER TABLE promises ADD COLUMN ikey_create TEXT, ADD COLUMN ikey_settle TEXT",
        "ALTER TABLE schedules ADD COLUMN description TEXT NOT NULL DEFAULT '',"
        " ADD COLUMN tags JSONB NOT NULL DEFAULT '{}', ADD COLUMN ikey TEXT",
        "CREATE INDEX schedules_own_tags ON schedules USING GIN (tags jsonb_path_ops)",
        f"CREATE TABLE locks (resource_id {_C} PRIMARY KEY, execution_id TEXT NOT NULL, process_id {_C},"
        " ttl BIGINT NOT NULL, expires_at BIGINT NOT NULL)",
        "CREATE INDEX locks_process ON locks (process_id, resource_id)",
        "CREATE INDEX locks_due ON locks (expires_at, resource_id)",
    ]),
    # retention (shared/engine/retention.py): a workflow's promises by their origin tag, and the
    # outbox rows of deleted promises
    (5, [
        f"CREATE INDEX promises_origin ON promises (({_ORIGIN}), id)",
        "CREATE INDEX outbox_id ON outbox (id)",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

RETRY_CODES = frozenset({"40001", "40P01", "23505"})  # serialization failure, deadlock, unique violation
BROKEN_CODES = frozenset({"57P01", "57P02", "57P03", "25P03"})  # admin/crash shutdown, idle-in-tx timeout

_P, _T, _L = PROMISE_COLS, TASK_COLS, LOCK_COLS
_S = ("id, cron, promise_id, promise_timeout, promise_param, promise_tags, created_at,"
      " next_run_at, last_run_at, description, tags, ikey")
_PV = (":id, :state, :param, :value, CAST(:tags AS jsonb), :timeout_at, :created_at, :settled_at, :ikey_create,"
       " :ikey_settle, :target, :branch")
_INSERT_P = f"INSERT INTO promises ({_P}, target, branch) VALUES ({_PV}) ON CONFLICT (id) DO NOTHING RETURNING 1"
_UPSERT_P = (f"INSERT INTO promises ({_P}, target, branch) VALUES ({_PV}) ON CONFLICT (id) DO UPDATE SET "
             + ", ".join(f"{c} = EXCLUDED.{c}" for c in [*_P.split(", ")[1:], "target", "branch"]))
_TV = ":id, :state, :version, :timer_type, :timer_at, :pid, :ttl"
_INSERT_T = f"INSERT INTO tasks ({_T}) VALUES ({_TV}) ON CONFLICT (id) DO NOTHING RETURNING 1"
_UPSERT_T = (f"INSERT INTO tasks ({_T}) VALUES ({_TV}) ON CONFLICT (id) DO UPDATE SET "
             + ", ".join(f"{c} = EXCLUDED.{c}" for c in _T.split(", ")[1:]))
_SV = (":id, :cron, :promise_id, :promise_timeout, :promise_param, CAST(:promise_tags AS jsonb), :created_at,"
       " :next_run_at, :last_run_at, :description, CAST(:tags AS jsonb), :ikey")
_INSERT_S = f"INSERT INTO schedules ({_S}) VALUES ({_SV}) ON CONFLICT (id) DO NOTHING RETURNING 1"
_UPSERT_S = (f"INSERT INTO schedules ({_S}) VALUES ({_SV}) ON CONFLICT (id) DO UPDATE SET "
             + ", ".join(f"{c} = EXCLUDED.{c}" for c in _S.replace(" ", "").split(",")[1:]))
_LV = ":resource_id, :execution_id, :process_id, :ttl, :expires_at"
_INSERT_L = f"INSERT INTO locks ({_L}) VALUES ({_LV}) ON CONFLICT (resource_id) DO NOTHING RETURNING 1"
_UPSERT_L = (f"INSERT INTO locks ({_L}) VALUES ({_LV}) ON CONFLICT (resource_id) DO UPDATE SET "
             + ", ".join(f"{c} = EXCLUDED.{c}" for c in _L.split(", ")[1:]))
# NOTIFY payload "<seq> <address>": addresses are at most 1,024 bytes, well under the 8,000 limit
_ENQUEUE = ("WITH r AS (INSERT INTO outbox (key, kind, id, address, version, poll_group, poll_uni, created_at)"
            f" VALUES (:k, :kind, :id, :a, :v, :g, :u, {DB_NOW}) ON CONFLICT (key) DO {{}} RETURNING seq, poll_group)"
            f" SELECT pg_notify('{NOTIFY_CHANNEL}', seq || ' ' || :a) FROM r WHERE poll_group IS NOT NULL")
# a new execute replaces the row unclaimed and with a clean record; the same message again (a
# task's retry timer re-enqueues it every tasks.retry_timeout) keeps its failure count, its dead
# mark and, for a push row, its claim (in flight or backing off), so retries neither double up
# nor revive a dead row; a poll row is unclaimed and announced again, as before
_SAME = "outbox.version = EXCLUDED.version AND outbox.address = EXCLUDED.address"
_KEEP = f"{_SAME} AND (outbox.poll_group IS NULL OR outbox.claimed_until >= {DEAD})"
_ENQUEUE_EXECUTE = _ENQUEUE.format(
    "UPDATE SET address = EXCLUDED.address, version = EXCLUDED.version, poll_group = EXCLUDED.poll_group,"
    f" poll_uni = EXCLUDED.poll_uni,"
    f" created_at = CASE WHEN {_KEEP} THEN outbox.created_at ELSE EXCLUDED.created_at END,"
    f" claimed_until = CASE WHEN {_KEEP} THEN outbox.claimed_until ELSE 0 END,"
    f" notified_at = CASE WHEN {_KEEP} THEN outbox.notified_at ELSE 0 END,"
    f" attempts = CASE WHEN {_SAME} THEN outbox.attempts ELSE 0 END")
_RECORD_FAILURE = ("UPDATE outbox SET attempts = attempts + 1, claimed_until = CASE WHEN CAST(:max AS bigint) > 0"
                   f" AND attempts + 1 >= :max THEN {DEAD} ELSE claimed_until END WHERE key = :k AND kind = :kind"
                   f" AND id = :id AND address = :a AND version = :v AND claimed_until < {DEAD}"
                   f" RETURNING attempts, claimed_until >= {DEAD}")
_ENQUEUE_UNBLOCK = _ENQUEUE.format("NOTHING")
_INSERT_M = "INSERT INTO meta (key, value) VALUES (:k, :v) ON CONFLICT (key) DO NOTHING RETURNING 1"
_UPSERT_M = "INSERT INTO meta (key, value) VALUES (:k, :v) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"


def _obj(s: str) -> dict:
    return {} if s == "{}" else _loads(s)


def _promise(r: list) -> Promise:
    return Promise(r[0], r[1], _obj(r[2]), _obj(r[3]), r[4], r[5], r[6], r[7], r[8], r[9])


def _schedule(r: list) -> Schedule:
    return Schedule(r[0], r[1], r[2], r[3], _obj(r[4]), r[5], r[6], r[7], r[8], r[9], r[10], r[11])


def _promise_args(p: Promise) -> dict[str, Any]:
    return {"id": p.id, "state": p.state, "param": _dumps(p.param), "value": _dumps(p.value), "tags": _dumps(p.tags),
            "timeout_at": p.timeout_at, "created_at": p.created_at, "settled_at": p.settled_at,
            "ikey_create": p.ikey_create, "ikey_settle": p.ikey_settle,
            "target": p.tags.get(TARGET), "branch": p.tags.get(BRANCH)}


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


def classify(e: DatabaseError) -> tuple[int, StorageError]:
    """(failure state, error to raise) for a server-reported error."""
    msg = e.args[0] if e.args and isinstance(e.args[0], dict) else {}
    code, text = msg.get("C", ""), msg.get("M", str(e))
    err = f"postgres: {code} {text}".strip()
    if code in BROKEN_CODES or code.startswith("08") or msg.get("V", msg.get("S")) in ("FATAL", "PANIC"):
        return BROKEN, StorageError(err)
    if code in RETRY_CODES:
        return RETRY, Busy(err)
    if code == "55P03":  # lock_timeout: waiting longer is pointless, the client retries (503)
        return ABORTED, Busy(err)
    return ABORTED, StorageError(err)


class Conn:
    """One pooled pg8000 connection with its prepared statements (one Parse per SQL text)."""

    __slots__ = ("gen", "pg", "stmts")

    def __init__(self, pg: Any, gen: int) -> None:
        self.pg = pg
        self.stmts: dict[str, Any] = {}
        self.gen = gen


class PgTx(PortableQueries):
    """`Tx` over one connection inside an open transaction. Read-only instances refuse writes
    before touching the database. After a database error the transaction is dead (`fail` set):
    later statements re-raise at once and the store never commits it."""

    __slots__ = ("_absent", "_c", "committing", "error", "fail", "writable")

    def __init__(self, conn: Conn, writable: bool) -> None:
        self._c = conn
        self.writable = writable
        self._absent: set[tuple[str, str]] = set()  # keys a get_* in this transaction found missing
        self.fail = OK
        self.error: StorageError | None = None
        self.committing = False

    def _failed(self, state: int, err: StorageError) -> StorageError:
        if state > self.fail:
            self.fail, self.error = state, err
        return err

    def _x(self, sql: str, **params: Any) -> list:
        if self.fail:
            raise self.error  # type: ignore[misc]
        c = self._c
        try:
            ps = c.stmts.get(sql)
            if ps is None:
                ps = c.stmts[sql] = c.pg.prepare(sql)
            return ps.run(**params)
        except DatabaseError as e:
            raise self._failed(*classify(e)) from e
        except UnicodeEncodeError as e:  # raised before anything is sent: the transaction is intact
            raise StorageError(f"postgres: cannot encode parameter: {e}") from e
        except Exception as e:  # InterfaceError, OSError, ...: the connection is gone
            raise self._failed(BROKEN, StorageError(f"postgres: connection lost: {e}")) from e
        except BaseException:  # e.g. gevent.Timeout mid-protocol: never reuse this connection
            self._failed(BROKEN, StorageError("postgres: interrupted mid-statement"))
            raise

    def _simple(self, sql: str) -> None:
        """BEGIN/COMMIT/DDL: simple-query protocol, one round trip, no parameters."""
        try:
            self._c.pg.run(sql)
        except DatabaseError as e:
            raise self._failed(*classify(e)) from e
        except Exception as e:
            raise self._failed(BROKEN, StorageError(f"postgres: connection lost: {e}")) from e
        except BaseException:
            self._failed(BROKEN, StorageError("postgres: interrupted mid-statement"))
            raise

    def _w(self) -> None:
        if not self.writable:
            raise ReadOnlyViolation()

    def _get(self, kind: str, sql: str, key: str) -> list | None:
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
            self._x(upsert, **args)
            return True
        if self._x(insert, **args):
            self._absent.discard((kind, key))
            return True
        if (kind, key) in self._absent:  # we saw no row, yet one exists: a concurrent insert won
            raise self._failed(RETRY, Busy(f"concurrent insert of {kind} {key}"))
        return False

    def _search(self, table: str, cols: str, state: str | None, tags: dict[str, str] | None, tag_col: str,
                cursor: str | None, limit: int, pattern: str | None = None,
                states: Collection[str] | None = None, created: Created = NO_RANGE) -> list:
        where, args = ["TRUE"], dict[str, Any](limit=limit)
        clauses, bounds = created_range(created, ":{}")
        where += clauses
        args.update(bounds)
        if pattern is not None:  # the "C" collated id: case-sensitive, and a prefix narrows the key range
            where.append(f"id LIKE :pattern ESCAPE '{LIKE_ESCAPE}'")
            args["pattern"] = like_pattern(pattern)
        if state is not None:
            where.append("state = :state")
            args["state"] = state
        if states is not None:
            where.append("state = ANY(CAST(:states AS text[]))")
            args["states"] = list(states)
        if tags:
            where.append(f"{tag_col} @> CAST(:tags AS jsonb)")
            args["tags"] = _dumps(tags)
        if cursor is not None:
            where.append("id > :cursor")
            args["cursor"] = cursor
        return self._x(f"SELECT {cols} FROM {table} WHERE {' AND '.join(where)} ORDER BY id LIMIT :limit", **args)

    def _lock(self) -> str:
        return " FOR UPDATE SKIP LOCKED" if self.writable else ""

    # promises ------------------------------------------------------------------------------
    def get_promise(self, id: str) -> Promise | None:
        r = self._get("promise", f"SELECT {_P} FROM promises WHERE id = :id", id)
        return None if r is None else _promise(r)

    def get_promises(self, ids: Collection[str]) -> dict[str, Promise]:
        """As `get_promise` for each id (rows locked in a write transaction), in one statement."""
        if not ids:
            return {}
        lock = " FOR UPDATE" if self.writable else ""
        found = {r[0]: _promise(r) for r in self._x(f"SELECT {_P} FROM promises WHERE id = ANY(:ids){lock}",
                                                     ids=list(ids))}
        if self.writable:
            self._absent.update(("promise", i) for i in ids if i not in found)
        return found

    def insert_promise(self, p: Promise) -> None:
        if not self._put("promise", p.id, _INSERT_P, None, _promise_args(p)):
            raise StorageError(f"duplicate promise {p.id}")  # as MemoryStore; the transaction lives on

    def update_promise(self, p: Promise) -> None:
        self._put("promise", p.id, _INSERT_P, _UPSERT_P, _promise_args(p))  # MemoryStore upserts too

    def search_promises(self, state: str | None, tags: dict[str, str], cursor: str | None,
                        limit: int) -> list[Promise]:
        return [_promise(r) for r in self._search("promises", _P, state, tags, "tags", cursor, limit)]

    def promises_by_branch(self, branch: str) -> list[Promise]:
        return [_promise(r) for r in self._x(f"SELECT {_P} FROM promises WHERE branch = :b ORDER BY id", b=branch)]

    def due_promises(self, t: int, target_only: bool, limit: int) -> list[Promise]:
        extra = " AND target IS NOT NULL" if target_only else ""  # literal: matches the partial indexes
        sql = (f"SELECT {_P} FROM promises WHERE state = 'pending'{extra} AND timeout_at <= :t"
               f" ORDER BY timeout_at, id LIMIT :n{self._lock()}")
        return [_promise(r) for r in self._x(sql, t=t, n=limit)]

    # retention -----------------------------------------------------------------------------
    def retention_page(self, before: int, after: str | None, limit: int) -> list[tuple[str, str, bool]]:
        cols = (f"SELECT id, {_WORKFLOW}, state <> 'pending' AND settled_at IS NOT NULL AND settled_at <= :before"
                " FROM promises")
        if after is None:
            rows = self._x(cols + " ORDER BY id LIMIT :n", before=before, n=limit)
        else:
            rows = self._x(cols + " WHERE id > :after ORDER BY id LIMIT :n", before=before, after=after, n=limit)
        return [(r[0], r[1], bool(r[2])) for r in rows]

    def workflow_promises(self, key: str, limit: int | None = None) -> list[Promise]:
        """Rows locked in a write transaction: a settle racing the purge waits for it."""
        lock = " FOR UPDATE" if self.writable else ""
        sql = (f"SELECT {_P} FROM promises WHERE ({_ORIGIN} = :k AND :k <> '')"
               f" OR (id = :k AND COALESCE({_ORIGIN}, '') = '') ORDER BY id LIMIT :n{lock}")
        return [_promise(r) for r in self._x(sql, k=key, n=limit)]

    def delete_promises(self, ids: Collection[str]) -> int:
        if not ids:
            return 0
        self._w()
        found = [r[0] for r in self._x("DELETE FROM promises WHERE id = ANY(:ids) RETURNING id", ids=list(ids))]
        for table, col in CASCADE[1:]:
            if found:
                self._x(f"DELETE FROM {table} WHERE {col} = ANY(:ids)", ids=found)
        return len(found)

    # tasks ---------------------------------------------------------------------------------
    def get_task(self, id: str) -> Task | None:
        r = self._get("task", f"SELECT {_T} FROM tasks WHERE id = :id", id)
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
        sql = f"SELECT {_T} FROM tasks WHERE timer_at <= :t ORDER BY timer_at, id LIMIT :n{self._lock()}"
        return [Task(*r) for r in self._x(sql, t=t, n=limit)]

    def tasks_leased_by(self, pid: str) -> list[Task]:
        sql = f"SELECT {_T} FROM tasks WHERE pid = :pid AND state = 'acquired' AND timer_type = {LEASE} ORDER BY id"
        return [Task(*r) for r in self._x(sql, pid=pid)]

    # callbacks -----------------------------------------------------------------------------
    def add_callback(self, awaited: str, awaiter: str, ready: bool) -> None:
        self._w()
        self._x("INSERT INTO callbacks (awaited, awaiter, ready) VALUES (:a, :w, :r) ON CONFLICT DO NOTHING",
                a=awaited, w=awaiter, r=bool(ready))

    def mark_callbacks_ready(self, awaited: str) -> list[str]:
        self._w()
        # the CTE's UPDATE touches only rows not yet ready; the SELECT lists every awaiter
        rows = self._x("WITH u AS (UPDATE callbacks SET ready = TRUE WHERE awaited = :a AND NOT ready)"
                       " SELECT awaiter FROM callbacks WHERE awaited = :a", a=awaited)
        return sorted(r[0] for r in rows)

    def delete_callbacks(self, awaiter: str, ready_only: bool) -> None:
        self._w()
        self._x("DELETE FROM callbacks WHERE awaiter = :w" + (" AND ready" if ready_only else ""), w=awaiter)

    def ready_counts(self, awaiters: list[str]) -> dict[str, int]:
        if not awaiters:
            return {}
        return dict(self._x("SELECT awaiter, count(*) FROM callbacks WHERE ready AND awaiter = ANY(:w) "
                            "GROUP BY awaiter", w=awaiters))

    # listeners -----------------------------------------------------------------------------
    def add_listener(self, promise_id: str, address: str) -> None:
        self._w()
        self._x("INSERT INTO listeners (promise_id, address) VALUES (:p, :a) ON CONFLICT DO NOTHING",
                p=promise_id, a=address)

    def count_listeners(self, promise_id: str, other_than: str | None = None) -> int:
        if other_than is None:
            return self._x("SELECT count(*) FROM listeners WHERE promise_id = :p", p=promise_id)[0][0]
        return self._x("SELECT count(*) FROM listeners WHERE promise_id = :p AND address <> :a",
                       p=promise_id, a=other_than)[0][0]

    def pop_listeners(self, promise_id: str) -> list[str]:
        self._w()
        rows = self._x("DELETE FROM listeners WHERE promise_id = :p RETURNING address", p=promise_id)
        return sorted(r[0] for r in rows)

    # outbox --------------------------------------------------------------------------------
    def enqueue(self, m: Message) -> None:
        """Upsert the row (a replaced execute keeps its seq, its queue position, and is unclaimed
        again); a `poll://` row is announced with NOTIFY, which Postgres sends at COMMIT."""
        self._w()
        addr = parse_address(m.address)
        poll = addr if addr is not None and addr.scheme == "poll" else None
        self._x(_ENQUEUE_EXECUTE if m.kind == "execute" else _ENQUEUE_UNBLOCK,
                k=_dumps(m.key), kind=m.kind, id=m.id, a=m.address, v=m.version,
                g=poll.group if poll else None, u=poll.id if poll and poll.cast == "uni" else None)

    def outbox(self, limit: int | None = None) -> list[Message]:
        rows = self._x("SELECT kind, id, address, version FROM outbox ORDER BY seq LIMIT :n", n=limit)
        return [Message(*r) for r in rows]

    def outbox_page(self, after: int, limit: int) -> list[tuple[int, Message]]:
        rows = self._x("SELECT seq, kind, id, address, version FROM outbox WHERE seq > :after"
                       f" AND claimed_until < {DEAD} ORDER BY seq LIMIT :n", after=after, n=limit)
        return [(r[0], Message(r[1], r[2], r[3], r[4])) for r in rows]

    def record_failure(self, m: Message, max_attempts: int) -> tuple[int, bool] | None:
        """(Cluster delivery counts failures in `PgClusterOutbox.release`; this is the port's form.)"""
        self._w()
        rows = self._x(_RECORD_FAILURE, k=_dumps(m.key), kind=m.kind, id=m.id, a=m.address, v=m.version,
                       max=max_attempts)
        return (rows[0][0], bool(rows[0][1])) if rows else None

    def dead_messages(self) -> list[tuple[Message, int]]:
        rows = self._x(f"SELECT kind, id, address, version, attempts FROM outbox WHERE claimed_until >= {DEAD}"
                       " ORDER BY seq")
        return [(Message(r[0], r[1], r[2], r[3]), r[4]) for r in rows]

    def outbox_rows(self, dead_only: bool, after: int, limit: int) -> list[tuple[int, Message, int, bool]]:
        rows = self._x(f"SELECT seq, kind, id, address, version, attempts, claimed_until >= {DEAD} FROM outbox"
                       f" WHERE seq > :after{f' AND claimed_until >= {DEAD}' if dead_only else ''}"
                       " ORDER BY seq LIMIT :n", after=after, n=limit)
        return [(r[0], Message(r[1], r[2], r[3], r[4]), r[5], bool(r[6])) for r in rows]

    def revive_dead(self, seq: int | None) -> list[tuple[int, Message]]:
        """Claimable at once (`claimed_until` 0): the cluster's claim and its background pass send it."""
        self._w()
        where = f"claimed_until >= {DEAD}" + ("" if seq is None else " AND seq = :seq")
        rows = self._x(f"UPDATE outbox SET claimed_until = 0, attempts = 0 WHERE {where}"
                       " RETURNING seq, kind, id, address, version", **({} if seq is None else {"seq": seq}))
        return [(r[0], Message(r[1], r[2], r[3], r[4])) for r in sorted(rows)]

    def outbox_count(self) -> int:
        return self._x("SELECT count(*) FROM outbox")[0][0]

    def ack(self, m: Message) -> bool:
        self._w()
        return bool(self._x("DELETE FROM outbox WHERE key = :k AND kind = :kind AND id = :id AND address = :a"
                            " AND version = :v RETURNING seq",
                            k=_dumps(m.key), kind=m.kind, id=m.id, a=m.address, v=m.version))

    # schedules -----------------------------------------------------------------------------
    def get_schedule(self, id: str) -> Schedule | None:
        r = self._get("schedule", f"SELECT {_S} FROM schedules WHERE id = :id", id)
        return None if r is None else _schedule(r)

    def insert_schedule(self, s: Schedule) -> None:
        self._put("schedule", s.id, _INSERT_S, _UPSERT_S, _schedule_args(s))  # MemoryStore overwrites

    update_schedule = insert_schedule

    def delete_schedule(self, id: str) -> bool:
        self._w()
        return bool(self._x("DELETE FROM schedules WHERE id = :id RETURNING 1", id=id))

    def search_schedules(self, tags: dict[str, str], cursor: str | None, limit: int) -> list[Schedule]:
        return [_schedule(r) for r in self._search("schedules", _S, None, tags, "promise_tags", cursor, limit)]

    def due_schedules(self, t: int, limit: int) -> list[Schedule]:
        sql = f"SELECT {_S} FROM schedules WHERE next_run_at <= :t ORDER BY next_run_at, id LIMIT :n{self._lock()}"
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
        rows = self._x("SELECT awaited FROM callbacks WHERE awaiter = :w AND ready ORDER BY awaited", w=awaiter)
        return [r[0] for r in rows]

    def get_lock(self, resource_id: str) -> Lock | None:
        r = self._get("lock", f"SELECT {_L} FROM locks WHERE resource_id = :id", resource_id)
        return None if r is None else Lock(*r)

    def put_lock(self, lock: Lock) -> None:
        self._put("lock", lock.resource_id, _INSERT_L, _UPSERT_L, _lock_args(lock))

    def delete_lock(self, resource_id: str) -> bool:
        self._w()
        return bool(self._x("DELETE FROM locks WHERE resource_id = :id RETURNING 1", id=resource_id))

    def locks_of_process(self, process_id: str) -> list[Lock]:
        """(Locked in a write transaction, as get_lock: a heartbeat's put_lock then cannot revive a
        lock another transaction deleted meanwhile.)"""
        lock = " FOR UPDATE" if self.writable else ""
        rows = self._x(f"SELECT {_L} FROM locks WHERE process_id = :p ORDER BY resource_id{lock}", p=process_id)
        return [Lock(*r) for r in rows]

    def due_locks(self, t: int, limit: int) -> list[Lock]:
        sql = (f"SELECT {_L} FROM locks WHERE expires_at <= :t ORDER BY expires_at, resource_id"
               f" LIMIT :n{self._lock()}")
        return [Lock(*r) for r in self._x(sql, t=t, n=limit)]

    # timers, debug, snapshots ----------------------------------------------------------------
    def next_deadline(self, target_only: bool) -> int | None:
        extra = " AND target IS NOT NULL" if target_only else ""
        return self._x(f"SELECT LEAST((SELECT min(timeout_at) FROM promises WHERE state = 'pending'{extra}),"
                       " (SELECT min(timer_at) FROM tasks), (SELECT min(next_run_at) FROM schedules),"
                       " (SELECT min(expires_at) FROM locks))")[0][0]

    def get_meta(self, key: str) -> str | None:
        r = self._get("meta", "SELECT value FROM meta WHERE key = :id", key)
        return None if r is None else r[0]

    def set_meta(self, key: str, value: str | None) -> None:
        self._w()
        if value is None:
            self._x("DELETE FROM meta WHERE key = :k", k=key)
        else:
            self._put("meta", key, _INSERT_M, _UPSERT_M, {"k": key, "v": value})

    def _row_promise(self, r: Any) -> Promise:
        return _promise(r)
