"""Postgres adapter against a real server: differential vs MemoryStore, rollback, row locks and
retries under concurrency, SKIP LOCKED sweeps, racing migrations, connection loss, read-only
enforcement, gevent. Every test gets a fresh database cloned from a migrated template."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import tests.test_sqlite_store as sq
from shared.records import LEASE, RETRY, Message, Schedule, Task
from shared.storage.base import ReadOnlyViolation, StorageError
from shared.storage.memory import MemoryStore
from shared.storage.postgres import MAX_RETRIES, SCHEMA_VERSION, Busy, PostgresStore
from tests.support.pg import (TcpProxy, admin, empty_database, pg_template, pg_url, require_postgres,  # noqa: F401
                              terminate_backends)

ROOT = Path(__file__).resolve().parents[1]
P, S = sq.P, sq.S


@pytest.fixture
def store(pg_url: str):
    s = PostgresStore(pg_url, pool_size=20)
    yield s
    s.close()


class PgPair(sq.Pair):
    """test_sqlite_store's Pair with Postgres on the database side."""

    def __init__(self, url: str) -> None:
        self.mem = MemoryStore()
        self.sql = PostgresStore(url)


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


# (a) differential ----------------------------------------------------------------------------------

def test_differential_every_method(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SQLite suite's scripted sequence (every Tx method), with Postgres as the other side."""
    monkeypatch.setattr(sq, "Pair", lambda _path: PgPair(pg_url))
    sq.test_differential_every_method(tmp_path)


def test_differential_random(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SQLite suite's 400 seeded random operations."""
    monkeypatch.setattr(sq, "Pair", lambda _path: PgPair(pg_url))
    sq.test_differential_random(tmp_path)


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
]


def test_differential_edge_values(pg_url: str) -> None:
    """Code-point order under a non-C database collation, 64-bit extremes, odd JSON and text."""
    pair = PgPair(pg_url)
    try:
        for fn, write in EDGE_STEPS:
            pair.run(fn, write)
        assert pair.sql.read(lambda tx: [p.id for p in tx.all_promises()]) == sorted(IDS + ["big"])
    finally:
        pair.close()


# (b) rollback and error mapping ------------------------------------------------------------------

def test_fn_exception_rolls_back_and_propagates_unchanged(store: PostgresStore) -> None:
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


def test_duplicate_insert_keeps_transaction(store: PostgresStore) -> None:
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


# (c) concurrency ------------------------------------------------------------------------------------

def _warm(store: PostgresStore, n: int) -> None:
    """Open n pooled connections first, so racing threads are not serialized by connection setup."""
    barrier = threading.Barrier(n, timeout=10)
    _, errors = _threads(n, lambda _: store.read(lambda tx: barrier.wait()))
    assert not errors, errors


def test_racing_get_then_insert_inserts_once(store: PostgresStore) -> None:
    _warm(store, 20)
    barrier = threading.Barrier(20, timeout=10)

    def worker(i: int) -> bool:
        barrier.wait()

        def fn(tx: Any) -> bool:
            if tx.get_promise("race") is None:
                time.sleep(0.005)  # everyone has looked before anyone inserts
                tx.insert_promise(P("race", param={"i": i}))
                tx.insert_task(Task("race", "pending", 1, RETRY, 5))
                return True
            return False
        return store.write(fn)

    results, errors = _threads(20, worker)
    assert not errors, errors
    assert results.count(True) == 1
    assert store.retries >= 1  # the losers' inserts met the winner's row and were re-run
    winner = results.index(True)
    assert store.read(lambda tx: (tx.get_promise("race").param, len(tx.all_tasks()))) == ({"i": winner}, 1)


def test_counter_in_meta_serializes(store: PostgresStore) -> None:
    _warm(store, 20)
    barrier = threading.Barrier(20, timeout=10)

    def incr(tx: Any) -> None:
        v = tx.get_meta("n")
        time.sleep(0.002)  # widen the read-modify-write window
        tx.set_meta("n", str(int(v or 0) + 1))

    def worker(_: int) -> None:
        barrier.wait()
        store.write(incr)
        barrier.wait()
        store.write(bump_task)

    def bump_task(tx: Any) -> None:
        t = tx.get_task("t")
        time.sleep(0.002)
        tx.update_task(Task("t", "pending", (t.version if t else 0) + 1))

    _, errors = _threads(20, worker)
    assert not errors, errors
    assert store.retries >= 2  # both missing-key starts raced
    assert store.read(lambda tx: (tx.get_meta("n"), tx.get_task("t").version)) == ("20", 20)


def test_get_for_update_blocks_second_writer(store: PostgresStore) -> None:
    store.write(lambda tx: tx.insert_promise(P("locked")))
    locked, seen = threading.Event(), []

    def holder(tx: Any) -> None:
        tx.get_promise("locked")
        tx.update_promise(P("locked", "resolved", settled_at=1))
        locked.set()
        time.sleep(0.4)

    th = threading.Thread(target=store.write, args=(holder,))
    th.start()
    assert locked.wait(10)
    t0 = time.monotonic()
    assert store.read(lambda tx: tx.get_promise("locked").state) == "pending"  # reads never wait
    store.write(lambda tx: seen.append(tx.get_promise("locked").state))
    waited = time.monotonic() - t0
    th.join(10)
    assert seen == ["resolved"] and waited > 0.2


# (d) sweepers: SKIP LOCKED -----------------------------------------------------------------------------

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
        assert fetched.wait(10)
        t0 = time.monotonic()
        second = store.write(due)  # does not wait for the first sweeper's locks
        assert time.monotonic() - t0 < 2
        everything = store.read(due)  # a read takes no locks and sees the same first rows
    finally:
        release.set()
        th.join(10)
    a = out[0]
    assert a == everything == (["p0", "p1", "p2"], ["t0", "t1", "t2"], ["s0", "s1", "s2"])
    assert second == (["p3", "p4", "p5"], ["t3", "t4", "t5"], ["s3", "s4", "s5"])


# (e) migrations ----------------------------------------------------------------------------------------

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


def test_migrations_apply_only_missing(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.storage.postgres as mod

    extra = (SCHEMA_VERSION + 1, ["ALTER TABLE meta ADD COLUMN note TEXT", "CREATE INDEX meta_note ON meta (note)"])
    monkeypatch.setattr(mod, "MIGRATIONS", mod.MIGRATIONS + [extra])
    monkeypatch.setattr(mod, "SCHEMA_VERSION", extra[0])
    for _ in range(2):  # the second open must not re-run the ALTER (it would fail)
        s = PostgresStore(pg_url)
        assert s.schema_version() == extra[0]
        s.close()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="newer"):
        PostgresStore(pg_url)


# (f) connection loss ---------------------------------------------------------------------------------------

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
            assert time.monotonic() - t0 < 5
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


def test_closed_store_raises(pg_url: str) -> None:
    s = PostgresStore(pg_url)
    s.write(lambda tx: tx.set_meta("a", "1"))
    s.close()
    s.close()
    for call in (lambda: s.write(lambda tx: None), lambda: s.read(lambda tx: None), s.ping):
        with pytest.raises(StorageError):
            call()


def test_unreachable_database_raises_storage_error() -> None:
    require_postgres()
    with pytest.raises(StorageError):
        PostgresStore("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(StorageError, match="does not exist|3D000"):
        PostgresStore("postgresql://postgres@127.0.0.1:5432/resonate_no_such_db")


# (g) read-only enforcement -------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", sq.WRITES)
def test_read_only_violation(store: PostgresStore, fn: Callable) -> None:
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


# (h) gevent ------------------------------------------------------------------------------------------------

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


def test_gevent_greenlets(pg_url: str) -> None:
    proc = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, pg_url], cwd=ROOT, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.startswith("OK"), out
    print("gevent:", out.strip())


# throughput (printed; run with -s) ---------------------------------------------------------------------

def test_write_throughput(store: PostgresStore) -> None:
    """A create-like write (locking get, insert promise + task, enqueue) in a loop."""
    def create(name: str) -> None:
        def fn(tx: Any) -> None:
            if tx.get_promise(name) is None:
                tx.insert_promise(P(name, tags={"resonate:target": "poll://a"}))
                tx.insert_task(Task(name, "pending", 1, RETRY, 5))
                tx.enqueue(Message("execute", name, "poll://a", 1))
        store.write(fn)

    for threads in (1, 16):
        stop = time.monotonic() + 1.5
        counts = [0] * threads

        def loop(i: int) -> None:
            while time.monotonic() < stop:
                create(f"w{threads}-{i}-{counts[i]}")
                counts[i] += 1

        _, errors = _threads(threads, loop)
        assert not errors, errors
        print(f"postgres writes/s with {threads:2d} thread(s): {sum(counts) / 1.5:.0f}")
        assert sum(counts) > 20
