"""A real Python SDK (resonate-sdk 0.8.1) process for the SDK-compatibility tests.

One script plays every role the tests need:

* ``--serve``: a long-running worker that registers every function below, joins
  ``--group`` and executes whatever the server sends it (SSE ``execute`` messages).
* ``--ops JSON``: a client that performs a list of SDK operations in order
  (``run`` / ``rpc`` / ``get`` / promises / schedules / search ...) and writes one
  JSON result per op to ``--out``. With ``--serve`` as well, it keeps serving
  afterwards.

Everything talks to the server over real HTTP (``POST /`` + ``GET /poll/...``).
Logs (including every request/response body, at DEBUG) go to stderr, which the
test harness redirects to a per-process log file.

Side effects that tests assert on are appended, one line each, to files under
``--data``.

``--identity-token``: a private deployment (docs/security.md#private-deployments): every
request, the SSE stream and its reconnects included, also carries
``X-Serverless-Authorization: Bearer <identity token>`` for Cloud Run's invoker check, through
the connections of ``identity_connections`` (resonate-sdk 0.8.1 has no option for extra headers).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
from resonate.connections import HttpConnection, SSEConnection
from resonate.resonate import Resonate
from resonate.retry import Never
from resonate.types import Value

NAME = "?"
GROUP = "?"
DATA = Path(".")

log = logging.getLogger("sdk-test-worker")


def identity_middleware(identity: Callable[[], str]):
    """An aiohttp client middleware (aiohttp >= 3.12) that puts a fresh identity token on every
    request: `identity()` is called each time (cache the token yourself; Google ID tokens last an hour)."""

    async def add(req: aiohttp.ClientRequest, handler):
        req.headers["X-Serverless-Authorization"] = f"Bearer {identity()}"
        return await handler(req)

    return add


class IdentityHttp(HttpConnection):
    """`POST /` with the identity header (the session the SDK would build, plus the middleware)."""

    def __init__(self, url: str, identity: Callable[[], str], **kw) -> None:
        super().__init__(url, **kw)
        self._identity = identity

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None and not self._stopped:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self._conn_limit),
                                                  middlewares=(identity_middleware(self._identity),))
        return super()._ensure_session()


class IdentitySSE(SSEConnection):
    """The SSE stream with the identity header, on every (re)connect."""

    def __init__(self, url: str, identity: Callable[[], str], **kw) -> None:
        super().__init__(url, **kw)
        self._identity = identity

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None and not self._stopped:
            self._session = aiohttp.ClientSession(middlewares=(identity_middleware(self._identity),))
        return super()._ensure_session()


def identity_connections(url: str, group: str, pid: str, token: str | None, identity: Callable[[], str]) -> dict:
    """`Resonate(**identity_connections(...), group=, pid=, token=)`: the SDK's own pair of
    connections, each adding `X-Serverless-Authorization`; the Resonate token still goes as
    `head.auth` and `Authorization: Bearer` (`token=`)."""
    return {"network": IdentityHttp(url, identity, auth=token),
            "sources": [IdentitySSE(url, identity, pid=pid, group=group, auth=token)]}


class _SseReady(logging.Handler):
    """Flags the SDK's "SSE connection established" log line (headers received, so the
    server has registered this process's poll connection), or its "SSE endpoint returned
    401|403" line (inbound auth refused the stream: no use waiting for it)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.event = threading.Event()
        self.refused: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("SSE connection established"):
            self.event.set()
        elif msg.startswith(("SSE endpoint returned 401", "SSE endpoint returned 403")):
            self.refused = int(msg.split()[3].rstrip(","))


def append_line(file: str, line: str) -> None:
    """Append one line atomically enough for the tests (single write, O_APPEND)."""
    path = DATA / file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


# ── Durable functions ────────────────────────────────────────────────────────
# Every process registers all of them (run() needs local registration).


async def double(ctx, x):
    append_line("nested-steps.log", f"double {ctx.info.id} {x}")
    return x * 2


async def add_one(ctx, x):
    append_line("nested-steps.log", f"add_one {ctx.info.id} {x}")
    return x + 1


async def double_then_add(ctx, x):
    # A step that itself runs steps.
    y = await ctx.run(double, x)
    z = await ctx.run(add_one, y)
    return z


async def nested(ctx, x):
    a = await ctx.run(double_then_add, x)
    b = await ctx.run(double_then_add, a)
    return {"a": a, "b": b, "by": NAME}


async def remote_echo(ctx, x):
    return {"worker": NAME, "group": GROUP, "x": x, "id": ctx.info.id}


async def call_other_group(ctx, x, target_group):
    inner = await ctx.options(target=target_group).rpc("remote_echo", x)
    return {"orchestrator": NAME, "group": GROUP, "inner": inner}


async def sleeper(ctx, ms):
    await ctx.sleep(timedelta(milliseconds=ms))
    return {"woke": True, "by": NAME}


async def await_external(ctx, tag):
    fut = ctx.promise()
    pid = await fut.id()
    # Re-executed on replay with the same id: idempotent overwrite.
    (DATA / f"external-{tag}.id").write_text(pid)
    value = await fut
    return {"got": value, "promise": pid}


async def approval(ctx, x, tag):
    """Two steps, then a human in the loop: a promise someone resolves from outside (the web
    console, tests/test_console_browser.py); its id is written for the test to find."""
    doubled = await ctx.run(double, x)
    plus_one = await ctx.run(add_one, doubled)
    fut = ctx.promise()
    pid = await fut.id()
    (DATA / f"approval-{tag}.id").write_text(pid)  # replay writes the same id again
    decision = await fut
    return {"steps": [doubled, plus_one], "decision": decision, "promise": pid}


async def square(ctx, i):
    append_line("square.log", f"{ctx.info.id} {i}")
    return i * i


async def fanout(ctx, n, target_group):
    futures = [ctx.options(target=target_group).rpc("square", i) for i in range(n)]
    results = []
    for f in futures:
        results.append(await f)
    return {"sum": sum(results), "count": len(results)}


async def always_fails(ctx, msg):
    append_line(f"fail-{msg}.log", f"attempt {ctx.info.id} {NAME}")
    raise ValueError(f"boom: {msg}")


async def counted(ctx, key):
    append_line(f"counted-{key}.log", f"run {ctx.info.id} {NAME}")
    release = DATA / f"counted-{key}.release"
    deadline = time.time() + 40
    while not release.exists() and time.time() < deadline:  # the test releases us
        await asyncio.sleep(0.05)
    return {"key": key, "token": uuid.uuid4().hex, "by": NAME}


async def recovery_step(ctx, i, block_at, block_worker, tag):
    append_line(f"recovery-{tag}.log", f"{i} {NAME}")
    if i == block_at and NAME == block_worker:
        (DATA / f"recovery-{tag}.blocked").write_text(NAME)
        await asyncio.sleep(3600)  # never completes: the test SIGKILLs us here
    return i * 10


async def recoverable(ctx, n, block_at, block_worker, tag):
    out = []
    for i in range(n):
        out.append(await ctx.run(recovery_step, i, block_at, block_worker, tag))
    return {"steps": out, "finished_by": NAME}


async def chaos_step(ctx, wf, i, ms):
    append_line("chaos.log", f"start {ctx.info.id} {NAME} {time.time():.3f}")
    await asyncio.sleep(ms / 1000)
    append_line("chaos.log", f"end {ctx.info.id} {NAME} {time.time():.3f}")
    return i


async def chaos_workflow(ctx, wf, n, ms):
    total = 0
    for i in range(n):
        total += await ctx.run(chaos_step, wf, i, ms)
    return {"wf": wf, "total": total}


async def scheduled_tick(ctx, tag):
    append_line(f"sched-{tag}.log", f"{ctx.info.id} {NAME} {int(time.time() * 1000)}")
    return "tick"


FUNCTIONS = [
    nested, double_then_add, remote_echo, call_other_group, sleeper, await_external, approval,
    square, fanout, counted, recoverable, scheduled_tick, chaos_workflow,
]


# ── Client operations ────────────────────────────────────────────────────────


def _err(exc: BaseException) -> dict:
    return {"ok": False, "error_type": type(exc).__name__, "error": str(exc)}


async def _await_handle(handle, timeout: float) -> dict:
    try:
        value = await asyncio.wait_for(handle.result(), timeout)
        return {"ok": True, "value": value}
    except TimeoutError:
        return {"ok": False, "error_type": "ClientTimeout", "error": f"no result within {timeout}s"}
    except Exception as exc:  # the workflow's own failure surfaces here
        return _err(exc)


async def do_op(resonate: Resonate, op: dict) -> dict:
    kind = op["op"]
    timeout = float(op.get("timeout", 50))
    t0 = time.time()
    if kind in ("run", "rpc"):
        r = resonate.options(target=op["target"]) if op.get("target") else resonate
        method = r.run if kind == "run" else r.rpc
        handle = method(op["id"], op["func"], *op.get("args", []))
        res = await _await_handle(handle, timeout)
    elif kind == "rpc_many":  # n workflows at once: ids f"{prefix}{i}", args [i, *args]
        r = resonate.options(target=op["target"]) if op.get("target") else resonate
        handles = [r.rpc(f"{op['prefix']}{i}", op["func"], i, *op.get("args", [])) for i in range(op["n"])]
        outs = await asyncio.gather(*(_await_handle(h, timeout) for h in handles))
        res = {"ok": all(o["ok"] for o in outs), "results": outs}
    elif kind == "get":
        handle = await resonate.get(op["id"])
        res = await _await_handle(handle, timeout)
    elif kind == "resolve":
        rec = await resonate.promises.resolve(op["id"], Value(data=op["value"]))
        res = {"ok": True, "state": rec.state}
    elif kind == "create_promises":
        now = int(time.time() * 1000)
        states = []
        for pid in op["ids"]:
            rec = await resonate.promises.create(
                pid, now + int(op.get("timeout_ms", 600_000)), Value(data={"id": pid}), op.get("tags", {})
            )
            states.append(rec.state)
        res = {"ok": True, "states": states}
    elif kind == "search":
        pages, cursor = [], None
        for _ in range(200):
            page = await resonate.promises.search(op.get("state"), op.get("tags"), op.get("limit"), cursor)
            pages.append({"ids": [p.id for p in page.promises], "states": [p.state for p in page.promises],
                          "cursor": page.cursor})
            cursor = page.cursor
            if not cursor:
                break
        res = {"ok": True, "pages": pages}
    elif kind == "schedule":
        r = resonate.options(target=op["target"]) if op.get("target") else resonate
        await r.schedule(op["id"], op["cron"], op["func"], args=tuple(op.get("args", [])))
        rec = await resonate.schedules.get(op["id"])
        res = {"ok": True, "schedule": {"id": rec.id, "cron": rec.cron, "promise_id": rec.promise_id}}
    elif kind == "schedule_delete":
        await resonate.schedules.delete(op["id"])
        res = {"ok": True}
    elif kind == "schedule_get":
        try:
            rec = await resonate.schedules.get(op["id"])
            res = {"ok": True, "schedule": {"id": rec.id, "cron": rec.cron}}
        except Exception as exc:
            res = _err(exc)
    else:
        raise ValueError(f"unknown op {kind}")
    res["elapsed_ms"] = int((time.time() - t0) * 1000)
    res["op"] = kind
    return res


async def main() -> int:
    global NAME, GROUP, DATA
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--ttl", type=float, default=60.0, help="task lease seconds")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--ops", default=None, help="JSON list of client operations")
    ap.add_argument("--out", default=None)
    ap.add_argument("--token", default=None, help="JWT for a server with inbound auth (head.auth + Bearer)")
    ap.add_argument("--identity-token", default=None, help="sent as X-Serverless-Authorization (private deployment)")
    a = ap.parse_args()
    NAME, GROUP, DATA = a.name, a.group, Path(a.data)
    DATA.mkdir(parents=True, exist_ok=True)

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format=f"%(asctime)s.%(msecs)03d [{NAME}] %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    logging.getLogger("resonate").setLevel(logging.DEBUG)
    sse_ready = _SseReady()
    logging.getLogger("resonate.connections.sse").addHandler(sse_ready)

    pid = f"{NAME}-{uuid.uuid4().hex[:8]}"
    if a.identity_token is None:
        resonate = Resonate(url=a.url, group=GROUP, pid=pid, ttl=timedelta(seconds=a.ttl), token=a.token)
    else:
        identity = a.identity_token
        resonate = Resonate(**identity_connections(a.url, GROUP, pid, a.token, lambda: identity), group=GROUP,
                            pid=pid, ttl=timedelta(seconds=a.ttl), token=a.token)
    for fn in FUNCTIONS:
        resonate.register(fn)
    resonate.register(always_fails, retry_policy=Never())
    log.info("worker %s started: pid=%s group=%s url=%s", NAME, pid, GROUP, a.url)
    print(f"STARTED {NAME} pid={pid}", flush=True)

    # Messages for a poll address with no live connection are dropped by design (spec
    # 9.4), so do nothing until our SSE stream is registered with the server.
    deadline = time.time() + 20
    while not sse_ready.event.is_set() and sse_ready.refused is None and time.time() < deadline:
        await asyncio.sleep(0.02)
    if sse_ready.refused is not None:
        log.error("SSE_REFUSED %s: the server refused the SSE stream", sse_ready.refused)
        print(f"SSE_REFUSED {sse_ready.refused}", flush=True)
    elif sse_ready.event.is_set():
        log.info("SSE_READY")
        print("SSE_READY", flush=True)
    else:
        log.error("SSE_NOT_READY: no SSE connection within 20s")
        print("SSE_NOT_READY", flush=True)

    if a.ops:
        results = []
        for op in json.loads(a.ops):
            log.info("op start: %s", op)
            try:
                res = await do_op(resonate, op)
            except Exception as exc:
                log.error("op failed: %s\n%s", op, traceback.format_exc())
                res = _err(exc)
                res["op"] = op.get("op")
            log.info("op result: %s", res)
            results.append(res)
        tmp = Path(a.out + ".tmp")
        tmp.write_text(json.dumps(results))
        tmp.replace(a.out)

    if a.serve:
        await asyncio.Event().wait()

    try:
        await asyncio.wait_for(resonate.stop(), 10)
    except Exception:
        log.warning("stop did not finish cleanly:\n%s", traceback.format_exc())
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
