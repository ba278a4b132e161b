"""Closed-loop load generator, run as its own process: `python -m bench.loadgen '<json spec>'`.

Opens `conns` keep-alive connections, keeps one request in flight on each, and counts the
responses that complete inside the window [start_at, end_at] (wall clock, seconds), so that
several generator processes measure the same window; requests before start_at are warm-up.
Prints one JSON line: {"ok", "errors", "seconds", "lat_ms": [sampled latencies], "total_ok" (200s
including warm-up, i.e. promises created), ...}.
"""
from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from bench.http import GET_HEALTH, Conn, envelope, post_bytes


def make_request(spec: dict[str, Any]):
    kind = spec["kind"]
    if kind == "health":
        return lambda n: GET_HEALTH
    if kind == "create":
        prefix, timeout_at = spec["prefix"], spec["timeout_at"]

        def create(n: int) -> bytes:
            return post_bytes(envelope("promise.create", {"id": f"{prefix}-{n}", "timeoutAt": timeout_at,
                                                          "param": {}, "tags": {}}, corr=str(n)))
        return create
    raise ValueError(kind)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec.get("host", "127.0.0.1"), spec["port"]
    start_at, end_at = spec["start_at"], spec["end_at"]
    limit = spec.get("max_requests")  # stop after this many requests in total (fill mode)
    make = make_request(spec)
    conns = [await Conn.open(host, port) for _ in range(spec["conns"])]
    ok = errors = sent = total_ok = 0
    lat: list[float] = []
    first_error = ""

    async def worker(conn: Conn) -> None:
        nonlocal ok, errors, sent, total_ok, first_error
        while True:
            now = time.time()
            if now >= end_at or (limit is not None and sent >= limit):
                return
            n = sent
            sent += 1
            raw = make(n)
            t0 = time.perf_counter()
            try:
                status, body = await conn.request(raw)
            except Exception as e:  # count and stop this connection
                errors += 1
                first_error = first_error or repr(e)
                return
            t1 = time.perf_counter()
            total_ok += status == 200
            if start_at <= time.time() <= end_at:
                if status == 200:
                    ok += 1
                    if len(lat) < 20000 or random.random() < 0.05:
                        lat.append((t1 - t0) * 1000)
                else:
                    errors += 1
                    first_error = first_error or f"{status} {body[:200]!r}"

    t_begin = time.time()
    await asyncio.gather(*(worker(c) for c in conns))
    t_done = time.time()
    for c in conns:
        c.close()
    window = min(end_at, t_done) - max(start_at, t_begin)
    return {"ok": ok, "errors": errors, "sent": sent, "total_ok": total_ok, "seconds": max(window, 1e-9), "lat_ms": lat,
            "first_error": first_error}


def main() -> None:
    spec = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(spec))), flush=True)


if __name__ == "__main__":
    main()
