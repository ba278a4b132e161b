"""(h) The figure users feel: a workflow of three durable steps through the official Python SDK.

Run as its own process (`python -m bench.sdkflow '<json spec>'`, one JSON line on stdout), so the
SDK's event loop has an interpreter to itself, as in an application:

    {"url": "http://127.0.0.1:8001" | null, "seq": 200, "warmup": 20, "conc": 200, "rounds": 2,
     "metrics": ["http://127.0.0.1:9090/metrics", ...]}

`url` null is the SDK's own in-process mode (resonate-sdk 0.8.1: `Resonate()` with neither a
URL nor RESONATE_URL builds a `LocalConnection`): the same SDK code path without a server, the
baseline of what the SDK itself costs. With a URL the SDK talks HTTP (`POST /`) and listens on its
SSE stream (`GET /poll/bench/<pid>`), as `Resonate(url=...)` does; the only addition is a timer
around each request (`TimedHttp`), which counts requests by kind and the client-observed time of
each.

Phases: `warmup` workflows (not timed), `seq` workflows one after the other (latency of each, from
`run()` to the result), then `rounds` × `conc` workflows started at once (workflows/s from the
first `run()` to the last result). `metrics`: the servers' Prometheus endpoints, read before
and after the sequential phase for the server's own mean time per request.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from collections import Counter
from typing import Any

from resonate.connections import HttpConnection, SSEConnection
from resonate.resonate import Resonate

GROUP = "bench"


async def step(ctx: Any, x: int) -> int:
    return x + 1


async def workflow(ctx: Any, x: int) -> int:
    a = await ctx.run(step, x)
    b = await ctx.run(step, a)
    return await ctx.run(step, b)


class TimedHttp(HttpConnection):
    """The SDK's HTTP connection, timing each request and counting it by kind while `on`."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.on = False
        self.kinds: Counter[str] = Counter()
        self.rtt_ms: list[float] = []

    async def send(self, req: str, headers: dict[str, str] | None = None) -> str:
        t0 = time.perf_counter()
        out = await super().send(req, headers)
        if self.on:
            self.rtt_ms.append((time.perf_counter() - t0) * 1000)
            i = req.find('"kind":"')
            self.kinds[req[i + 8:req.find('"', i + 8)] if i >= 0 else "?"] += 1
        return out


class _SseUp(logging.Handler):
    """Set once the SDK logs that its SSE stream is established (the server registered it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.up = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("SSE connection established"):
            self.up.set()


def server_seconds(urls: list[str]) -> tuple[float, float]:
    """(requests, seconds) the servers' `resonate_request_duration_seconds` histograms hold in
    total: the server's own time per request, from the raw body to the encoded response."""
    import urllib.request

    n = total = 0.0
    for u in urls:
        with urllib.request.urlopen(u, timeout=10) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith("resonate_request_duration_seconds_count"):
                n += float(line.rsplit(" ", 1)[1])
            elif line.startswith("resonate_request_duration_seconds_sum"):
                total += float(line.rsplit(" ", 1)[1])
    return n, total


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))]


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    url = spec.get("url")
    http: TimedHttp | None = None
    if url:
        sse_log = logging.getLogger("resonate.connections.sse")
        sse_log.setLevel(logging.INFO)
        up = _SseUp()
        sse_log.addHandler(up)
        pid = uuid.uuid4().hex
        http = TimedHttp(url)
        r = Resonate(network=http, sources=[SSEConnection(url, pid=pid, group=GROUP)], group=GROUP, pid=pid)
        await asyncio.wait_for(up.up.wait(), 30)
    else:
        os.environ.pop("RESONATE_URL", None)
        os.environ.pop("RESONATE_HOST", None)
        r = Resonate(group=GROUP)
    r.register(workflow)
    r.register(step)
    run_id = uuid.uuid4().hex[:12]
    n = 0

    async def one() -> None:
        nonlocal n
        n += 1
        v = await asyncio.wait_for(r.run(f"wf-{run_id}-{n}", workflow, 1).result(), 120)
        if v != 4:
            raise RuntimeError(f"workflow returned {v!r}")

    for _ in range(spec.get("warmup", 20)):
        await one()
    metrics = spec.get("metrics") or []
    before = server_seconds(metrics) if metrics else (0.0, 0.0)
    if http is not None:
        http.on = True
    lat: list[float] = []
    for _ in range(spec["seq"]):
        t0 = time.perf_counter()
        await one()
        lat.append((time.perf_counter() - t0) * 1000)
    out: dict[str, Any] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mean_ms": sum(lat) / len(lat),
                           "n": len(lat), "lat_ms": lat}
    if http is not None:
        http.on = False
        out["requests"] = dict(http.kinds)
        out["per_workflow"] = sum(http.kinds.values()) / len(lat)
        out["rtt_p50_ms"] = pct(http.rtt_ms, 50)
        out["rtt_sum_ms"] = sum(http.rtt_ms)
        out["rtt_mean_ms"] = sum(http.rtt_ms) / max(1, len(http.rtt_ms))
    if metrics:
        after = server_seconds(metrics)
        out["server_requests"] = after[0] - before[0]
        out["server_mean_ms"] = (after[1] - before[1]) * 1000 / max(1.0, after[0] - before[0])
    rates = []
    for _ in range(spec.get("rounds", 1)):
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(spec["conc"])))
        rates.append(spec["conc"] / (time.perf_counter() - t0))
    out["rates"] = rates
    out["rate"] = sum(rates) / len(rates)
    await r.stop()
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
