"""schedule.* operations (docs/protocol.md#5-operations) and schedule firing
(docs/protocol.md#67-schedule-firing)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared import cron
from shared.engine import rest_schedules
from shared.engine.core import Ctx, Resp, create_promise, sat
from shared.records import BRANCH, ORIGIN, PARENT, PREFIX, SCHEDULE, Schedule
from shared.requests import ScheduleCreate, ScheduleDelete, ScheduleGet, ScheduleSearch


def schedule_get(c: Ctx, r: ScheduleGet) -> Resp:
    s = c.tx.get_schedule(r.id)
    if s is None:
        return 404, "Schedule not found"
    return 200, {"schedule": s.wire()}


def schedule_create(c: Ctx, r: ScheduleCreate) -> Resp:
    s = c.tx.get_schedule(r.id)
    if s is None:
        nxt = cron.next_after(r.cron, c.now, c.cfg.strict)
        s = Schedule(r.id, r.cron, r.promise_id, r.promise_timeout, r.promise_param, r.promise_tags, c.now, nxt)
        c.tx.insert_schedule(s)
        c.fx.add_deadline(nxt)
    return 200, {"schedule": s.wire()}


def schedule_delete(c: Ctx, r: ScheduleDelete) -> Resp:
    if not c.tx.delete_schedule(r.id):
        return 404, "Schedule not found"
    return 200, {}


def schedule_search(c: Ctx, r: ScheduleSearch) -> Resp:
    rows = c.tx.search_schedules(r.tags, r.cursor, r.limit + 1)
    out: dict[str, Any] = {"schedules": [s.wire() for s in rows[: r.limit]]}
    if len(rows) > r.limit:
        out["cursor"] = rows[r.limit - 1].id
    return 200, out


def fire_due(c: Ctx, s: Schedule) -> None:
    """Fire every overdue instant of s (capped), advancing lastRunAt/nextRunAt each time (catch-up)."""
    rest = rest_schedules.is_rest(s)
    for _ in range(c.cfg.schedule_catch_up_cap):
        if s.next_run_at > c.now:
            break
        fired_at = s.next_run_at
        pid = s.promise_id.replace("{{.id}}", s.id).replace("{{.timestamp}}", str(fired_at))
        if c.tx.get_promise(pid) is None:
            tags = {**s.promise_tags, SCHEDULE: s.id, ORIGIN: pid, BRANCH: pid, PARENT: pid, PREFIX: pid}
            ikey: str | None = None
            if rest:  # the REST API's rule (shared/engine/rest_schedules.py)
                tags, ikey = rest_schedules.firing(s, pid)
            create_promise(c, pid, sat(fired_at + s.promise_timeout), s.promise_param, tags, fired_at=fired_at,
                           ikey=ikey)
            c.fx.schedule_promises += 1
        s = replace(s, last_run_at=fired_at, next_run_at=rest_schedules.next_run(s, fired_at, c.cfg.strict))
    c.tx.update_schedule(s)
    c.fx.add_deadline(s.next_run_at)
