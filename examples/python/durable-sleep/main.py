"""A durable sleep: the workflow suspends, the server holds the timer, the workflow resumes.

    RESONATE_URL=http://localhost:8001 python main.py
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from datetime import timedelta

from resonate.resonate import Resonate  # resonate-sdk 0.8.1: not `from resonate import Resonate`

URL = os.environ.get("RESONATE_URL", "http://localhost:8001")
SLEEP_S = 3


async def now(ctx) -> float:
    return time.time()


async def reminder(ctx, seconds: int) -> float:
    # the clock is read in steps: their results are recorded, so the replay after the
    # sleep sees the same start time
    started = await ctx.run(now)
    await ctx.sleep(timedelta(seconds=seconds))  # a promise on the server that resolves at its deadline
    woke = await ctx.run(now)
    return woke - started


def connected() -> asyncio.Event:
    """Set when the SDK's SSE stream is open: the wake-up arrives on it."""
    event = asyncio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("SSE connection established"):
                event.set()

    sse_log = logging.getLogger("resonate.connections.sse")
    sse_log.setLevel(logging.INFO)
    sse_log.addHandler(Handler())
    return event


async def main() -> None:
    ready = connected()
    resonate = Resonate(url=URL, group="sleep-example")
    resonate.register(reminder)
    await asyncio.wait_for(ready.wait(), 30)

    workflow_id = f"reminder-{uuid.uuid4().hex[:8]}"
    print(f"running {workflow_id}: sleeping {SLEEP_S} s on the server's timer (nothing held in memory)", flush=True)
    slept = await resonate.run(workflow_id, reminder, SLEEP_S).result()
    await resonate.stop()
    print(f"done: {workflow_id} woke up after {slept:.1f} s", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
