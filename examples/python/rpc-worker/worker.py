"""The worker: joins group `workers` and runs `greet` whenever the server sends it one.

    RESONATE_URL=http://localhost:8001 python worker.py      # Ctrl-C stops it
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid

from resonate.resonate import Resonate  # resonate-sdk 0.8.1: not `from resonate import Resonate`

URL = os.environ.get("RESONATE_URL", "http://localhost:8001")
PID = f"worker-{uuid.uuid4().hex[:6]}"


async def greet(ctx, name: str) -> str:
    print(f"worker {PID}: greet({name!r})", flush=True)
    return f"Hello, {name}! (from {PID} in group workers)"


def connected() -> asyncio.Event:
    """Set when the SDK's SSE stream to the server is open (resonate-sdk 0.8.1 logs it at INFO).
    The server does not queue messages for a process that is not connected yet."""
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
    resonate = Resonate(url=URL, group="workers", pid=PID)
    resonate.register(greet)
    await asyncio.wait_for(ready.wait(), 30)
    print(f"worker {PID} ready in group workers on {URL}", flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await resonate.stop()
    print(f"worker {PID} stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
