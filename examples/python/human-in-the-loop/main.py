"""Human in the loop: the workflow waits on a promise that a person resolves with the CLI.

    RESONATE_URL=http://localhost:8001 python main.py
    # then, in another terminal, the command it prints:
    resonate promises resolve <ID> --value '{"data":{"approved":true,"by":"alice"}}'
"""
from __future__ import annotations

import asyncio
import logging
import os
import uuid
from datetime import timedelta

from resonate.resonate import Resonate  # resonate-sdk 0.8.1: not `from resonate import Resonate`

URL = os.environ.get("RESONATE_URL", "http://localhost:8001")
announced: set[str] = set()  # the workflow body runs again on resume (replay): print the request once


async def write_draft(ctx, title: str) -> str:
    return f"{title}: a first draft"


async def publish(ctx, draft: str) -> str:
    return f"published {draft!r}"


async def review(ctx, title: str) -> str:
    draft = await ctx.run(write_draft, title)
    approval = ctx.promise(timeout=timedelta(hours=1))  # nobody in this program resolves it
    promise_id = await approval.id()
    if promise_id not in announced:
        announced.add(promise_id)
        print(f"waiting for approval of {draft!r}; approve it from another terminal with:", flush=True)
        print(f"  resonate promises resolve {promise_id} --value '{{\"data\":{{\"approved\":true,\"by\":\"alice\"}}}}'",
              flush=True)
    decision = await approval  # the workflow suspends here until the promise is settled
    if not decision.get("approved"):
        return f"rejected by {decision.get('by', 'someone')}"
    return await ctx.run(publish, draft) + f" (approved by {decision.get('by', 'someone')})"


def connected() -> asyncio.Event:
    """Set when the SDK's SSE stream is open: the resume after the approval arrives on it."""
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
    resonate = Resonate(url=URL, group="approval-example")
    resonate.register(review)
    await asyncio.wait_for(ready.wait(), 30)

    workflow_id = f"review-{uuid.uuid4().hex[:8]}"
    print(f"running {workflow_id} on {URL}", flush=True)
    outcome = await resonate.run(workflow_id, review, "Release notes").result()
    await resonate.stop()
    print(f"done: {workflow_id} {outcome}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
