"""SQLite adapter specifics: the single writer's group commit and per-job rollback, WAL readers
that never wait for the writer, indexes, durability across SIGKILL, schema versions, gevent
offload. The behaviour every adapter shares is in tests/test_store_contract.py."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.records import Promise
from shared.storage.base import ReadOnlyViolation, StorageError
from shared.storage.sqlite import SCHEMA_VERSION, SqliteStore
from tests.support.wait import wait_until
from tests.test_store_contract import P

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(str(tmp_path / "t.db"))
    yield s
    s.close()


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
    assert "locks_process" in plan("SELECT resource_id, ttl FROM locks WHERE process_id = ? ORDER BY resource_id", ("w",))
    assert "locks_due" in plan("SELECT resource_id, ttl FROM locks WHERE expires_at <= ?"
                               " ORDER BY expires_at, resource_id LIMIT ?", (1, 1))
    # an id pattern with a literal prefix narrows to that key range (GLOB is case-sensitive, so
    # SQLite's LIKE optimization applies to it with the id's BINARY collation)
    assert "(id>? AND id<?)" in plan("SELECT id, state FROM promises WHERE id GLOB ? AND id > ? ORDER BY id LIMIT ?",
                                     ("foo/*", "", 5))
    assert "(id>? AND id<?)" in plan("SELECT id, cron FROM schedules WHERE id GLOB ? ORDER BY id LIMIT ?",
                                     ("foo/*", 5))


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
    assert wait_until(lambda: store._queue.qsize() >= n, 30, interval=0.005), "jobs did not queue"


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
    """Writes that queue while the writer is busy share commits (every one still answered with
    its own result). The writer is held until all of them queued, so the batching does not
    depend on how the scheduler happened to interleave the threads."""
    n = 50
    _, release, th = _hold_writer(store)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            assert store.write(lambda tx: tx.insert_promise(P(f"g{i:02d}")) or i) == i
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    _wait_queued(store, n)
    before = store.commits
    release.set()
    for t in threads + [th]:
        t.join(30)
    assert not errors
    commits = store.commits - before
    print(f"group commit: {n} writes in {commits} commits (after the blocker's)")
    assert commits < n
    assert len(store.read(lambda tx: tx.all_promises())) == n


# (d) durability ----------------------------------------------------------------------------------

@pytest.mark.process  # a child process killed after its write returned
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
        reader.join(30)  # a reader waiting for the writer would still be waiting: it is released below
        assert got == [["before"]]  # done while the writer holds its transaction; uncommitted row invisible
        store.ping()
    finally:
        release.set()
        th.join(10)
    assert store.read(lambda tx: [p.id for p in tx.all_promises()]) == ["before", "during"]


# (f) schema versioning -------------------------------------------------------------------------

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


# (g) gevent ----------------------------------------------------------------------------------------

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


@pytest.mark.process  # gevent monkey-patches a whole process
def test_gevent_offload(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, str(tmp_path / "g.db")], cwd=ROOT,
                          capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.startswith("OK"), out
    print("gevent:", out.strip())
