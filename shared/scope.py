"""What each request touches, read off its decoded fields: the one table that authorization
(prefix tokens, poll groups; `shared.auth`) and the outbound destination policy read.

A kind without a row touches nothing a scoped token may name, so it needs an unrestricted token
(fail closed): adding a kind means adding its row here, and the cross-tenant test matrix is
generated from this table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from shared.records import BRANCH, ORIGIN, PARENT, TARGET
from shared.requests import CreateData, Req

ID_TAGS = (ORIGIN, PARENT, BRANCH)  # tags whose value names another promise (a workflow's root, parent, branch)
TIMESTAMP = "{{.timestamp}}"


@dataclass(frozen=True, slots=True)
class Touched:
    """Every id a request reads or writes and every delivery address it stores.

    ids: promise, task and schedule ids, the id-valued tags a created promise carries, and the
      literal head of a schedule's promise-id template (every expansion starts with it).
    addresses: `resonate:target` values and listener addresses the request registers.
    unscoped: the request reads or changes state across every tenant (searches, debug).
    """

    ids: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    unscoped: bool = False


UNSCOPED = Touched(unscoped=True)


def _created(c: CreateData) -> tuple[list[str], list[str]]:
    """(ids, addresses) of a promise a request creates: its id, its id-valued tags, its target."""
    ids = [c.id, *(c.tags[t] for t in ID_TAGS if c.tags.get(t))]
    return ids, [c.tags[TARGET]] if TARGET in c.tags else []


def template_head(template: str, schedule_id: str) -> str:
    """The part of a schedule's promise-id template every firing's id starts with."""
    return template.replace("{{.id}}", schedule_id).split(TIMESTAMP, 1)[0]


def _id(r: Req) -> Touched:
    return Touched((r.id,))


def _create(r: Req) -> Touched:
    ids, addrs = _created(r.create)
    return Touched(tuple(ids), tuple(addrs))


def _fence(r: Req) -> Touched:
    if r.action_kind == "promise.create":
        ids, addrs = _created(r.op)
        return Touched((r.id, *ids), tuple(addrs))
    return Touched((r.id, r.op.id))


def _schedule_create(r: Req) -> Touched:
    # the template's origin/parent/branch tags are replaced by the firing's own id (FIRE_SCHEDULE)
    return Touched((r.id, template_head(r.promise_id, r.id)), (r.promise_tags[TARGET],))


TOUCHES: dict[str, Callable[[Req], Touched]] = {
    "promise.get": _id,
    "promise.create": _create,
    "promise.settle": lambda r: Touched((r.settle.id,)),
    "promise.register_callback": lambda r: Touched((r.awaited, r.awaiter)),
    "promise.register_listener": lambda r: Touched((r.awaited,), (r.address,)),
    "promise.search": lambda r: UNSCOPED,
    "task.get": _id,
    "task.create": _create,
    "task.acquire": _id,
    "task.release": _id,
    "task.fulfill": _id,
    "task.suspend": lambda r: Touched((r.id, *r.awaited)),
    "task.fence": _fence,
    # the engine skips empty ids; an empty list renews only the caller's scope (engine: Ctx.scope)
    "task.heartbeat": lambda r: Touched(tuple(id for id, _ in r.tasks if id)),
    "task.halt": _id,
    "task.continue": _id,
    "task.search": lambda r: UNSCOPED,
    "schedule.get": _id,
    "schedule.create": _schedule_create,
    "schedule.delete": _id,
    "schedule.search": lambda r: UNSCOPED,
    "debug.start": lambda r: UNSCOPED,
    "debug.stop": lambda r: UNSCOPED,
    "debug.reset": lambda r: UNSCOPED,
    "debug.snap": lambda r: UNSCOPED,
    "debug.tick": lambda r: UNSCOPED,
}


def touches(req: Req) -> Touched:
    """The row of the table for a decoded request (unscoped for a kind without one)."""
    row = TOUCHES.get(req.kind)
    return UNSCOPED if row is None else row(req)


def within(scope: str | None, id: str) -> bool:
    """An id a caller of this scope may see (None: unrestricted). Prefixes match as given."""
    return scope is None or id.startswith(scope)
