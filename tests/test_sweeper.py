"""The serverless sweeper: one call handles the deadlines of its window, on time, then returns."""
from __future__ import annotations

import json
import threading

import pytest
import requests

from shared.clock import Clock
from shared.config import load
from shared.delivery.inprocess import InProcessClaims
from shared.delivery.outbox import Delivery
from shared.delivery.sender import Sender
from shared.protocol import dumps
from shared.records import DEBUG_SESSION, Promise
from shared.service import Service
from shared.storage.sqlite import SqliteStore
from shared.sweeper import run_window
from tests.support.pg import pg_template, pg_url  # noqa: F401 (fixtures)
from tests.support.server import free_port
from tests.test_local_runner import _functions_framework, _wait_health


def _rpc(service: Service, kind: str, data: dict) -> dict:
    status, body = service.rpc(dumps({"kind": kind, "head": {"corrId": "c", "version": "2026-04-01"}, "data": data}))
    assert status == 200, body
    return json.loads(body)["data"]


class ManualClock(Clock):
    """The service's clock, moved only by the window's own sleeps: the run is the same on any machine."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.t = start

    def now(self) -> int:
        return self.t


class ShiftedClock(Clock):
    """The real clock plus an offset the test moves forward."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0

    def now(self) -> int:
        return super().now() + self.offset


def test_window_handles_its_deadlines_on_time_and_leaves_later_ones(tmp_path):
    """Every deadline inside the window is handled at its instant (the loop sleeps until the next
    deadline, not until a fixed tick), the call returns once none is left inside the window, and a
    deadline beyond it is left for the next call. Time is the service's clock, advanced only by
    the window's sleeps, so the assertions are exact instead of elapsed-time bounds."""
    store = SqliteStore(str(tmp_path / "s.db"))
    start = Clock().now()
    clock = ManualClock(start)
    service = Service(store, load({"storage.type": "sqlite"}, env={}), clock=clock)
    delivery = Delivery(store, Sender(None, None, {}, None), InProcessClaims(store, None, service))
    for i, offset in enumerate((200, 400, 600)):
        _rpc(service, "promise.create", {"id": f"in{i}", "timeoutAt": start + offset})
    _rpc(service, "promise.create", {"id": "later", "timeoutAt": start + 5000})
    settled_at_pass: dict[str, int] = {}  # promise -> clock of the first pass that saw it settled
    sleeps: list[int] = []

    def look() -> None:
        for p in store.read(lambda tx: tx.all_promises()):
            if p.state != "pending" and p.id not in settled_at_pass:
                settled_at_pass[p.id] = clock.t

    def sleep(seconds: float) -> None:  # after each pass: record what it settled, then let time pass
        look()
        ms = round(seconds * 1000)
        assert ms > 0, "the window must not spin without time passing"
        sleeps.append(ms)
        clock.t += ms

    result = run_window(service, delivery, window_ms=1500, sleep=sleep, poll_ms=250)
    look()
    assert result["handled"] == 3 and result["passes"] >= 3, result
    assert {k: v - start for k, v in settled_at_pass.items()} == {"in0": 200, "in1": 400, "in2": 600}
    assert result["elapsed_ms"] == 600, result  # returned once nothing was left inside the window
    assert all(ms <= 250 for ms in sleeps), sleeps  # looks again at least every poll_ms
    p = store.read(lambda tx: tx.get_promise("later"))
    assert p.state == "pending"
    store.close()


@pytest.mark.process  # the functions framework in a process
def test_sweeper_function_entry_point(tmp_path):
    port = free_port()
    db = tmp_path / "fn.db"
    env = {"RESONATE_STORAGE__SQLITE__PATH": str(db), "RESONATE_SWEEPER__WINDOW": "800",
           "RESONATE_RETENTION__SETTLED_AFTER": "60000"}  # the cloud default is 30 days
    store = SqliteStore(str(db))
    service = Service(store, load({}, env={}))
    _rpc(service, "promise.create", {"id": "due", "timeoutAt": Clock().now() + 300,
                                     "tags": {"resonate:target": "poll://any@g"}})
    old = Clock().now() - 120_000  # a workflow that finished two minutes ago, and a younger one
    store.write(lambda tx: [tx.insert_promise(Promise(i, "resolved", {}, {}, {"resonate:origin": i[:3]}, old, old,
                                                      old if i.startswith("old") else Clock().now()))
                            for i in ("old", "old.1", "new")])
    store.close()
    proc = _functions_framework("sweeper", port, env)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_health(url)  # any path reaches the sweeper; the first call already sweeps
        r = requests.post(url + "/", timeout=30)
        assert r.status_code == 200
        assert r.json()["retention"]["partial"] is False  # (the health check's call already purged)
    finally:
        proc.terminate()
        proc.wait(10)
    store = SqliteStore(str(db))
    p = store.read(lambda tx: tx.get_promise("due"))
    assert p.state == "rejected_timedout" and p.settled_at == p.timeout_at
    assert store.read(lambda tx: tx.get_task("due")).state == "fulfilled"
    assert [p.id for p in store.read(lambda tx: tx.all_promises())] == ["due", "new"]
    store.close()


def test_window_ends_with_one_retention_pass_unless_a_debug_session_runs(tmp_path):
    """The window's timers first, then one budgeted retention pass; none during a debug session."""
    from shared.retention import Purged

    store = SqliteStore(str(tmp_path / "s.db"))
    clock = ManualClock(Clock().now())
    service = Service(store, load({"storage.type": "sqlite"}, env={}), clock=clock)
    delivery = Delivery(store, Sender(None, None, {}, None), InProcessClaims(store, None, service))
    _rpc(service, "promise.create", {"id": "due", "timeoutAt": clock.t + 100})
    calls: list[tuple[float, str]] = []

    def retain(budget_s: float) -> Purged:
        calls.append((budget_s, store.read(lambda tx: tx.get_promise("due")).state))
        return Purged(2, 5)

    def sleep(seconds: float) -> None:
        clock.t += round(seconds * 1000)

    result = run_window(service, delivery, window_ms=1000, sleep=sleep, poll_ms=250, retain=retain)
    assert calls == [(20.0, "rejected_timedout")]  # after the window's timer fired
    assert result["retention"] == {"workflows": 2, "promises": 5, "partial": False}
    store.write(lambda tx: tx.set_meta(DEBUG_SESSION, "1"))  # another instance started a debug session
    result = run_window(service, delivery, window_ms=1000, sleep=sleep, poll_ms=250, retain=retain)
    assert len(calls) == 1 and result["retention"] is None and result["debug_session"]
    store.close()


def test_concurrent_sweepers_on_postgres_never_double_handle(pg_url):
    """Four sweeper instances (separate pools, as separate functions) run their windows at once
    over the same due timers: every promise times out once and every resulting push (an
    unblock to an HTTP listener) is claimed and sent by exactly one of them. (How the rows fall
    between them is the scheduler's business; that they skip each other's rows instead of
    waiting is the next test's.)"""
    from collections import Counter
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from shared.runtime import Runtime

    got: Counter = Counter()

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            msg = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            got[msg["data"]["promise"]["id"]] += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a) -> None:
            pass

    httpd = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 1024})(("127.0.0.1", 0), Sink)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cfg = load({"storage.type": "postgres", "storage.postgres.url": pg_url, "storage.postgres.pool_size": 4}, env={})
    runtimes = [Runtime(cfg, background=False) for _ in range(4)]
    try:
        for rt in runtimes:
            rt.delivery.start()
        clock = ShiftedClock()  # the sweepers' clock: jumps past every deadline once the setup is done
        for rt in runtimes:
            rt.service.clock = clock
        svc = runtimes[0].service
        due = clock.now() + 60_000
        n = 200
        for i in range(n):
            _rpc(svc, "promise.create", {"id": f"p{i}", "timeoutAt": due + i % 7})
            _rpc(svc, "promise.register_listener",
                 {"awaited": f"p{i}", "address": f"http://127.0.0.1:{httpd.server_port}/u"})
        clock.offset = 60_010  # all 200 due at once, however long creating them took
        results: list[dict] = []
        threads = [threading.Thread(target=lambda rt=rt: results.append(
            run_window(rt.service, rt.delivery, window_ms=4000, poll_ms=50))) for rt in runtimes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 4, results
        assert sum(r["handled"] for r in results) >= n, results
        promises = svc.store.read(lambda tx: tx.all_promises())
        assert sorted(p.state for p in promises) == ["rejected_timedout"] * n
        assert set(got) == {f"p{i}" for i in range(n)}, len(got)
        assert max(got.values()) == 1, [k for k, v in got.items() if v > 1][:5]  # claimed once each
        assert svc.store.read(lambda tx: tx.outbox()) == []
    finally:
        for rt in runtimes:
            rt.stop(2)
        httpd.shutdown()


def test_a_sweeper_skips_rows_another_one_holds(pg_url):
    """What lets sweepers split the work: due rows locked by another transaction (a sweeper in
    the middle of its batch) are skipped, not waited for, and handled once the lock is gone."""
    import pg8000.native

    from shared.runtime import Runtime
    from shared.storage.postgres import parse_url

    cfg = load({"storage.type": "postgres", "storage.postgres.url": pg_url}, env={})
    rt = Runtime(cfg, background=False)
    holder = pg8000.native.Connection(**parse_url(pg_url))
    try:
        svc = rt.service
        due = Clock().now() + 60_000  # swept below as of that instant
        for i in range(20):
            _rpc(svc, "promise.create", {"id": f"p{i:02}", "timeoutAt": due})
        held = [f"p{i:02}" for i in range(0, 20, 2)]
        holder.run("BEGIN")
        holder.run("SELECT id FROM promises WHERE id = ANY(:ids) FOR UPDATE", ids=held)
        done = threading.Event()
        handled: list[int] = []
        threading.Thread(target=lambda: (handled.append(svc.sweep(due)), done.set()), daemon=True).start()
        assert done.wait(30), "the sweep waited for rows another transaction holds"
        states = {p.id: p.state for p in svc.store.read(lambda tx: tx.all_promises())}
        assert {i for i, st in states.items() if st == "pending"} == set(held), states
        assert handled == [10]
        holder.run("COMMIT")
        assert svc.sweep(due) == 10
        assert {p.state for p in svc.store.read(lambda tx: tx.all_promises())} == {"rejected_timedout"}
    finally:
        holder.close()
        rt.stop()
