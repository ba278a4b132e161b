"""The workflows that tests/test_legacy_workflows.py runs through resonate-sdk 0.6.7 (the last
REST-era Python SDK), imported by worker.py and driver.py. Plain Python for the SDK's own
interpreter (not the project's venv).

Every step that does work appends a line to a count file under FLOWS_DIR (one file per step and
key), so the test can tell how many times each step really ran: a step whose promise the server
already holds as completed must not run again. Steps that must stop at a known point of the
workflow write a `.reached` marker and then block until the test creates the `.release` marker:
the test kills the server while a step is blocked there, never at a time it guessed.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from resonate import Context
from resonate.retry_policies import Constant

REMOTE_GROUP = "flows-remote"  # the group of worker.py: only it registers the remote_* functions
GATE_POLL = 0.05


def flows_dir() -> Path:
    return Path(os.environ["FLOWS_DIR"])


def count(name: str) -> int:
    """Record one execution of the step `name`; the number of executions so far, this one included."""
    path = flows_dir() / f"{name}.count"
    with open(path, "a") as f:  # O_APPEND: one short line per write, whichever process writes
        f.write("x\n")
    return len(path.read_text().splitlines())


def gate(name: str) -> None:
    """Say that the workflow reached `name`, then wait until the test releases it."""
    (flows_dir() / f"{name}.reached").touch()
    release = flows_dir() / f"{name}.release"
    while not release.exists():
        time.sleep(GATE_POLL)


class FlowError(ValueError):
    """The error a step raises on purpose (the caller sees it decoded from the rejected promise)."""


# ---- steps (plain functions: run in the caller's process, each its own durable promise) ----------


def add(ctx: Context, key: str, a: int, b: int) -> int:
    count(f"{key}.add")
    return a + b


def mul(ctx: Context, key: str, a: int, b: int) -> int:
    count(f"{key}.mul")
    return a * b


def flaky(ctx: Context, key: str, fails: int) -> dict[str, int]:
    """Raises on its first `fails` attempts, then answers how many attempts it took."""
    n = count(f"{key}.flaky")
    if n <= fails:
        raise FlowError(f"flaky attempt {n} of {key} fails")
    return {"attempts": n, "sdk_attempt": ctx.info.attempt}


def doomed(ctx: Context, key: str) -> None:
    n = count(f"{key}.doomed")
    raise FlowError(f"doomed attempt {n} of {key}")


def once(ctx: Context, key: str, label: str) -> str:
    n = count(f"{key}.{label}")
    return f"{label}#{n}"


def once_gated(ctx: Context, key: str, label: str) -> str:
    n = count(f"{key}.{label}")
    gate(f"{key}.{label}.gate")
    return f"{label}#{n}"


# short retries: the SDK's default for a plain function waits 2, 4, 8... seconds between attempts
FAST_RETRY = Constant(delay=0.1, max_retries=4)
TWO_RETRIES = Constant(delay=0.1, max_retries=2)


# ---- workflows (generator functions, registered in the driver's process) ------------------------


def inner(ctx: Context, key: str, a: int) -> Any:
    """A nested generator: its own child promises live under its id (`<parent>.2.1`, ...)."""
    doubled = yield ctx.lfc(mul, key, a, 2)
    plus = yield ctx.run(add, key, doubled, 100)
    return [doubled, plus]


def nested(ctx: Context, key: str, x: int) -> Any:
    a = yield ctx.run(add, key, x, 1)
    pair = yield ctx.lfc(inner, key, a)
    b = yield ctx.lfc(mul, key, pair[1], 3)
    return {"a": a, "inner": pair, "b": b}


def rpc_caller(ctx: Context, key: str, n: int) -> Any:
    """Calls a function that only worker.py (another process, another group) registers, by name."""
    sq = yield ctx.rpc("remote_square", key, n).options(target=REMOTE_GROUP)
    p = yield ctx.begin_rpc("remote_square", key, n + 1).options(target=REMOTE_GROUP)
    sq2 = yield p
    return {"square": sq, "next_square": sq2, "sum": sq["value"] + sq2["value"]}


def sleeper(ctx: Context, key: str, secs: float) -> Any:
    before = yield ctx.run(once, key, "before")
    yield ctx.sleep(secs)
    after = yield ctx.run(once, key, "after")
    return {"before": before, "after": after}


def retrying(ctx: Context, key: str, fails: int) -> Any:
    got = yield ctx.lfc(flaky, key, fails).options(retry_policy=FAST_RETRY)
    return {"flaky": got}


def failing(ctx: Context, key: str) -> Any:
    yield ctx.lfc(doomed, key).options(retry_policy=TWO_RETRIES)
    return "unreachable"


def catching(ctx: Context, key: str) -> Any:
    """Sees a step's permanent failure as an exception it can handle."""
    try:
        yield ctx.lfc(doomed, key).options(retry_policy=TWO_RETRIES)
    except FlowError as e:
        return {"caught": type(e).__name__, "message": str(e)}
    return "unreachable"


def crash(ctx: Context, key: str, secs: float, gate_after: bool = False) -> Any:
    """The restart tests' workflow: a local step, an RPC that blocks at a gate in the other
    process, a durable sleep, a local step (at a gate too with `gate_after`)."""
    before = yield ctx.run(once, key, "before")
    remote = yield ctx.rpc("remote_gate", key).options(target=REMOTE_GROUP)
    yield ctx.sleep(secs)
    after = yield ctx.run(once_gated if gate_after else once, key, "after")
    return {"before": before, "remote": remote, "after": after}


WORKFLOWS = {"nested": nested, "rpc": rpc_caller, "sleep": sleeper, "retry": retrying, "fail": failing,
             "catch": catching, "crash": crash}


# ---- remote functions (registered in worker.py only) --------------------------------------------


def remote_square(ctx: Context, key: str, n: int) -> Any:
    """Runs as its own root in the worker's process, with a nested step of its own."""
    count(f"{key}.remote_square.{n}")
    sq = yield ctx.run(mul, f"{key}.remote.{n}", n, n)
    return {"value": sq, "id": ctx.id, "pid": os.getpid()}


def remote_gate(ctx: Context, key: str) -> Any:
    count(f"{key}.remote_gate")
    gate(f"{key}.gate")
    return {"gate": "passed", "id": ctx.id, "pid": os.getpid()}


REMOTE = {"remote_square": remote_square, "remote_gate": remote_gate}
