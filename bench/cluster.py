"""Dispatch latency between two `serve` processes on one database (Postgres: NOTIFY; MySQL: the
outbox_notes poller), figure (e): a promise created on process A reaches the worker whose SSE
stream is held by process B. One dispatch in flight at a time, as in (b)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.figures import DAY_MS, HOST, now_ms, pct
from bench.http import SSE, Conn, envelope, post_bytes


async def _cross(create_port: int, stream_port: int, samples: int, warmup: int, run_id: str) -> dict[str, Any]:
    waiting: dict[str, asyncio.Future] = {}
    loop = asyncio.get_running_loop()

    def on_event(msg: dict, wall: float, perf: float) -> None:
        if msg.get("kind") == "execute":
            fut = waiting.pop(msg["data"]["task"]["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(perf)

    group = f"x{run_id}"
    sse = SSE(HOST, stream_port, f"/poll/{group}/w1", on_event)
    await sse.start()
    await asyncio.sleep(0.5)  # B's listener is up (it starts with the first receiver)
    conn = await Conn.open(HOST, create_port)
    far = now_ms() + DAY_MS
    lat: list[float] = []
    ids: list[str] = []
    try:
        for i in range(warmup + samples):
            pid = f"cross-{run_id}-{i}"
            fut = loop.create_future()
            waiting[pid] = fut
            raw = post_bytes(envelope("promise.create", {"id": pid, "timeoutAt": far,
                                                         "tags": {"resonate:target": f"poll://any@{group}/w1"}}))
            t0 = time.perf_counter()
            status, body = await conn.request(raw)
            if status != 200:
                raise RuntimeError(f"promise.create answered {status}: {body[:300]!r}")
            try:
                arrived = await asyncio.wait_for(fut, 15)
            except TimeoutError:
                raise RuntimeError(f"no execute for {pid} on the other process within 15 s") from None
            ids.append(pid)
            if i >= warmup:
                lat.append((arrived - t0) * 1000)
        for pid in ids:  # settle them so their retry timers stay quiet
            await conn.request(post_bytes(envelope("promise.settle", {"id": pid, "state": "resolved"})))
    finally:
        conn.close()
        await sse.close()
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat), "samples": len(lat)}


def cross_process_dispatch(backend: str, url: str, workdir: Path, samples: int = 200,
                           warmup: int = 20) -> dict[str, Any]:
    """Two `serve` processes of `backend` on the database at `url`: create on one, stream on the other."""
    from tests.support.server import start_server

    pg_url, my_url = (url, None) if backend == "postgres" else (None, url)
    a = start_server(backend, workdir / f"{backend}-a", debug=False, pg_url=pg_url, my_url=my_url)
    b = None
    try:
        b = start_server(backend, workdir / f"{backend}-b", debug=False, pg_url=pg_url, my_url=my_url)
        return asyncio.run(_cross(a.port, b.port, samples, warmup, f"{time.time_ns():x}"))
    finally:
        for s in (a, b):
            if s is not None:
                s.stop(drop=False)


# ---- MySQL databases for the bench (the test suite's server: RESONATE_TEST_MYSQL_URL) ------------------

def mysql_available() -> bool:
    from tests.support.mysql import available

    return available()


def mysql_settings() -> str:
    """The durability settings that decide commit cost, e.g. 'MariaDB 10.11.6, innodb_flush_log_at_trx_commit=1'."""
    from tests.support.mysql import run

    version = run("SELECT VERSION()")[0][0]
    rows = run("SHOW VARIABLES WHERE Variable_name IN ('innodb_flush_log_at_trx_commit', 'sync_binlog', 'log_bin')")
    return f"MySQL {version}, " + ", ".join(f"{k}={v}" for k, v in sorted(rows))


def mysql_database(stack: Any) -> str:
    """A migrated, uniquely named database, dropped when `stack` (an ExitStack) closes."""
    from tests.support.mysql import drop_database, take_database

    url = take_database()
    stack.callback(lambda: drop_database(url))
    return url
