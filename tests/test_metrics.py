"""Prometheus metrics (docs/operations.md): a live local server scraped before and after real
traffic, the `api` function's `GET /metrics`, and the engine's schedule/timer reports in-process."""
from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import marks
from tests.support.server import ServerProc, backend_names, free_port, start_server
from tests.support.sse import SSE

ROOT = Path(__file__).resolve().parents[1]
VERSION = "2026-04-01"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(port: int) -> Samples:
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


def val(s: Samples, name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(port: int, cond: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    deadline = time.time() + timeout
    while True:
        s = scrape(port)
        if cond(s):
            return s
        if time.time() > deadline:
            raise AssertionError("metrics condition not reached")
        time.sleep(0.05)


def now_ms() -> int:
    return int(time.time() * 1000)


class _Target(http.server.BaseHTTPRequestHandler):
    """A push worker answering every POST with the status in its path (/ok → 200, /fail → 500)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200 if self.path == "/ok" else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def push_target():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture
def live(request, tmp_path):
    backend = getattr(request, "param", "sqlite")
    mport = free_port()
    srv = start_server(backend, tmp_path, debug=False, args=["--observability-metrics-port", str(mport)])
    yield srv, mport
    srv.stop()


@pytest.mark.process  # a server process
def test_requests_are_counted_by_kind_and_status(live):
    srv, mport = live
    before = scrape(mport)
    far = now_ms() + 3_600_000
    assert srv.rpc("promise.create", {"id": "m1", "timeoutAt": far})[0] == 200
    assert srv.rpc("promise.create", {"id": "m1", "timeoutAt": far})[0] == 200
    assert srv.rpc("promise.get", {"id": "m1"})[0] == 200
    assert srv.rpc("promise.get", {"id": "nope"})[0] == 404
    assert srv.rpc("promise.settle", {"id": "m1", "state": "resolved", "value": {}})[0] == 200
    assert srv.rpc("no.such.kind", {})[0] == 400
    assert srv.rpc("other.bogus", {})[0] == 400
    # rejected before the reference counts: malformed JSON, wrong version, non-object data
    assert srv.post(b"{nope", raw=True).status_code == 400
    assert srv.post({"kind": "promise.get", "head": {"corrId": "x", "version": "1999"}, "data": {}}).status_code == 400
    assert srv.post({"kind": "promise.get", "head": {"corrId": "x", "version": VERSION}, "data": []}).status_code == 400
    after = scrape(mport)

    def delta(name: str, **labels: str) -> float:
        return val(after, name, **labels) - val(before, name, **labels)

    assert delta("resonate_request_total", kind="promise.create", status="200") == 2
    assert delta("resonate_request_total", kind="promise.get", status="200") == 1
    assert delta("resonate_request_total", kind="promise.get", status="404") == 1
    assert delta("resonate_request_total", kind="promise.settle", status="200") == 1
    assert delta("resonate_request_total", kind="unknown", status="400") == 2  # client-chosen kinds: one label
    assert not any(name == "resonate_request_total" and dict(labels)["kind"] in ("no.such.kind", "other.bogus")
                   for name, labels in after)
    total = sum(v for (name, _), v in after.items() if name == "resonate_request_total")
    assert total - sum(v for (name, _), v in before.items() if name == "resonate_request_total") == 7
    assert delta("resonate_request_duration_seconds_count", kind="promise.create") == 2
    assert delta("resonate_request_duration_seconds_count", kind="unknown") == 2
    assert delta("resonate_request_duration_seconds_bucket", kind="promise.get", le="+Inf") == 2
    assert 0 < delta("resonate_request_duration_seconds_sum", kind="promise.create") < 10
    # every series of the reference exists from the start, at 0 where nothing happened
    for kind in ("execute", "unblock"):
        assert ("resonate_messages_total", (("kind", kind),)) in after
    for status in ("success", "error", "dropped"):
        assert val(after, "resonate_deliveries_total", status=status) == 0
    assert val(after, "resonate_schedule_promises_total") == 0
    assert not any(name.endswith("_created") for name, _ in after)


# on Postgres delivery goes through the cluster path (NOTIFY, claims), on SQLite through the outbox
# the backends the run selects (RESONATE_TEST_BACKENDS), chosen at collection: never a skip
DELIVERY_BACKENDS = pytest.mark.parametrize("live", [marks.param(b) for b in [b for b in ("sqlite", "postgres")
                                                                             if b in backend_names()] or ["sqlite"]],
                                            indirect=True)


@DELIVERY_BACKENDS
def test_sse_task_dispatch_outbox_and_timeout(live):
    srv, mport = live
    wait_for(mport, lambda s: val(s, "resonate_outbox_depth") == 0)
    before = scrape(mport)
    assert val(before, "resonate_poll_connections") == 0
    sse = SSE(f"{srv.url}/poll/mg/w1")
    try:
        assert sse.status == 200
        wait_for(mport, lambda s: val(s, "resonate_poll_connections") == 1)
        far = now_ms() + 3_600_000
        status, _ = srv.rpc("promise.create", {"id": "t1", "timeoutAt": far,
                                               "tags": {"resonate:target": "poll://any@mg/w1"}})
        assert status == 200
        ev = sse.next(10)
        assert ev["kind"] == "execute" and ev["data"]["task"]["id"] == "t1"
        s = wait_for(mport, lambda s: val(s, "resonate_dispatch_latency_seconds_count", transport="poll")
                     > val(before, "resonate_dispatch_latency_seconds_count", transport="poll"))
        assert (val(s, "resonate_dispatch_latency_seconds_count", transport="poll")
                - val(before, "resonate_dispatch_latency_seconds_count", transport="poll")) == 1
        assert 0 < val(s, "resonate_dispatch_latency_seconds_sum", transport="poll") < 5
        assert val(s, "resonate_messages_total", kind="execute") - val(before, "resonate_messages_total",
                                                                        kind="execute") == 1
        # poll deliveries are not push deliveries (no delivery metrics for poll)
        assert sum(val(s, "resonate_deliveries_total", status=x) for x in ("success", "error", "dropped")) == 0

        # a task for a group nobody serves waits in the outbox
        wait_for(mport, lambda s: val(s, "resonate_outbox_depth") == 0)
        assert srv.rpc("promise.create", {"id": "t2", "timeoutAt": far,
                                          "tags": {"resonate:target": "poll://any@nobody"}})[0] == 200
        s = scrape(mport)
        assert val(s, "resonate_outbox_depth") == 1

        # a promise timeout fired by the timer loop (not by a lazy read)
        lat0 = val(s, "resonate_timer_lateness_seconds_count", timer="promise")
        assert srv.rpc("promise.create", {"id": "to1", "timeoutAt": now_ms() + 300})[0] == 200
        s = wait_for(mport, lambda s: val(s, "resonate_timer_lateness_seconds_count", timer="promise") > lat0)
        assert val(s, "resonate_timer_lateness_seconds_count", timer="promise") - lat0 == 1
        assert 0 <= val(s, "resonate_timer_lateness_seconds_sum", timer="promise") < 5
        assert val(s, "resonate_timer_lateness_seconds_bucket", timer="promise", le="+Inf") >= 1
        assert srv.rpc("promise.get", {"id": "to1"})[1]["promise"]["state"] == "rejected_timedout"
    finally:
        sse.close()
    wait_for(mport, lambda s: val(s, "resonate_poll_connections") == 0)


@DELIVERY_BACKENDS
@pytest.mark.process  # a server process
def test_http_push_outcomes(live, push_target):
    srv, mport = live
    before = scrape(mport)
    far = now_ms() + 3_600_000
    assert srv.rpc("promise.create", {"id": "h1", "timeoutAt": far,
                                      "tags": {"resonate:target": push_target + "/ok"}})[0] == 200
    s = wait_for(mport, lambda s: val(s, "resonate_deliveries_total", status="success") == 1
                 and val(s, "resonate_dispatch_latency_seconds_count", transport="push") == 1)
    assert val(s, "resonate_messages_total", kind="execute") - val(before, "resonate_messages_total", kind="execute") == 1
    assert srv.rpc("promise.create", {"id": "h2", "timeoutAt": far,
                                      "tags": {"resonate:target": push_target + "/fail"}})[0] == 200
    s = wait_for(mport, lambda s: val(s, "resonate_deliveries_total", status="error") >= 1)
    assert val(s, "resonate_deliveries_total", status="success") == 1
    assert val(s, "resonate_dispatch_latency_seconds_count", transport="push") == 1  # failures are not deliveries


@pytest.mark.process  # a server process
def test_metrics_port_serves_only_get_metrics(live):
    srv, mport = live
    base = f"http://127.0.0.1:{mport}"
    assert requests.get(base + "/", timeout=5).status_code == 404
    assert requests.get(base + "/metricsx", timeout=5).status_code == 404
    assert requests.post(base + "/metrics", timeout=5).status_code == 404
    # and the API port does not serve it (the reference keeps it on its own port)
    assert requests.get(srv.url + "/metrics", timeout=5).status_code == 404
    assert f"Metrics server listening port={mport}" in srv.logs()


def _listening(srv: ServerProc) -> set[int]:
    proc = psutil.Process(srv.proc.pid)
    conns = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6 names it connections
    return {c.laddr.port for c in conns("tcp") if c.status == "LISTEN"}


@pytest.mark.process  # a server process
def test_metrics_port_zero_listens_nowhere(tmp_path):
    srv = start_server("sqlite", tmp_path, debug=False)  # start_server passes --observability-metrics-port 0
    try:
        assert _listening(srv) == {srv.port}
        assert "Metrics server listening" not in srv.logs()
    finally:
        srv.stop()


@pytest.mark.process  # a server process
def test_unbindable_metrics_port_is_not_fatal(tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = start_server("sqlite", tmp_path, debug=False, args=["--observability-metrics-port", str(port)])
        try:
            assert srv.rpc("promise.get", {"id": "x"})[0] == 404
            assert f"Failed to bind metrics port port={port}" in srv.logs()
            assert _listening(srv) == {srv.port}
        finally:
            srv.stop()


def test_api_function_serves_metrics(tmp_path, monkeypatch):
    import functions_framework

    monkeypatch.setenv("RESONATE_STORAGE__TYPE", "sqlite")
    monkeypatch.setenv("RESONATE_STORAGE__SQLITE__PATH", str(tmp_path / "ff.db"))
    app = functions_framework.create_app(target="api", source=str(ROOT / "functions" / "main.py"))
    c = app.test_client()
    head = {"corrId": "c1", "version": VERSION}
    r = c.post("/", json={"kind": "promise.create", "head": head, "data": {"id": "p", "timeoutAt": now_ms() + 60_000}})
    assert r.status_code == 200, r.data
    r = c.post("/", json={"kind": "promise.get", "head": head, "data": {"id": "missing"}})
    assert r.status_code == 404, r.data
    r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    s = parse(r.get_data(as_text=True))
    assert val(s, "resonate_request_total", kind="promise.create", status="200") == 1
    assert val(s, "resonate_request_total", kind="promise.get", status="404") == 1
    assert val(s, "resonate_request_duration_seconds_count", kind="promise.create") == 1
    assert val(s, "resonate_outbox_depth") == 0
    assert c.post("/metrics").status_code == 405


def test_schedule_promises_and_timer_lateness_in_process():
    """The engine reports schedule-created promises and due timers through Effects; the service
    turns them into observations (lateness only for passes on the real clock)."""
    from shared.config import load
    from shared.metrics import Metrics
    from shared.records import SCHEDULE
    from shared.service import Service
    from shared.storage.memory import MemoryStore

    store = MemoryStore()
    m = Metrics(store)
    svc = Service(store, load({"storage.type": "memory"}, env={}), metrics=m)
    t0 = now_ms()
    svc.execute(_req("schedule.create", {"id": "s", "cron": "* * * * *", "promiseId": "s.{{.timestamp}}",
                                         "promiseTimeout": 3_600_000,
                                         "promiseTags": {"resonate:target": "poll://any@nobody"}}), t0)
    svc.sweep(now=t0 + 3 * 60_000)  # an explicit instant: schedules fire, no lateness is observed
    made = [p for p in store.read(lambda tx: tx.all_promises()) if p.tags.get(SCHEDULE) == "s"]
    s = parse(m.exposition().decode())
    assert len(made) >= 1
    assert val(s, "resonate_schedule_promises_total") == len(made)
    assert val(s, "resonate_timer_lateness_seconds_count", timer="schedule") == 0
    svc.execute(_req("promise.create", {"id": "late", "timeoutAt": now_ms() - 2000}), now_ms() - 3000)
    svc.sweep()  # the real clock: the promise was due 2 s ago
    s = parse(m.exposition().decode())
    assert val(s, "resonate_timer_lateness_seconds_count", timer="promise") == 1
    assert 2 <= val(s, "resonate_timer_lateness_seconds_sum", timer="promise") < 10
    assert val(s, "resonate_timer_lateness_seconds_bucket", timer="promise", le="1.0") == 0


def _req(kind: str, data: dict[str, Any]) -> Any:
    from shared.kinds import decode

    return decode(kind, data, False)
