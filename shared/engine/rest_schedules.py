"""The older server's REST API's schedules (docs/legacy-api.md#schedules) on the one schedule
engine: the records are the envelope protocol's, fired by the same pass (`schedules.fire_due`).

What the REST API adds: an idempotency key on create (201 new; 200 the stored schedule, never
changed, when the stored key matches; 409 otherwise), a description and the schedule's own
searchable tags, and its firing rule. A schedule created here carries the `resonate:rest` tag
among its own tags, so the firing pass knows which rule applies: its promises get
`resonate:schedule` and `resonate:invocation` (not the envelope's workflow tags), the promise id
as their creation key (an SDK may create them idempotently), and the cron is read in the older
server's dialect (descriptors, `@every`). Envelope-created schedules fire as they always did.
"""
from __future__ import annotations

from typing import Any

from shared import cron
from shared.engine.core import Ctx, Resp
from shared.records import SCHEDULE, Schedule
from shared.requests_rest import (
    INVOCATION,
    REST_SCHEDULE,
    RestScheduleCreate,
    RestScheduleDelete,
    RestScheduleGet,
    RestScheduleSearch,
    cron_next,
)
from shared.scope import within

SCHEDULE_NOT_FOUND, SCHEDULE_EXISTS = 4041, 4091
MESSAGES = {SCHEDULE_NOT_FOUND: "The specified schedule was not found",
            SCHEDULE_EXISTS: "A schedule with this identifier already exists"}


def _fail(code: int) -> Resp:
    return code // 10, {"code": code, "message": MESSAGES[code]}


def is_rest(s: Schedule) -> bool:
    return s.tags.get(REST_SCHEDULE) == "true"


def next_run(s: Schedule, after: int, strict: bool) -> int:
    """The schedule's next run strictly after `after` (ms), in its API's cron dialect."""
    if is_rest(s):
        try:
            return cron_next(s.cron, after)
        except cron.CronError:  # validated at create; a stored row edited by hand never fires
            return cron.NEVER
    return cron.next_after(s.cron, after, strict)


def firing(s: Schedule, promise_id: str) -> tuple[dict[str, str], str | None]:
    """(tags, creation key) of the promise a REST schedule fires (docs/legacy-api.md#firing)."""
    return {**s.promise_tags, SCHEDULE: s.id, INVOCATION: "true"}, promise_id


def get(c: Ctx, r: RestScheduleGet) -> Resp:
    s = c.tx.get_schedule(r.id)
    return (200, {"schedule": s}) if s is not None else _fail(SCHEDULE_NOT_FOUND)


def create(c: Ctx, r: RestScheduleCreate) -> Resp:
    """201 created (its next run computed now, once); 200 the stored schedule when both keys are
    present and equal; 409 otherwise."""
    s = c.tx.get_schedule(r.id)
    if s is None:
        nxt = cron_next(r.cron, c.now)
        s = Schedule(r.id, r.cron, r.promise_id, r.promise_timeout, r.promise_param, r.promise_tags, c.now, nxt,
                     description=r.description, tags={**r.tags, REST_SCHEDULE: "true"}, ikey=r.ikey)
        c.tx.insert_schedule(s)
        c.fx.add_deadline(nxt)
        return 201, {"schedule": s}
    if r.ikey is not None and s.ikey == r.ikey:
        return 200, {"schedule": s}
    return _fail(SCHEDULE_EXISTS)


def delete(c: Ctx, r: RestScheduleDelete) -> Resp:
    """204 deleted (the promises it fired stay); 404 unknown."""
    return (204, {}) if c.tx.delete_schedule(r.id) else _fail(SCHEDULE_NOT_FOUND)


def search(c: Ctx, r: RestScheduleSearch) -> Resp:
    rows = c.tx.search_schedules_by_id(r.pattern, r.tags, r.cursor, r.limit + 1)
    rows = [s for s in rows if within(c.scope, s.id)]
    page = rows[: r.limit]
    out: dict[str, Any] = {"schedules": page, "cursor": page[-1].id if len(rows) > r.limit else None}
    return 200, out
