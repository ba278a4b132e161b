"""The caller: asks group `workers` to run `greet` (it does not have the function itself).

    RESONATE_URL=http://localhost:8001 python caller.py      # with worker.py running elsewhere
"""
from __future__ import annotations

import asyncio
import logging
import os
import uuid

from resonate.resonate import Resonate  # resonate-sdk 0.8.1: not `from resonate import Resonate`

URL = os.environ.get("RESONATE_URL", "http://localhost:8001")


def connected() -> asyncio.Event:
    """Set when the SDK's SSE stream is open: the result comes back on it."""
    event = asyncio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("SSE connection established"):
                event.set()

    sse_log = logging.getLogger("resonate.connections.sse")
    sse_log.setLevel(logging.INFO)
    sse_log.addHandler(Handler())
    return event


async def call(name: str) -> str:
    ready = connected()
    resonate = Resonate(url=URL, group="callers")
    await asyncio.wait_for(ready.wait(), 30)
    call_id = f"greet-{uuid.uuid4().hex[:8]}"
    print(f"caller: rpc {call_id} -> greet({name!r}) on group workers", flush=True)
    # by name, routed to any process of group `workers`
    answer = await resonate.options(target="workers").rpc(call_id, "greet", name).result()
    await resonate.stop()
    return answer


async def main() -> None:
    answer = await call("newcomer")
    print(f"done: {answer}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
