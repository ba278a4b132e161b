"""The cloud simulation: every function its own process over one Postgres, behind one router.

What a client of the deployed product sees, faithfully enough to catch multi-instance bugs:
requests spread over stateless api instances, SSE streams through the front end, instances that
die and are replaced, and timers fired only by the scheduled sweeper. The module's tests run on
both arrangements: `function-url` (the default: one base URL, the api function serves every
route, streams included) and `load-balancer` (`/poll/...` to poll instances, the rest to api).
"""
from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import psutil
import pytest
import requests

from shared.clock import Clock
from tests.support.cloudsim import SimServer, start_cloudsim
from tests.support.pg import drop_database, template_clone_url
from tests.support.server import ROOT, VERSION, free_port
from tests.support.sse import SSE

pytestmark = [pytest.mark.timeout(120), pytest.mark.process, pytest.mark.postgres, pytest.mark.cloudsim]
KEEPALIVE_MS = 300


@pytest.fixture(scope="module", params=["function-url", "load-balancer"])
def sim(request, tmp_path_factory) -> SimServer:
    srv = start_cloudsim(tmp_path_factory.mktemp("cloudsim"), tick=2.0, window_ms=5000,
                         load_balancer=request.param == "load-balancer",
                         env={"RESONATE_TRANSPORTS__HTTP_POLL__KEEPALIVE_INTERVAL": str(KEEPALIVE_MS)})
    yield srv
    srv.stop()


def envelope(kind: str, data: dict) -> dict:
    return {"kind": kind, "head": {"corrId": uuid.uuid4().hex, "version": VERSION}, "data": data}


def served_by(r: requests.Response) -> int:
    return int(r.headers["X-Sim-Instance"].split("/")[1])


def test_writes_on_one_api_instance_are_read_on_the_other(sim: SimServer):
    api_pids = {i.pid for i in sim.sim.ready("api")}
    assert len(api_pids) == 2
    created, read = Counter(), Counter()
    crossed = 0
    for n in range(30):
        pid = f"x-{n}-{uuid.uuid4().hex[:6]}"
        r = sim.session.post(sim.url + "/", json=envelope("promise.create", {"id": pid, "timeoutAt": 2**53}))
        assert r.status_code == 200 and r.json()["data"]["promise"]["id"] == pid, r.text
        g = sim.session.post(sim.url + "/", json=envelope("promise.get", {"id": pid}))
        assert g.status_code == 200 and g.json()["data"]["promise"]["state"] == "pending", g.text
        created[served_by(r)] += 1
        read[served_by(g)] += 1
        crossed += served_by(r) != served_by(g)
    assert set(created) | set(read) == api_pids, (created, read)
    assert crossed >= 10, "reads should often land on the other instance"
    status, data = sim.rpc("promise.create", {"id": "x-0-dup", "timeoutAt": 2**53})  # ServerProc-style helper
    assert status == 200 and data["promise"]["state"] == "pending"


def test_health_ready_and_the_rest_api_go_to_api(sim: SimServer):
    for path, code in (("/health", 200), ("/ready", 200), ("/promises?id=*", 200), ("/promises/nope", 404)):
        r = sim.session.get(sim.url + path, timeout=10)
        assert r.status_code == code, (path, r.status_code, r.text)
        assert r.headers["X-Sim-Instance"].startswith("api/")


def test_the_older_rest_api_on_the_functions(sim: SimServer):
    """The REST routes are served by the api function (docs/legacy-api.md): a promise created and
    resolved over REST is the one `POST /` reads, on whichever instance."""
    pid = f"rest-{uuid.uuid4().hex[:8]}"
    r = sim.session.post(sim.url + f"/promises/{pid}/create", json={"timeout": 2**53},
                         headers={"Idempotency-Key": "c"}, timeout=10)
    assert r.status_code == 201 and r.json()["state"] == "PENDING", r.text
    r = sim.session.patch(sim.url + f"/promises/{pid}", json={"state": "RESOLVED", "value": {"data": "aGk="}},
                          headers={"Idempotency-Key": "r"}, timeout=10)
    assert r.status_code == 201 and r.json()["idempotencyKeyForComplete"] == "r", r.text
    status, data = sim.rpc("promise.get", {"id": pid})
    assert status == 200 and data["promise"]["state"] == "resolved" and data["promise"]["value"] == {"data": "aGk="}


def test_sse_stream_through_the_router(sim: SimServer):
    s = SSE(sim.url + "/poll/g1/w1")
    try:
        assert s.status == 200 and s.headers["Content-Type"].startswith("text/event-stream")
        assert s.headers["X-Sim-Instance"].startswith(f"{sim.sim.stream_role}/")  # api on the function URL
        deadline = time.monotonic() + 5
        while s.comments < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bytes(s.raw).startswith(b": connected\n\n"), bytes(s.raw)
        assert s.comments >= 3 and b": keep-alive\n\n" in s.raw, bytes(s.raw)  # streamed, not buffered
    finally:
        s.close()


def test_a_thousand_sse_streams(sim: SimServer):
    # one stream per poll instance first: concurrent first requests race in functions/main.py's
    # lazily built runtime (functools.cache does not lock), which is not what this test is about
    warm = [requests.get(f"{i.url}/poll/warm/{i.pid}", stream=True, timeout=10)
            for i in sim.sim.ready(sim.sim.stream_role)]
    assert all(w.status_code == 200 for w in warm)
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for n in range(1000):
            s = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
            s.sendall(f"GET /poll/many/w{n} HTTP/1.1\r\nHost: sim\r\nAccept: text/event-stream\r\n\r\n".encode())
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, bytearray())
            socks.append(s)
        ok: set[socket.socket] = set()
        deadline = time.monotonic() + 30
        while len(ok) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                try:
                    chunk = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                key.data.extend(chunk)
                if not chunk:
                    sel.unregister(key.fileobj)
                elif b": keep-alive" in key.data:
                    ok.add(key.fileobj)
        assert len(ok) == 1000, f"{len(ok)} of 1000 streams got a keep-alive"
        per = Counter(bytes(k.data).split(b"X-Sim-Instance: ")[1].split(b"\r\n")[0] for k in sel.get_map().values())
        assert len(per) == 2 and min(per.values()) >= 400, per
        t0 = time.monotonic()
        assert sim.rpc("promise.create", {"id": "while-1000-streams", "timeoutAt": 2**53})[0] == 200
        # served while 1000 streams are held (a request queued behind them would wait for its timeout)
        assert time.monotonic() - t0 < 10
    finally:
        for s in socks:
            s.close()
        for w in warm:
            w.close()


def test_killed_api_instance_is_replaced_and_requests_keep_succeeding(sim: SimServer):
    for n in range(10):  # pooled router connections to both instances
        assert sim.rpc("promise.create", {"id": f"k-{n}", "timeoutAt": 2**53})[0] == 200
    victim = sim.sim.kill("api")
    for n in range(40):  # right after the kill: refused connections go to the other instance
        r = sim.session.post(sim.url + "/", json=envelope("promise.get", {"id": f"k-{n % 10}"}))
        assert r.status_code == 200, r.text
        assert served_by(r) != victim.pid
    sim.sim.wait_ready(20)
    new = {i.pid for i in sim.sim.ready("api")} - {victim.pid}
    assert len(new) == 2 and victim.pid not in new
    assert any(e[1] == "exit" and e[3] == victim.pid for e in sim.sim.events)
    seen = Counter(served_by(sim.session.post(sim.url + "/", json=envelope("promise.get", {"id": "k-1"})))
                   for _ in range(20))
    assert set(seen) == new, seen  # the router uses the replacement


def test_kill_under_concurrent_load(sim: SimServer):
    """Requests in flight on a dying instance may get a 502 envelope; nothing else fails."""
    statuses: Counter = Counter()
    stop = threading.Event()

    def load(w: int) -> None:
        s = requests.Session()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                r = s.post(sim.url + "/", json=envelope("promise.create", {"id": f"l-{w}-{n}", "timeoutAt": 2**53}),
                           timeout=30)
                statuses[r.status_code] += 1
                if r.status_code == 502:
                    assert r.json()["head"]["status"] == 502 and r.json()["kind"] == "promise.create"
            except Exception as e:
                statuses[repr(e)[:80]] += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.7)
    sim.sim.kill("api")
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert set(statuses) <= {200, 502}, statuses
    assert statuses[200] > 50 and statuses[502] <= 6, statuses
    sim.sim.wait_ready(20)


def test_killed_stream_instance_ends_its_streams_and_workers_reconnect(sim: SimServer):
    s = SSE(sim.url + "/poll/g2/w2")
    pid = int(s.headers["X-Sim-Instance"].split("/")[1])
    time.sleep(0.2)
    sim.sim.kill(sim.sim.stream_role, pid=pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and s.resp.fp is not None and not s.resp.isclosed():
        time.sleep(0.05)
    assert s.resp.isclosed(), "the stream should end when its instance dies"
    s.close()
    again = SSE(sim.url + "/poll/g2/w2")  # the client reconnects: another (live) instance takes it
    try:
        assert again.status == 200 and int(again.headers["X-Sim-Instance"].split("/")[1]) != pid
        deadline = time.monotonic() + 5
        while not again.raw.startswith(b": connected") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert again.raw.startswith(b": connected")
    finally:
        again.close()
    sim.sim.wait_ready(20)


def test_the_sweeper_tick_times_out_promises(sim: SimServer):
    from shared.storage.postgres import PostgresStore

    now = Clock().now()
    assert sim.rpc("promise.create", {"id": "t-rejected", "timeoutAt": now + 4500})[0] == 200
    assert sim.rpc("promise.create", {"id": "t-resolved", "timeoutAt": now + 1500,
                                      "tags": {"resonate:timer": "true"}})[0] == 200
    store = PostgresStore(sim.pg_url, pool_size=1)
    try:  # the rows themselves (no lazy timeout on read): only a sweeper call can settle them
        settled: dict[str, tuple[str, int]] = {}
        deadline = time.monotonic() + 12
        while len(settled) < 2 and time.monotonic() < deadline:
            for pid in ("t-rejected", "t-resolved"):
                p = store.read(lambda tx, pid=pid: tx.get_promise(pid))
                if p.state != "pending" and pid not in settled:
                    settled[pid] = (p.state, Clock().now() - p.timeout_at)
            time.sleep(0.02)
    finally:
        store.close()
    assert {k: v[0] for k, v in settled.items()} == {"t-rejected": "rejected_timedout", "t-resolved": "resolved"}
    assert all(late < 2500 for _, late in settled.values()), settled  # within a tick, not a minute
    assert sim.rpc("promise.get", {"id": "t-rejected"})[1]["promise"]["state"] == "rejected_timedout"
    assert sim.rpc("promise.get", {"id": "t-resolved"})[1]["promise"]["state"] == "resolved"

    def overlapping() -> bool:  # the long call's answer may arrive just after the row changed
        done = [t for t in sim.sim.ticks if t.get("status") == 200]
        return any(a["at"] < b["at"] < a["done"] for a in done for b in done if a is not b)

    # Cloud Scheduler does not wait: a call sleeping until the 4.5 s deadline overlapped the next tick
    deadline = time.monotonic() + 5
    while not overlapping() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert overlapping(), sim.sim.ticks
    assert all(t["pid"] in {i.pid for i in sim.sim.ready("sweeper")} for t in sim.sim.ticks if t.get("status") == 200)


def _group_pids(pid: int) -> set[int]:
    try:
        p = psutil.Process(pid)
        return {pid} | {c.pid for c in p.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.parametrize("shape", ["function-url", "load-balancer"])
def test_cli_children_die_with_the_simulator(tmp_path, shape):
    """`python -m local cloud-sim` SIGKILLed: no instance, gunicorn worker or router outlives it."""
    url = template_clone_url()
    port = free_port()
    log = open(tmp_path / "cli.log", "wb")
    lb = ["--load-balancer", "--poll", "1"] if shape == "load-balancer" else []
    expected = 7 if lb else 5  # router + (gunicorn arbiter + worker) per api, sweeper (and poll) instance
    proc = subprocess.Popen([sys.executable, "-m", "local", "cloud-sim", "--port", str(port), "--api", "1", *lb,
                             "--dispatch", "0", "--tick", "0", "--storage-postgres-url", url,
                             "--log-dir", str(tmp_path / "logs")], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "RESONATE_SWEEPER__WINDOW": "1000"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        assert requests.post(f"http://127.0.0.1:{port}/", json=envelope("promise.get", {"id": "none"}),
                             timeout=10).status_code == 404
        deadline = time.monotonic() + 20  # the router answers as soon as one api instance is ready
        while len(children := _group_pids(proc.pid) - {proc.pid}) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(children) >= expected, children
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while _alive(children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(children), (_alive(children), (tmp_path / "cli.log").read_text())
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        drop_database(url)


def test_stop_terminates_everything(tmp_path):
    srv = start_cloudsim(tmp_path, api=1, dispatch=0, tick=0)
    try:
        assert {i.role for i in srv.sim.instances} == {"api", "sweeper"}  # no poll function by default
        pids = _group_pids(srv.sim.router.pid)
        for inst in srv.sim.instances:
            pids |= _group_pids(inst.pid)
        assert len(pids) == 5, pids
        log_lines = json.dumps([list(e) for e in srv.sim.events])
        assert log_lines.count('"start"') == 2 and log_lines.count('"ready"') == 2
    finally:
        t0 = time.monotonic()
        srv.stop()
    assert time.monotonic() - t0 < 20  # stops instead of hanging on a process (the grace is 1 s)
    assert not _alive(pids)


def test_with_auth_on_an_unauthenticated_client_can_neither_read_nor_write(tmp_path):
    """Inbound auth in the cloud shape: every api instance refuses a caller without a
    valid token (401, nothing changed); an admin token works through the same router."""
    from tests.support.sse import SSE
    from tests.support.tokens import KeyPair, claims

    key = KeyPair("ed25519")
    srv = start_cloudsim(tmp_path, api=2, dispatch=0, tick=0,
                         env={"RESONATE_AUTH__PUBLICKEY": key.write(tmp_path), "RESONATE_AUTH__AUD": "resonate"})
    try:
        admin = key.sign(claims(600, role="admin", aud="resonate"))
        foreign = KeyPair("ed25519").sign(claims(600, role="admin", aud="resonate"))
        timeout_at = int(time.time() * 1000) + 3_600_000
        srv.token = admin
        assert srv.rpc("promise.create", {"id": "kept", "timeoutAt": timeout_at})[0] == 200
        for token in (None, foreign):
            srv.token = token
            for _ in range(4):  # both api instances answer
                assert srv.rpc("promise.get", {"id": "kept"})[0] == 401
                assert srv.rpc("promise.create", {"id": "intruder", "timeoutAt": timeout_at})[0] == 401
                assert srv.rpc("promise.settle", {"id": "kept", "state": "resolved"})[0] == 401
            s = SSE(f"{srv.url}/poll/g/w1", headers={"Authorization": f"Bearer {token}"} if token else None)
            assert s.status == 401, s.status
            s.close()
        srv.token = admin
        assert srv.rpc("promise.get", {"id": "intruder"})[0] == 404
        st, d = srv.rpc("promise.get", {"id": "kept"})
        assert st == 200 and d["promise"]["state"] == "pending", d
    finally:
        srv.stop()
