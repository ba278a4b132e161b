"""The measurements. Each returns plain numbers; `bench.run` turns them into the table."""
from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.http import SSE, Conn, envelope, post_bytes

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
DAY_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


# ---- (a) throughput ----------------------------------------------------------------------------

def load(port: int, kind: str, procs: int, conns: int, seconds: float, warmup: float = 1.0,
         prefix: str = "tp", max_requests: int | None = None) -> dict[str, Any]:
    """Run `procs` load-generator processes with `conns` connections each over one common window."""
    start_at = time.time() + 1.0 + warmup  # ~1 s for the processes to start and connect
    end_at = start_at + seconds if max_requests is None else start_at + 3600
    children = []
    for i in range(procs):
        spec = {"port": port, "host": HOST, "kind": kind, "conns": conns, "start_at": start_at,
                "end_at": end_at, "prefix": f"{prefix}-{i}", "timeout_at": now_ms() + DAY_MS}
        if max_requests is not None:
            spec["start_at"] = time.time()
            spec["max_requests"] = -(-max_requests // procs)
        children.append(subprocess.Popen([sys.executable, "-m", "bench.loadgen", json.dumps(spec)], cwd=ROOT,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for c in children:
        out, err = c.communicate(timeout=seconds + 600)
        if c.returncode != 0:
            raise RuntimeError(f"load generator failed ({c.returncode}): {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    ok = sum(r["ok"] for r in results)
    window = max(r["seconds"] for r in results)
    lat = [x for r in results for x in r["lat_ms"]]
    return {"rate": ok / window, "ok": ok, "errors": sum(r["errors"] for r in results),
            "created": sum(r["total_ok"] for r in results), "seconds": window,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "first_error": next((r["first_error"] for r in results if r["first_error"]), "")}


# ---- (b) dispatch latency ----------------------------------------------------------------------

async def _dispatch(port: int, samples: int, get_samples: int, warmup: int, run_id: str) -> dict[str, Any]:
    """One dispatch in flight at a time: sample i+1 is sent once sample i's execute arrived.

    The create's own response travels in the background on a small connection pool, so a slow
    HTTP response (it is not part of this figure) does not stretch the run."""
    loop = asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future] = {}

    def on_event(msg: dict, wall: float, perf: float) -> None:
        if msg.get("kind") == "execute":
            fut = waiting.pop(msg["data"]["task"]["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(perf)

    sse = SSE(HOST, port, "/poll/g/w1", on_event)
    await sse.start()
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    conns = [await Conn.open(HOST, port) for _ in range(8)]
    for c in conns:
        pool.put_nowait(c)
    far = now_ms() + DAY_MS
    ids: list[str] = []
    lat: list[float] = []
    errors: list[str] = []
    pending: set[asyncio.Task] = set()

    async def send(c: Conn, raw: bytes) -> None:
        try:
            status, body = await c.request(raw)
            if status != 200:
                errors.append(f"promise.create answered {status}: {body[:300]!r}")
        finally:
            pool.put_nowait(c)

    try:
        for i in range(warmup + samples):
            pid = f"dispatch-{run_id}-{i}"
            fut = loop.create_future()
            waiting[pid] = fut
            raw = post_bytes(envelope("promise.create", {"id": pid, "timeoutAt": far,
                                                         "tags": {"resonate:target": "poll://any@g/w1"}}))
            c = await pool.get()
            t0 = time.perf_counter()
            task = asyncio.create_task(send(c, raw))
            pending.add(task)
            task.add_done_callback(pending.discard)
            try:
                arrived = await asyncio.wait_for(fut, 10)
            except TimeoutError:
                raise RuntimeError(f"no execute for {pid} within 10 s; {errors[:1]}") from None
            ids.append(pid)
            if i >= warmup:
                lat.append((arrived - t0) * 1000)
            if errors:
                raise RuntimeError(errors[0])
        await asyncio.gather(*pending)
        # baseline: sequential promise.get round trips on the same server
        conn = conns[0]
        rtt: list[float] = []
        for i in range(warmup + get_samples):
            raw = post_bytes(envelope("promise.get", {"id": ids[i % len(ids)]}))
            t0 = time.perf_counter()
            status, body = await conn.request(raw)
            t1 = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"promise.get answered {status}: {body[:300]!r}")
            if i >= warmup:
                rtt.append((t1 - t0) * 1000)
        await sse.close()
        # settle the tasks' promises so their 30 s retries do not load the later phases
        await _each(port, ids, lambda pid: envelope("promise.settle", {"id": pid, "state": "resolved"}))
    finally:
        for c in conns:
            c.close()
        await sse.close()
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat),
            "get_p50_ms": pct(rtt, 50), "get_p99_ms": pct(rtt, 99), "created": len(ids)}


async def _each(port: int, items: list, make, conns: int = 32) -> None:
    """Send one request per item over `conns` connections; every answer must be 200."""
    todo = list(items)

    async def worker() -> None:
        c = await Conn.open(HOST, port)
        try:
            while todo:
                item = todo.pop()
                status, body = await c.request(post_bytes(make(item)))
                if status != 200:
                    raise RuntimeError(f"answered {status}: {body[:300]!r}")
        finally:
            c.close()

    await asyncio.gather(*(worker() for _ in range(conns)))


def dispatch_latency(port: int, samples: int = 1000, get_samples: int = 1000, warmup: int = 50) -> dict[str, Any]:
    return asyncio.run(_dispatch(port, samples, get_samples, warmup, f"{time.time_ns():x}"))


# ---- (c) timer lateness ------------------------------------------------------------------------

async def _timers(port: int, n: int, lo_ms: int, hi_ms: int, run_id: str, conns: int) -> dict[str, Any]:
    arrivals: dict[str, float] = {}

    def on_event(msg: dict, wall: float, perf: float) -> None:
        if msg.get("kind") == "unblock":
            arrivals.setdefault(msg["data"]["promise"]["id"], wall)

    sse = SSE(HOST, port, "/poll/lat/c1", on_event)
    await sse.start()
    offsets = [lo_ms + (hi_ms - lo_ms) * i / max(1, n - 1) for i in range(n)]
    random.shuffle(offsets)
    todo = list(enumerate(offsets))
    timeout_at: dict[str, int] = {}
    missed: list[str] = []  # timed out before its listener was registered (setup too slow)

    async def worker() -> None:
        c = await Conn.open(HOST, port)
        try:
            while todo:
                i, off = todo.pop()
                pid = f"timer-{run_id}-{i}"
                t = now_ms() + int(off)
                status, body = await c.request(post_bytes(envelope(
                    "promise.create", {"id": pid, "timeoutAt": t, "tags": {"resonate:target": "poll://any@bench"}})))
                if status != 200:
                    raise RuntimeError(f"promise.create answered {status}: {body[:300]!r}")
                status, body = await c.request(post_bytes(envelope(
                    "promise.register_listener", {"awaited": pid, "address": "poll://uni@lat/c1"})))
                if status != 200:
                    raise RuntimeError(f"promise.register_listener answered {status}: {body[:300]!r}")
                if json.loads(body)["data"]["promise"]["state"] != "pending":
                    missed.append(pid)
                else:
                    timeout_at[pid] = t
        finally:
            c.close()

    t_setup = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    setup_s = time.perf_counter() - t_setup
    setup_end = now_ms()
    deadline = max(timeout_at.values(), default=now_ms()) + 5000
    while now_ms() < deadline and any(pid not in arrivals for pid in timeout_at):
        await asyncio.sleep(0.05)
    await sse.close()
    late = [arrivals[pid] - t for pid, t in timeout_at.items() if pid in arrivals]
    quiet = [arrivals[pid] - t for pid, t in timeout_at.items() if pid in arrivals and t > setup_end]
    busy = [arrivals[pid] - t for pid, t in timeout_at.items() if pid in arrivals and t <= setup_end]
    return {"p50_ms": pct(late, 50), "p99_ms": pct(late, 99), "max_ms": max(late, default=float("nan")),
            "during_setup": len(busy), "during_setup_p99_ms": pct(busy, 99), "after_setup_p99_ms": pct(quiet, 99),
            "min_ms": min(late, default=float("nan")), "received": len(late), "expected": len(timeout_at),
            "missed_registration": len(missed), "setup_s": setup_s, "created": n}


def timer_lateness(port: int, n: int = 1000, lo_ms: int = 200, hi_ms: int = 3000, conns: int = 32) -> dict[str, Any]:
    return asyncio.run(_timers(port, n, lo_ms, hi_ms, f"{time.time_ns():x}", conns))


# ---- (d) memory --------------------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / (1024 * 1024)
