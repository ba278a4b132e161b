"""The REST routes of schedules (docs/legacy-api.md#schedules): `POST /schedules`,
`GET|DELETE /schedules/{id}` (the id is the rest of the path) and `GET /schedules` (search), each
translated into one `rest.schedule.*` kind and rendered in the shape the REST-era clients read.
"""
from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

from shared.legacy import wire
from shared.legacy.rest import BadRequest, Data, _cursor_out, _json, answer, body, call, fail, route, search_query
from shared.records import Schedule
from shared.requests_rest import REST_SCHEDULE
from shared.service import Service


def schedule(s: Schedule) -> dict[str, Any]:
    """The schedule object: the same bytes on create and on every read until it fires (its next
    run is stored, never recomputed); tags as sent (no engine marker, no derived routing tag)."""
    out: dict[str, Any] = {
        "id": s.id, "description": s.description, "cron": s.cron,
        "tags": {k: v for k, v in s.tags.items() if k != REST_SCHEDULE},
        "promiseId": s.promise_id, "promiseTimeout": s.promise_timeout,
        "promiseParam": wire._value(s.promise_param), "promiseTags": wire.tags_out(s.promise_tags),
    }
    if s.last_run_at is not None:
        out["lastRunTime"] = s.last_run_at
    out["nextRunTime"] = s.next_run_at
    if s.ikey is not None:
        out["idempotencyKey"] = s.ikey
    out["createdOn"] = s.created_at
    return out


def _one(d: Data) -> dict[str, Any]:
    return schedule(d["schedule"])


def install(app: Flask, service: Service) -> None:
    """Add the schedule routes to the app (called by `shared.legacy.rest.install`)."""
    limit = service.cfg.server.max_body

    def create() -> Response:
        return route(service, "rest.schedule.create",
                     lambda: {**body(request, limit), "ikey": request.headers.get("Idempotency-Key")}, _one)

    def get(id: str) -> Response:
        return route(service, "rest.schedule.get", lambda: {"id": id}, _one)

    def delete(id: str) -> Response:
        status, out = call(service, "rest.schedule.delete", {"id": id})
        return Response(status=204) if status == 204 else answer(status, out, lambda d: d)

    def search() -> Response:
        try:
            query = search_query(request.args)
        except BadRequest as e:
            return fail(400, e.message)
        status, out = call(service, "rest.schedule.search", query)
        if status >= 300:
            return answer(status, out, lambda d: d)
        nxt = _cursor_out({k: v for k, v in query.items() if k != "cursor"}, out["cursor"])
        return _json(200, {"schedules": [schedule(s) for s in out["schedules"]], "cursor": nxt})

    app.add_url_rule("/schedules", "rest_schedules_create", create, methods=["POST"])
    app.add_url_rule("/schedules", "rest_schedules_search", search, methods=["GET"])
    app.add_url_rule("/schedules/<path:id>", "rest_schedule_get", get, methods=["GET"])
    app.add_url_rule("/schedules/<path:id>", "rest_schedule_delete", delete, methods=["DELETE"])
