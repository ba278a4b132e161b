"""A cron schedule: the server starts `tick` every 2 seconds; this process runs it, then deletes the schedule.

    RESONATE_URL=http://localhost:8001 python main.py
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

from resonate.resonate import Resonate  # resonate-sdk 0.8.1: not `from resonate import Resonate`

URL = os.environ.get("RESONATE_URL", "http://localhost:8001")
CRON = "*/2 * * * * *"  # six fields, seconds first: every 2 s (five fields: minutes first, as in crontab)
TICKS = 3
ticked: asyncio.Queue[str] = asyncio.Queue()


async def tick(ctx, label: str) -> str:
    print(f"  tick {label} {ctx.info.id} at {time.strftime('%H:%M:%S')}", flush=True)
    ticked.put_nowait(ctx.info.id)
    return "tick"


def connected() -> asyncio.Event:
    """Set when the SDK's SSE stream is open: each run of the schedule arrives on it."""
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
    resonate = Resonate(url=URL, group="cron-example")  # the schedule's runs go to this group
    resonate.register(tick)
    await asyncio.wait_for(ready.wait(), 30)

    schedule_id = f"ticker-{uuid.uuid4().hex[:8]}"
    schedule = await resonate.schedule(schedule_id, CRON, "tick", args=("hello",))
    print(f"schedule {schedule_id} created: cron {CRON!r}, waiting for {TICKS} runs", flush=True)
    runs = {await asyncio.wait_for(ticked.get(), 30) for _ in range(TICKS)}
    await schedule.delete()  # or: resonate schedules delete <ID>
    await resonate.stop()
    print(f"done: {len(runs)} runs of schedule {schedule_id}, schedule deleted", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
