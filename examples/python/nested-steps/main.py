"""Nested steps: a workflow whose steps run steps of their own, each recorded by the server.

    RESONATE_URL=http://localhost:8001 python main.py
"""
from __future__ import annotations

import asyncio
import os
import uuid

from resonate.resonate import Resonate  # resonate-sdk 0.8.1: not `from resonate import Resonate`

URL = os.environ.get("RESONATE_URL", "http://localhost:8001")
PRICES = {"apple": 120, "bread": 250, "cheese": 480}  # in cents


async def fetch_price(ctx, item: str) -> int:
    print(f"  step fetch_price({item!r})", flush=True)
    return PRICES[item]


async def add_tax(ctx, cents: int) -> int:
    print(f"  step add_tax({cents})", flush=True)
    return cents * 110 // 100


async def price_item(ctx, item: str) -> int:
    # a step that runs two steps of its own
    cents = await ctx.run(fetch_price, item)
    return await ctx.run(add_tax, cents)


async def checkout(ctx, items: list[str]) -> int:
    total = 0
    for item in items:
        total += await ctx.run(price_item, item)
    return total


async def main() -> None:
    resonate = Resonate(url=URL, group="nested-steps-example")
    resonate.register(checkout)  # only what is started by name or from outside; ctx.run takes any function

    workflow_id = f"checkout-{uuid.uuid4().hex[:8]}"  # a new id each run; the same id returns the stored result
    print(f"running {workflow_id} on {URL}", flush=True)
    total = await resonate.run(workflow_id, checkout, ["apple", "bread", "cheese"]).result()
    await resonate.stop()
    print(f"done: {workflow_id} total = {total / 100:.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
