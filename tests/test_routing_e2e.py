"""Routing rules end to end (docs/routing.md): a server with the rule `analytics/*` ->
`poll://any@analytics` and an official resonate-sdk 0.8.1 worker in group `analytics`.
Promises created by plain HTTP requests, with no SDK and no target (the envelope protocol's
`promise.create`, the REST API's `POST /promises` and `POST /promises/{id}/create`, and the gRPC
API's `CreatePromise` from a client generated from the .proto files), reach the
worker and are resolved with its function's result; an id no rule matches gets no task. On
every process backend. Then the documentation's own example, run as written: its `serve`
flag, its worker script and its curl commands.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.sdk.harness import Harness, b64json, unb64json, wait_until
from tests.support.grpc_client import connect, generated
from tests.support.server import ROOT, ServerProc, free_port, process_backends, start_server

pytestmark = pytest.mark.process

RULE = "analytics/*=poll://any@analytics"
ARGS = ["--tasks-route", RULE, "--tasks-retry-timeout", "1000"]
DOC = ROOT / "docs" / "routing.md"


def settled(srv: ServerProc, id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status, data = srv.rpc("promise.get", {"id": id})
        assert status == 200, (status, data)
        return data["promise"] if data["promise"]["state"] != "pending" else None

    return wait_until(done, 40, f"promise {id} settled")


def deadline() -> int:
    return int(time.time() * 1000) + 600_000


@pytest.mark.parametrize("backend", process_backends())
def test_plain_creates_reach_a_worker_of_the_rules_group(backend: str, tmp_path: Path) -> None:
    grpc_port = free_port()
    srv = start_server(backend, tmp_path / "server", debug=False, args=[*ARGS, "--server-grpc-port", str(grpc_port)])
    h = Harness("py", srv, tmp_path)
    try:
        h.worker("analytics-1", "analytics")
        param = {"data": b64json({"func": "remote_echo", "args": [0]})}
        ids = {way: f"analytics/{way}-{uuid.uuid4()}" for way in ("envelope", "rest", "rest-create", "grpc")}
        other = f"reports/{uuid.uuid4()}"

        def invocation(x: int) -> dict[str, str]:
            return {"data": b64json({"func": "remote_echo", "args": [x]})}

        env = {"kind": "promise.create", "head": {"corrId": "e2e", "version": "2026-04-01"},
               "data": {"id": ids["envelope"], "timeoutAt": deadline(), "param": invocation(1), "tags": {}}}
        r = requests.post(srv.url + "/", json=env, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["promise"]["tags"] == {"resonate:target": "poll://any@analytics"}
        r = requests.post(srv.url + "/promises", json={"id": ids["rest"], "param": invocation(2),
                                                       "timeout": deadline()}, timeout=30)
        assert r.status_code == 201, r.text
        assert r.json()["tags"] == {"resonate:target": "poll://any@analytics"}
        r = requests.post(f"{srv.url}/promises/{ids['rest-create']}/create",
                          json={"param": invocation(3), "timeout": deadline()}, timeout=30)
        assert r.status_code == 201, r.text
        g = connect(grpc_port, generated(tmp_path / "grpc"))  # a client generated from the .proto files
        made = g.promises.CreatePromise(g.promise.CreatePromiseRequest(
            id=ids["grpc"], timeout=deadline(),
            param=g.promise.Value(data=json.dumps({"func": "remote_echo", "args": [4]}).encode())))
        assert not made.noop and dict(made.promise.tags) == {"resonate:target": "poll://any@analytics"}
        env["data"] = {"id": other, "timeoutAt": deadline(), "param": param, "tags": {}}
        assert requests.post(srv.url + "/", json=env, timeout=30).status_code == 200
        assert srv.rpc("task.get", {"id": other}) == (404, "Task not found")

        for x, id in enumerate(ids.values(), 1):
            p = settled(srv, id)
            assert p["state"] == "resolved", p
            assert unb64json(p["value"]["data"]) == {"worker": "analytics-1", "group": "analytics", "x": x,
                                                    "id": id}
            assert srv.rpc("task.get", {"id": id})[1]["task"]["state"] == "fulfilled"
        status, data = srv.rpc("promise.get", {"id": other})
        assert data["promise"]["state"] == "pending" and data["promise"]["tags"] == {}
        assert srv.rpc("task.get", {"id": other}) == (404, "Task not found")
        h.assert_wire_clean()
    except BaseException:
        for title, text in h.all_logs():  # shown with the failure (pytest prints captured output)
            print(f"----- {title}\n{text[-8000:]}")
        raise
    finally:
        h.stop_all()
        srv.stop()


def examples() -> dict[str, str]:
    """The fenced blocks of docs/routing.md marked `<!-- routing-example: NAME -->`."""
    return dict(re.findall(r"<!-- routing-example: ([\w-]+) -->\n```\w+\n(.*?)```", DOC.read_text(), re.S))


def test_the_documented_curl_example_runs_as_written(tmp_path: Path) -> None:
    """docs/routing.md's example: the server flag of its `serve` line, its worker script, its
    curl commands (with the test server's URL) and the lines that read the result back."""
    missing = [tool for tool in ("bash", "curl", "jq", "base64") if shutil.which(tool) is None]
    assert not missing, f"the documented example needs {', '.join(missing)} on PATH"
    blocks = examples()
    assert set(blocks) == {"serve", "worker", "param", "rest", "rest-result", "envelope", "envelope-result"}
    serve = shlex.split(blocks["serve"].strip())
    assert serve[:2] == ["resonate", "serve"]
    srv = start_server("sqlite", tmp_path / "server", debug=False, args=serve[2:])
    worker_py = tmp_path / "analytics_worker.py"
    worker_py.write_text(blocks["worker"])
    log = tmp_path / "worker.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RESONATE_")}, "RESONATE_URL": srv.url}
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-u", str(worker_py)], stdout=out, stderr=subprocess.STDOUT,
                                  env=env, cwd=tmp_path, start_new_session=True)
    try:
        wait_until(lambda: "ready in group analytics" in log.read_text() or worker.poll() is not None, 40,
                   "the documented worker's SSE stream")
        assert worker.poll() is None, log.read_text()
        param = blocks["param"].replace("URL=http://localhost:8001", f"URL={srv.url}")
        assert param != blocks["param"]
        wait = ('for _ in $(seq 800); do curl -s "$URL/promises/$ID" | grep -q \'"state":"RESOLVED"\' && break; '
                'sleep 0.05; done\n')
        for way in ("rest", "envelope"):
            script = "set -euo pipefail\n" + param + blocks[way] + "echo\necho \"ID=$ID\"\n" + wait + \
                blocks[f"{way}-result"]
            run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=90)
            assert run.returncode == 0, (run.stdout, run.stderr)
            lines = run.stdout.strip().splitlines()
            assert lines[-1] == '{"day":"2025-06-01","hours":24,"events":1008}', run.stdout
            id = next(line[3:] for line in lines if line.startswith("ID="))
            assert id.startswith("analytics/")
            assert f"summarize('2025-06-01', 24) for {id}" in log.read_text()
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        srv.stop()
