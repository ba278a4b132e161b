"""Issue 5, end to end with official clients only: the push-based Python worker
`resonate-sdk-aws` 0.8.0 completes workflows started by the Python SDK `resonate-sdk` 0.8.1,
against the cloud simulation on Postgres, with every push going through the REAL Pub/Sub
emulator and carrying a Google OIDC token.

    SDK client (tests/sdk/py/worker.py, rpc to http://127.0.0.1:P/worker)
      -> router -> api function (Postgres; outbox row claimed, published to the dispatch topic)
      -> Pub/Sub emulator push subscription -> OIDC relay (adds the subscription's token)
      -> dispatch function (checks it; mints the push's ID token from the fake GCE metadata
         server: transports.http_push.auth.mode = gcp)
      -> tests/sdk/aws/push_worker.py: verifies the token (401/403 otherwise, like Cloud Run with
         --no-allow-unauthenticated), fails its first 2 authenticated deliveries with 500 (Pub/Sub
         redelivers them), turns each POST into a Lambda Function URL event for
         `resonate_aws.Resonate().handler()`
      -> the handler calls back head.serverUrl (the router; no URL is configured in the worker):
         task.acquire, promise.create for steps, task.suspend on the remote step, task.fulfill.

The workflows: `pipeline` = `ctx.run(double)` (local), `ctx.rpc(square)` (a child task the
server pushes back to the same function URL, through Pub/Sub again; the parent suspends and is
pushed again once the child settles), `ctx.run(add_one)`; `napper` = a step, then a durable
1.5 s `ctx.sleep` (the timer promise's task is pushed to the worker too and dropped by the shim;
the server's deadline settles it and the workflow is pushed again).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pg8000.native
import pytest
import requests

from tests.sdk.harness import Harness, wait_until
from tests.sdk.harness import Worker as HarnessWorker
from tests.support.cloudsim import SimServer, start_pubsub_cloudsim
from tests.support.fake_google_oidc import EMAIL, FakeMetadata, Issuer
from tests.support.pg import pg_template  # noqa: F401 (fixture)
from tests.support.pubsub import Emulator, pubsub_emulator  # noqa: F401 (fixture)
from tests.support.server import free_port

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.cloudsim]  # the cloud simulation

AWS_WORKER = Path(__file__).resolve().parent / "aws" / "push_worker.py"
FAIL_FIRST = 2
N_WORKFLOWS = 3


class Certs:
    """Google's certificate endpoint for the fake issuer (what the worker's verify_token reads)."""

    def __init__(self, issuer: Issuer) -> None:
        body = json.dumps({issuer.kid: issuer.cert_pem}).encode()

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/certs" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/certs"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class AwsWorker:
    """tests/sdk/aws/push_worker.py as a process; `.events()` = one dict per POST it answered."""

    def __init__(self, workdir: Path, certs_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/worker"
        self.data = workdir / "aws-data"
        self.events_file = workdir / "aws-events.jsonl"
        self.log = workdir / "aws-worker.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESONATE_")}  # no RESONATE_URL
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(AWS_WORKER), "--port", str(self.port), "--certs-url", certs_url,
             "--email", EMAIL, "--fail-first", str(FAIL_FIRST), "--events", str(self.events_file),
             "--data", str(self.data)],
            stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        fh.close()

        def up() -> bool:
            assert self.proc.poll() is None, f"aws worker exited {self.proc.returncode}:\n{self.logs()}"
            try:
                return requests.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, 30, "the aws worker endpoint")

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self) -> list[dict]:
        if not self.events_file.exists():
            return []
        return [json.loads(line) for line in self.events_file.read_text().splitlines() if line.strip()]

    def steps(self) -> list[list[str]]:
        p = self.data / "steps.log"
        return [line.split() for line in p.read_text().splitlines()] if p.exists() else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pubsub_emulator: Emulator,
          pg_template: str) -> Iterator[tuple[SimServer, AwsWorker, FakeMetadata]]:
    workdir = tmp_path_factory.mktemp("aws-push")
    issuer = Issuer(kid="push-oidc-kid")
    md = FakeMetadata(issuer).start()
    certs = Certs(issuer)
    started: list[Any] = [md, certs]
    try:
        sim = start_pubsub_cloudsim(workdir, pubsub_emulator, api=1, tick=2, env={
            # pushes carry a Google-signed ID token minted from the (fake) metadata server
            "RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__MODE": "gcp", "GCE_METADATA_HOST": md.host,
            "GOOGLE_APPLICATION_CREDENTIALS": ""})
        started.append(sim)
        worker = AwsWorker(workdir, certs.url)
        started.append(worker)
        yield sim, worker, md
    finally:
        for s in reversed(started):
            s.stop()


def mint(issuer: Issuer, audience: str, email: str) -> str:
    """A validly signed Google-format ID token for another service account."""
    from google.auth import crypt, jwt

    now = int(time.time())
    claims = {"iss": "https://accounts.google.com", "aud": audience, "sub": "42", "email": email,
              "email_verified": True, "iat": now, "exp": now + 600}
    return jwt.encode(crypt.RSASigner.from_string(issuer.key_pem, key_id=issuer.kid), claims).decode()


def aws_view(worker: AwsWorker) -> HarnessWorker:
    """The aws worker as the harness sees an SDK process (its log holds the same Python SDK
    `http_connection http_res:` lines), for `Harness.assert_wire_clean`."""
    return HarnessWorker("py", "aws-worker", "-", worker.proc, worker.log, None)


def outbox(sim: SimServer) -> list[tuple]:
    c = pg8000.native.Connection(user="postgres", host="127.0.0.1", database=sim.pg_url.rsplit("/", 1)[1])
    try:
        return [tuple(r) for r in c.run("SELECT seq, kind, id, address, attempts FROM outbox ORDER BY seq")]
    finally:
        c.close()


@pytest.fixture
def sdk(stack, tmp_path: Path, request) -> Iterator[Harness]:
    """The Python SDK processes of one test (stopped after it; logs attached on failure by
    tests/sdk/conftest.py, the aws worker's included)."""
    sim, worker, _ = stack
    h = Harness("py", sim, tmp_path)
    h.workers.append(aws_view(worker))  # its log in reports and in assert_wire_clean
    request.node._sdk_harness = h
    yield h
    h.workers = [w for w in h.workers if w.proc is not worker.proc]  # the module's: not stopped here
    h.stop_all()


def test_aws_push_worker_completes_sdk_workflows_through_pubsub(stack, sdk: Harness):
    sim, worker, md = stack

    # The front refuses what Cloud Run would refuse, before the handler runs (direct requests).
    fake = json.dumps({"kind": "execute", "head": {"serverUrl": sim.url},
                       "data": {"task": {"id": "nope", "version": 1}}})
    refusals = {
        "no token": (None, 401),
        "not a JWT": ("abc.def.ghi", 401),
        "signed by another key (same kid)": (Issuer(kid=md.issuer.kid).sign(worker.url, 600), 401),
        "another service's audience": (md.issuer.sign("http://elsewhere.test/", 600), 401),
        "expired": (md.issuer.sign(worker.url, -600), 401),
        "a caller not allowed": (mint(md.issuer, worker.url, email="intruder@elsewhere.iam.gserviceaccount.com"), 403),
    }
    for name, (token, want) in refusals.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        assert requests.post(worker.url, data=fake, headers=headers, timeout=10).status_code == want, name
    direct = len(worker.events())
    assert direct == len(refusals) and all(e["status"] in (401, 403) and "handler" not in e for e in worker.events())

    t0 = time.monotonic()
    prefix = f"aws-{sdk.uid}-"
    nap = f"aws-nap-{sdk.uid}"
    client = sdk.client("client", f"clients-{sdk.uid}", [
        {"op": "rpc_many", "prefix": prefix, "n": N_WORKFLOWS, "func": "pipeline", "target": worker.url,
         "timeout": 40},
        {"op": "rpc", "id": nap, "func": "napper", "args": [21], "target": worker.url, "timeout": 30}])
    res, napped = client.result(timeout=75)
    took = time.monotonic() - t0
    events = worker.events()[direct:]
    diag = f"\nworker events: {json.dumps(events, indent=1)[:6000]}\nrelay: {sim.relay.pushed()}\n" \
           f"worker log tail:\n{worker.logs()[-6000:]}"
    assert res["ok"], (res, diag)
    want = [{"x": i, "double": 2 * i, "square": 4 * i * i, "result": 4 * i * i + 1, "by": "aws-worker"}
            for i in range(N_WORKFLOWS)]
    assert [r["value"] for r in res["results"]] == want, diag
    assert napped["ok"], (napped, diag)
    assert napped["value"] == {"x": 21, "double": 42, "slept": True, "by": "aws-worker"}, napped
    assert napped["elapsed_ms"] >= 1500, napped  # the server's deadline woke it, not the worker
    for id in [f"{prefix}{i}" for i in range(N_WORKFLOWS)] + [nap]:
        p = sdk.promise(id)
        assert p["state"] == "resolved" and p["tags"]["resonate:target"] == worker.url, p

    # Every push the worker got came from the dispatch function, carried the server's own URL
    # and a valid Google ID token for exactly the URL it was sent to.
    assert events and all(e["kind"] == "execute" and e["serverUrl"] == sim.url for e in events), diag
    for e in events:
        assert e["status"] in (200, 500) and e["auth"] == "ok", e
        c = e["claims"]
        assert c["aud"] == worker.url and c["email"] == EMAIL and c["iss"] == "https://accounts.google.com", e
    assert md.hits.get(worker.url, 0) >= 1, md.hits  # minted by the sim from the metadata server
    # The handler answered every delivery it got, each task version exactly once: a pipeline
    # root suspends on its remote step and completes when pushed again, its child completes; the
    # napper suspends on its timer, whose own task the shim drops ("suspended", no settle: the
    # server's deadline settles the timer and fulfils that task), then completes.
    handled = [e for e in events if not e.get("failed_on_purpose")]
    assert all(e["status"] == 200 for e in handled), diag
    outcome = {(e["task"]["id"], e["task"]["version"]): json.loads(e["handler"])["status"] for e in handled}
    assert len(outcome) == len(handled), diag  # no version pushed twice once it succeeded
    for i in range(N_WORKFLOWS):
        root = f"{prefix}{i}"
        assert sorted(v for (t, _), v in outcome.items() if t == root) == ["completed", "suspended"], diag
        assert [v for (t, _), v in outcome.items() if t.startswith(root + ":")] == ["completed"], diag
    assert sorted(v for (t, _), v in outcome.items() if t == nap) == ["completed", "suspended"], diag
    assert [v for (t, _), v in outcome.items() if t.startswith(nap + ":")] == ["suspended"], diag
    assert len(outcome) == 3 * N_WORKFLOWS + 3, diag

    # The first 2 deliveries failed (500) and Pub/Sub redelivered them: the same task version
    # was later handled, and the emulator pushed the same message again.
    failed = [e for e in events if e.get("failed_on_purpose")]
    assert len(failed) == FAIL_FIRST, diag
    for f in failed:
        assert any(h["task"] == f["task"] for h in handled), (f, diag)
    relayed = Counter(st for st, _ in sim.relay.pushed())
    assert relayed[500] == FAIL_FIRST and relayed[200] >= len(handled), (relayed, diag)
    by_msg: dict[str, list[int]] = {}
    for st, env in sim.relay.pushed():
        by_msg.setdefault(env["message"]["messageId"], []).append(st)
    redelivered = [sts for sts in by_msg.values() if 500 in sts]
    assert redelivered and all(sts[-1] == 200 for sts in redelivered), by_msg

    # Each step ran (the remote one in its own invocation); nothing is left to deliver.
    steps = worker.steps()
    for root, name, arg in [(f"{prefix}{i}", name, arg) for i in range(N_WORKFLOWS)
                            for name, arg in (("double", i), ("square", 2 * i), ("add_one", 4 * i * i))] + [
                            (nap, "double", 21)]:
        assert any(s[0] == name and s[1].startswith(root + ":") and s[2] == str(arg) for s in steps), (
            root, name, steps)
    wait_until(lambda: outbox(sim) == [], 10, "an empty outbox")

    # Neither SDK saw a protocol problem: every response the worker's HttpConnection got back
    # was 200 (300 for a suspend that redirects; 409 for a stale acquire), no handler failed.
    aws_wire = aws_view(worker).wire()
    assert {e["kind"] for e in aws_wire} >= {"task.acquire", "task.fence", "task.suspend", "task.fulfill"}, aws_wire
    sdk.assert_wire_clean()  # the client's log and the aws worker's
    for line in worker.logs().splitlines():
        assert "handler failed" not in line and "Traceback" not in line and "execution failed" not in line, line
    print(f"{N_WORKFLOWS} workflows and a durable sleep through Pub/Sub in {took:.1f} s")  # bounded by the client's 75 s
