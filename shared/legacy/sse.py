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
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from flask import Flask, Response, request

from shared.delivery.hub import AtCapacity, PollHub, Refused
from shared.http import client_socket
from shared.legacy import ids, wire
from shared.logs import q
from shared.protocol import dumps, has_control
from shared.service import Service

log = logging.getLogger("resonate.legacy")
CONTENT_TYPE = "text/event-stream; charset=utf-8"  # their client reads lines as text only with a charset


def renderer(service: Service) -> Callable[[bytes], bytes]:
    """A message of the outbox (the envelope protocol's JSON) in the REST API's shape. An
    execute is a resume when its task has a ready callback (the settled promise is its leaf)."""
    base = service.cfg.server_url.rstrip("/")

    def render(payload: bytes) -> bytes:
        m: dict[str, Any] = json.loads(payload)
        data = m.get("data") or {}
        if m.get("kind") == "unblock":
            return dumps({"type": "notify", "promise": wire.promise_of_wire(data["promise"])})
        task = data["task"]
        root, n = task["id"], task["version"]
        ready = service.store.read(lambda tx: tx.ready_awaited(root))
        task_id = ids.resume_id(root, ready[0]) if ready else ids.invoke_id(root)
        return dumps({"type": "resume" if ready else "invoke", "task": {"id": task_id, "counter": n},
                      "href": wire.href(base, task_id, n)})

    return render


def create_app(service: Service, hub: PollHub) -> Flask:
    app = Flask("resonate-legacy-sse")
    keepalive = service.cfg.transports.http_poll.keepalive_interval / 1000
    render = renderer(service)

    def stream(group: str, id: str) -> Response:
        group, id = unquote(group), unquote(id)
        if has_control(group) or has_control(id):
            return Response("Invalid poll address", 400, mimetype="text/plain")
        principal: str | None = None
        if service.auth is not None:
            held = service.auth.check_poll(request.headers, group)
            if isinstance(held, tuple):
                return Response(held[1], held[0], mimetype="text/plain")
            principal = held
        hub.disconnect_id(group, id)  # the newest stream of a worker id wins
        try:
            conn = hub.register(group, id, principal, render=render)
        except AtCapacity as e:
            return Response(e.message, 429, mimetype="text/plain")
        except Refused as e:
            log.warning("Poll refused: %s status=%d group=%s id=%s", e.message, e.status, q(group), q(id))
            return Response(e.message, e.status, mimetype="text/plain")
        sock = client_socket(request.environ)
        if sock is not None:
            hub.watch(conn, sock)
        return Response(hub.stream(conn, keepalive), 200, content_type=CONTENT_TYPE,
                        headers={"Cache-Control": "no-cache"}, direct_passthrough=True)

    app.add_url_rule("/<group>/<id>", "legacy_poll", stream, methods=["GET"])

    @app.errorhandler(404)
    def _not_found(e: Any) -> Response:
        return Response("", 404, mimetype="text/plain")

    return app
