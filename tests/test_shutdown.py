"""Graceful shutdown (docs/operations.md): SIGTERM under load loses no acknowledged write, ends SSE
streams and exits 0 within `server.shutdown_timeout`; work that would outlast the timeout (a
client that never finishes its request, a push to a worker that never answers) does not hold
the process past it."""
from __future__ import annotations

import base64
import signal
import socket
import sqlite3
import threading
import time

import pytest
import requests

from tests.support import marks
from tests.support.server import backend_names, start_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.process

VERSION = "2026-04-01"


def _body(id: str) -> dict:
    param = {"data": base64.b64encode(id.encode()).decode()}
    return {"kind": "promise.create", "head": {"corrId": id, "version": VERSION},
            "data": {"id": id, "timeoutAt": 2**53, "param": param}}


class SseReader(threading.Thread):
    """Reads one SSE stream to its end; `ended` is when the server finished it cleanly."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.resp = requests.get(url, stream=True, timeout=30)
        assert self.resp.status_code == 200
        self.ended: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in self.resp.iter_content(chunk_size=None):
                pass
            self.ended = time.monotonic()
        except BaseException as e:  # a reset instead of the chunked stream's end
            self.error = e


@pytest.mark.parametrize("backend", [marks.param(b) for b in ("sqlite", "postgres") if b in backend_names()])
def test_sigterm_under_load_keeps_every_acknowledged_write_and_exits_0(tmp_path, backend):
    timeout_ms = 5000
    srv = start_server(backend, tmp_path, debug=False, args=["--server-shutdown-timeout", str(timeout_ms)])
    acked: list[str] = []
    refused = [0]
    stop = threading.Event()

    def client(n: int) -> None:
        s = requests.Session()
        i = 0
        while not stop.is_set():
            id = f"w{n}-{i}"
            i += 1
            try:
                r = s.post(srv.url + "/", json=_body(id), timeout=30)
            except requests.RequestException:
                refused[0] += 1  # not acknowledged: it may or may not have been written
                time.sleep(0.01)
                continue
            if r.status_code == 200:
                assert r.json()["data"]["promise"]["id"] == id
                acked.append(id)

    sse = SseReader(srv.url + "/poll/g/w1")
    sse.start()
    clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(32)]
    for t in clients:
        t.start()
    assert wait_until(lambda: len(acked) > 50, 30), "no load"  # the signal comes mid-load, on any machine
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    code = srv.proc.wait(timeout=timeout_ms / 1000 + 10)
    elapsed = time.monotonic() - t0
    stop.set()
    for t in clients:
        t.join(30)
    sse.join(5)
    logs = srv.logs()
    assert code == 0, logs
    assert elapsed < timeout_ms / 1000, (elapsed, logs)
    assert refused[0] > 0, refused  # clients were still sending when the listener closed
    # the stream ends within the shutdown budget (the server does not wait for its client to leave)
    assert sse.error is None and sse.ended is not None and sse.ended - t0 < timeout_ms / 1000, (sse.error, logs)
    assert "Resonate Server stopped" in logs and "WARN" not in logs and "Traceback" not in logs, logs

    if backend == "sqlite":
        with sqlite3.connect(srv.db) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again = start_server(backend, tmp_path, debug=False, db=srv.db, pg_url=srv.pg_url)
    try:
        for id in acked:
            status, data = again.rpc("promise.get", {"id": id})
            assert status == 200, (id, data)
            assert data["promise"]["param"] == _body(id)["data"]["param"], data
    finally:
        again.stop()


class BlackHole:
    """A TCP endpoint that accepts connections and never answers (a hung worker)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_work_outlasting_the_timeout_does_not_hold_the_process(tmp_path):
    """A request whose body never arrives, a push whose worker never answers and an open SSE
    stream: the process still exits 0 within the timeout (plus scheduling margin), says why."""
    timeout_ms = 2000
    hole = BlackHole()
    srv = start_server("sqlite", tmp_path, debug=False, args=["--server-shutdown-timeout", str(timeout_ms)])
    slow = socket.create_connection(("127.0.0.1", srv.port))
    try:
        status, _ = srv.rpc("promise.create", {"id": "hung", "timeoutAt": 2**53,
                                               "tags": {"resonate:target": f"http://127.0.0.1:{hole.port}/"}})
        assert status == 200
        _wait(lambda: hole.accepted, 10, "the push to reach the hung worker")
        slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        sse = SseReader(srv.url + "/poll/g/w1")
        sse.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(timeout=timeout_ms / 1000 + 10)
        elapsed = time.monotonic() - t0
        sse.join(5)
        logs = srv.logs()
        assert code == 0, logs
        assert elapsed < timeout_ms / 1000 + 3.0, (elapsed, logs)  # the budget, plus the process's own exit
        assert sse.error is None and sse.ended is not None, sse.error
        assert "WARN resonate: Requests still in progress at the shutdown timeout, closing them count=1" in logs, logs
        assert "WARN resonate: Deliveries still in flight at the shutdown timeout" in logs, logs
        assert logs.rstrip().endswith("Resonate Server stopped"), logs
        assert slow.recv(1024) == b""  # the half-sent request was never answered
        # the undelivered execute stayed in the outbox: the next server sends it again
        seen = len(hole.accepted)
        again = start_server("sqlite", tmp_path, debug=False, db=srv.db, args=["--server-shutdown-timeout", "500"])
        try:
            _wait(lambda: len(hole.accepted) > seen, 10, "the execute to be re-sent after restart")
        finally:
            again.stop()
    finally:
        slow.close()
        hole.close()
        srv.stop()


def test_console_live_streams_end_at_shutdown(tmp_path):
    """An open console stream (`GET /ui/events`, no hint due for a minute) ends cleanly at
    SIGTERM: the drain does not wait for its next write, so no request is left at the timeout."""
    srv = start_server("sqlite", tmp_path, debug=False, args=["--server-shutdown-timeout", "10000",
                                                             "--ui-live-interval", "600000"])
    try:
        live = SseReader(srv.url + "/ui/events")
        live.start()
        assert wait_until(lambda: live.resp.raw is not None, 10)
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(timeout=20)
        live.join(10)
        logs = srv.logs()
        assert code == 0, logs
        assert live.error is None and live.ended is not None, live.error
        assert "Requests still in progress at the shutdown timeout" not in logs, logs
    finally:
        srv.stop()
