"""The SSE listener the REST-era SDKs connect to (docs/legacy-api.md#the-sse-listener):
`GET /{group}/{id}` on its own port (`legacy.poll_port`, 8002), fed by the same outbox and the
same connection hub as `GET /poll/{group}/{id}`; only the message shapes differ:

    {"type": "invoke", "task": {"id", "counter"}, "href": {...}}     a task to claim
    {"type": "resume", "task": {"id", "counter"}, "href": {...}}     ... after a promise it awaited settled
    {"type": "notify", "promise": {...}}                             a subscribed promise settled

A new connection with the same group and id replaces the old one (those SDKs leave abandoned
streams open), as the older server did.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response

from shared.delivery.hub import PollHub
from shared.http import poll
from shared.legacy import ids, wire
from shared.protocol import dumps
from shared.service import Service

CONTENT_TYPE = "text/event-stream; charset=utf-8"  # their client reads lines as text only with a charset


def renderer(service: Service) -> Callable[[bytes], bytes | None]:
    """A message of the outbox (the envelope protocol's JSON) in the REST API's shape. An
    execute is a resume when its task has a ready callback (the settled promise is its leaf).

    None (nothing is written, the row is done) for an execute whose task is no longer waiting
    to be claimed at that counter: completed, claimed or given a new counter since the row was
    queued (a lapsed claim re-queues its task while the client may finish it). These clients
    claim the first message a stream brings; a stale one would be claimed in place of the next."""
    base = service.cfg.server_url.rstrip("/")

    def render(payload: bytes) -> bytes | None:
        m: dict[str, Any] = json.loads(payload)
        data = m.get("data") or {}
        if m.get("kind") == "unblock":
            return dumps({"type": "notify", "promise": wire.promise_of_wire(data["promise"])})
        task = data["task"]
        root, n = task["id"], task["version"]
        current, ready = service.store.read(lambda tx: (tx.get_task(root), tx.ready_awaited(root)))
        if current is None or current.state != "pending" or current.version != n:
            return None
        task_id = ids.resume_id(root, ready[0]) if ready else ids.invoke_id(root)
        return dumps({"type": "resume" if ready else "invoke", "task": {"id": task_id, "counter": n},
                      "href": wire.href(base, task_id, n)})

    return render


def create_app(service: Service, hub: PollHub) -> Flask:
    app = Flask("resonate-legacy-sse")
    keepalive = service.cfg.transports.http_poll.keepalive_interval
    render = renderer(service)

    def stream(group: str, id: str) -> Response:
        return poll(hub, keepalive, group, id, service.auth, render=render, replace=True, at_capacity=429,
                    content_type=CONTENT_TYPE)

    app.add_url_rule("/<group>/<id>", "legacy_poll", stream, methods=["GET"])

    @app.errorhandler(404)
    def _not_found(e: Any) -> Response:
        return Response("", 404, mimetype="text/plain")

    return app
