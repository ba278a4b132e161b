"""The `bash://` executor (docs/protocol.md, docs/operations.md) on a real server process: off
by default (nothing runs), and when on, only commands on `transports.bash_exec.allow` run, never
through a shell."""
from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import marks
from tests.support.server import ROOT, ServerProc, backend_names, start_server

pytestmark = pytest.mark.process

HOUR = 3_600_000
BACKENDS = [b for b in ("sqlite", "postgres") if b in backend_names()] or ["sqlite"]

JOB = """#!/bin/sh
if [ "$1" = fail ]; then echo "boom: $RESONATE_PROMISE_ID" >&2; exit 3; fi
if [ "$1" = silent-fail ]; then exit 4; fi
if [ "$1" = hang ]; then [ -n "$2" ] && echo $$ > "$2"; sleep 60; fi
echo "  id=$RESONATE_PROMISE_ID created=$RESONATE_PROMISE_CREATED_AT timeout=$RESONATE_PROMISE_TIMEOUT_AT"
echo "secret=${SECRET_OF_THE_SERVER:-none} args=$#"
"""


@pytest.fixture
def job(tmp_path: Path) -> Path:
    path = tmp_path / "job.sh"
    path.write_text(JOB)
    path.chmod(0o755)
    return path


def enabled_env(job: Path) -> dict[str, str]:
    return {"RESONATE_TRANSPORTS__BASH_EXEC__ENABLED": "true",
            "RESONATE_TRANSPORTS__BASH_EXEC__ALLOW": f'["echo", "{job}"]',
            "SECRET_OF_THE_SERVER": "hunter2"}


@pytest.fixture(params=[marks.param(b) for b in BACKENDS])
def server(request, tmp_path: Path, job: Path) -> Iterator[ServerProc]:
    srv = start_server(request.param, tmp_path / "srv", debug=False, env=enabled_env(job))
    yield srv
    srv.stop()


def run(srv: ServerProc, id: str, script: str | bytes, timeout_ms: int = HOUR, wait: float = 20) -> dict:
    """Create a promise targeting bash:// with `script` as param.data; its record once settled."""
    data = script if isinstance(script, bytes) else base64.b64encode(script.encode())
    st, d = srv.rpc("promise.create", {"id": id, "timeoutAt": int(time.time() * 1000) + timeout_ms,
                                       "param": {"data": data.decode()}, "tags": {"resonate:target": "bash://"}})
    assert st == 200, d
    deadline = time.monotonic() + wait
    while True:
        st, d = srv.rpc("promise.get", {"id": id})
        assert st == 200, d
        if d["promise"]["state"] != "pending" or time.monotonic() > deadline:
            return d["promise"]
        time.sleep(0.05)


def test_allowed_commands_run_and_settle_the_promise(server: ServerProc, job: Path, tmp_path: Path) -> None:
    p = run(server, "bash-echo", "echo 'hello   world'")
    assert (p["state"], p["value"]["data"]) == ("resolved", "hello   world")  # plain text, not base64

    p = run(server, "bash-job", f"{job} 'one arg'")
    assert p["state"] == "resolved", p
    assert p["value"]["data"] == (f"id=bash-job created={p['createdAt']} timeout={p['timeoutAt']}\n"
                                  "secret=none args=1")  # trimmed; the server's environment is not passed

    p = run(server, "bash-fail", f"{job} fail")
    assert (p["state"], p["value"]["data"]) == ("rejected", "boom: bash-fail")
    p = run(server, "bash-silent", f"{job} silent-fail")
    assert (p["state"], p["value"]["data"]) == ("rejected", "exit code 4")
    st, d = server.rpc("task.get", {"id": "bash-echo"})
    assert st == 200 and d["task"]["state"] == "fulfilled", d


def test_anything_not_on_the_allow_list_is_refused(server: ServerProc, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for i, script in enumerate([f"touch {marker}", f"/bin/sh -c 'touch {marker}'", f"bash -c 'touch {marker}'",
                                f"./echo {marker}", f"/bin/echo {marker}"]):
        p = run(server, f"bash-refused-{i}", script)
        assert p["state"] == "rejected", (script, p)
        assert p["value"]["data"].startswith("bash-exec: refused: command "), p
    # an allowed program gets its words as arguments: no shell, so no second command
    for i, script in enumerate([f"echo hi; touch {marker}", f"echo $(touch {marker})", f"echo `touch {marker}`",
                                f"echo hi && touch {marker}", f"echo hi | touch {marker}", f"echo > {marker}"]):
        p = run(server, f"bash-inject-{i}", script)
        assert p["state"] == "resolved", (script, p)
        assert p["value"]["data"].startswith(("hi", "$(", "`", ">")), p
    time.sleep(0.5)
    assert not marker.exists()
    assert "bash-exec: refused to run task bash-refused-0" in server.logs()


def test_undecodable_script_rejects(server: ServerProc) -> None:
    p = run(server, "bash-bad-b64", b"!!not base64!!")
    assert (p["state"], p["value"]["data"]) == ("rejected", "param.data is missing or not valid base64/utf-8")
    p = run(server, "bash-bad-utf8", base64.b64encode(b"\xff\xfe"))
    assert (p["state"], p["value"]["data"]) == ("rejected", "param.data is missing or not valid base64/utf-8")


def test_a_run_is_killed_when_its_promise_times_out(server: ServerProc, job: Path) -> None:
    t0 = time.monotonic()
    p = run(server, "bash-hang", f"{job} hang", timeout_ms=1500, wait=20)
    assert p["state"] == "rejected_timedout", p
    assert time.monotonic() - t0 < 45  # killed at the promise's timeout, not after the job's 60 s sleep
    deadline = time.monotonic() + 30
    while "bash-exec: killed" not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "bash-exec: killed" in server.logs()


def test_shutdown_kills_running_programs(tmp_path: Path, job: Path) -> None:
    pidfile = tmp_path / "pid"
    srv = start_server("sqlite", tmp_path / "srv", debug=False, env=enabled_env(job))
    try:
        p = run(srv, "bash-running", f"{job} hang {pidfile}", wait=0)
        assert p["state"] == "pending"
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        assert psutil.pid_exists(pid)
    finally:
        assert srv.stop() == 0
    deadline = time.monotonic() + 5
    while alive(pid):
        assert time.monotonic() < deadline, "the program outlived the server"
        time.sleep(0.05)
    assert "bash-exec: shutting down, killing" in srv.logs()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_disabled_by_default_nothing_runs(tmp_path: Path, job: Path) -> None:
    marker = tmp_path / "ran"
    srv = start_server("sqlite", tmp_path / "srv", debug=False,
                       env={"RESONATE_TRANSPORTS__BASH_EXEC__ALLOW": '["touch"]'})  # allow-list alone: still off
    try:
        p = run(srv, "bash-off", f"touch {marker}", wait=2)
        assert p["state"] == "pending"
        st, d = srv.rpc("task.get", {"id": "bash-off"})
        assert st == 200 and d["task"]["state"] == "pending", d  # nobody acquired it
        assert not marker.exists()
        assert "bash://: transport not enabled" in srv.logs()
    finally:
        srv.stop()


def test_enabling_without_an_allow_list_refuses_to_start(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "local", "serve", "--storage-sqlite-path", str(tmp_path / "r.db"),
                        "--transports-bash-exec-enabled", "true", "--server-port", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "transports.bash_exec.allow is required" in r.stdout + r.stderr
