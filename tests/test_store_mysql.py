"""MySQL adapter specifics (MariaDB 10.11 here): row locks and retries, SKIP LOCKED, migrations
racing, connection loss, the URL forms, the 255-character keys (one check, in the service, before
any transaction), the binary NO PAD collation, and the notes poller that replaces NOTIFY.
The contract every adapter shares is tests/test_store_contract.py."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from shared.config import load
from shared.records import Message, Promise, Task
from shared.service import Service
from shared.storage.base import StorageError
from shared.storage.memory import MemoryStore
from shared.storage.mysql import SCHEMA_VERSION, MySQLStore, parse_url
from tests.support.envelope import envelope
from tests.support.mysql import empty_database, kill_sessions, my_server, my_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.mysql


def P(id: str, state: str = "pending", timeout_at: int = 100, tags: dict | None = None,
      settled_at: int | None = None) -> Promise:
    return Promise(id, state, {}, {}, tags or {}, timeout_at, 1, settled_at)


def _threads(n: int, fn: Callable[[int], Any]) -> tuple[list, list]:
    results: list = [None] * n
    errors: list = []

    def run(i: int) -> None:
        try:
            results[i] = fn(i)
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return results, errors


@pytest.fixture
def store(my_url: str) -> Any:
    s = MySQLStore(my_url, pool_size=20)
    yield s
    s.close()


# (a) keys -------------------------------------------------------------------------------------

def test_ids_differing_in_trailing_spaces_are_different_keys(store: MySQLStore) -> None:
    """utf8mb4_bin would PAD SPACE them into one key; the NO PAD binary collation keeps both,
    ordered by code point as Python sorts."""
    ids = ["a", "a ", "a  ", "B", "b", "é", "\U0001f600", "z"]
    store.write(lambda tx: [tx.insert_promise(P(i)) for i in ids])
    assert [p.id for p in store.read(lambda tx: tx.all_promises())] == sorted(ids)
    assert store.read(lambda tx: tx.get_promise("a ")) == P("a ")
    assert [p.id for p in store.read(lambda tx: tx.search_promises(None, {}, "a ", 2))] == ["a  ", "b"]


LONG = "x" * 256
OK = "x" * 255


def _requests(key: str) -> list[tuple[str, str, dict]]:
    """(field named in the error, kind, data) with `key` in that field, every field the store keeps
    in a VARCHAR(255)."""
    t = "poll://any@g"
    target = "poll://any@" + key[: len(key) - len("poll://any@")]
    return [
        ("Promise ID", "promise.create", {"id": key, "timeoutAt": 1, "tags": {}}),
        ("resonate:target", "promise.create", {"id": "p", "timeoutAt": 1, "tags": {"resonate:target": target}}),
        ("resonate:branch", "promise.create", {"id": "p", "timeoutAt": 1, "tags": {"resonate:branch": key}}),
        ("resonate:origin", "promise.create", {"id": "p", "timeoutAt": 1, "tags": {"resonate:origin": key}}),
        ("ID", "promise.get", {"id": key}),
        ("ID", "task.get", {"id": key}),
        ("Process ID", "task.acquire", {"id": "t", "version": 1, "pid": key, "ttl": 1}),
        ("Process ID", "task.heartbeat", {"pid": key, "tasks": []}),
        ("Task ID", "task.heartbeat", {"pid": "w", "tasks": [{"id": key, "version": 1}]}),
        ("Awaited promise ID", "promise.register_callback", {"awaited": key, "awaiter": "b"}),
        ("Awaiter promise ID", "promise.register_callback", {"awaited": "a", "awaiter": key}),
        ("Address", "promise.register_listener", {"awaited": "a", "address": "poll://any@" + key[11:]}),
        ("Awaited promise ID", "promise.register_listener", {"awaited": key, "address": t}),
        ("Schedule ID", "schedule.create", {"id": key, "cron": "* * * * *", "promiseId": "x",
                                            "promiseTimeout": 1, "promiseTags": {"resonate:target": t}}),
        ("Promise ID template (expanded)", "schedule.create",
         {"id": "s", "cron": "* * * * *", "promiseId": key[: len(key) - 19] + "{{.timestamp}}", "promiseTimeout": 1,
          "promiseTags": {"resonate:target": t}}),
    ]


def _call(svc: Service, kind: str, data: dict) -> tuple[int, Any]:
    status, body = svc.rpc(json.dumps(envelope(kind, data)).encode())
    return status, json.loads(body)["data"]


def test_keys_longer_than_255_characters_answer_400_naming_the_field(my_url: str) -> None:
    store = MySQLStore(my_url)
    svc = Service(store, load({"debug": True}, env={}))
    try:
        for field, kind, data in _requests(LONG):
            status, msg = _call(svc, kind, data)
            assert status == 400 and msg == f"{field} must be at most 255 characters (the storage backend's limit)", \
                (kind, field, status, msg)
        for field, kind, data in _requests(OK):  # 255: stored (or answered on their merits), never a 400 or 500
            status, msg = _call(svc, kind, data)
            assert status in (200, 404, 409, 422), (kind, field, status, msg)
        stored = store.read(lambda tx: (tx.get_promise(OK), tx.get_schedule(OK)))
        assert stored[0] is not None and stored[1] is not None
        addr = "poll://uni@g/" + "w" * 242  # 255 characters
        big = "😀" * 255  # 1,020 bytes: the widest key
        store.write(lambda tx: [tx.add_callback(big, OK, True), tx.add_listener(big, addr),
                                tx.insert_task(Task(big, "acquired", 1, 1, 5, big, 1)),
                                tx.enqueue(Message("unblock", big, addr))])
        assert store.read(lambda tx: ((big, OK, True) in tx.all_callbacks(), (big, addr) in tx.all_listeners(),
                                      tx.tasks_leased_by(big)[0].id, Message("unblock", big, addr) in tx.outbox())) \
            == (True, True, big, True)
        assert _call(svc, "promise.get", {"id": "\u00e9" * 255})[0] == 404  # characters, not bytes
    finally:
        store.close()


def test_other_stores_keep_their_limit() -> None:
    """The 255-character limit is MySQL's alone: the memory store takes 256 (and up to 1,024 bytes)."""
    svc = Service(MemoryStore(), load({"debug": True}, env={}))
    for field, kind, data in _requests(LONG):
        assert _call(svc, kind, data)[0] != 400 or kind == "task.heartbeat", (kind, field)
    assert _call(svc, "promise.create", {"id": "x" * 1025, "timeoutAt": 1})[0] == 400


# (b) concurrency ------------------------------------------------------------------------------------

def test_deadlock_is_retried(store: MySQLStore) -> None:
    store.write(lambda tx: [tx.insert_promise(P("d1")), tx.insert_promise(P("d2"))])
    barrier = threading.Barrier(2, timeout=20)
    attempts = [0, 0]

    def worker(i: int) -> str:
        first, second = ("d1", "d2") if i == 0 else ("d2", "d1")

        def fn(tx: Any) -> str:
            attempts[i] += 1
            tx.get_promise(first)  # FOR UPDATE
            if attempts[i] == 1:
                barrier.wait()
            tx.get_promise(second)  # one of the two is chosen as the deadlock victim (1213)
            tx.update_promise(P(second, "resolved", settled_at=i))
            return "ok"
        return store.write(fn)

    results, errors = _threads(2, worker)
    assert not errors and results == ["ok", "ok"], errors
    assert sum(attempts) >= 3 and store.retries >= 1


def test_racing_get_then_insert_inserts_once(store: MySQLStore) -> None:
    """Transactions that all saw no row then insert: one wins, the others re-run and find it."""
    barrier = threading.Barrier(8, timeout=20)
    created = []

    def fn(i: int) -> None:
        def tx_fn(tx: Any) -> None:
            if tx.get_task("race") is None:
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    pass
                tx.insert_task(Task("race", "pending", 1))
                created.append(i)
        store.write(tx_fn)

    _, errors = _threads(8, fn)
    assert not errors, errors
    assert store.read(lambda tx: tx.all_tasks()) == [Task("race", "pending", 1)]
    assert len(set(created)) >= 1 and store.retries >= 1


def test_claims_split_rows_between_stores(my_url: str) -> None:
    """Two processes' sweepers (two stores) claim disjoint push rows with SKIP LOCKED."""
    a, b = MySQLStore(my_url), MySQLStore(my_url)
    try:
        a.write(lambda tx: [tx.enqueue(Message("execute", f"t{i}", f"http://h/{i}", 1)) for i in range(40)])
        got: list[list] = [[], []]

        def claim(i: int) -> None:
            s = (a, b)[i]
            while rows := s.claim_push(3, 60_000):
                got[i] += [m.id for _, m in rows]

        _, errors = _threads(2, claim)
        assert not errors, errors
        assert sorted(got[0] + got[1]) == sorted(f"t{i}" for i in range(40))
        assert not set(got[0]) & set(got[1])
    finally:
        a.close()
        b.close()


# (c) migrations, connections, URLs ------------------------------------------------------------------

def test_migrations_race_on_empty_database(my_server: None) -> None:
    with empty_database() as url:
        barrier = threading.Barrier(6, timeout=20)

        def open_store(_: int) -> MySQLStore:
            barrier.wait()
            return MySQLStore(url, pool_size=2)

        stores, errors = _threads(6, open_store)
        assert not errors, errors
        try:
            stores[0].write(lambda tx: tx.insert_promise(P("m")))
            assert all(s.read(lambda tx: tx.get_promise("m")) == P("m") for s in stores)
            assert stores[0].read(lambda tx: tx._x("SELECT version FROM schema_version ORDER BY version")) == \
                tuple((v,) for v in range(1, SCHEMA_VERSION + 1))
        finally:
            for s in stores:
                s.close()


def test_an_interrupted_migration_is_applied_again(my_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """MySQL commits each DDL statement by itself: a migration that stopped after some of its
    statements is applied again at the next start, skipping the columns already added (MySQL 8
    has no `ADD COLUMN IF NOT EXISTS`; the runner asks information_schema), and so is one whose
    every statement ran but whose version was never recorded."""
    import shared.storage.mysql as mod
    from tests.support.mysql import run

    with empty_database() as url:
        monkeypatch.setattr(mod, "MIGRATIONS", [m for m in mod.MIGRATIONS if m[0] < 2])
        monkeypatch.setattr(mod, "SCHEMA_VERSION", 1)
        MySQLStore(url, pool_size=1).close()
        monkeypatch.undo()
        v2 = dict(mod.MIGRATIONS)[2]
        assert v2[0].startswith("ALTER TABLE promises ADD COLUMN ikey_create ")
        for stmt in v2[:3]:  # the previous start stopped after its third statement
            run(stmt, url)
        s = MySQLStore(url, pool_size=2)
        try:
            assert s.schema_version() == SCHEMA_VERSION
            s.write(lambda tx: tx.insert_promise(Promise("p", "pending", {}, {}, {}, 5, 1, None, "c", "s")))
            assert s.read(lambda tx: tx.get_promise("p").ikey_settle) == "s"
        finally:
            s.close()
        run("DELETE FROM schema_version WHERE version = 2", url)  # everything ran, nothing recorded
        s = MySQLStore(url, pool_size=2)
        try:
            assert s.read(lambda tx: (tx._x("SELECT version FROM schema_version ORDER BY version"),
                                      tx.get_promise("p").ikey_create)) == (((1,), (2,)), "c")
        finally:
            s.close()


def test_killed_sessions_are_replaced(store: MySQLStore, my_url: str) -> None:
    """What a database restart does to every pooled session: the pool survives it."""
    _, errors = _threads(10, lambda i: store.write(lambda tx: tx.insert_promise(P(f"a{i}"))))
    assert not errors
    assert kill_sessions(my_url) >= 1
    store.ping()
    assert kill_sessions(my_url) >= 1
    _, errors = _threads(10, lambda i: store.write(lambda tx: tx.insert_promise(P(f"b{i}"))))
    assert not errors, errors
    assert len(store.read(lambda tx: tx.all_promises())) == 20 and store.reconnects >= 1


def test_unreachable_database_raises_storage_error() -> None:
    with pytest.raises(StorageError, match="cannot connect"):
        MySQLStore("mysql://root@127.0.0.1:1/nope?connect_timeout=2")
    lazy = MySQLStore("mysql://root@127.0.0.1:1/nope?connect_timeout=2", lazy=True)
    with pytest.raises(StorageError):
        lazy.ping()


def test_url_forms() -> None:
    kw = parse_url("mysql://u%40x:p%2Fw@db.example:3307/res?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem")
    assert (kw["user"], kw["password"], kw["host"], kw["port"], kw["database"]) == ("u@x", "p/w", "db.example", 3307, "res")
    assert kw["ssl"] == {"check_hostname": True, "verify_mode": True, "ca": "/ca.pem"}
    assert parse_url("mysql://u@h/d?ssl_mode=verify_ca")["ssl"] == {"check_hostname": False, "verify_mode": True}
    assert parse_url("mysql://u@h/d?ssl-mode=REQUIRED&ssl-cert=c.pem&ssl-key=k.pem")["ssl"] == \
        {"check_hostname": False, "verify_mode": False, "cert": "c.pem", "key": "k.pem"}
    assert parse_url("mysql://u@h/d?ssl-mode=DISABLED")["ssl_disabled"] is True
    assert "ssl" not in parse_url("mysql://u@h/d") and parse_url("mysql://u@h/d")["port"] == 3306
    assert parse_url("mysql://u@/d?unix_socket=/run/mysqld/mysqld.sock")["unix_socket"] == "/run/mysqld/mysqld.sock"
    for bad in ("postgres://u@h/d", "mysql://u@h", "mysql://u@h/d?ssl-mode=sometimes"):
        with pytest.raises(StorageError):
            parse_url(bad)


# (d) announcements without NOTIFY ----------------------------------------------------------------

def test_notes_reach_every_listener_in_commit_order_gaps_included(store: MySQLStore, my_url: str) -> None:
    """A note committed after a later one (its id was handed out first) is still read."""
    seen: list[list] = [[], []]
    ticks: list[bool] = []
    subs = [store.listen(lambda notes, i=i: seen[i].extend(notes), ticks.append, 60.0) for i in range(2)]
    try:
        deadline = time.time() + 10
        while ticks.count(True) < 2 and time.time() < deadline:
            time.sleep(0.01)
        held, go = threading.Event(), threading.Event()

        def slow(tx: Any) -> None:
            tx.enqueue(Message("execute", "slow", "poll://any@g", 1))  # takes a note id now
            held.set()
            assert go.wait(10)

        th = threading.Thread(target=lambda: store.write(slow))
        th.start()
        assert held.wait(10)
        store.write(lambda tx: tx.enqueue(Message("execute", "fast", "poll://any@g", 1)))
        time.sleep(0.2)  # the listeners read the later note and skip the pending id
        go.set()
        th.join(10)
        deadline = time.time() + 5
        while min(len(s) for s in seen) < 2 and time.time() < deadline:
            time.sleep(0.01)
        for s in seen:
            assert sorted(a for _, a in s) == ["poll://any@g", "poll://any@g"] and len(s) == 2, s
    finally:
        for sub in subs:
            sub.close()


def test_notes_latency(store: MySQLStore) -> None:
    """Commit to callback: one poll interval (20 ms) at most, plus a query."""
    arrived: list[float] = []
    up = threading.Event()
    sub = store.listen(lambda notes: arrived.append(time.perf_counter()), lambda first: up.set(), 60.0)
    try:
        assert up.wait(10)
        lat = []
        for i in range(20):
            n = len(arrived)
            t0 = time.perf_counter()
            store.write(lambda tx, i=i: tx.enqueue(Message("execute", f"l{i}", "poll://any@g", 1)))
            while len(arrived) == n and time.perf_counter() - t0 < 5:
                time.sleep(0.001)
            lat.append(arrived[-1] - t0)
        lat.sort()
        assert lat[len(lat) // 2] < 0.1, lat
    finally:
        sub.close()


# (e) Cloud SQL for MySQL through the connector ------------------------------------------------------

def test_cloud_sql_for_mysql_through_the_connector(my_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Config with storage.mysql.instance -> open_store -> MySQLStore over the real Cloud SQL
    connector's PyMySQL connections, tunnelled (mutual TLS) by the fake instance to MariaDB: the
    URL names user and database only, its host is never dialed."""
    import functools
    import ssl
    from urllib.parse import urlsplit

    from shared.runtime import open_store
    from shared.storage import cloudsql
    from tests.support.fake_cloudsql import FakeCloudSql, FakeCredentials
    from tests.support.mysql import run

    fake = FakeCloudSql(upstream=("127.0.0.1", 3306), database_version="MYSQL_8_0")
    monkeypatch.setattr(cloudsql, "connector_factory", functools.partial(
        cloudsql.connector_factory, sqladmin_api_endpoint=fake.endpoint, credentials=FakeCredentials()))
    db = urlsplit(my_url).path.lstrip("/")
    cfg = load(env={"RESONATE_STORAGE__TYPE": "mysql", "RESONATE_STORAGE__MYSQL__URL": f"mysql://root@db.invalid:1/{db}",
                    "RESONATE_STORAGE__MYSQL__INSTANCE": fake.instance, "RESONATE_STORAGE__MYSQL__POOL_SIZE": "2"})
    store = open_store(cfg)
    try:
        svc = Service(store, cfg)
        assert _call(svc, "promise.create", {"id": "csql-1", "timeoutAt": 2**53})[0] == 200
        assert _call(svc, "promise.get", {"id": "csql-1"})[1]["promise"]["id"] == "csql-1"
        assert run("SELECT id, state FROM promises", my_url) == [("csql-1", "pending")]  # in the real database
        pooled = [c.db for c in store._pool._idle]
        assert pooled and all(isinstance(p._sock, ssl.SSLSocket) and p._sock.getpeername() == (fake.ip, 3307)
                              for p in pooled)
        assert set(fake.handshakes) == {"fake-ephemeral-client"}
    finally:
        store.close()
        cloudsql.close_connectors()
        fake.close()
