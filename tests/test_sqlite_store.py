"""SQLite adapter: differential against MemoryStore, group commit, durability, readers, gevent."""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from shared.records import BRANCH, LEASE, RETRY, TARGET, Message, Promise, Schedule, Task
from shared.storage.base import ReadOnlyViolation, StorageError, Tx
from shared.storage.memory import MemoryStore
from shared.storage.sqlite import SCHEMA_VERSION, SqliteStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(str(tmp_path / "t.db"))
    yield s
    s.close()


def P(id: str, state: str = "pending", timeout_at: int = 100, tags: dict | None = None, param: dict | None = None,
      value: dict | None = None, created_at: int = 1, settled_at: int | None = None) -> Promise:
    return Promise(id, state, param if param is not None else {}, value if value is not None else {},
                   tags if tags is not None else {}, timeout_at, created_at, settled_at)


def S(id: str, next_run_at: int, tags: dict | None = None, last: int | None = None) -> Schedule:
    return Schedule(id, "* * * * *", f"{id}.{{{{.timestamp}}}}", 60, {"data": "x", "headers": {}},
                    tags or {}, 1, next_run_at, last)


def outcome(store: Any, fn: Callable, write: bool) -> tuple:
    try:
        return ("ok", (store.write if write else store.read)(fn))
    except Exception as e:  # compare the exception type: both adapters must raise the same one
        return ("err", type(e).__name__)


def snapshot(tx: Any) -> tuple:
    return (tx.all_promises(), tx.all_tasks(), tx.all_callbacks(), tx.all_listeners(), tx.outbox(),
            tx.search_schedules({}, None, 10_000), [tx.get_meta(k) for k in ("a", "b", "")])


class Pair:
    """The same functions run against MemoryStore and SqliteStore; every outcome must match."""

    def __init__(self, path: Path) -> None:
        self.mem = MemoryStore()
        self.sql = SqliteStore(str(path))

    def run(self, fn: Callable, write: bool = True) -> Any:
        a, b = outcome(self.mem, fn, write), outcome(self.sql, fn, write)
        assert a == b
        assert self.mem.read(snapshot) == self.sql.read(snapshot)
        return a

    def close(self) -> None:
        self.sql.close()


# (a) differential: a scripted sequence covering every Tx method ------------------------------

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
    ("new version", lambda tx: [tx.enqueue(Message("execute", "t2", "poll://a", 2)), tx.dead_messages(),
                                tx.outbox_page(0, 10), tx.record_failure(Message("execute", "t2", "poll://a", 2), 3)],
     True),
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
    ("deadline", lambda tx: (tx.next_deadline(False), tx.next_deadline(True)), False),
    ("delete schedule", lambda tx: (tx.delete_schedule("s3"), tx.delete_schedule("s3")), True),
    ("deadline 2", lambda tx: (tx.next_deadline(False), tx.next_deadline(True)), False),
    ("meta", lambda tx: [tx.set_meta("a", "1"), tx.set_meta("b", ""), tx.set_meta("a", "2"), tx.set_meta("", "e")], True),
    ("get meta", lambda tx: (tx.get_meta("a"), tx.get_meta("b"), tx.get_meta("zz")), False),
    ("del meta", lambda tx: tx.set_meta("b", None), True),
    ("raise after writes", lambda tx: [tx.insert_promise(P("boom")), tx.set_meta("a", "x"), 1 / 0], True),
    ("readonly violation", lambda tx: tx.set_meta("c", "1"), False),
    ("snapshot", lambda tx: (tx.all_promises(), tx.all_tasks(), tx.all_callbacks(), tx.all_listeners()), False),
    ("reset", lambda tx: tx.reset(), True),
    ("after reset", lambda tx: (snapshot(tx), tx.next_deadline(False), tx.get_meta("a"), tx.outbox_count()), False),
    ("reenqueue after reset", lambda tx: [tx.enqueue(Message("execute", "t1", "poll://z", 1)),
                                          tx.enqueue(Message("unblock", "p", "poll://z"))], True),
]


def test_differential_every_method(tmp_path: Path) -> None:
    pair = Pair(tmp_path / "d.db")
    try:
        for name, fn, write in STEPS:
            pair.run(fn, write)
            if not write:  # read-only steps must give the same answer inside a write transaction
                pair.run(fn, True)
    finally:
        pair.close()
    covered = {m for m in dir(Tx) if not m.startswith("_")}
    used = set()
    for _, fn, _w in STEPS:
        used |= set(fn.__code__.co_names)
    assert covered <= used, covered - used


def test_differential_random(tmp_path: Path) -> None:
    """Seeded random operations over a small id space, to hit orderings the script misses."""
    rng = random.Random(1234)
    ids = [f"i{n}" for n in range(8)] + ["a.b", "é", "Z"]
    addrs = ["poll://a", "poll://b", "http://c"]
    pair = Pair(tmp_path / "r.db")

    def tags() -> dict:
        out = {}
        for k in rng.sample([TARGET, BRANCH, "a.b", "k", "é"], rng.randint(0, 3)):
            out[k] = rng.choice(["", "x", "y"])
        return out

    ops: list[Callable[[], tuple[Callable, bool]]] = [
        lambda: ((lambda tx, p=P(rng.choice(ids), rng.choice(["pending", "resolved"]), rng.randint(0, 50), tags()):
                  tx.insert_promise(p)), True),
        lambda: ((lambda tx, p=P(rng.choice(ids), rng.choice(["resolved", "rejected"]), settled_at=rng.randint(0, 9)):
                  tx.update_promise(p)), True),
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
        lambda: ((lambda tx, s=S(rng.choice(ids), rng.randint(0, 50), tags()): tx.insert_schedule(s)), True),
        lambda: ((lambda tx, i=rng.choice(ids): tx.delete_schedule(i)), True),
        lambda: ((lambda tx, t=tags(), c=rng.choice([None] + ids), n=rng.randint(1, 5): tx.search_schedules(t, c, n)), False),
        lambda: ((lambda tx, t=rng.randint(0, 60), n=rng.randint(1, 5): tx.due_schedules(t, n)), False),
        lambda: ((lambda tx, o=rng.random() < .5: tx.next_deadline(o)), False),
        lambda: ((lambda tx, k=rng.choice(["a", "b"]), v=rng.choice([None, "", "v"]): tx.set_meta(k, v)), True),
        lambda: ((lambda tx: tx.reset()) if rng.random() < .05 else (lambda tx: None), True),
    ]
    try:
        for _ in range(400):
            fn, write = rng.choice(ops)()
            pair.run(fn, write)
    finally:
        pair.close()


def test_memory_path_routes_reads_through_writer() -> None:
    s = SqliteStore(":memory:")
    try:
        s.write(lambda tx: tx.insert_promise(P("m1")))
        assert s.read(lambda tx: tx.get_promise("m1")) == P("m1")
        with pytest.raises(ReadOnlyViolation):
            s.read(lambda tx: tx.set_meta("a", "b"))
        s.ping()
    finally:
        s.close()


def test_due_queries_use_indexes(store: SqliteStore) -> None:
    def plan(sql: str, args: tuple) -> str:
        return " ".join(r[-1] for r in store.read(lambda tx: tx._c.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()))

    assert "promises_due_target" in plan("SELECT id FROM promises WHERE state = 'pending' AND target IS NOT NULL"
                                         " AND timeout_at <= ? ORDER BY timeout_at, id LIMIT ?", (1, 1))
    assert "promises_due " in plan("SELECT id FROM promises WHERE state = 'pending' AND timeout_at <= ?"
                                   " ORDER BY timeout_at, id LIMIT ?", (1, 1)) + " "
    assert "promises_branch" in plan("SELECT id FROM promises WHERE branch = ? ORDER BY id", ("b",))
    assert "tasks_timer" in plan("SELECT id FROM tasks WHERE timer_at <= ? ORDER BY timer_at, id LIMIT ?", (1, 1))
    assert "tasks_pid" in plan("SELECT id FROM tasks WHERE pid = ? AND state = 'acquired' AND timer_type = 1"
                               " ORDER BY id", ("w",))
    assert "schedules_due" in plan("SELECT id FROM schedules WHERE next_run_at <= ? ORDER BY next_run_at, id", (1,))
    assert "callbacks_awaiter" in plan("SELECT count(*) FROM callbacks WHERE awaiter = ? AND ready = 1", ("a",))


# (b) rollback of one job while its batch-mate commits ---------------------------------------

def _hold_writer(store: SqliteStore) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """Occupy the writer with a job blocked inside fn, so later jobs queue into one batch."""
    entered, release = threading.Event(), threading.Event()

    def blocker(tx: Any) -> None:
        tx.set_meta("blocker", "1")
        entered.set()
        assert release.wait(10)

    th = threading.Thread(target=store.write, args=(blocker,))
    th.start()
    assert entered.wait(10)
    return entered, release, th


def _wait_queued(store: SqliteStore, n: int) -> None:
    for _ in range(1000):
        if store._queue.qsize() >= n:
            return
        threading.Event().wait(0.005)
    raise AssertionError("jobs did not queue")


def test_rollback_isolated_within_batch(store: SqliteStore) -> None:
    _, release, th = _hold_writer(store)
    results: dict[str, Any] = {}

    def bad(tx: Any) -> None:
        tx.insert_promise(P("bad"))
        tx.set_meta("bad", "1")
        raise ValueError("nope")

    def run(name: str, fn: Callable) -> None:
        try:
            results[name] = store.write(fn)
        except Exception as e:
            results[name] = e

    threads = [threading.Thread(target=run, args=("bad", bad)),
               threading.Thread(target=run, args=("good", lambda tx: tx.insert_promise(P("good")) or "ok"))]
    for t in threads:
        t.start()
    _wait_queued(store, 2)
    commits = store.commits
    release.set()
    for t in threads + [th]:
        t.join(10)
    assert isinstance(results["bad"], ValueError) and str(results["bad"]) == "nope"
    assert results["good"] == "ok"
    assert store.commits == commits + 2  # the blocker's commit, then bad and good shared one
    assert store.read(lambda tx: (tx.get_promise("bad"), tx.get_meta("bad"), tx.get_promise("good"))) == \
        (None, None, P("good"))


def test_exceptions_propagate_unchanged(store: SqliteStore) -> None:
    class Custom(Exception):
        pass

    with pytest.raises(Custom):
        store.write(lambda tx: (_ for _ in ()).throw(Custom()))
    store.write(lambda tx: tx.insert_promise(P("x")))
    with pytest.raises(StorageError):
        store.write(lambda tx: tx.insert_promise(P("x")))
    # a fn that swallows a constraint error keeps its transaction and commits the rest
    def tolerant(tx: Any) -> str:
        try:
            tx.insert_promise(P("x"))
        except StorageError:
            tx.insert_promise(P("y"))
        return "ok"
    assert store.write(tolerant) == "ok"
    assert [p.id for p in store.read(lambda tx: tx.all_promises())] == ["x", "y"]


def test_commit_failure_fails_whole_batch(store: SqliteStore) -> None:
    """A deferred constraint makes COMMIT itself fail: every job in the batch gets StorageError."""
    store._w.execute("PRAGMA foreign_keys = ON")  # writer idle between batches; only this test does this
    _, release, th = _hold_writer(store)
    results: dict[str, Any] = {}

    def orphan(tx: Any) -> str:
        tx._c.execute("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
        tx._c.execute("CREATE TEMP TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
        tx._c.execute("INSERT INTO child VALUES (7)")
        return "looked fine"

    def run(name: str, fn: Callable) -> None:
        try:
            results[name] = store.write(fn)
        except Exception as e:
            results[name] = e

    threads = [threading.Thread(target=run, args=("orphan", orphan)),
               threading.Thread(target=run, args=("good", lambda tx: tx.insert_promise(P("good")))),
               threading.Thread(target=run, args=("raiser", lambda tx: 1 / 0))]
    for t in threads:
        t.start()
    _wait_queued(store, 3)
    release.set()
    for t in threads + [th]:
        t.join(10)
    assert isinstance(results["orphan"], StorageError)
    assert isinstance(results["good"], StorageError)
    assert isinstance(results["raiser"], ZeroDivisionError)  # its outcome never depended on COMMIT
    store._w.execute("PRAGMA foreign_keys = OFF")
    assert store.read(lambda tx: (tx.get_promise("good"), tx.get_meta("blocker"))) == (None, "1")
    store.write(lambda tx: tx.insert_promise(P("after")))  # the writer is healthy afterwards
    assert store.read(lambda tx: tx.get_promise("after")) == P("after")


# (c) group commit ------------------------------------------------------------------------------

def test_group_commit_batches(store: SqliteStore) -> None:
    n = 50
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []
    before = store.commits

    def worker(i: int) -> None:
        try:
            barrier.wait()
            assert store.write(lambda tx: tx.insert_promise(P(f"g{i:02d}")) or i) == i
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    commits = store.commits - before
    print(f"group commit: {n} writes in {commits} commits")
    assert commits < n
    assert len(store.read(lambda tx: tx.all_promises())) == n


# (d) durability ----------------------------------------------------------------------------------

def test_reopen_keeps_data(tmp_path: Path) -> None:
    path = str(tmp_path / "p.db")
    s = SqliteStore(path)
    s.write(lambda tx: [tx.insert_promise(P("d1", param={"data": "", "headers": {}}, tags={"a.b": ""})),
                        tx.enqueue(Message("execute", "d1", "poll://x", 1)), tx.set_meta("k", "v")])
    s.close()
    s = SqliteStore(path)
    try:
        assert s.read(lambda tx: (tx.get_promise("d1"), tx.outbox(), tx.get_meta("k"))) == \
            (P("d1", param={"data": "", "headers": {}}, tags={"a.b": ""}), [Message("execute", "d1", "poll://x", 1)], "v")
    finally:
        s.close()


def test_sigkill_after_write_returns(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    script = textwrap.dedent(f"""
        import os, signal
        from shared.records import Promise
        from shared.storage.sqlite import SqliteStore
        s = SqliteStore({str(path)!r})
        s.write(lambda tx: tx.insert_promise(Promise("k1", "pending", {{}}, {{}}, {{}}, 5, 1)))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    s = SqliteStore(str(path))
    try:
        assert s.read(lambda tx: tx.get_promise("k1")) == Promise("k1", "pending", {}, {}, {}, 5, 1)
    finally:
        s.close()


def test_pragmas(store: SqliteStore) -> None:
    assert store._w.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._w.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# (e) readers do not wait for the writer ------------------------------------------------------------

def test_read_while_writer_blocked(store: SqliteStore) -> None:
    store.write(lambda tx: tx.insert_promise(P("before")))
    entered, release = threading.Event(), threading.Event()

    def slow(tx: Any) -> None:
        tx.insert_promise(P("during"))
        entered.set()
        assert release.wait(10)

    th = threading.Thread(target=store.write, args=(slow,))
    th.start()
    try:
        assert entered.wait(10)
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(store.read(lambda tx: [p.id for p in tx.all_promises()])))
        reader.start()
        reader.join(5)
        assert got == [["before"]]  # done while the writer holds its transaction; uncommitted row invisible
        store.ping()
    finally:
        release.set()
        th.join(10)
    assert store.read(lambda tx: [p.id for p in tx.all_promises()]) == ["before", "during"]


# (f) read-only enforcement -----------------------------------------------------------------------

WRITES = [lambda tx: tx.insert_promise(P("r")), lambda tx: tx.update_promise(P("r")),
          lambda tx: tx.insert_task(Task("r", "pending", 1)), lambda tx: tx.update_task(Task("r", "pending", 1)),
          lambda tx: tx.add_callback("a", "b", True), lambda tx: tx.mark_callbacks_ready("a"),
          lambda tx: tx.delete_callbacks("a", False), lambda tx: tx.add_listener("a", "b"),
          lambda tx: tx.pop_listeners("a"), lambda tx: tx.enqueue(Message("unblock", "a", "b")),
          lambda tx: tx.ack(Message("unblock", "a", "b")), lambda tx: tx.insert_schedule(S("s", 1)),
          lambda tx: tx.update_schedule(S("s", 1)), lambda tx: tx.delete_schedule("s"),
          lambda tx: tx.set_meta("a", "b"), lambda tx: tx.reset()]


@pytest.mark.parametrize("fn", WRITES)
def test_read_only_violation(store: SqliteStore, fn: Callable) -> None:
    with pytest.raises(ReadOnlyViolation):
        store.read(fn)
    store.write(fn)  # the same function is fine in a write transaction


# (g) schema versioning -------------------------------------------------------------------------

def test_schema_version_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "v.db")
    s = SqliteStore(path)
    assert s.schema_version() == SCHEMA_VERSION
    s.write(lambda tx: tx.insert_promise(P("v1")))
    s.close()
    for _ in range(2):
        s = SqliteStore(path)
        assert s.schema_version() == SCHEMA_VERSION
        assert s.read(lambda tx: tx.get_promise("v1")) == P("v1")
        s.close()
    rows = sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchall()
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_migrations_apply_only_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.storage.sqlite as mod

    path = str(tmp_path / "m.db")
    SqliteStore(path).close()
    extra = (SCHEMA_VERSION + 1, ["ALTER TABLE meta ADD COLUMN note TEXT", "CREATE INDEX meta_note ON meta (note)"])
    monkeypatch.setattr(mod, "MIGRATIONS", mod.MIGRATIONS + [extra])
    monkeypatch.setattr(mod, "SCHEMA_VERSION", extra[0])
    for _ in range(2):  # the second open must not re-run the ALTER (it would fail)
        s = SqliteStore(path)
        assert s.schema_version() == extra[0]
        s.close()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="newer"):
        SqliteStore(path)


def test_closed_store_raises(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "c.db"))
    s.write(lambda tx: tx.set_meta("a", "1"))
    s.close()
    s.close()
    for call in (lambda: s.write(lambda tx: None), lambda: s.read(lambda tx: None), s.ping):
        with pytest.raises(StorageError):
            call()


# (h) gevent ----------------------------------------------------------------------------------------

GEVENT_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import sys, gevent
from shared.records import Promise
from shared.storage.sqlite import SqliteStore

offloaded = []
def offload(fn):  # COMMIT (the fsync) goes to a native thread; statements stay on the loop
    offloaded.append(1)
    return gevent.get_hub().threadpool.apply(fn)
s = SqliteStore(sys.argv[1], offload=offload)
ticks = []
def ticker():  # the event loop keeps running while batches commit on native threads
    while len(ticks) < 100000:
        ticks.append(1); gevent.sleep(0.001)
t = gevent.spawn(ticker)
def job(i):
    r = s.write(lambda tx: tx.insert_promise(Promise(f"g{i:03d}", "pending", {"i": i}, {}, {}, i, 1)) or i)
    assert r == i
    assert s.read(lambda tx: tx.get_promise(f"g{i:03d}")).param == {"i": i}
    try:
        s.write(lambda tx: [tx.set_meta(f"x{i}", "1"), 1 / 0])
    except ZeroDivisionError:
        pass
    return i
gs = [gevent.spawn(job, i) for i in range(200)]
gevent.joinall(gs, raise_error=True)
assert sorted(g.value for g in gs) == list(range(200))
ps = s.read(lambda tx: tx.all_promises())
assert [p.id for p in ps] == [f"g{i:03d}" for i in range(200)]
assert s.read(lambda tx: tx.get_meta("x3")) is None
assert s.commits < 400, s.commits
assert len(offloaded) == s.commits  # every COMMIT, and only the COMMIT, left the loop
assert len(ticks) > 0  # the loop ran while batches committed
s.ping(); s.close(); t.kill()
plain = SqliteStore(sys.argv[1])  # no offload: the writer greenlet does the sqlite work itself
gevent.joinall([gevent.spawn(plain.write, lambda tx, i=i: tx.set_meta(f"p{i}", "1")) for i in range(50)], raise_error=True)
assert plain.read(lambda tx: tx.get_meta("p49")) == "1"
plain.close()
print("OK", s.commits, len(ticks))
"""


def test_gevent_offload(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, str(tmp_path / "g.db")], cwd=ROOT,
                          capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.startswith("OK"), out
    print("gevent:", out.strip())
