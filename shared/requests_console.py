"""The web console's query kinds (docs/console.md): read-only views the console's pages need and
the SDKs' protocol does not offer (an id-prefix and time-range promise list, a promise with its
task and call graph, the connected workers). Served on `POST /ui/api` only (`shared.kinds`).

Each names the id prefix it reads, so a prefix token's request is checked like any other
(`shared.scope`): the console sends the token's prefix when the operator asks for less.
"""
from __future__ import annotations

from typing import Any, ClassVar

from shared.frozen import frozen
from shared.protocol import DecodeError, Reject, enum, opt_int, opt_str, str_map
from shared.records import PROMISE_STATES, TASK_STATES
from shared.requests import Request, _bounded, _id

SETTLED = "settled"  # every state but pending
PAGE = 50
MAX_PAGE = 200


@frozen
class ConsolePromises(Request):
    kind: ClassVar[str] = "console.promises"
    prefix: str
    states: tuple[str, ...] | None  # None: every state
    tags: dict[str, str]
    created_after: int | None  # ms, inclusive
    created_before: int | None  # ms, exclusive
    limit: int
    cursor: str | None


@frozen
class ConsolePromise(Request):
    kind: ClassVar[str] = "console.promise"
    id: str


@frozen
class ConsoleTasks(Request):
    kind: ClassVar[str] = "console.tasks"
    prefix: str
    state: str | None
    limit: int
    cursor: str | None


@frozen
class ConsoleSchedules(Request):
    kind: ClassVar[str] = "console.schedules"
    prefix: str
    limit: int
    cursor: str | None


@frozen
class ConsoleWorkers(Request):
    kind: ClassVar[str] = "console.workers"


def _page(d: dict[str, Any]) -> tuple[int, str | None]:
    n = opt_int(d, "limit")
    if n is not None and not 1 <= n <= MAX_PAGE:
        raise Reject(400, f"Invalid request: limit must be between 1 and {MAX_PAGE}")
    cursor = opt_str(d, "cursor")
    return (PAGE if n is None else n), (cursor or None)


def _prefix(d: dict[str, Any]) -> str:
    return _bounded(opt_str(d, "prefix") or "", "Prefix")


def decode_promises(d: dict[str, Any], strict: bool) -> ConsolePromises:
    state = enum(d, "state", (*PROMISE_STATES, SETTLED), False)
    states = None if state is None else tuple(s for s in PROMISE_STATES if s != "pending") if state == SETTLED \
        else (state,)
    after, before = opt_int(d, "createdAfter"), opt_int(d, "createdBefore")
    if after is not None and before is not None and after >= before:
        raise DecodeError("`createdAfter` must be before `createdBefore`")
    limit, cursor = _page(d)
    return ConsolePromises(_prefix(d), states, str_map(d.get("tags"), "tags"), after, before, limit, cursor)


def decode_promise(d: dict[str, Any], strict: bool) -> ConsolePromise:
    return ConsolePromise(_bounded(_id(d, "Promise ID is required"), "Promise ID"))


def decode_tasks(d: dict[str, Any], strict: bool) -> ConsoleTasks:
    limit, cursor = _page(d)
    return ConsoleTasks(_prefix(d), enum(d, "state", TASK_STATES, False), limit, cursor)


def decode_schedules(d: dict[str, Any], strict: bool) -> ConsoleSchedules:
    limit, cursor = _page(d)
    return ConsoleSchedules(_prefix(d), limit, cursor)


def decode_workers(d: dict[str, Any], strict: bool) -> ConsoleWorkers:
    return ConsoleWorkers()
