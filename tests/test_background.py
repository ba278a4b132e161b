"""Background behaviour with the loops running (no debug session): timers, leases, delivery."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.server import ServerProc, process_backends, start_server
from tests.support.sse import SSE
from tests.support.wait import wait_until

FAR = 2**53


WAIT = 30.0  # generous: a loaded machine may be slow, a broken loop never gets there


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_for(pred, timeout: float = WAIT):
    v = wait_until(pred, timeout, interval=0.02)
    assert v, f"condition not met within {timeout} s"
    return v


def snap(srv: ServerProc) -> dict:
    return srv.rpc("debug.snap", {})[1]


def stored(srv: ServerProc, id: str) -> dict:
    return next(p for p in snap(srv)["promises"] if p["id"] == id)


def test_bare_promise_times_out_in_background(live):
    """Decision Q1: a promise without target times out without anyone touching it."""
    t = now_ms() + 300
    live.rpc("promise.create", {"id": "bare", "timeoutAt": t})
    live.rpc("promise.create", {"id": "sleep", "timeoutAt": t, "tags": {"resonate:timer": "true"}})
    wait_for(lambda: stored(live, "bare")["state"] == "rejected_timedout")
    assert stored(live, "bare")["settledAt"] == t
    wait_for(lambda: stored(live, "sleep")["state"] == "resolved")  # a timer resolves at its deadline


def test_awaiter_wakes_when_awaited_bare_promise_times_out(live):
    live.rpc("promise.create", {"id": "wf", "timeoutAt": FAR, "tags": {"resonate:target": "poll://any@nobody"}})
    status, data = live.rpc("task.acquire", {"id": "wf", "version": 0, "pid": "w", "ttl": 60000})
    assert status == 200
    live.rpc("promise.create", {"id": "ext", "timeoutAt": now_ms() + 200})
    act = {"kind": "promise.register_callback", "head": {}, "data": {"awaited": "ext", "awaiter": "wf"}}
    assert live.rpc("task.suspend", {"id": "wf", "version": 1, "actions": [act]})[0] == 200
    wait_for(lambda: live.rpc("task.get", {"id": "wf"})[1]["task"]["state"] == "pending")


def test_expired_lease_is_redispatched_with_same_version(process_live):
    live = process_live
    sse = SSE(live.url + "/poll/lease/w1")
    # the stream's connection is not reused after it (a watcher reads the socket till it closes)
    assert sse.headers.get("Connection") == "close", sse.headers
    try:
        live.rpc("promise.create", {"id": "L", "timeoutAt": FAR, "tags": {"resonate:target": "poll://any@lease"}})
        assert sse.next()["data"]["task"] == {"id": "L", "version": 0}
        assert live.rpc("task.acquire", {"id": "L", "version": 0, "pid": "w1", "ttl": 300})[0] == 200
        again = sse.next()
        assert again["kind"] == "execute" and again["data"]["task"] == {"id": "L", "version": 1}
    finally:
        sse.close()


def test_cron_with_seconds_fires_in_background(live):
    status, _ = live.rpc("schedule.create", {"id": "tick", "cron": "* * * * * *", "promiseId": "tick-{{.timestamp}}",
                                             "promiseTimeout": 60000,
                                             "promiseTags": {"resonate:target": "poll://any@cron"}})
    assert status == 200
    found = wait_for(lambda: live.rpc("promise.search", {"tags": {"resonate:schedule": "tick"}})[1]["promises"])
    assert found[0]["id"].startswith("tick-") and found[0]["tags"]["resonate:origin"] == found[0]["id"]
    assert live.rpc("schedule.delete", {"id": "tick"})[0] == 200


class _Receiver(BaseHTTPRequestHandler):
    fail_first = 2
    bodies: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append({"ct": self.headers["Content-Type"], "body": body})
        status = 500 if len(type(self).bodies) <= type(self).fail_first else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_http_push_is_retried_until_accepted_then_leaves_outbox(live):
    _Receiver.bodies = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
        live.rpc("promise.create", {"id": "push", "timeoutAt": FAR, "tags": {"resonate:target": url}})
        wait_for(lambda: len(_Receiver.bodies) >= 3)
        got = _Receiver.bodies[-1]
        assert got["ct"] == "application/json"
        assert got["body"]["kind"] == "execute" and got["body"]["data"]["task"] == {"id": "push", "version": 0}
        assert got["body"]["head"]["serverUrl"].startswith("http://")
        wait_for(lambda: snap(live)["messages"] == [])
        time.sleep(1.5)  # an absence: a re-drive of an acked row would show up here (cannot fail spuriously)
        assert len(_Receiver.bodies) == 3  # accepted once: no more re-drives
    finally:
        httpd.shutdown()


@pytest.mark.parametrize("backend", process_backends())
def test_worker_connecting_late_gets_every_waiting_execute_of_a_long_outbox(backend, tmp_path):
    """The on-connect re-drive walks the whole outbox in pages, not just its first page. Pages are
    `messages.batch_size * 10` rows: with a batch size of 10, 250 waiting executes are 2.5 pages
    (the default's 1000-row pages would need 2500 requests for the same shape)."""
    live = start_server(backend, tmp_path, debug=True, env={"RESONATE_MESSAGES__BATCH_SIZE": "10"})
    try:
        n = 250
        for i in range(n):
            st, _ = live.rpc("promise.create", {"id": f"late-{i:05d}", "timeoutAt": FAR,
                                                "tags": {"resonate:target": "poll://any@late"}})
            assert st == 200
        sse = SSE(live.url + "/poll/late/w1")
        try:
            want, got = {f"late-{i:05d}" for i in range(n)}, set()
            while got != want:  # at least once: a task's retry timer may send one of them twice
                got.add(sse.next()["data"]["task"]["id"])
            assert got == want
            wait_for(lambda: snap(live)["messages"] == [])
        finally:
            sse.close()
    finally:
        live.stop()
