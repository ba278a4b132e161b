"""Postgres adapter specifics against a real server: errors abort the transaction, retries on
40001/deadlock/concurrent insert, row locks, SKIP LOCKED sweeps, racing migrations (advisory
lock), connection loss and outages, gevent. The behaviour every adapter shares is in
tests/test_store_contract.py. Every test gets a fresh database cloned from a migrated template."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.records import RETRY, Message, Task
from shared.storage.base import StorageError
from shared.storage.postgres import MAX_RETRIES, SCHEMA_VERSION, Busy, PostgresStore
from tests.support.pg import TcpProxy, empty_database, pg_template, pg_url, require_postgres, terminate_backends  # noqa: F401
from tests.test_store_contract import P, S

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(pg_url: str):
    s = PostgresStore(pg_url, pool_size=20)
    yield s
    s.close()


def _threads(n: int, target: Callable[[int], Any], timeout: float = 60) -> tuple[list[Any], list[BaseException]]:
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    assert not any(t.is_alive() for t in ts), "threads hung"
    return results, errors


# (a) errors and retries ---------------------------------------------------------------------------

def test_swallowed_database_error_never_commits(store: PostgresStore) -> None:
    """Postgres aborts a transaction on any error; a fn that swallows one must not 'succeed'."""
    def sloppy(tx: Any) -> str:
        tx.insert_promise(P("lost"))
        try:
            tx._x("SELECT 1 / 0")
        except StorageError:
            pass
        return "looked fine"

    with pytest.raises(StorageError, match="22012"):
        store.write(sloppy)
    with pytest.raises(StorageError, match="22012"):
        store.read(lambda tx: [tx._x("SELECT 1 / 0")])
    assert store.read(lambda tx: tx.get_promise("lost")) is None
    store.write(lambda tx: tx.insert_promise(P("after")))
    assert store.read(lambda tx: tx.get_promise("after")) == P("after")


def test_retryable_errors_then_busy(store: PostgresStore) -> None:
    serialization = "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '40001'; END $$"
    calls = []

    def once(tx: Any) -> str:
        calls.append(1)
        tx.set_meta("k", str(len(calls)))
        if len(calls) == 1:
            tx._simple(serialization)
        return "done"

    assert store.write(once) == "done" and len(calls) == 2
    assert store.read(lambda tx: tx.get_meta("k")) == "2"
    calls.clear()

    def always(tx: Any) -> None:
        calls.append(1)
        tx.set_meta("never", "1")
        tx._simple(serialization)

    with pytest.raises(Busy) as info:
        store.write(always)
    assert isinstance(info.value, StorageError) and "40001" in str(info.value)
    assert len(calls) == MAX_RETRIES + 1
    assert store.read(lambda tx: tx.get_meta("never")) is None


def test_deadlock_is_retried(store: PostgresStore) -> None:
    store.write(lambda tx: [tx.insert_promise(P("d1")), tx.insert_promise(P("d2"))])
    barrier = threading.Barrier(2, timeout=10)
    attempts = [0, 0]

    def worker(i: int) -> str:
        first, second = ("d1", "d2") if i == 0 else ("d2", "d1")

        def fn(tx: Any) -> str:
            attempts[i] += 1
            tx.get_promise(first)  # FOR UPDATE
            if attempts[i] == 1:
                barrier.wait()
            tx.update_promise(P(second, "resolved", settled_at=i))
            return "ok"
        return store.write(fn)

    results, errors = _threads(2, worker)
    assert not errors and results == ["ok", "ok"]
    assert sum(attempts) >= 3 and store.retries >= 1  # the deadlock victim ran again (a loaded machine may re-collide)


# (b) concurrency ------------------------------------------------------------------------------------

def _warm(store: PostgresStore, n: int) -> None:
    """Open n pooled connections first, so racing threads are not serialized by connection setup."""
    barrier = threading.Barrier(n, timeout=10)
    _, errors = _threads(n, lambda _: store.read(lambda tx: barrier.wait()))
    assert not errors, errors


def test_racing_get_then_insert_inserts_once(store: PostgresStore) -> None:
    """20 transactions all see no row, then all insert: one wins, every other one is re-run (it
    met the winner's row) and then sees it. A barrier inside the first attempt makes everyone
    look before anyone inserts, whatever the scheduler does."""
    n = 20
    _warm(store, n)
    looked = threading.Barrier(n, timeout=30)

    def worker(i: int) -> bool:
        attempts = [0]

        def fn(tx: Any) -> bool:
            attempts[0] += 1
            if tx.get_promise("race") is None:
                if attempts[0] == 1:
                    looked.wait()  # no row, so no lock is held while waiting here
                tx.insert_promise(P("race", param={"i": i}))
                tx.insert_task(Task("race", "pending", 1, RETRY, 5))
                return True
            return False
        return store.write(fn)

    results, errors = _threads(n, worker)
    assert not errors, errors
    assert results.count(True) == 1
    assert store.retries >= n - 1  # every loser's insert met the winner's row and was re-run
    winner = results.index(True)
    assert store.read(lambda tx: (tx.get_promise("race").param, len(tx.all_tasks()))) == ({"i": winner}, 1)


def test_counter_in_meta_serializes(store: PostgresStore) -> None:
    """20 read-modify-write increments of a missing meta key, then of a missing task: none is
    lost. Every first attempt reads "absent" before anyone writes (a barrier), so the
    missing-key start always races."""
    n = 20
    _warm(store, n)

    def racing(step: Callable[..., None]) -> Callable[[int], None]:
        looked = threading.Barrier(n, timeout=30)

        def worker(_: int) -> None:
            attempts = [0]

            def fn(tx: Any) -> None:
                attempts[0] += 1
                step(tx, looked if attempts[0] == 1 else None)
            store.write(fn)
        return worker

    def incr(tx: Any, looked: threading.Barrier | None = None) -> None:
        v = tx.get_meta("n")
        if looked is not None:
            looked.wait()
        tx.set_meta("n", str(int(v or 0) + 1))

    def bump_task(tx: Any, looked: threading.Barrier | None = None) -> None:
        t = tx.get_task("t")
        if looked is not None:
            looked.wait()
        tx.update_task(Task("t", "pending", (t.version if t else 0) + 1))

    _, errors = _threads(n, racing(incr))
    assert not errors, errors
    _, errors = _threads(n, racing(bump_task))
    assert not errors, errors
    assert store.retries >= 2  # both missing-key starts raced
    assert store.read(lambda tx: (tx.get_meta("n"), tx.get_task("t").version)) == (str(n), n)


def test_get_for_update_blocks_second_writer(store: PostgresStore) -> None:
    """A writer's get locks the row: a second writer waits until the first commits, then sees its
    write; a reader never waits. The holder commits only when the test says so."""
    store.write(lambda tx: tx.insert_promise(P("locked")))
    locked, release, seen = threading.Event(), threading.Event(), []

    def holder(tx: Any) -> None:
        tx.get_promise("locked")
        tx.update_promise(P("locked", "resolved", settled_at=1))
        locked.set()
        assert release.wait(30)

    th = threading.Thread(target=store.write, args=(holder,))
    th.start()
    try:
        assert locked.wait(30)
        assert store.read(lambda tx: tx.get_promise("locked").state) == "pending"  # reads never wait
        second = threading.Thread(target=store.write, args=(lambda tx: seen.append(tx.get_promise("locked").state),))
        second.start()
        second.join(0.5)
        assert second.is_alive() and seen == []  # blocked on the lock (a wrong pass could only end early)
    finally:
        release.set()
        th.join(30)
    second.join(30)
    assert seen == ["resolved"]


# (c) sweepers: SKIP LOCKED -----------------------------------------------------------------------------

def test_concurrent_due_queries_return_disjoint_rows(store: PostgresStore) -> None:
    store.write(lambda tx: [(tx.insert_promise(P(f"p{i}", timeout_at=i)), tx.insert_task(Task(f"t{i}", "pending", 1, RETRY, i)),
                             tx.insert_schedule(S(f"s{i}", i))) for i in range(6)])
    fetched, release = threading.Event(), threading.Event()

    def due(tx: Any) -> tuple:
        return ([p.id for p in tx.due_promises(100, False, 3)], [t.id for t in tx.due_tasks(100, 3)],
                [s.id for s in tx.due_schedules(100, 3)])

    def first(tx: Any) -> tuple:
        got = due(tx)
        fetched.set()
        assert release.wait(10)
        return got

    out: list[tuple] = []
    th = threading.Thread(target=lambda: out.append(store.write(first)))
    th.start()
    try:
        assert fetched.wait(30)
        # the first sweeper holds its rows until released, which happens only after this returns:
        # a second sweeper that waited for those locks would never finish
        got: list[tuple] = []
        second_th = threading.Thread(target=lambda: got.append(store.write(due)))
        second_th.start()
        second_th.join(30)
        assert got, "the second sweeper waited for the first one's locks"
        second = got[0]
        everything = store.read(due)  # a read takes no locks and sees the same first rows
    finally:
        release.set()
        th.join(30)
    a = out[0]
    assert a == everything == (["p0", "p1", "p2"], ["t0", "t1", "t2"], ["s0", "s1", "s2"])
    assert second == (["p3", "p4", "p5"], ["t3", "t4", "t5"], ["s3", "s4", "s5"])


# (d) migrations ----------------------------------------------------------------------------------------

def test_migrations_race_on_empty_database(pg_template: str) -> None:
    with empty_database() as url:
        barrier = threading.Barrier(8, timeout=10)

        def open_store(_: int) -> PostgresStore:
            barrier.wait()
            return PostgresStore(url, pool_size=2)

        stores, errors = _threads(8, open_store)
        assert not errors, errors
        try:
            stores[0].write(lambda tx: tx.insert_promise(P("m")))
            assert all(s.read(lambda tx: tx.get_promise("m")) == P("m") for s in stores)
            rows = stores[0].read(lambda tx: tx._x("SELECT version FROM schema_version ORDER BY version"))
            assert rows == [[v] for v in range(1, SCHEMA_VERSION + 1)]
            assert stores[3].schema_version() == SCHEMA_VERSION
        finally:
            for s in stores:
                s.close()


# (e) connection loss ---------------------------------------------------------------------------------------

def test_terminated_backends_are_replaced(store: PostgresStore, pg_url: str) -> None:
    _, errors = _threads(10, lambda i: store.write(lambda tx: tx.insert_promise(P(f"a{i}"))))
    assert not errors
    assert terminate_backends(pg_url) >= 1  # what a database restart does to every pooled session
    store.ping()
    assert store.reconnects >= 1
    assert terminate_backends(pg_url) >= 1
    _, errors = _threads(10, lambda i: store.write(lambda tx: tx.insert_promise(P(f"b{i}"))))
    assert not errors, errors
    assert len(store.read(lambda tx: tx.all_promises())) == 20


def test_break_mid_transaction_reruns_once(store: PostgresStore, pg_url: str) -> None:
    calls = []

    def fn(tx: Any) -> str:
        calls.append(1)
        tx.insert_promise(P("mid"))
        if len(calls) == 1:
            terminate_backends(pg_url)  # our own session dies before COMMIT
            time.sleep(0.1)
        tx.set_meta("k", "v")
        return "ok"

    assert store.write(fn) == "ok" and len(calls) == 2
    assert store.read(lambda tx: (tx.get_promise("mid"), tx.get_meta("k"))) == (P("mid"), "v")

    def always_broken(tx: Any) -> None:
        terminate_backends(pg_url)
        time.sleep(0.1)
        tx.set_meta("never", "1")

    with pytest.raises(StorageError) as info:
        store.write(always_broken)
    assert not isinstance(info.value, Busy)  # one fresh-connection retry only, then a plain error
    assert store.read(lambda tx: tx.get_meta("never")) is None
    calls.clear()

    def broken_at_commit(tx: Any) -> None:
        calls.append(1)
        tx.set_meta("c", "1")
        terminate_backends(pg_url)
        time.sleep(0.1)

    with pytest.raises(StorageError, match="outcome is unknown"):
        store.write(broken_at_commit)
    assert len(calls) == 1  # never re-run: had the COMMIT gone through, a re-run would apply it twice
    store.ping()


def test_database_outage_and_recovery(pg_url: str) -> None:
    proxy = TcpProxy()
    try:
        s = PostgresStore(proxy.url(pg_url), pool_size=4)
        _, errors = _threads(4, lambda i: s.write(lambda tx: tx.set_meta(f"k{i}", "1")))
        assert not errors
        proxy.down()
        for call in (s.ping, lambda: s.write(lambda tx: tx.set_meta("x", "1")), lambda: s.read(lambda tx: tx.get_meta("x"))):
            t0 = time.monotonic()
            with pytest.raises(StorageError):
                call()
            assert time.monotonic() - t0 < 20  # fails instead of hanging (TCP would wait minutes)
        proxy.up()
        s.ping()
        s.write(lambda tx: tx.set_meta("x", "2"))
        assert s.read(lambda tx: [tx.get_meta(k) for k in ("k0", "k3", "x")]) == ["1", "1", "2"]
        s.close()
        proxy.down()
        lazy = PostgresStore(proxy.url(pg_url), lazy=True)  # a cold start while the database is down
        with pytest.raises(StorageError):
            lazy.ping()
        proxy.up()
        lazy.ping()
        assert lazy.read(lambda tx: tx.get_meta("x")) == "2"
        lazy.close()
    finally:
        proxy.close()


def test_unreachable_database_raises_storage_error() -> None:
    require_postgres()
    with pytest.raises(StorageError):
        PostgresStore("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(StorageError, match="does not exist|3D000"):
        PostgresStore("postgresql://postgres@127.0.0.1:5432/resonate_no_such_db")


# (f) gevent ------------------------------------------------------------------------------------------------

GEVENT_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import sys, time, gevent
from shared.records import Promise
from shared.storage.postgres import PostgresStore

s = PostgresStore(sys.argv[1], pool_size=10)
ticks, inflight, peak = [], [0], [0]
def ticker():
    while True:
        ticks.append(1); gevent.sleep(0.001)
t = gevent.spawn(ticker)
def job(i):
    def fn(tx):
        inflight[0] += 1; peak[0] = max(peak[0], inflight[0])
        try:
            tx.insert_promise(Promise(f"g{i:03d}", "pending", {"i": i}, {}, {}, i, 1))
            return i
        finally:
            inflight[0] -= 1
    assert s.write(fn) == i
    assert s.read(lambda tx: tx.get_promise(f"g{i:03d}")).param == {"i": i}
    try:
        s.write(lambda tx: [tx.set_meta(f"x{i}", "1"), 1 / 0])
    except ZeroDivisionError:
        pass
    def race(tx):
        if tx.get_promise("race") is None:
            tx.insert_promise(Promise("race", "pending", {"i": i}, {}, {}, 0, 1))
            return True
        return False
    return s.write(race)
gs = [gevent.spawn(job, i) for i in range(100)]
gevent.joinall(gs, raise_error=True, timeout=60)
assert all(g.successful() for g in gs)
assert sum(1 for g in gs if g.value) == 1
ps = s.read(lambda tx: tx.all_promises())
assert [p.id for p in ps] == [f"g{i:03d}" for i in range(100)] + ["race"]
assert s.read(lambda tx: tx.get_meta("x3")) is None
assert peak[0] > 1, peak  # transactions interleaved: pg8000's sockets yield to the loop
assert len(ticks) > 10
s.ping(); s.close(); t.kill()
print("OK", peak[0], len(ticks))
"""


@pytest.mark.process  # gevent monkey-patches a whole process
def test_gevent_greenlets(pg_url: str) -> None:
    proc = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, pg_url], cwd=ROOT, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.startswith("OK"), out
    print("gevent:", out.strip())


# throughput (printed; run with -s) ---------------------------------------------------------------------

def test_write_throughput(store: PostgresStore) -> None:
    """A create-like write (locking get, insert promise + task, enqueue) in a loop: a fixed number
    of writes on 1 and on 16 threads all land (the rate is printed; run with -s)."""
    def create(name: str) -> None:
        def fn(tx: Any) -> None:
            if tx.get_promise(name) is None:
                tx.insert_promise(P(name, tags={"resonate:target": "poll://a"}))
                tx.insert_task(Task(name, "pending", 1, RETRY, 5))
                tx.enqueue(Message("execute", name, "poll://a", 1))
        store.write(fn)

    total = 0
    for threads, each in ((1, 100), (16, 25)):
        t0 = time.monotonic()
        _, errors = _threads(threads, lambda i, t=threads, e=each: [create(f"w{t}-{i}-{k}") for k in range(e)])
        assert not errors, errors
        total += threads * each
        print(f"postgres writes/s with {threads:2d} thread(s): {threads * each / (time.monotonic() - t0):.0f}")
    assert store.read(lambda tx: len(tx.all_promises())) == total
