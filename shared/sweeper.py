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


def run_window(service: Any, delivery: Any, window_ms: int, sleep: Callable[[float], None] = time.sleep,
               poll_ms: int = 250) -> dict:
    """Sweep due timers and re-drive the outbox until no deadline remains inside the window.
    Between deadlines it looks again every `poll_ms`: other instances keep writing deadlines
    (a 1 s durable sleep, a task lease) that may fall before the one it is waiting for."""
    clock = service.clock
    start = clock.now()
    end = start + window_ms
    handled = redriven = passes = 0
    while not service.refresh_debug_session():  # another instance may start a debug session meanwhile
        passes += 1
        handled += service.sweep()
        redriven += delivery.redrive()
        nxt = service.next_deadline()
        now = clock.now()
        if nxt is None or nxt > end or now >= end:
            break
        if nxt > now:
            sleep(min(nxt - now, poll_ms) / 1000)
    delivery.flush(max(1.0, (end - clock.now()) / 1000))  # results are recorded before we return
    return {"handled": handled, "redriven": redriven, "passes": passes, "elapsed_ms": clock.now() - start,
            "debug_session": service.debug_session}
