"""The REST routes of the older server's distributed locks (docs/legacy-api.md#locks):
`POST /locks/acquire`, `/locks/release`, `/locks/heartbeat`. Each is a few lines of translation
onto the `rest.lock.*` kinds (`shared/requests_locks.py`, `shared/engine/locks.py`) through the
same pipeline as every REST route (`shared/legacy/rest.py`: authentication, decoding,
authorization, the error body).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from shared.legacy.rest import BadRequest, answer, body, call, fail
from shared.records import Lock
from shared.service import Service

Data = dict[str, Any]


def lock_json(lock: Lock) -> Data:
    """The lock object; the duration under both of its later names (`ttl` from Oct 2024,
    `expiryInMilliseconds` before), so a client of either era finds it."""
    return {"resourceId": lock.resource_id, "executionId": lock.execution_id, "processId": lock.process_id,
            "ttl": lock.ttl, "expiryInMilliseconds": lock.ttl, "expiresAt": lock.expires_at}


RENDERS: dict[str, Callable[[Data], Any]] = {
    "acquire": lambda d: lock_json(d["lock"]),
    "release": lambda d: None,  # 204: no body
    "heartbeat": lambda d: {"locksAffected": d["locksAffected"]},
}


def install(app: Flask, service: Service) -> None:
    """Add the lock routes to the app."""
    limit = service.cfg.server.max_body

    def post_lock(verb: str) -> Response:
        if verb not in RENDERS:
            return fail(404, "Not found", 4042)
        try:
            data = body(request, limit)
        except BadRequest as e:
            return fail(400, e.message)
        status, out = call(service, f"rest.lock.{verb}", data)
        if status == 204:
            return Response(status=204)
        return answer(status, out, RENDERS[verb])

    app.add_url_rule("/locks/<verb>", "rest_lock_post", post_lock, methods=["POST"])
