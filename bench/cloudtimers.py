"""(g) Timer lateness in the cloud simulation: no timer loop anywhere, only the sweeper function,
called every 60 s by the ticker (as Cloud Scheduler would) and woken by the api instances when a
near deadline finds no sweeper running. Same measurement as (c): each timed-out promise's unblock
arrives over SSE (through the router and a poll instance) and is compared with its timeoutAt."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.figures import timer_lateness


def cloud_timer_lateness(pg_url: str, n: int, lo_ms: int, hi_ms: int) -> dict[str, Any]:
    from local.cloudsim import CloudSim
    from tests.support.server import free_port

    log_dir = Path(tempfile.mkdtemp(prefix="resonate-bench-sim-"))
    sim = CloudSim(pg_url, free_port(), tick=60.0, log_dir=log_dir, create_db=False, grace=1.0)
    sim.start()
    try:
        out = timer_lateness(sim.port, n=n, lo_ms=lo_ms, hi_ms=hi_ms, conns=16)
        out["ticks"] = len(sim.ticks)
        return out
    finally:
        sim.stop()
