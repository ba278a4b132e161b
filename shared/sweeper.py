"""The serverless timer: one call handles every deadline of the coming window, on time.

Cloud Scheduler calls the `sweeper` function once a minute. Instead of firing only what is due
at that instant (a 1-minute timer resolution), a call keeps going while deadlines fall inside
its window, sleeping until each one, then returns. Windows slightly longer than the tick
overlap, and several sweepers at once are safe: due rows are claimed with SKIP LOCKED on
Postgres and serialized by the single writer on SQLite.
"""
from __future__ import annotations

import time
from typing import Any, Callable


def run_window(service: Any, delivery: Any, window_ms: int, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Sweep due timers and re-drive the outbox until no deadline remains inside the window."""
    clock = service.clock
    start = clock.now()
    end = start + window_ms
    handled = redriven = passes = 0
    service.refresh_debug_session()
    while not service.debug_session:
        passes += 1
        handled += service.sweep()
        redriven += delivery.redrive()
        nxt = service.next_deadline()
        now = clock.now()
        if nxt is None or nxt > end or now >= end:
            break
        if nxt > now:
            sleep((nxt - now) / 1000)
    return {"handled": handled, "redriven": redriven, "passes": passes, "elapsed_ms": clock.now() - start,
            "debug_session": service.debug_session}
