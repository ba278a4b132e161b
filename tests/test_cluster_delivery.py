"""Delivery across processes that share one database (Postgres, MySQL) and nothing else.

Two `python -m local serve --storage-type postgres|mysql` processes on one database stand in for
the cloud's `api` and `poll` instances: messages committed by one must reach the worker connected
to the other (LISTEN/NOTIFY on Postgres, the notes table on MySQL; outbox row as the truth), anycast exactly once across all instances,
unicast unblocks to the right worker, executes waiting for a worker that reconnects elsewhere;
with inbound auth on, a worker id held on one instance is refused to another principal on the
other (the registry in the database), simultaneous connects admit exactly one, and a dead
instance's entries lapse.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pg8000.native
import pytest

from shared.delivery.registry import RECEIVER_TTL_MS
from tests.support.mysql import my_server, my_url  # noqa: F401 (fixtures)
from tests.support.pg import pg_template, pg_url  # noqa: F401 (fixtures)
from tests.support.server import ServerProc, start_server
from tests.support.sse import SSE, bearer_stream, refusal
from tests.support.tokens import KeyPair, claims
from tests.support.wait import wait_until

pytestmark = pytest.mark.process

HOUR = 3_600_000


class DB:
    """The shared database of a test: its backend, URL and a way to run SQL on it."""

    def __init__(self, backend: str, url: str) -> None:
        self.backend, self.url = backend, url
        self.kw = {"pg_url": url} if backend == "postgres" else {"my_url": url}
        self.now = ("(extract(epoch from clock_timestamp()) * 1000)::bigint" if backend == "postgres"
                    else "CAST(UNIX_TIMESTAMP(SYSDATE(3)) * 1000 AS SIGNED)")

    def sql(self, sql: str) -> list[tuple]:
        if self.backend == "mysql":
            from tests.support.mysql import run

            return [tuple(r) for r in run(sql, self.url)]
        c = pg8000.native.Connection(user="postgres", host="127.0.0.1", database=self.url.rsplit("/", 1)[1])
        try:
            return [tuple(r) for r in c.run(sql) or []]
        finally:
            c.close()

    def store(self) -> Any:
        if self.backend == "mysql":
            from shared.storage.mysql import MySQLStore

            return MySQLStore(self.url, pool_size=2)
        from shared.storage.postgres import PostgresStore

        return PostgresStore(self.url, pool_size=2)


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mysql", marks=pytest.mark.mysql)])
def db(request) -> DB:
    return DB(request.param, request.getfixturevalue("pg_url" if request.param == "postgres" else "my_url"))


@pytest.fixture
def pair(tmp_path, db) -> Iterator[tuple[ServerProc, ServerProc]]:
    a = start_server(db.backend, tmp_path / "a", debug=False, **db.kw)
    b = start_server(db.backend, tmp_path / "b", debug=False, **db.kw)
    yield a, b
    a.stop(drop=False)
    b.stop(drop=False)


def create(srv: ServerProc, id: str, target: str | None = None) -> dict:
    tags = {"resonate:target": target} if target else {}
    st, d = srv.rpc("promise.create", {"id": id, "timeoutAt": int(time.time() * 1000) + HOUR, "tags": tags})
    assert st == 200, d
    return d


def outbox(db: DB) -> list[tuple]:
    return db.sql("SELECT kind, id, address FROM outbox ORDER BY seq")


def drain(streams: list[SSE], want: int, timeout: float) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for s in streams:
            while not s.events.empty():
                got.append(s.events.get())
        time.sleep(0.02)
    return got



def test_execute_committed_on_one_instance_reaches_worker_on_the_other(pair, db):
    a, b = pair
    g = "g" + uuid.uuid4().hex[:8]
    s = SSE(f"{b.url}/poll/{g}/w1")
    try:
        assert s.status == 200
        t0 = time.monotonic()
        create(a, "p1", f"poll://any@{g}")
        msg = s.next(timeout=5)
        latency = time.monotonic() - t0
        assert msg["kind"] == "execute" and msg["data"]["task"] == {"id": "p1", "version": 0}, msg
        assert latency < 2, latency
        assert wait_until(lambda: outbox(db) == [], 5), outbox(db)  # acknowledged: row gone
    finally:
        s.close()


def test_anycast_reaches_exactly_one_worker_across_instances(pair, db):
    a, b = pair
    g = "g" + uuid.uuid4().hex[:8]
    streams = [SSE(f"{srv.url}/poll/{g}/w{i}-{srv.port}") for srv in (a, b) for i in range(3)]
    try:
        time.sleep(0.3)
        n = 60
        for i in range(n):
            create((a, b)[i % 2], f"t{i}", f"poll://any@{g}")
        got = drain(streams, n, 60)
        time.sleep(1.0)  # duplicates would arrive late
        got += drain(streams, 10**9, 0.1)
        ids = sorted(m["data"]["task"]["id"] for m in got)
        assert ids == sorted(f"t{i}" for i in range(n)), ids
        per_stream = [s.raw.count(b"data: ") for s in streams]
        assert sum(1 for c in per_stream if c) >= 2, per_stream  # spread, not funnelled
        assert wait_until(lambda: outbox(db) == [], 5)
    finally:
        for s in streams:
            s.close()


def test_unicast_unblock_goes_to_the_instance_holding_the_worker(pair, db):
    a, b = pair
    g = "g" + uuid.uuid4().hex[:8]
    s1, s2 = SSE(f"{b.url}/poll/{g}/w1"), SSE(f"{a.url}/poll/{g}/w2")
    try:
        create(a, "p")
        for w in ("w1", "w2"):
            st, d = a.rpc("promise.register_listener", {"awaited": "p", "address": f"poll://uni@{g}/{w}"})
            assert st == 200, d
        st, d = a.rpc("promise.settle", {"id": "p", "state": "resolved", "value": {"data": "42"}})
        assert st == 200, d
        for s in (s1, s2):
            m = s.next(timeout=5)
            assert m["kind"] == "unblock" and m["data"]["promise"]["id"] == "p", m
            assert m["data"]["promise"]["state"] == "resolved", m
        time.sleep(0.5)
        assert s1.events.empty() and s2.events.empty()
    finally:
        s1.close()
        s2.close()


def test_unblock_without_a_receiver_anywhere_is_dropped_at_once(pair, db):
    a, b = pair
    g = "g" + uuid.uuid4().hex[:8]
    s = SSE(f"{b.url}/poll/{g}/other")  # a receiver in the group, not the addressed one
    try:
        create(a, "p")
        st, _ = a.rpc("promise.register_listener", {"awaited": "p", "address": f"poll://uni@{g}/absent"})
        assert st == 200
        assert a.rpc("promise.settle", {"id": "p", "state": "resolved"})[0] == 200
        assert wait_until(lambda: outbox(db) == [], 3), outbox(db)
        time.sleep(0.3)
        assert s.events.empty()
    finally:
        s.close()


def test_worker_that_reconnects_to_another_instance_gets_what_waited(pair, db):
    a, b = pair
    g = "g" + uuid.uuid4().hex[:8]
    s = SSE(f"{b.url}/poll/{g}/w1")
    create(a, "first", f"poll://any@{g}")
    assert s.next(timeout=5)["data"]["task"]["id"] == "first"
    s.close()
    time.sleep(0.3)
    for i in range(3):  # committed while no worker of the group is connected anywhere
        create(b, f"later{i}", f"poll://any@{g}")
    time.sleep(0.5)
    assert len(outbox(db)) == 3
    s2 = SSE(f"{a.url}/poll/{g}/w1")
    try:
        got = drain([s2], 3, 60)
        assert sorted(m["data"]["task"]["id"] for m in got) == ["later0", "later1", "later2"], got
    finally:
        s2.close()


class _Sink(BaseHTTPRequestHandler):
    bodies: list[dict] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(500)
        else:
            cls.bodies.append(body)
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a) -> None:
        pass


def test_http_push_is_sent_once_and_retried_after_failure(pair, db):
    a, b = pair
    sink = type("Sink", (_Sink,), {"bodies": [], "fail_first": 1})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), sink)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/push"
        create(a, "ok1", url)
        create(b, "ok2", url)
        # the first push failed (500) and is retried after its backoff by a re-drive
        assert wait_until(lambda: len(sink.bodies) == 2, 20), sink.bodies
        time.sleep(1.5)
        assert sorted(m["data"]["task"]["id"] for m in sink.bodies) == ["ok1", "ok2"], sink.bodies
        assert wait_until(lambda: outbox(db) == [], 5)
    finally:
        httpd.shutdown()


def test_row_claimed_by_a_dead_instance_is_delivered_once_its_lease_lapses(pair, db):
    a, b = pair
    g = "g" + uuid.uuid4().hex[:8]
    create(a, "orphan", f"poll://any@{g}")  # no worker anywhere yet: the row waits
    db.sql(f"UPDATE outbox SET claimed_until = {db.now} + 1500")  # as if an instance claimed it and died
    s = SSE(f"{b.url}/poll/{g}/w1")
    try:
        time.sleep(1.0)
        assert s.events.empty()  # still leased to the dead claimant
        m = s.next(timeout=8)  # the instance's periodic re-check claims it after the lease
        assert m["data"]["task"]["id"] == "orphan", m
        assert wait_until(lambda: outbox(db) == [], 5)
    finally:
        s.close()


# ------------------------------------------------------------------- poll authorization across instances

@pytest.fixture
def auth_pair(tmp_path, db):
    """Two instances on one database with inbound auth on (one key); yields (a, b, key)."""
    key = KeyPair("ec256")
    env = {"RESONATE_AUTH__PUBLICKEY": key.write(tmp_path)}
    a = start_server(db.backend, tmp_path / "a", debug=False, env=env, **db.kw)
    b = start_server(db.backend, tmp_path / "b", debug=False, env=env, **db.kw)
    a.token = b.token = key.sign(claims(role="admin"))
    yield a, b, key
    a.stop(drop=False)
    b.stop(drop=False)


def _token(key, sub: str, group: str) -> str:
    return key.sign(claims(sub=sub, groups=[group]))


def test_worker_id_held_on_one_instance_is_refused_to_another_principal_on_the_other(auth_pair):
    a, b, key = auth_pair
    g = "g" + uuid.uuid4().hex[:8]
    holder = bearer_stream(f"{a.url}/poll/{g}/w1", _token(key, "tenant-b", g))
    try:
        assert holder.status == 200
        intruder = _token(key, "tenant-a", g)
        assert refusal(bearer_stream(f"{b.url}/poll/{g}/w1", intruder)) == \
            (409, b"Worker id held by another principal", "text/plain")
        create(b, "held", f"poll://uni@{g}/w1")
        assert holder.next(timeout=10)["data"]["task"]["id"] == "held"
        # the holder's own principal may connect on the other instance too
        assert refusal(bearer_stream(f"{b.url}/poll/{g}/w1", _token(key, "tenant-b", g)))[0] == 200
        assert "Poll refused: worker id held by another principal on another instance" in b.logs()
    finally:
        holder.close()
    taken: list[SSE] = []

    def connect() -> bool:  # once instance a saw the hang-up, its registry entry is gone
        s = bearer_stream(f"{b.url}/poll/{g}/w1", intruder)
        if s.status == 200:
            taken.append(s)
        return s.status == 200

    try:
        assert wait_until(connect, 20, interval=0.2)
        create(a, "taken", f"poll://uni@{g}/w1")
        assert taken[0].next(timeout=10)["data"]["task"]["id"] == "taken"
    finally:
        for s in taken:
            s.close()


def test_simultaneous_connects_of_two_principals_on_two_instances_admit_exactly_one(auth_pair):
    a, b, key = auth_pair
    g = "g" + uuid.uuid4().hex[:8]
    tokens = {"x": _token(key, "tenant-x", g), "y": _token(key, "tenant-y", g)}
    for round in range(5):
        barrier = threading.Barrier(2)
        got: dict[str, SSE] = {}

        def go(who: str, srv: ServerProc) -> None:
            barrier.wait()
            got[who] = bearer_stream(f"{srv.url}/poll/{g}/w{round}", tokens[who], timeout=20)

        threads = [threading.Thread(target=go, args=("x", a)), threading.Thread(target=go, args=("y", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        try:
            assert sorted(s.status for s in got.values()) == [200, 409], {k: s.status for k, s in got.items()}
        finally:
            for s in got.values():
                s.close()


def test_a_dead_instances_registry_entry_lapses(auth_pair):
    """An instance killed while holding a worker id blocks another principal only until its
    registry entry lapses (RECEIVER_TTL_MS after its last refresh), never for good."""
    a, b, key = auth_pair
    g = "g" + uuid.uuid4().hex[:8]
    holder = bearer_stream(f"{a.url}/poll/{g}/w1", _token(key, "tenant-b", g))
    assert holder.status == 200
    a.proc.kill()  # SIGKILL: no unregistering
    a.proc.wait()
    holder.close()
    intruder = _token(key, "tenant-a", g)
    assert refusal(bearer_stream(f"{b.url}/poll/{g}/w1", intruder))[0] == 409  # the entry is still live
    taken: list[SSE] = []

    def connect() -> bool:
        s = bearer_stream(f"{b.url}/poll/{g}/w1", intruder)
        if s.status == 200:
            taken.append(s)
        return s.status == 200

    try:
        assert wait_until(connect, RECEIVER_TTL_MS / 1000 + 30, interval=0.5)
    finally:
        for s in taken:
            s.close()


def test_an_instance_whose_entry_lapsed_yields_the_worker_id_to_the_principal_that_took_it(db):
    """In process, on the real registry: while instance 1's entry for a worker id is lapsed (its
    refresh stalled past the lease), principal A is admitted on instance 2; instance 1's next
    refresh finds A's live entry and ends its own connections of that id instead of writing a
    second holder."""
    from shared.delivery.hub import Held, PollHub
    from shared.delivery.registry import ReceiverRegistry
    store = db.store()
    hubs = [PollHub(), PollHub()]
    deliveries = [ReceiverRegistry(store, hub) for hub in hubs]  # no LISTEN loop: this test refreshes itself
    for hub, registry in zip(hubs, deliveries, strict=True):
        hub.admit = registry.admit
        hub.on_disconnect.append(registry.on_disconnect)
    try:
        held = hubs[0].register("g", "w1", "sub:tenant-b")
        with pytest.raises(Held):
            hubs[1].register("g", "w1", "sub:tenant-a")
        deliveries[0].refresh()  # a refresh while alive keeps the entry
        with pytest.raises(Held):
            hubs[1].register("g", "w1", "sub:tenant-a")
        db.sql(f"UPDATE poll_receivers SET expires_at = 0 WHERE instance = '{deliveries[0].instance}'")
        taker = hubs[1].register("g", "w1", "sub:tenant-a")
        deliveries[0].refresh()
        assert held.closed and not taker.closed
        assert not hubs[0].has_id("g", "w1") and hubs[1].has_id("g", "w1")
        rows = db.sql("SELECT instance FROM poll_receivers WHERE grp = 'g' AND id = 'w1' AND expires_at > 0")
        assert rows == [(deliveries[1].instance,)], rows
    finally:
        store.close()
