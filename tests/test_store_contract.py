"""The storage port's contract, one suite for every adapter (memory, SQLite, Postgres, MySQL).

The scripted and the random differential runs compare SQLite, Postgres and MySQL with MemoryStore (the
reference) after every step; the rest holds on each adapter it names. Adapter-specific behaviour
lives in tests/test_store_sqlite.py (group commit, WAL, crash, gevent offload) and
tests/test_store_postgres.py (row locks and retries, SKIP LOCKED, migrations racing, connection
loss, gevent) and tests/test_store_mysql.py. Postgres and MySQL params need their database server
(marks `postgres`, `mysql`); each gets a fresh migrated database.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.records import BRANCH, LEASE, ORIGIN, RETRY, TARGET, Lock, Message, Promise, Schedule, Task
from shared.storage.base import ReadOnlyViolation, StorageError, Tx
from shared.storage.memory import MemoryStore
from tests.support.mysql import my_server, my_url  # noqa: F401 (fixtures)
from tests.support.pg import pg_template, pg_url  # noqa: F401 (fixtures)

ALL = ["memory", "sqlite", "postgres", "mysql"]
DURABLE = ["sqlite", "postgres", "mysql"]  # compared with MemoryStore; survive a reopen
MARKS = {"postgres": [pytest.mark.postgres], "mysql": [pytest.mark.mysql]}


def _params(names: list[str]) -> list[Any]:
    return [pytest.param(n, marks=MARKS.get(n, []), id=n) for n in names]


class Adapter:
    """Opens stores of one adapter on one database (a reopen sees the same data); closes them all."""

    def __init__(self, name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.name = name
        self.path = str(tmp_path / "contract.db")
        fixture = {"postgres": "pg_url", "mysql": "my_url"}.get(name)
        self.url = request.getfixturevalue(fixture) if fixture else ""
        self.opened: list[Any] = []

    @property
    def module(self) -> Any:
        import shared.storage.mysql as my_mod
        import shared.storage.postgres as pg_mod
        import shared.storage.sqlite as sqlite_mod

        return {"sqlite": sqlite_mod, "postgres": pg_mod, "mysql": my_mod}[self.name]

    def open(self) -> Any:
        if self.name == "memory":
            s: Any = MemoryStore()
        elif self.name == "sqlite":
            from shared.storage.sqlite import SqliteStore

            s = SqliteStore(self.path)
        elif self.name == "mysql":
            from shared.storage.mysql import MySQLStore

            s = MySQLStore(self.url, pool_size=20)
        else:
            from shared.storage.postgres import PostgresStore

            s = PostgresStore(self.url, pool_size=20)
        self.opened.append(s)
        return s

    def close_all(self) -> None:
        for s in self.opened:
            try:
                s.close()
            except Exception:
                pass


@pytest.fixture(params=_params(ALL))
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    a = Adapter(request.param, tmp_path, request)
    yield a
    a.close_all()


@pytest.fixture(params=_params(DURABLE))
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    a = Adapter(request.param, tmp_path, request)
    yield a
    a.close_all()


@pytest.fixture
def store(adapter: Adapter) -> Any:
    return adapter.open()


def P(id: str, state: str = "pending", timeout_at: int = 100, tags: dict | None = None, param: dict | None = None,
      value: dict | None = None, created_at: int = 1, settled_at: int | None = None, ikey_create: str | None = None,
      ikey_settle: str | None = None) -> Promise:
    return Promise(id, state, param if param is not None else {}, value if value is not None else {},
                   tags if tags is not None else {}, timeout_at, created_at, settled_at, ikey_create, ikey_settle)


def S(id: str, next_run_at: int, tags: dict | None = None, last: int | None = None, own: dict | None = None,
      description: str = "", ikey: str | None = None) -> Schedule:
    """`tags`: the promise_tags; `own`: the schedule's own tags (the REST API's)."""
    return Schedule(id, "* * * * *", f"{id}.{{{{.timestamp}}}}", 60, {"data": "x", "headers": {}},
                    tags or {}, 1, next_run_at, last, description, own or {}, ikey)


def L(resource_id: str, expires_at: int, process_id: str = "w1", execution_id: str = "e1", ttl: int = 10) -> Lock:
    return Lock(resource_id, execution_id, process_id, ttl, expires_at)


def outcome(store: Any, fn: Callable, write: bool) -> tuple:
    try:
        return ("ok", (store.write if write else store.read)(fn))
    except Exception as e:  # compare the exception type: both adapters must raise the same one
        return ("err", type(e).__name__)


def snapshot(tx: Any) -> tuple:
    return (tx.all_promises(), tx.all_tasks(), tx.all_callbacks(), tx.all_listeners(), tx.outbox(),
            tx.search_schedules({}, None, 10_000), [tx.get_meta(k) for k in ("a", "b", "")],
            tx.due_locks(2**63 - 1, 10_000))


class Pair:
    """The same functions run against MemoryStore and another adapter; every outcome must match."""

    def __init__(self, other: Any) -> None:
        self.mem = MemoryStore()
        self.sql = other

    def run(self, fn: Callable, write: bool = True) -> Any:
        a, b = outcome(self.mem, fn, write), outcome(self.sql, fn, write)
        assert a == b
        assert self.mem.read(snapshot) == self.sql.read(snapshot)
        return a


# (a) differential: a scripted sequence covering every Tx method ------------------------------

# ids and patterns of the REST API's id searches: `*` is the only wildcard; LIKE's and GLOB's own
# (`%`, `_`, `?`, `[`) and the escapes (`\`, `!`) are literal, and case matters
PATTERN_IDS = ["foo/bar", "foo/Bar", "Foo/bar", "x/bar", "foo/", "/bar", "a/b/c", "a%b", "a_b", "aXb", "a*b",
               "a?b", "a[b]", "a\\b", "a!b", "a!%b", "abc", "aXbYc", "A1", "a1", "AbC", "bar", "a b", "é/é"]
PATTERNS = ["*", "foo/*", "*/bar", "a*b*c", "A*", "a*", "a%b", "a_b", "a?b", "a[b]", "a\\b", "a!b", "a!%b",
            "*%*", "*_*", "*!*", "*\\*", "*[*", "*?*", "foo/", "", "**", "*b", "a*b", "nomatch*", "*/*/*", "ABC",
            "*C", "*c", "a b", "é*"]
ODD_TAGS = {TARGET: "poll://any@g", BRANCH: "root", "a.b": "x:y", 'k"q': "v'", "é": "ü", "": "", "n": "1"}
STEPS: list[tuple[str, Callable, bool]] = [
    ("insert p1", lambda tx: tx.insert_promise(P("p1", tags=ODD_TAGS, param={"data": "", "headers": {}},
                                                  value={}, timeout_at=50)), True),
    ("insert p2", lambda tx: tx.insert_promise(P("p2", tags={BRANCH: "root", "x": "1"}, timeout_at=40,
                                                  param={"nested": {"a": [1, 2.5, None, True, "é"]}})), True),
    ("insert p3", lambda tx: tx.insert_promise(P("p3", tags={TARGET: ""}, timeout_at=40)), True),
    ("insert p0", lambda tx: tx.insert_promise(P("p0", tags={BRANCH: ""}, timeout_at=10)), True),
    ("insert dup", lambda tx: tx.insert_promise(P("p1")), True),
    ("get p1", lambda tx: tx.get_promise("p1"), False),
    ("get missing", lambda tx: tx.get_promise("nope"), False),
    ("get many", lambda tx: (tx.get_promises(["p2", "nope", "p1", "p2"]), tx.get_promises([])), False),
    ("update p2", lambda tx: tx.update_promise(P("p2", "resolved", 40, {BRANCH: "root", "x": "1"},
                                                  {"nested": {"a": [1, 2.5, None, True, "é"]}},
                                                  {"data": "done", "headers": {"h": ""}}, settled_at=7)), True),
    ("update absent", lambda tx: tx.update_promise(P("p9", "rejected", tags={"z": "z"}, settled_at=3)), True),
    ("search all", lambda tx: tx.search_promises(None, {}, None, 100), False),
    ("search pending", lambda tx: tx.search_promises("pending", {}, None, 100), False),
    ("search odd tags", lambda tx: tx.search_promises(None, {"a.b": "x:y", 'k"q': "v'", "é": "ü"}, None, 9), False),
    ("search empty tag", lambda tx: tx.search_promises(None, {"": ""}, None, 9), False),
    ("search target", lambda tx: tx.search_promises(None, {TARGET: ""}, None, 9), False),
    ("search branch", lambda tx: tx.search_promises(None, {BRANCH: "root", "x": "1"}, None, 9), False),
    ("search cursor", lambda tx: tx.search_promises(None, {}, "p1", 2), False),
    ("search limit", lambda tx: tx.search_promises(None, {}, None, 1), False),
    ("search none", lambda tx: tx.search_promises(None, {"x": "2"}, None, 9), False),
    ("ikeys", lambda tx: [tx.insert_promise(P("k1", ikey_create="c1", tags={BRANCH: "root"}, timeout_at=45)),
                          tx.insert_promise(P("k2", "resolved", ikey_create="", ikey_settle="s'é", settled_at=2)),
                          tx.update_promise(P("k1", "rejected", ikey_create="c1", ikey_settle="s1", settled_at=3,
                                              tags={BRANCH: "root"}, timeout_at=45)),
                          tx.update_promise(P("k3", ikey_create="c3", timeout_at=41))], True),
    ("ikeys read", lambda tx: (tx.get_promise("k1"), tx.get_promises(["k1", "k2", "k3"]),
                               tx.search_promises(None, {}, "k", 3), tx.promises_by_branch("root"),
                               tx.due_promises(45, False, 10)), False),
    ("pattern promises", lambda tx: [tx.insert_promise(P(i, ["pending", "resolved", "rejected"][n % 3],
                                                         tags={"n": str(n % 2), "i": i}, ikey_create=f"c{n}"))
                                     for n, i in enumerate(PATTERN_IDS)], True),
    ("search by id", lambda tx: [[p.id for p in tx.search_promises_by_id(pat, None, {}, None, 100)]
                                 for pat in PATTERNS], False),
    ("search by id filters", lambda tx: (tx.search_promises_by_id("*", ["pending"], {}, None, 100),
                                         tx.search_promises_by_id("a*", ["resolved", "rejected"], {"n": "1"}, None, 100),
                                         tx.search_promises_by_id("*", [], {}, None, 100),
                                         tx.search_promises_by_id("*", None, {"i": "a%b"}, None, 100),
                                         tx.search_promises_by_id("foo/*", None, {}, "foo/Bar", 100),
                                         tx.search_promises_by_id("*", None, {}, "a", 3),
                                         tx.search_promises_by_id("*", None, {BRANCH: "root"}, None, 3),
                                         tx.search_promises_by_id("*", {"pending", "resolved"}, {}, "a", 100)), False),
    ("by branch", lambda tx: tx.promises_by_branch("root"), False),
    ("by empty branch", lambda tx: tx.promises_by_branch(""), False),
    ("due", lambda tx: tx.due_promises(45, False, 10), False),
    ("due target", lambda tx: tx.due_promises(100, True, 10), False),
    ("due limit", lambda tx: tx.due_promises(100, False, 2), False),
    ("insert t1", lambda tx: tx.insert_task(Task("p1", "pending", 1, RETRY, 30)), True),
    ("insert t2", lambda tx: tx.insert_task(Task("p3", "acquired", 2, LEASE, 30, "w1", 5000)), True),
    ("insert t3", lambda tx: tx.insert_task(Task("p0", "acquired", 1, LEASE, 20, "w1", 5000)), True),
    ("insert t4", lambda tx: tx.insert_task(Task("p2", "suspended", 3)), True),
    ("insert t dup", lambda tx: tx.insert_task(Task("p1", "pending", 9)), True),
    ("update t1", lambda tx: tx.update_task(Task("p1", "acquired", 2, LEASE, 25, "w2", 100)), True),
    ("update t absent", lambda tx: tx.update_task(Task("t9", "halted", 1)), True),
    ("get task", lambda tx: (tx.get_task("p1"), tx.get_task("x")), False),
    ("search tasks", lambda tx: (tx.search_tasks(None, None, 10), tx.search_tasks("acquired", "p0", 10),
                                 tx.search_tasks(None, None, 1)), False),
    ("due tasks", lambda tx: (tx.due_tasks(25, 10), tx.due_tasks(100, 2), tx.due_tasks(0, 5)), False),
    ("leased", lambda tx: (tx.tasks_leased_by("w1"), tx.tasks_leased_by("w2"), tx.tasks_leased_by("w3")), False),
    ("callbacks", lambda tx: [tx.add_callback("p1", "p3", False), tx.add_callback("p1", "p0", True),
                              tx.add_callback("p2", "p3", False), tx.add_callback("p1", "p3", True)], True),
    ("count", lambda tx: tx.ready_counts(["p3", "p0", "zz"]), False),
    ("mark ready", lambda tx: (tx.mark_callbacks_ready("p1"), tx.mark_callbacks_ready("none")), True),
    ("count again", lambda tx: tx.ready_counts(["p3"]), False),
    ("more callbacks", lambda tx: [tx.add_callback("p0", "p3", True), tx.add_callback("p9", "p3", False),
                                   tx.add_callback("A", "p3", True)], True),
    ("ready awaited", lambda tx: (tx.ready_awaited("p3"), tx.ready_awaited("p0"), tx.ready_awaited("p1"),
                                  tx.ready_awaited("zz")), False),
    ("delete ready", lambda tx: tx.delete_callbacks("p3", True), True),
    ("delete all", lambda tx: tx.delete_callbacks("p0", False), True),
    ("listeners", lambda tx: [tx.add_listener("p1", "poll://b"), tx.add_listener("p1", "poll://a"),
                              tx.add_listener("p1", "poll://b"), tx.add_listener("p2", "http://x")], True),
    ("count listeners", lambda tx: (tx.count_listeners("p1"), tx.count_listeners("p1", other_than="poll://a"),
                                    tx.count_listeners("p1", other_than="poll://zz"), tx.count_listeners("zz")), False),
    ("pop", lambda tx: (tx.pop_listeners("p1"), tx.pop_listeners("p1"), tx.pop_listeners("zz")), True),
    ("enqueue", lambda tx: [tx.enqueue(Message("execute", "t1", "poll://a", 1)),
                            tx.enqueue(Message("unblock", "p1", "poll://u", 0)),
                            tx.enqueue(Message("unblock", "p1", "poll://v", 0)),
                            tx.enqueue(Message("execute", "t2", "poll://a", 1)),
                            tx.enqueue(Message("execute", "t1", "poll://b", 2)),  # replaced in place
                            tx.enqueue(Message("unblock", "p1", "poll://u", 5))], True),  # ignored
    ("outbox", lambda tx: (tx.outbox(), tx.outbox(2), tx.outbox(0), tx.outbox_count()), False),
    ("outbox pages", lambda tx: (tx.outbox_page(0, 2), tx.outbox_page(tx.outbox_page(0, 2)[-1][0], 10),
                                 tx.outbox_page(10**9, 5)), False),
    # failed deliveries: counted on the row, kept by the same message again, dead at the limit
    ("failures", lambda tx: (tx.record_failure(Message("execute", "t2", "poll://a", 1), 2),
                             tx.record_failure(Message("execute", "t2", "poll://a", 9), 2),  # another version
                             tx.record_failure(Message("unblock", "p1", "poll://u", 0), 0),  # 0: no limit
                             tx.record_failure(Message("execute", "zz", "poll://a", 1), 2)), True),
    ("same message again", lambda tx: tx.enqueue(Message("execute", "t2", "poll://a", 1)), True),
    ("dead", lambda tx: (tx.record_failure(Message("execute", "t2", "poll://a", 1), 2),
                         tx.record_failure(Message("execute", "t2", "poll://a", 1), 2),
                         tx.dead_messages(), tx.outbox_page(0, 10), tx.outbox_count(), tx.outbox()), True),
    ("dead stays dead", lambda tx: tx.enqueue(Message("execute", "t2", "poll://a", 1)), True),
    ("dead read", lambda tx: (tx.dead_messages(), tx.outbox_page(0, 10)), False),
    # the operator's listing and re-drive: by queue position, only dead rows revive
    ("rows", lambda tx: (tx.outbox_rows(False, 0, 10), tx.outbox_rows(True, 0, 10), tx.outbox_rows(False, 1, 1),
                         tx.outbox_rows(True, 10**9, 5)), False),
    ("revive one", lambda tx: (tx.revive_dead(10**9), tx.revive_dead(tx.outbox_rows(False, 0, 1)[0][0]),
                               tx.revive_dead(tx.outbox_rows(True, 0, 1)[0][0]),
                               tx.revive_dead(tx.outbox_rows(False, 0, 10)[-1][0]),  # alive: untouched
                               tx.outbox_rows(False, 0, 10), tx.dead_messages(), tx.outbox_page(0, 10)), True),
    ("dead again", lambda tx: [tx.record_failure(Message("execute", "t2", "poll://a", 1), 2) for _ in range(2)]
     + [tx.dead_messages()], True),
    ("revive all", lambda tx: (tx.revive_dead(None), tx.revive_dead(None), tx.outbox_rows(True, 0, 10)), True),
    ("dead once more", lambda tx: [tx.record_failure(Message("execute", "t2", "poll://a", 1), 2) for _ in range(2)]
     + [tx.dead_messages()], True),
    ("new version", lambda tx: [tx.enqueue(Message("execute", "t2", "poll://a", 2)), tx.dead_messages(),
                                tx.outbox_page(0, 10), tx.record_failure(Message("execute", "t2", "poll://a", 2), 3)],
     True),
    ("revive replaced", lambda tx: (tx.revive_dead(None), tx.outbox_rows(False, 0, 10)), True),  # not dead now
    ("ack stale", lambda tx: (tx.ack(Message("execute", "t1", "poll://a", 1)),
                              tx.ack(Message("unblock", "p1", "poll://u", 5))), True),
    ("ack", lambda tx: (tx.ack(Message("execute", "t1", "poll://b", 2)),
                        tx.ack(Message("unblock", "p1", "poll://v", 0)), tx.ack(Message("execute", "t1", "poll://b", 2))), True),
    ("reenqueue", lambda tx: tx.enqueue(Message("execute", "t1", "poll://c", 3)), True),
    ("schedules", lambda tx: [tx.insert_schedule(S("s2", 70, {"a.b": "1", "é": ""})),
                              tx.insert_schedule(S("s1", 70, {"a.b": "2"})),
                              tx.insert_schedule(S("s3", 5))], True),
    ("schedule overwrite", lambda tx: tx.insert_schedule(S("s3", 6, {"q": "r"}, last=5)), True),
    ("update schedule", lambda tx: tx.update_schedule(S("s1", 80, {"a.b": "2"}, last=70)), True),
    ("get schedule", lambda tx: (tx.get_schedule("s1"), tx.get_schedule("zz")), False),
    ("search schedules", lambda tx: (tx.search_schedules({"a.b": "1"}, None, 10), tx.search_schedules({}, "s1", 1),
                                     tx.search_schedules({"é": ""}, None, 10), tx.search_schedules({"x": "1"}, None, 10)), False),
    ("due schedules", lambda tx: (tx.due_schedules(70, 10), tx.due_schedules(100, 1)), False),
    ("schedule extras", lambda tx: [tx.insert_schedule(S("x/1", 90, {"t": "1"}, own={"team": "a", "é": "ü"},
                                                         description="nightly 'run'", ikey="k")),
                                    tx.insert_schedule(S("x/2", 91, own={"team": "b"}, description="")),
                                    tx.insert_schedule(S("X/3", 92, {"team": "a"})),
                                    tx.update_schedule(S("x/2", 93, own={"team": "a"}, description="d2", ikey="k2"))],
     True),
    ("schedule extras read", lambda tx: (tx.get_schedule("x/1"), tx.get_schedule("x/2"),
                                         tx.search_schedules({"t": "1"}, None, 10), tx.due_schedules(92, 10)), False),
    ("pattern schedules", lambda tx: [tx.insert_schedule(S(i, 200 + n, {"p": str(n % 2)}, own={"n": str(n % 2)},
                                                           description=i, ikey=i if n % 3 else None))
                                      for n, i in enumerate(PATTERN_IDS)], True),
    ("search schedules by id", lambda tx: [[s.id for s in tx.search_schedules_by_id(pat, {}, None, 100)]
                                           for pat in PATTERNS], False),
    ("search schedules by id filters", lambda tx: (tx.search_schedules_by_id("x/*", {"team": "a"}, None, 10),
                                                   tx.search_schedules_by_id("*", {"t": "1"}, None, 10),  # promise_tags
                                                   tx.search_schedules_by_id("*", {"team": "a"}, None, 10),
                                                   tx.search_schedules_by_id("a*", {"n": "1"}, "a", 3),
                                                   tx.search_schedules_by_id("*", {}, "x/1", 10),
                                                   tx.search_schedules_by_id("*/*", {"n": "0", "é": "ü"}, None, 10)),
     False),
    ("deadline", lambda tx: (tx.next_deadline(False), tx.next_deadline(True)), False),
    ("delete schedule", lambda tx: (tx.delete_schedule("s3"), tx.delete_schedule("s3")), True),
    ("deadline 2", lambda tx: (tx.next_deadline(False), tx.next_deadline(True)), False),
    ("locks", lambda tx: [tx.put_lock(L("r2", 50)), tx.put_lock(L("r1", 60)), tx.put_lock(L("r3", 50, "w2", "e2", 5)),
                          tx.put_lock(L("R0", 70, execution_id="é")), tx.put_lock(L("a%b", 1, "w%"))], True),
    ("lock replaced", lambda tx: tx.put_lock(L("r2", 40, "w2", "e9", 20)), True),
    ("get lock", lambda tx: (tx.get_lock("r2"), tx.get_lock("R0"), tx.get_lock("r"), tx.get_lock("a%b")), False),
    ("locks of process", lambda tx: (tx.locks_of_process("w1"), tx.locks_of_process("w2"), tx.locks_of_process("w%"),
                                     tx.locks_of_process("w")), False),
    ("due locks", lambda tx: (tx.due_locks(50, 10), tx.due_locks(100, 2), tx.due_locks(0, 5), tx.due_locks(1, 5)),
     False),
    ("deadline locks", lambda tx: (tx.next_deadline(False), tx.next_deadline(True)), False),
    ("delete lock", lambda tx: (tx.delete_lock("a%b"), tx.delete_lock("a%b"), tx.delete_lock("nope"),
                                tx.delete_lock("r3")), True),
    ("deadline locks 2", lambda tx: (tx.next_deadline(False), tx.next_deadline(True), tx.get_lock("r3")), False),
    ("meta", lambda tx: [tx.set_meta("a", "1"), tx.set_meta("b", ""), tx.set_meta("a", "2"), tx.set_meta("", "e")], True),
    ("get meta", lambda tx: (tx.get_meta("a"), tx.get_meta("b"), tx.get_meta("zz")), False),
    ("del meta", lambda tx: tx.set_meta("b", None), True),
    ("raise after writes", lambda tx: [tx.insert_promise(P("boom")), tx.set_meta("a", "x"), 1 / 0], True),
    ("readonly violation", lambda tx: tx.set_meta("c", "1"), False),
    ("readonly lock", lambda tx: tx.put_lock(L("r9", 1)), False),
    # retention: workflows by origin tag (else the promise's own id), deleted with what hangs off them
    ("workflows", lambda tx: [tx.insert_promise(P("w1", "resolved", tags={ORIGIN: "w1"}, settled_at=10)),
                              tx.insert_promise(P("w1.a", "rejected", tags={ORIGIN: "w1"}, settled_at=20)),
                              tx.insert_promise(P("w1.b", tags={ORIGIN: "w1"})),
                              tx.insert_promise(P("w2.x", "resolved", tags={ORIGIN: "w2", "é": "ü"}, settled_at=8)),
                              tx.insert_promise(P("w2", "resolved", tags={ORIGIN: "w2"}, settled_at=5)),
                              tx.insert_promise(P("w3", "rejected_timedout", settled_at=3)),
                              tx.insert_promise(P("w4", "resolved", tags={ORIGIN: ""}, settled_at=2)),
                              tx.insert_promise(P("w5", "resolved", tags={ORIGIN: "w6"}, settled_at=2)),
                              tx.insert_promise(P("w6", "resolved", tags={ORIGIN: "w5"}, settled_at=2)),
                              tx.insert_task(Task("w2", "completed", 2)), tx.insert_task(Task("w2.x", "completed", 1)),
                              tx.add_callback("w2.x", "w2", True), tx.add_callback("w2", "p3", True),
                              tx.add_callback("p1", "w2.x", False), tx.add_listener("w2", "poll://l"),
                              tx.add_listener("w2.x", "http://l"), tx.add_listener("w1", "poll://l"),
                              tx.enqueue(Message("execute", "w2.x", "poll://a", 1)),
                              tx.enqueue(Message("unblock", "w2", "poll://u", 0)),
                              tx.enqueue(Message("unblock", "w1", "poll://u", 0))], True),
    ("retention pages", lambda tx: (tx.retention_page(10, None, 1000), tx.retention_page(10, "w2", 3),
                                    tx.retention_page(10, None, 2), tx.retention_page(4, "w", 100),
                                    tx.retention_page(2**62, "p", 1000), tx.retention_page(-1, "w6", 9)), False),
    ("workflow promises", lambda tx: (tx.workflow_promises("w1"), tx.workflow_promises("w2"),
                                      tx.workflow_promises("w4"), tx.workflow_promises("w5"),
                                      tx.workflow_promises(""), tx.workflow_promises("nope"),
                                      tx.workflow_promises("p1")), False),
    ("delete promises", lambda tx: (tx.delete_promises(["w2", "w2.x", "nope", "w2"]), tx.delete_promises([]),
                                    tx.delete_promises(["nope"]), tx.ready_counts(["p3", "w2"]),
                                    tx.get_task("w2.x"), tx.count_listeners("w2"), tx.workflow_promises("w2"),
                                    tx.retention_page(10, "w", 100)), True),
    ("snapshot", lambda tx: (tx.all_promises(), tx.all_tasks(), tx.all_callbacks(), tx.all_listeners()), False),
    ("reset", lambda tx: tx.reset(), True),
    ("after reset", lambda tx: (snapshot(tx), tx.next_deadline(False), tx.get_meta("a"), tx.outbox_count(),
                                tx.get_lock("r1"), tx.locks_of_process("w1"), tx.ready_awaited("p3"),
                                tx.search_promises_by_id("*", None, {}, None, 10),
                                tx.search_schedules_by_id("*", {}, None, 10)), False),
    ("reenqueue after reset", lambda tx: [tx.enqueue(Message("execute", "t1", "poll://z", 1)),
                                          tx.enqueue(Message("unblock", "p", "poll://z"))], True),
]



def test_differential_every_method(durable: Adapter) -> None:
    pair = Pair(durable.open())
    for _, fn, write in STEPS:
        pair.run(fn, write)
        if not write:  # read-only steps must give the same answer inside a write transaction
            pair.run(fn, True)
    covered = {m for m in dir(Tx) if not m.startswith("_")}
    used = set()
    for _, fn, _w in STEPS:
        used |= set(fn.__code__.co_names)
    assert covered <= used, covered - used


def test_differential_random(durable: Adapter) -> None:
    """Seeded random operations over a small id space, to hit orderings the script misses."""
    rng = random.Random(1234)
    ids = [f"i{n}" for n in range(8)] + ["a.b", "é", "Z", "a%b", "a_b", "A_b", "aXb", "foo/bar", "Foo/x", "x/bar"]
    addrs = ["poll://a", "poll://b", "http://c"]
    patterns = ["*", "i*", "I*", "*b", "a*", "A*", "a_b", "a%b", "a*b", "foo/*", "*/bar", "*/*", "*.*", "é", "Z*",
                "*%*", "*_*", "i1", "", "*x*"]
    ikeys = [None, "", "k1", "K1"]
    pair = Pair(durable.open())

    def tags() -> dict:
        out = {}
        for k in rng.sample([TARGET, BRANCH, "a.b", "k", "é"], rng.randint(0, 3)):
            out[k] = rng.choice(["", "x", "y"])
        return out

    ops: list[Callable[[], tuple[Callable, bool]]] = [
        lambda: ((lambda tx, p=P(rng.choice(ids), rng.choice(["pending", "resolved"]), rng.randint(0, 50), tags(),
                                 ikey_create=rng.choice(ikeys)):
                  tx.insert_promise(p)), True),
        lambda: ((lambda tx, p=P(rng.choice(ids), rng.choice(["resolved", "rejected"]), settled_at=rng.randint(0, 9),
                                 ikey_create=rng.choice(ikeys), ikey_settle=rng.choice(ikeys)):
                  tx.update_promise(p)), True),
        lambda: ((lambda tx, pat=rng.choice(patterns), s=rng.choice([None, ["pending"], ["resolved", "rejected"], []]),
                  t=tags(), c=rng.choice([None] + ids), n=rng.randint(1, 5):
                  tx.search_promises_by_id(pat, s, t, c, n)), False),
        lambda: ((lambda tx, s=rng.choice([None, "pending"]), t=tags(), c=rng.choice([None] + ids), n=rng.randint(1, 5):
                  tx.search_promises(s, t, c, n)), False),
        lambda: ((lambda tx, b=rng.choice(["", "x", "y"]): tx.promises_by_branch(b)), False),
        lambda: ((lambda tx, t=rng.randint(0, 60), o=rng.random() < .5, n=rng.randint(1, 5): tx.due_promises(t, o, n)), False),
        lambda: ((lambda tx, k=Task(rng.choice(ids), rng.choice(["pending", "acquired"]), rng.randint(1, 3),
                                    rng.choice([RETRY, LEASE]), rng.choice([None, rng.randint(0, 50)]),
                                    rng.choice([None, "w1", "w2"]), 10): tx.insert_task(k)), True),
        lambda: ((lambda tx, k=Task(rng.choice(ids), "acquired", 2, LEASE, rng.randint(0, 50), rng.choice(["w1", "w2"]), 9):
                  tx.update_task(k)), True),
        lambda: ((lambda tx, s=rng.choice([None, "acquired"]), c=rng.choice([None] + ids), n=rng.randint(1, 5):
                  tx.search_tasks(s, c, n)), False),
        lambda: ((lambda tx, t=rng.randint(0, 60), n=rng.randint(1, 5): tx.due_tasks(t, n)), False),
        lambda: ((lambda tx, w=rng.choice(["w1", "w2"]): tx.tasks_leased_by(w)), False),
        lambda: ((lambda tx, a=rng.choice(ids), w=rng.choice(ids), r=rng.random() < .3: tx.add_callback(a, w, r)), True),
        lambda: ((lambda tx, a=rng.choice(ids): tx.mark_callbacks_ready(a)), True),
        lambda: ((lambda tx, w=rng.choice(ids), r=rng.random() < .5: tx.delete_callbacks(w, r)), True),
        lambda: ((lambda tx, w=rng.sample(ids, 3): tx.ready_counts(w)), False),
        lambda: ((lambda tx, p=rng.choice(ids), a=rng.choice(addrs): tx.add_listener(p, a)), True),
        lambda: ((lambda tx, p=rng.choice(ids): tx.pop_listeners(p)), True),
        lambda: ((lambda tx, p=rng.choice(ids), a=rng.choice([None] + addrs): tx.count_listeners(p, a)), False),
        lambda: ((lambda tx, m=Message(rng.choice(["execute", "unblock"]), rng.choice(ids), rng.choice(addrs),
                                       rng.randint(0, 2)): tx.enqueue(m)), True),
        lambda: ((lambda tx, m=Message(rng.choice(["execute", "unblock"]), rng.choice(ids), rng.choice(addrs),
                                       rng.randint(0, 2)): tx.ack(m)), True),
        lambda: ((lambda tx, n=rng.choice([None, 1, 3]): tx.outbox(n)), False),
        lambda: ((lambda tx, s=S(rng.choice(ids), rng.randint(0, 50), tags(), own=tags(),
                                 description=rng.choice(["", "d", "é"]), ikey=rng.choice(ikeys)):
                  tx.insert_schedule(s)), True),
        lambda: ((lambda tx, pat=rng.choice(patterns), t=tags(), c=rng.choice([None] + ids), n=rng.randint(1, 5):
                  tx.search_schedules_by_id(pat, t, c, n)), False),
        lambda: ((lambda tx, w=rng.choice(ids): tx.ready_awaited(w)), False),
        lambda: ((lambda tx, lk=L(rng.choice(ids), rng.randint(0, 50), rng.choice(["w1", "w2"]), rng.choice(["e1", "e2"]),
                                  rng.randint(1, 9)): tx.put_lock(lk)), True),
        lambda: ((lambda tx, i=rng.choice(ids): tx.delete_lock(i)), True),
        lambda: ((lambda tx, i=rng.choice(ids): tx.get_lock(i)), False),
        lambda: ((lambda tx, w=rng.choice(["w1", "w2", "w3"]): tx.locks_of_process(w)), False),
        lambda: ((lambda tx, t=rng.randint(0, 60), n=rng.randint(1, 5): tx.due_locks(t, n)), False),
        lambda: ((lambda tx, i=rng.choice(ids): tx.delete_schedule(i)), True),
        lambda: ((lambda tx, t=tags(), c=rng.choice([None] + ids), n=rng.randint(1, 5): tx.search_schedules(t, c, n)), False),
        lambda: ((lambda tx, t=rng.randint(0, 60), n=rng.randint(1, 5): tx.due_schedules(t, n)), False),
        lambda: ((lambda tx, o=rng.random() < .5: tx.next_deadline(o)), False),
        lambda: ((lambda tx, k=rng.choice(["a", "b"]), v=rng.choice([None, "", "v"]): tx.set_meta(k, v)), True),
        lambda: ((lambda tx, p=P(rng.choice(ids), rng.choice(["resolved", "rejected"]), settled_at=rng.randint(0, 9),
                                 tags={ORIGIN: rng.choice(["", "i1", "i2", "é"])}):
                  tx.update_promise(p)), True),
        lambda: ((lambda tx, t=rng.randint(-1, 10), c=rng.choice([None] + ids), n=rng.randint(1, 5):
                  tx.retention_page(t, c, n)), False),
        lambda: ((lambda tx, k=rng.choice(ids + [""]): tx.workflow_promises(k)), False),
        lambda: ((lambda tx, d=rng.sample(ids, rng.randint(0, 3)): tx.delete_promises(d)), True),
        lambda: ((lambda tx: tx.reset()) if rng.random() < .05 else (lambda tx: None), True),
    ]
    for _ in range(500):
        fn, write = rng.choice(ops)()
        pair.run(fn, write)



IDS = ["b", "B", "a", "é", "e", "Z", "😀", "ä", "a b", "a-b", "ab", "", "ÿ", "\uffff", "𐀀", "a.b", "A", "_", "~"]
BIG = 2**63 - 1
EDGE_STEPS: list[tuple[Callable, bool]] = [
    (lambda tx: [tx.insert_promise(P(i, timeout_at=n, tags={"k": i})) for n, i in enumerate(IDS)], True),
    (lambda tx: [p.id for p in tx.all_promises()], False),
    (lambda tx: [[p.id for p in tx.search_promises(None, {}, c, 4)] for c in (None, "", "a", "é", "Z", "😀")], False),
    (lambda tx: [tx.search_promises(None, {"k": i}, None, 2) for i in IDS], False),
    (lambda tx: tx.insert_promise(P("big", "resolved", BIG, {"": "", "ü": "😀", "x": "a\u2028b"},
                                    {"f": 1e300, "g": 0.1, "n": -0.0, "i": 2**70, "s": "é\t\"\\", "l": [{}, [], None]},
                                    {"data": "", "headers": {}}, created_at=BIG, settled_at=-(2**63))), True),
    (lambda tx: (tx.get_promise("big"), tx.due_promises(BIG, False, 100), tx.next_deadline(False)), False),
    (lambda tx: [tx.insert_task(Task("big", "acquired", BIG, LEASE, BIG, "😀", BIG)),
                 tx.insert_task(Task("é", "pending", 1, RETRY, -BIG))], True),
    (lambda tx: (tx.due_tasks(BIG, 9), tx.tasks_leased_by("😀"), tx.search_tasks(None, "a", 5)), False),
    (lambda tx: [tx.insert_schedule(Schedule(i, "* * * * *", "x", BIG, {"f": 1e-300}, {"é": i}, BIG, BIG - n, BIG))
                 for n, i in enumerate(IDS[:6])], True),
    (lambda tx: (tx.due_schedules(BIG, 3), tx.search_schedules({"é": "é"}, None, 9), tx.search_schedules({}, "a", 3),
                 tx.next_deadline(True)), False),
    (lambda tx: [tx.add_callback(a, w, a < w) for a in IDS[:6] for w in IDS[:6]], True),
    (lambda tx: (tx.all_callbacks(), tx.mark_callbacks_ready("é"), tx.ready_counts(["b", "a"])), True),
    (lambda tx: [tx.add_listener(i, a) for i in IDS[:4] for a in IDS[4:9]], True),
    (lambda tx: [(tx.count_listeners(i), tx.count_listeners(i, other_than=IDS[5])) for i in IDS], False),
    (lambda tx: (tx.all_listeners(), tx.pop_listeners("b")), True),
    (lambda tx: [tx.enqueue(Message("execute", i, "poll://é", BIG)) for i in IDS], True),
    (lambda tx: (tx.outbox(), [m for _, m in tx.outbox_page(3, 5)], tx.outbox_count()), False),
    (lambda tx: [tx.set_meta(i, i * 3) for i in IDS], True),
    (lambda tx: [tx.get_meta(i) for i in IDS + ["nope"]], False),
    (lambda tx: [[p.id for p in tx.search_promises_by_id(pat, None, {}, None, 100)]
                 for pat in ("*", "a*", "A*", "*b", "_", "a?b", "é*", "*😀*", "", "a b", "*.*", "*\uffff", "𐀀*", "ÿ")],
     False),
    (lambda tx: [[s.id for s in tx.search_schedules_by_id(pat, {"é": i}, c, 3)]
                 for pat in ("*", "a*", "*b") for i in IDS[:6] for c in (None, "a")], False),
    (lambda tx: [tx.put_lock(Lock(i, i, "😀" if n % 2 else "w", BIG, BIG - n)) for n, i in enumerate(IDS)], True),
    (lambda tx: (tx.due_locks(BIG, 100), tx.locks_of_process("😀"), tx.get_lock("𐀀"), tx.next_deadline(False)), False),
    (lambda tx: [tx.update_promise(P(i, "resolved", tags={ORIGIN: IDS[n * 7 % len(IDS)]}, settled_at=n))
                 for n, i in enumerate(IDS) if n % 3], True),
    (lambda tx: (tx.retention_page(BIG, None, 100), [tx.retention_page(5, c, 4) for c in ("", "a", "é", "😀")],
                 [tx.workflow_promises(i) for i in IDS]), False),
    (lambda tx: tx.delete_promises(IDS[::2]), True),
]



def test_differential_edge_values(durable: Adapter) -> None:
    """Code-point order (under a non-C collation on Postgres), 64-bit extremes, odd JSON and text."""
    pair = Pair(durable.open())
    for fn, write in EDGE_STEPS:
        pair.run(fn, write)
    assert pair.sql.read(lambda tx: [p.id for p in tx.all_promises()]) == sorted(IDS[1::2] + ["big"])  # [::2] purged


# (b) rollback and errors ----------------------------------------------------------------------------

def test_fn_exception_rolls_back_and_propagates_unchanged(store: Any) -> None:
    class Custom(Exception):
        pass

    err = Custom("x")

    def boom(tx: Any) -> None:
        tx.insert_promise(P("gone"))
        tx.set_meta("m", "1")
        tx.enqueue(Message("unblock", "gone", "poll://a"))
        raise err

    with pytest.raises(Custom) as info:
        store.write(boom)
    assert info.value is err
    assert store.read(lambda tx: (tx.all_promises(), tx.get_meta("m"), tx.outbox())) == ([], None, [])
    with pytest.raises(Custom):
        store.read(lambda tx: (tx.get_promise("a"), (_ for _ in ()).throw(Custom())))
    store.write(lambda tx: tx.insert_promise(P("x")))  # the pooled connections are healthy afterwards
    assert [p.id for p in store.read(lambda tx: tx.all_promises())] == ["x"]


def test_duplicate_insert_raises_and_keeps_transaction(store: Any) -> None:
    """As in MemoryStore, a duplicate insert raises StorageError and the transaction lives on."""
    store.write(lambda tx: tx.insert_promise(P("x")))
    with pytest.raises(StorageError) as info:
        store.write(lambda tx: tx.insert_promise(P("x")))
    assert type(info.value) is StorageError and "duplicate" in str(info.value)

    def tolerant(tx: Any) -> str:
        try:
            tx.insert_promise(P("x"))
        except StorageError:
            tx.insert_promise(P("y"))
        try:
            tx.insert_task(Task("t", "pending", 1))
            tx.insert_task(Task("t", "pending", 2))
        except StorageError:
            pass
        return "ok"

    assert store.write(tolerant) == "ok"
    assert store.read(lambda tx: ([p.id for p in tx.all_promises()], tx.all_tasks())) == \
        (["x", "y"], [Task("t", "pending", 1)])


# (c) durability, closing, schema ---------------------------------------------------------------------

def test_reopen_keeps_data(durable: Adapter) -> None:
    s = durable.open()
    s.write(lambda tx: [tx.insert_promise(P("d1", param={"data": "", "headers": {}}, tags={"a.b": ""})),
                        tx.enqueue(Message("execute", "d1", "poll://x", 1)), tx.set_meta("k", "v")])
    s.close()
    s = durable.open()
    assert s.read(lambda tx: (tx.get_promise("d1"), tx.outbox(), tx.get_meta("k"))) == \
        (P("d1", param={"data": "", "headers": {}}, tags={"a.b": ""}), [Message("execute", "d1", "poll://x", 1)], "v")


def test_closed_store_raises(durable: Adapter) -> None:
    s = durable.open()
    s.write(lambda tx: tx.set_meta("a", "1"))
    s.close()
    s.close()
    for call in (lambda: s.write(lambda tx: None), lambda: s.read(lambda tx: None), s.ping):
        with pytest.raises(StorageError):
            call()


def test_migrations_apply_only_missing(durable: Adapter, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = durable.module
    durable.open().close()
    index = "meta (note(16))" if durable.name == "mysql" else "meta (note)"  # MySQL indexes a TEXT prefix
    extra = (mod.SCHEMA_VERSION + 1, ["ALTER TABLE meta ADD COLUMN note TEXT", f"CREATE INDEX meta_note ON {index}"])
    monkeypatch.setattr(mod, "MIGRATIONS", mod.MIGRATIONS + [extra])
    monkeypatch.setattr(mod, "SCHEMA_VERSION", extra[0])
    for _ in range(2):  # the second open must not re-run the ALTER (it would fail)
        s = durable.open()
        assert s.schema_version() == extra[0]
        s.close()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="newer"):
        durable.open()


# (d) read-only enforcement ----------------------------------------------------------------------------

WRITES = [lambda tx: tx.insert_promise(P("r")), lambda tx: tx.update_promise(P("r")),
          lambda tx: tx.insert_task(Task("r", "pending", 1)), lambda tx: tx.update_task(Task("r", "pending", 1)),
          lambda tx: tx.add_callback("a", "b", True), lambda tx: tx.mark_callbacks_ready("a"),
          lambda tx: tx.delete_callbacks("a", False), lambda tx: tx.add_listener("a", "b"),
          lambda tx: tx.pop_listeners("a"), lambda tx: tx.enqueue(Message("unblock", "a", "b")),
          lambda tx: tx.ack(Message("unblock", "a", "b")), lambda tx: tx.insert_schedule(S("s", 1)),
          lambda tx: tx.update_schedule(S("s", 1)), lambda tx: tx.delete_schedule("s"),
          lambda tx: tx.set_meta("a", "b"), lambda tx: tx.reset(), lambda tx: tx.put_lock(L("r", 1)),
          lambda tx: tx.delete_lock("r"), lambda tx: tx.revive_dead(None),
          lambda tx: tx.delete_promises(["r"])]


@pytest.mark.parametrize("fn", WRITES)
def test_read_only_violation(durable: Adapter, fn: Callable) -> None:
    """(MemoryStore refuses only the writes that would change something, so it is not listed.)"""
    store = durable.open()
    with pytest.raises(ReadOnlyViolation):
        store.read(fn)

    def keeps_reading(tx: Any) -> Any:
        try:
            fn(tx)
        except ReadOnlyViolation:
            return tx.get_meta("a")  # the transaction is intact: nothing reached the database
        return "wrote"

    assert store.read(keeps_reading) is None
    store.write(fn)  # the same function is fine in a write transaction


# (e) the older server's REST API (docs/legacy-api.md): id patterns, extras, locks -----------------------

PATTERN_EXPECTED = {
    "*": sorted(PATTERN_IDS), "**": sorted(PATTERN_IDS),
    "foo/*": ["foo/", "foo/Bar", "foo/bar"],
    "*/bar": ["/bar", "Foo/bar", "foo/bar", "x/bar"],
    "a*b*c": ["a/b/c", "aXbYc", "abc"],
    "A*": ["A1", "AbC"],
    "a*": ["a b", "a!%b", "a!b", "a%b", "a*b", "a/b/c", "a1", "a?b", "aXb", "aXbYc", "a[b]", "a\\b", "a_b", "abc"],
    "a*b": ["a b", "a!%b", "a!b", "a%b", "a*b", "a?b", "aXb", "a\\b", "a_b"],
    "a%b": ["a%b"], "a_b": ["a_b"], "a?b": ["a?b"], "a[b]": ["a[b]"], "a\\b": ["a\\b"], "a!b": ["a!b"],
    "a!%b": ["a!%b"], "*%*": ["a!%b", "a%b"], "*_*": ["a_b"], "*!*": ["a!%b", "a!b"], "*\\*": ["a\\b"],
    "*[*": ["a[b]"], "*?*": ["a?b"], "foo/": ["foo/"], "": [], "nomatch*": [], "*/*/*": ["a/b/c"],
    "ABC": [], "abc": ["abc"], "*C": ["AbC"], "*c": ["a/b/c", "aXbYc", "abc"], "a b": ["a b"], "é*": ["é/é"],
    "a?": [], "a_": [], "a%": [], "A": [], "a": [],
}


def test_id_patterns_are_literal_but_for_star_and_case_sensitive(store: Any) -> None:
    """Every character but `*` is literal (LIKE's `%`/`_`, GLOB's `?`/`[`, the escapes `\\`/`!`), and
    case matters (SQLite's LIKE would ignore it), for promises and schedules alike."""
    store.write(lambda tx: [(tx.insert_promise(P(i)), tx.insert_schedule(S(i, 1))) for i in PATTERN_IDS])
    for pattern, want in PATTERN_EXPECTED.items():
        got = store.read(lambda tx, p=pattern: ([x.id for x in tx.search_promises_by_id(p, None, {}, None, 100)],
                                                [x.id for x in tx.search_schedules_by_id(p, {}, None, 100)]))
        assert got == (want, want), pattern
    walked, cursor = [], None  # paging by cursor walks the matches in id order
    while page := store.read(lambda tx, c=cursor: tx.search_promises_by_id("a*", None, {}, c, 4)):
        assert len(page) <= 4
        walked += [p.id for p in page]
        cursor = page[-1].id
    assert walked == PATTERN_EXPECTED["a*"]


def test_id_searches_filter_states_and_tags(store: Any) -> None:
    store.write(lambda tx: [tx.insert_promise(P("j/1", tags={"t": "a"})),
                            tx.insert_promise(P("j/2", "resolved", tags={"t": "a", "u": "1"}, settled_at=2)),
                            tx.insert_promise(P("j/3", "rejected_timedout", tags={"t": "b"}, settled_at=2)),
                            tx.insert_schedule(S("j/1", 5, {"t": "a"})),  # promise_tags only
                            tx.insert_schedule(S("j/2", 5, own={"t": "a", "u": "1"}))])

    def ids(rows: list) -> list[str]:
        return [r.id for r in rows]

    assert store.read(lambda tx: (ids(tx.search_promises_by_id("j/*", None, {"t": "a"}, None, 9)),
                                  ids(tx.search_promises_by_id("j/*", ["resolved", "rejected_timedout"], {}, None, 9)),
                                  ids(tx.search_promises_by_id("j/*", ("pending",), {"t": "b"}, None, 9)),
                                  ids(tx.search_promises_by_id("j/*", [], {}, None, 9)),
                                  ids(tx.search_promises_by_id("j/*", None, {"t": "a", "u": "1"}, None, 9)),
                                  ids(tx.search_schedules_by_id("j/*", {"t": "a"}, None, 9)),
                                  ids(tx.search_schedules_by_id("j/*", {}, "j/1", 9)))) == \
        (["j/1", "j/2"], ["j/2", "j/3"], [], [], ["j/2"], ["j/2"], ["j/2"])


def test_idempotency_keys_and_schedule_extras_on_every_read_path(store: Any) -> None:
    p = P("p", tags={BRANCH: "b"}, timeout_at=5, ikey_create="create-é")
    settled = P("q", "resolved", 6, {BRANCH: "b"}, settled_at=3, ikey_create="c", ikey_settle="settle 'x'")
    s = S("s", 7, {"pt": "1"}, own={"team": "é", "": ""}, description="every minute\n", ikey="k")
    store.write(lambda tx: [tx.insert_promise(p), tx.insert_promise(P("q", timeout_at=6, tags={BRANCH: "b"})),
                            tx.update_promise(settled), tx.insert_schedule(s)])
    assert store.read(lambda tx: (tx.get_promise("p"), tx.get_promises(["p", "q"]), tx.search_promises(None, {}, None, 9),
                                  tx.search_promises_by_id("*", None, {}, None, 9), tx.promises_by_branch("b"),
                                  tx.due_promises(10, False, 9), tx.all_promises())) == \
        (p, {"p": p, "q": settled}, [p, settled], [p, settled], [p, settled], [p], [p, settled])
    assert store.read(lambda tx: (tx.get_schedule("s"), tx.search_schedules({}, None, 9),
                                  tx.search_schedules_by_id("s", {"team": "é"}, None, 9), tx.due_schedules(7, 9))) == \
        (s, [s], [s], [s])
    plain = S("s", 8)  # an update back to the defaults clears them
    store.write(lambda tx: [tx.update_schedule(plain), tx.update_promise(P("p", timeout_at=5, tags={BRANCH: "b"}))])
    assert store.read(lambda tx: (tx.get_schedule("s"), tx.get_promise("p"))) == \
        (plain, P("p", timeout_at=5, tags={BRANCH: "b"}))
    assert plain.description == "" and plain.tags == {} and plain.ikey is None


def test_ready_awaited(store: Any) -> None:
    store.write(lambda tx: [tx.add_callback("b", "w", True), tx.add_callback("a", "w", False),
                            tx.add_callback("C", "w", True), tx.add_callback("a", "v", True)])
    assert store.read(lambda tx: (tx.ready_awaited("w"), tx.ready_awaited("v"), tx.ready_awaited("x"))) == \
        (["C", "b"], ["a"], [])
    store.write(lambda tx: tx.mark_callbacks_ready("a"))
    assert store.read(lambda tx: tx.ready_awaited("w")) == ["C", "a", "b"]
    store.write(lambda tx: tx.delete_callbacks("w", True))
    assert store.read(lambda tx: tx.ready_awaited("w")) == []


def test_locks(store: Any) -> None:
    assert store.read(lambda tx: (tx.get_lock("r"), tx.locks_of_process("w1"), tx.due_locks(100, 9),
                                  tx.next_deadline(False))) == (None, [], [], None)
    store.write(lambda tx: [tx.put_lock(L("r2", 50)), tx.put_lock(L("r1", 60)), tx.put_lock(L("r3", 50, "w2", "e2")),
                            tx.put_lock(L("r0", 70, "w2"))])
    assert store.read(lambda tx: (tx.get_lock("r2"), [lk.resource_id for lk in tx.locks_of_process("w1")],
                                  [lk.resource_id for lk in tx.locks_of_process("w2")],
                                  [lk.resource_id for lk in tx.due_locks(60, 9)],
                                  [lk.resource_id for lk in tx.due_locks(60, 2)], tx.due_locks(49, 9),
                                  tx.next_deadline(False), tx.next_deadline(True))) == \
        (L("r2", 50), ["r1", "r2"], ["r0", "r3"], ["r2", "r3", "r1"], ["r2", "r3"], [], 50, 50)
    # replace: another holder, process, ttl and expiry, in place of the old row
    store.write(lambda tx: tx.put_lock(L("r2", 30, "w2", "e9", 99)))
    assert store.read(lambda tx: (tx.get_lock("r2"), [lk.resource_id for lk in tx.locks_of_process("w1")],
                                  [lk.resource_id for lk in tx.locks_of_process("w2")], tx.due_locks(30, 9),
                                  tx.next_deadline(False))) == \
        (L("r2", 30, "w2", "e9", 99), ["r1"], ["r0", "r2", "r3"], [L("r2", 30, "w2", "e9", 99)], 30)
    assert store.write(lambda tx: (tx.delete_lock("r2"), tx.delete_lock("r2"), tx.delete_lock("nope"))) == \
        (True, False, False)
    assert store.read(lambda tx: (tx.get_lock("r2"), tx.next_deadline(False))) == (None, 50)
    # the earliest deadline of all: a lock's expiry competes with promise timeouts, timers, schedules
    store.write(lambda tx: [tx.insert_promise(P("p", timeout_at=40, tags={TARGET: "poll://a"})),
                            tx.insert_task(Task("t", "pending", 1, RETRY, 45)), tx.insert_schedule(S("s", 42))])
    assert store.read(lambda tx: tx.next_deadline(True)) == 40
    store.write(lambda tx: tx.put_lock(L("early", 3)))
    assert store.read(lambda tx: (tx.next_deadline(False), tx.next_deadline(True))) == (3, 3)
    store.write(lambda tx: [tx.delete_lock(lk.resource_id) for lk in tx.due_locks(2**62, 100)])
    assert store.read(lambda tx: (tx.due_locks(2**62, 100), tx.next_deadline(False))) == ([], 40)


def test_reset_deletes_every_row_but_meta(store: Any) -> None:
    store.write(lambda tx: [tx.insert_promise(P("p", ikey_create="k")), tx.insert_task(Task("p", "pending", 1, RETRY, 5)),
                            tx.add_callback("p", "q", True), tx.add_listener("p", "poll://a"),
                            tx.enqueue(Message("unblock", "p", "poll://a")), tx.insert_schedule(S("s", 9, own={"a": "b"})),
                            tx.put_lock(L("r", 1)), tx.set_meta("m", "v")])
    store.write(lambda tx: tx.reset())
    assert store.read(lambda tx: (tx.all_promises(), tx.all_tasks(), tx.all_callbacks(), tx.all_listeners(),
                                  tx.outbox(), tx.search_schedules_by_id("*", {}, None, 9), tx.get_lock("r"),
                                  tx.due_locks(2**62, 9), tx.ready_awaited("q"), tx.next_deadline(False),
                                  tx.get_meta("m"))) == \
        ([], [], [], [], [], [], None, [], [], None, "v")
    store.write(lambda tx: tx.put_lock(L("r", 2)))  # the key is free again
    assert store.read(lambda tx: tx.get_lock("r")) == L("r", 2)


@pytest.mark.parametrize("server", _params(["postgres", "mysql"]))
def test_racing_lock_acquisitions_have_one_winner(server: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Acquire = get_lock, then put_lock if free: transactions that all found the lock free race
    to insert it; one wins, the others are re-run and find the winner's lock (never overwrite it)."""
    import threading

    a = Adapter(server, tmp_path, request)
    try:
        store = a.open()
        n = 8
        looked = threading.Barrier(n, timeout=30)
        results: list[Any] = [None] * n

        def worker(i: int) -> None:
            attempts = [0]

            def fn(tx: Any) -> bool:
                attempts[0] += 1
                held = tx.get_lock("res")
                if held is None:
                    if attempts[0] == 1:
                        try:
                            looked.wait()  # everyone looks before anyone inserts
                        except threading.BrokenBarrierError:
                            pass
                    tx.put_lock(L("res", 100, f"w{i}", f"e{i}"))
                    return True
                return held.execution_id == f"e{i}"
            results[i] = store.write(fn)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results.count(True) == 1, results
        winner = results.index(True)
        assert store.read(lambda tx: tx.get_lock("res")) == L("res", 100, f"w{winner}", f"e{winner}")
    finally:
        a.close_all()


def _old_schema_store(a: Adapter, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A store of `a`'s adapter whose schema stops at the version before the REST API's columns."""
    mod = a.module
    old = {"sqlite": 2, "postgres": 3, "mysql": 1}[a.name]
    monkeypatch.setattr(mod, "MIGRATIONS", [m for m in mod.MIGRATIONS if m[0] <= old])
    monkeypatch.setattr(mod, "SCHEMA_VERSION", old)
    s = a.open()
    assert s.schema_version() == old
    return s


def test_migration_from_the_previous_version_keeps_rows(durable: Adapter, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database at the previous schema version, with a promise and a schedule written by the
    previous server, migrates at the next start: the rows read back with the new fields at their
    defaults, and the new columns and table work."""
    from contextlib import nullcontext

    from tests.support import mysql as my_support
    from tests.support import pg as pg_support

    empty = {"postgres": pg_support.empty_database, "mysql": my_support.empty_database}.get(durable.name)
    with (empty() if empty else nullcontext(durable.url)) as url:
        durable.url = url
        old = _old_schema_store(durable, monkeypatch)
        # literal SQL as the previous server wrote its rows (no parameters: every adapter's _x runs it)
        old.write(lambda tx: [tx._x("INSERT INTO promises (id, state, param, value, tags, timeout_at, created_at,"
                                    " settled_at) VALUES ('old', 'resolved', '{\"data\":\"x\"}', '{}',"
                                    " '{\"a\":\"b\"}', 100, 1, 5)"),
                              tx._x("INSERT INTO schedules (id, cron, promise_id, promise_timeout, promise_param,"
                                    " promise_tags, created_at, next_run_at, last_run_at) VALUES ('olds',"
                                    " '* * * * *', 'p', 60, '{}', '{\"t\":\"1\"}', 1, 50, NULL)")])
        old.close()
        monkeypatch.undo()
        s = durable.open()
        assert s.schema_version() == durable.module.SCHEMA_VERSION
        want_p = Promise("old", "resolved", {"data": "x"}, {}, {"a": "b"}, 100, 1, 5)
        want_s = Schedule("olds", "* * * * *", "p", 60, {}, {"t": "1"}, 1, 50)
        assert want_p.ikey_create is None and want_s.tags == {} and want_s.description == ""
        assert s.read(lambda tx: (tx.get_promise("old"), tx.search_promises_by_id("o*", None, {}, None, 9),
                                  tx.get_schedule("olds"), tx.search_schedules_by_id("*", {}, None, 9),
                                  tx.search_schedules({"t": "1"}, None, 9), tx.due_locks(2**62, 9))) == \
            (want_p, [want_p], want_s, [want_s], [want_s], [])
        s.write(lambda tx: [tx.update_promise(P("old", ikey_create="c", ikey_settle="s")),
                            tx.update_schedule(S("olds", 50, own={"x": "y"}, description="d", ikey="k")),
                            tx.put_lock(L("r", 7))])
        assert s.read(lambda tx: (tx.get_promise("old"), tx.get_schedule("olds"), tx.get_lock("r"),
                                  tx.next_deadline(False))) == \
            (P("old", ikey_create="c", ikey_settle="s"), S("olds", 50, own={"x": "y"}, description="d", ikey="k"),
             L("r", 7), 7)
        durable.close_all()
