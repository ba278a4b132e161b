"""The local runner and the function shells as a user starts them: real processes, real HTTP."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.support.server import ROOT, free_port, start_server

pytestmark = pytest.mark.process


def test_serve_logs_port_backend_and_path_and_stops_cleanly_on_ctrl_c(tmp_path):
    db = tmp_path / "data.db"
    srv = start_server("sqlite", tmp_path, debug=False, db=db)
    try:
        stream = requests.get(srv.url + "/poll/g/w1", stream=True, timeout=10)
        assert stream.status_code == 200
        assert srv.rpc("promise.create", {"id": "p", "timeoutAt": 2**53})[0] == 200
    finally:
        srv.proc.send_signal(signal.SIGINT)
        code = srv.proc.wait(timeout=15)
    logs = srv.logs()
    assert code == 0, logs
    assert str(srv.port) in logs and "sqlite" in logs and str(db) in logs
    assert "Traceback" not in logs


def test_sqlite_data_survives_restart(tmp_path):
    db = tmp_path / "keep.db"
    srv = start_server("sqlite", tmp_path, debug=False, db=db)
    try:
        assert srv.rpc("promise.create", {"id": "keep", "timeoutAt": 2**53, "param": {"data": "eA=="}})[0] == 200
    finally:
        srv.proc.kill()  # no graceful shutdown: an acknowledged write must survive a crash
        srv.proc.wait()
    srv = start_server("sqlite", tmp_path, debug=False, db=db)
    try:
        status, data = srv.rpc("promise.get", {"id": "keep"})
        assert status == 200 and data["promise"]["param"] == {"data": "eA=="}
    finally:
        srv.stop()


def test_dev_runs_in_memory_with_debug_on(tmp_path):
    srv = start_server("memory", tmp_path)
    try:
        assert srv.rpc("debug.snap", {})[0] == 200
        assert "memory" in srv.logs()
    finally:
        assert srv.stop() == 0


def _functions_framework(target: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    exe = os.path.join(os.path.dirname(sys.executable), "functions-framework")
    return subprocess.Popen([exe, f"--target={target}", "--source", str(ROOT / "functions" / "main.py"),
                             "--port", str(port)], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_health(url: str) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def test_function_entry_points_serve_rpc_and_sse(tmp_path):
    port = free_port()
    env = {"RESONATE_STORAGE__TYPE": "sqlite", "RESONATE_STORAGE__SQLITE__PATH": str(tmp_path / "fn.db")}
    proc = _functions_framework("api", port, env)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_health(url)
        body = {"kind": "promise.create", "head": {"corrId": "c1", "version": "2026-04-01"},
                "data": {"id": "fn", "timeoutAt": 2**53}}
        r = requests.post(url, json=body, timeout=10)
        assert r.status_code == 200 and r.json()["data"]["promise"]["id"] == "fn"
        assert requests.get(url + "/ready", timeout=5).status_code == 200
        r = requests.get(url + "/promises/nope", timeout=5)  # the older server's REST API (docs/legacy-api.md)
        assert r.status_code == 404 and r.json()["error"]["code"] == 4040, r.text
    finally:
        proc.terminate()
        proc.wait(10)
    port = free_port()
    proc = _functions_framework("poll", port, env)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_health(url)
        r = requests.get(url + "/poll/g/w1", stream=True, timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert next(r.iter_content(chunk_size=None)).startswith(b":")
        r.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_idle_server_in_a_debug_session_does_not_spin(tmp_path):
    """Deadlines written during a debug session must not wake the paused timer loop in a busy loop."""
    import psutil

    srv = start_server("memory", tmp_path)
    try:
        srv.rpc("debug.start", {})
        srv.rpc("promise.create", {"id": "p", "timeoutAt": 2**53, "tags": {"resonate:target": "poll://any@g"}})
        proc = psutil.Process(srv.proc.pid)
        before = proc.cpu_times()
        time.sleep(2.0)
        after = proc.cpu_times()
        used = (after.user - before.user) + (after.system - before.system)
        assert used < 0.5, f"idle server used {used:.2f} s of CPU in 2 s"
    finally:
        srv.stop()


def test_function_targets_under_the_frameworks_own_app(tmp_path, monkeypatch):
    """`functions_framework.create_app` is what the runtime serves; its after-request drain must
    find the body our routes consumed (servers that don't mark the input terminated, such as the
    test client or the werkzeug dev server, used to turn every POST into a 500)."""
    import functions_framework

    monkeypatch.setenv("RESONATE_STORAGE__TYPE", "sqlite")
    monkeypatch.setenv("RESONATE_STORAGE__SQLITE__PATH", str(tmp_path / "ff.db"))
    app = functions_framework.create_app(target="api", source=str(ROOT / "functions" / "main.py"))
    c = app.test_client()
    head = {"corrId": "c1", "version": "2026-04-01"}
    r = c.post("/", json={"kind": "promise.create", "head": head, "data": {"id": "p", "timeoutAt": int(time.time() * 1000) + 3_600_000}})
    assert r.status_code == 200, r.data
    r = c.post("/", json={"kind": "promise.get", "head": head, "data": {"id": "p"}})
    assert r.status_code == 200 and r.json["data"]["promise"]["state"] == "pending", r.data
    r = c.post("/", data=b"{not json", content_type="application/json")
    assert r.status_code == 400 and r.json["head"]["status"] == 400, r.data
