"""Messages and SSE, run with the background loops active, plus this server's
delivery decisions (at-least-once; executes to poll targets wait for a matching worker)."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.conformance.helpers import SseClient, now_ms, ok, snap, wait_until

pytestmark = pytest.mark.process  # SSE streams, raw sockets, an HTTP hook: real server processes

HOUR = 3_600_000
KEEPALIVE_ENV = {"RESONATE_TRANSPORTS__HTTP_POLL__KEEPALIVE_INTERVAL": "200"}


@pytest.fixture
def rs(process_rs):
    """The shared debug-session server, as a process (memory, sqlite, postgres)."""
    return process_rs


@pytest.fixture
def g() -> str:
    """A fresh group name per test: connections closed by earlier tests on the shared server may still
    be registered (the server notices a vanished client only at its next write)."""
    return "g" + uuid.uuid4().hex[:8]


def wall_create(srv, id, target=None, timeout_ms=HOUR, extra_tags=None):
    tg = dict(extra_tags or {})
    if target is not None:
        tg["resonate:target"] = target
    st, d = srv.rpc("promise.create", {"id": id, "timeoutAt": now_ms() + timeout_ms, "tags": tg})
    assert st == 200, d
    return d["promise"]


def assert_execute(msg, id, version):
    assert msg["kind"] == "execute", msg
    assert isinstance(msg["head"], dict), msg
    if "serverUrl" in msg["head"]:
        assert isinstance(msg["head"]["serverUrl"], str) and msg["head"]["serverUrl"], msg
    assert msg["data"] == {"task": {"id": id, "version": version}}, msg


def test_s94_execute_over_sse(live, g):
    with SseClient(live.url, g, "w1") as c:
        assert c.status == 200
        assert c.resp.headers.get("Content-Type", "").startswith("text/event-stream"), c.resp.headers
        assert "no-cache" in c.resp.headers.get("Cache-Control", ""), c.resp.headers
        wall_create(live, "p", target=f"poll://any@{g}")
        msgs = c.wait_messages(1, timeout=1.5)
        assert len(msgs) == 1, c.raw()
        assert_execute(msgs[0], "p", 0)
        time.sleep(1.0)
        assert len(c.messages()) == 1, c.raw()
        c.assert_framing()
        raw = c.raw()
        line = next(b for b in raw.split(b"\n\n") if b.startswith(b"data: "))
        # compact single-line JSON, event terminated by a blank line
        assert b"\n" not in line
        assert raw.count(line + b"\n\n") == 1


def test_s95_anycast_prefers_id(live, g):
    with SseClient(live.url, g, "w1") as c1, SseClient(live.url, g, "w2") as c2:
        assert c1.status == 200 and c2.status == 200
        for i in range(5):
            wall_create(live, f"p{i}", target=f"poll://any@{g}/w2")
        msgs = c2.wait_messages(5, timeout=2.0)
        assert sorted(m["data"]["task"]["id"] for m in msgs) == [f"p{i}" for i in range(5)], c2.raw()
        for m in msgs:
            assert_execute(m, m["data"]["task"]["id"], 0)
        time.sleep(0.5)
        assert c1.messages() == [], c1.raw()
        c1.assert_framing()
        c2.assert_framing()


def test_s95_anycast_falls_back_to_group(live, g):
    with SseClient(live.url, g, "w1") as c1:
        wall_create(live, "p", target=f"poll://any@{g}/absent")
        msgs = c1.wait_messages(1, timeout=1.5)
        assert len(msgs) == 1, c1.raw()
        assert_execute(msgs[0], "p", 0)


def test_s95_unicast_and_groups_are_exact(live, g):
    with SseClient(live.url, g, "w1") as c1, SseClient(live.url, g, "w2") as c2, \
            SseClient(live.url, g.upper(), "w1") as c3:
        wall_create(live, "p", target=f"poll://uni@{g}/w1")
        msgs = c1.wait_messages(1, timeout=1.5)
        assert len(msgs) == 1, c1.raw()
        assert_execute(msgs[0], "p", 0)
        time.sleep(0.5)
        assert c2.messages() == [] and c3.messages() == []


def test_s96_unblock_to_absent_unicast_is_dropped(live, g):
    wall_create(live, "p")
    addr = f"poll://uni@{g}/w1"
    ok(live, "promise.register_listener", {"awaited": "p", "address": addr}, time=None)
    st, d = live.rpc("promise.settle", {"id": "p", "state": "resolved"})
    assert st == 200, d
    drained = wait_until(lambda: snap(live)["messages"] == [], timeout=3.0)
    assert drained, snap(live)["messages"]
    assert snap(live)["listeners"] == []
    with SseClient(live.url, g, "w1") as c:
        assert c.status == 200
        time.sleep(1.5)
        assert c.messages() == [], c.raw()
        c.assert_framing()


def test_late_worker_gets_execute(live, g):
    """This server: an execute to a poll target with no connection is kept and delivered once a
    matching worker connects."""
    wall_create(live, "p", target=f"poll://any@{g}2")
    time.sleep(1.5)  # at least one re-drive pass with nobody connected
    with SseClient(live.url, g + "2", "w9") as c:
        assert c.status == 200
        msgs = c.wait_messages(1, timeout=1.0)
        assert len(msgs) == 1, c.raw()
        assert_execute(msgs[0], "p", 0)
        c.assert_framing()
    assert wait_until(lambda: snap(live)["messages"] == [], timeout=2.0), snap(live)["messages"]


def test_s97_retry_redelivers(backend, spawn):
    srv = spawn(backend, args=["--tasks-retry-timeout", "1000"], env=KEEPALIVE_ENV)
    with SseClient(srv.url, "g", "w1") as c1:
        assert c1.status == 200
        created = time.monotonic()
        wall_create(srv, "p", target="poll://any@g")
        first = c1.wait_messages(1, timeout=1.5)
        assert len(first) == 1, c1.raw()
        assert_execute(first[0], "p", 0)
    # w1 went away without acquiring: the delivered execute is lost with it
    with SseClient(srv.url, "g", "w2") as c2:
        assert c2.status == 200
        msgs = c2.wait_messages(1, timeout=4.0)
        assert len(msgs) >= 1, c2.raw()
        assert_execute(msgs[0], "p", 0)
        assert time.monotonic() - created >= 0.9  # it came from the retry timeout (R = 1 s)
        c2.assert_framing()
        # still not acquired: re-dispatched every R
        more = c2.wait_messages(2, timeout=3.0)
        assert len(more) >= 2, c2.raw()
        # once acquired, the retries stop
        st, d = srv.rpc("task.acquire", {"id": "p", "version": 0, "pid": "w2", "ttl": 60_000})
        assert st == 200, d
        time.sleep(0.3)  # an execute already in flight may still land
        n = len(c2.messages())
        time.sleep(2.5)
        assert len(c2.messages()) == n, c2.raw()


def test_s98_unblock_over_sse(live, g):
    with SseClient(live.url, g, "w1") as c:
        wall_create(live, "p")
        ok(live, "promise.register_listener", {"awaited": "p", "address": f"poll://uni@{g}/w1"}, time=None)
        st, d = live.rpc("promise.settle", {"id": "p", "state": "resolved", "value": {"data": "eA=="}})
        assert st == 200, d
        msgs = c.wait_messages(1, timeout=1.5)
        assert len(msgs) == 1, c.raw()
        m = msgs[0]
        assert m == {"kind": "unblock", "head": {}, "data": {"promise": d["promise"]}}
        assert m["data"]["promise"]["state"] == "resolved"
        assert isinstance(m["data"]["promise"]["settledAt"], int)
        c.assert_framing()


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self.server.received.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def hook():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    srv.received = []
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_s99_http_push(live, g, hook):
    port = hook.server_address[1]
    wall_create(live, "p", target=f"http://127.0.0.1:{port}/hook")
    assert wait_until(lambda: hook.received, timeout=2.0), "no push received"
    path, headers, body = hook.received[0]
    assert path == "/hook"
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert ctype.startswith("application/json"), headers
    msg = json.loads(body)
    assert_execute(msg, "p", 0)
    time.sleep(0.5)
    assert len(hook.received) == 1, hook.received
    assert wait_until(lambda: snap(live)["messages"] == [], timeout=2.0), snap(live)["messages"]


def test_s100_poll_cap_503(backend, spawn):
    srv = spawn(backend, args=["--transports-http-poll-max-connections", "20"], env=KEEPALIVE_ENV)
    clients = []
    try:
        for i in range(20):
            c = SseClient(srv.url, "g", f"c{i}")
            clients.append(c)
            assert c.status == 200, i
        r = requests.get(srv.url + "/poll/g/extra", timeout=5, stream=True)
        assert r.status_code == 503
        assert r.text.strip() == "Poll registration at capacity"
        r.close()
        # a slot is freed when a client goes away
        clients.pop().close()

        def reconnect():
            c = SseClient(srv.url, "g", "again")
            if c.status == 200:
                clients.append(c)
                return True
            c.close()
            time.sleep(0.2)
            return False

        assert wait_until(reconnect, timeout=5.0), "slot not freed after a client disconnected"
    finally:
        for c in clients:
            c.close()


def _recv_headers(sock: socket.socket, deadline: float) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def test_s100_thousand_connections(backend, spawn):
    """1000 real (raw-socket) SSE connections on a default server: all accepted, the 1001st gets 503,
    and ordinary RPCs still answer quickly."""
    srv = spawn(backend)
    socks: list[socket.socket] = []
    try:
        for start in range(0, 1000, 50):
            batch = []
            for i in range(start, start + 50):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(f"GET /poll/g/c{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
                batch.append(s)
                socks.append(s)
            deadline = time.monotonic() + 20
            for s in batch:
                head = _recv_headers(s, deadline)
                assert head.split(b"\r\n", 1)[0].split(b" ")[1] == b"200", head[:200]
        r = requests.get(srv.url + "/poll/g/extra", timeout=10, stream=True)
        assert r.status_code == 503
        assert r.text.strip() == "Poll registration at capacity"
        r.close()
        for _ in range(5):
            t0 = time.monotonic()
            st, d = srv.rpc("promise.get", {"id": "nope"})
            assert st == 404
            assert time.monotonic() - t0 < 10  # answered, not queued behind the streams
        t0 = time.monotonic()
        st, d = srv.rpc("promise.create", {"id": "p", "timeoutAt": now_ms() + HOUR})
        assert st == 200 and time.monotonic() - t0 < 10
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def _whatwg_events(raw: bytes) -> list[str]:
    """Minimal EventSource (WHATWG) parser: the `message` events a browser/TS SDK would dispatch."""
    out, data, has = [], [], False
    for line in raw.decode().split("\n"):
        if line == "":
            if has:
                out.append("\n".join(data))
            data, has = [], False
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                data.append(value)
                has = True
    return out


def test_s101_keepalive_comments(backend, spawn):
    from resonate.connections.sse import SseFramer

    srv = spawn(backend, env=KEEPALIVE_ENV)
    with SseClient(srv.url, "g", "w1") as c:
        assert c.status == 200
        time.sleep(1.3)
        raw = c.raw()
        c.assert_framing()
        assert len(c.comments()) >= 3, raw
        assert all(b.startswith(b":") for b in c.blocks()), raw
        assert c.messages() == []
        assert SseFramer().feed(raw) == []        # Python SDK reports nothing
        assert _whatwg_events(raw) == []          # EventSource (TS SDK) reports nothing
        # messages still flow between keep-alives
        wall_create(srv, "p", target="poll://any@g")
        msgs = c.wait_messages(1, timeout=1.5)
        assert len(msgs) == 1
        assert [json.loads(x) for x in SseFramer().feed(c.raw())] == msgs
        assert [json.loads(x) for x in _whatwg_events(c.raw())] == msgs
        c.assert_framing()


def test_s102_debug_session_holds_messages(rs, g):
    with SseClient(rs.url, g, "w1") as c:
        assert c.status == 200
        wall_create(rs, "p", target=f"poll://any@{g}")
        time.sleep(1.2)
        assert c.messages() == [], c.raw()
        s = snap(rs)
        assert [m["message"]["data"]["task"] for m in s["messages"]] == [{"id": "p", "version": 0}]
        assert rs.rpc("debug.stop", {})[0] == 200
        try:
            msgs = c.wait_messages(1, timeout=2.0)
            assert len(msgs) == 1, c.raw()
            assert_execute(msgs[0], "p", 0)
            assert wait_until(lambda: snap(rs)["messages"] == [], timeout=2.0), snap(rs)["messages"]
            c.assert_framing()
        finally:
            rs.rpc("debug.start", {})


def test_closed_connection_is_not_routed_to(live, g):
    """A poll connection is deregistered when the client disconnects; with at-least-once delivery
    () no execute may be 'delivered' to a client that already hung up. w1 closes, w2 connects a
    second later; every anycast execute to the group must reach w2 promptly (not wait for the 30 s retry)."""
    c1 = SseClient(live.url, g, "w1")
    assert c1.status == 200
    time.sleep(0.2)
    c1.close()
    time.sleep(1.0)
    with SseClient(live.url, g, "w2") as c2:
        assert c2.status == 200
        for i in range(10):
            wall_create(live, f"p{i}", target=f"poll://any@{g}")
        msgs = c2.wait_messages(10, timeout=3.0)
        missing = sorted({f"p{i}" for i in range(10)} - {m["data"]["task"]["id"] for m in msgs})
        assert not missing, f"never delivered to w2: {missing}; still queued: {snap(live)['messages']}"
