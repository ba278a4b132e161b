"""The REST routes of the older server (docs/legacy-api.md), each a few lines of translation: the
path, headers and JSON body become one request kind's `data` (`shared/requests_rest.py`), the
service runs it through the same pipeline as `POST /` (decode, authorize, execute), and the
answer is rendered in the REST shapes (`shared/legacy/wire.py`).

Authentication, with inbound auth on: `Authorization: Bearer <token>`, checked against the same
table as the envelope kinds. Every answer is JSON (errors: `{"error": {"code", "message",
"details"}}`) except 204s. A store that is busy answers 500 rather than 503: the REST-era SDKs
retry a 500 and give up on a 503.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response, request

from shared.http import read_body
from shared.kinds import REST
from shared.legacy import wire
from shared.protocol import Envelope, any_str, dumps, has_lone_surrogate, too_deep
from shared.records import Promise, Task
from shared.service import Service

log = logging.getLogger("resonate.legacy")
JSON = "application/json"
Data = dict[str, Any]
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
FORBIDDEN = 4039  # a token that does not cover what the request touches
CLAIM_LEASE_MS = 60_000  # the lease of a claim through a GET link (the older server's task frequency)


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _json(status: int, body: Any) -> Response:
    return Response(dumps(body), status, mimetype=JSON)


def fail(status: int, message: str, code: int | None = None) -> Response:
    return _json(status, wire.error(code if code is not None else status * 10, message))


def body(req: Request, limit: int) -> Data:
    """The JSON object of the body (whatever the Content-Type); {} when there is none."""
    raw = read_body(req, limit)
    if raw is None:
        raise BadRequest(f"Request body exceeds {limit} bytes")
    if not raw.strip():
        return {}
    try:
        d = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("The request body is not valid JSON") from None
    if not isinstance(d, dict):
        raise BadRequest("The request body must be a JSON object")
    if too_deep(d):
        raise BadRequest("The request body nests too deeply")
    if has_lone_surrogate(d):
        raise BadRequest("The request body has an unpaired surrogate escape")
    return d


def keys(req: Request) -> Data:
    """`Idempotency-Key` and `Strict` (a boolean, default false) as request fields."""
    strict = req.headers.get("Strict")
    if strict is not None and strict not in _TRUE and strict not in _FALSE:
        raise BadRequest("The Strict header must be true or false")
    return {"ikey": req.headers.get("Idempotency-Key"), "strict": strict in _TRUE}


def call(service: Service, kind: str, data: Data) -> tuple[int, Any]:
    """One REST request through the service's pipeline; (status, data or error message)."""
    claims: Any = None
    if service.auth is not None:
        from shared.auth import header_credential

        claims = service.auth.authenticate(header_credential(request.headers), kind)
        if isinstance(claims, tuple):
            return claims
    rid = request.headers.get("Request-Id")
    nul = any_str(data, lambda s: "\x00" in s)  # no SQL store keeps U+0000 in text: 400, as on `POST /`
    env = Envelope(kind, rid or "", {}, data, None, None, nul)
    return service.handle(env, claims, REST)


def answer(status: int, data: Any, render: Callable[[Any], Any]) -> Response:
    """A success rendered, or the error body (an engine failure carries its REST code)."""
    if status < 300:
        return _json(status, render(data))
    if isinstance(data, dict) and "code" in data:
        return fail(status, data["message"], data["code"])
    if status == 503:  # retried by the REST-era SDKs only as a 500
        return fail(500, str(data), 5030)
    if status == 403:  # authorization (the engine's 403s carry their own codes, 4030-4038)
        return fail(403, str(data), FORBIDDEN)
    return fail(status, str(data))


def route(service: Service, kind: str, build: Callable[[], Data], render: Callable[[Any], Any]) -> Response:
    try:
        data = build()
    except BadRequest as e:
        return fail(400, e.message)
    status, out = call(service, kind, data)
    return answer(status, out, render)


# ---- renderings ------------------------------------------------------------------------------


def _promise(d: Data) -> Data:
    p: Promise = d["promise"]
    return wire.promise(p)


def _promise_and_task(d: Data) -> Data:
    t: Task | None = d.get("task")
    return {"promise": wire.promise(d["promise"]), "task": wire.task(t) if t is not None else None}


def _registration(d: Data) -> Data:
    return {"promise": wire.promise(d["promise"]), "callback": d["callback"]}


def _cursor_out(query: Data, last: str | None) -> str | None:
    if last is None:
        return None
    return base64.urlsafe_b64encode(dumps({**query, "cursor": last})).decode()


def _cursor_in(token: str) -> Data:
    try:
        d = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error):
        raise BadRequest("The cursor is invalid") from None
    if not isinstance(d, dict):
        raise BadRequest("The cursor is invalid")
    return d


def search_query(args: Any, pattern_key: str = "id") -> Data:
    """A search's query string (`id` or the earliest API's `q`, `tags[k]=v`, `limit`) as request
    fields; a cursor carries the whole query (promises' and schedules' searches alike)."""
    if args.get("cursor"):
        return _cursor_in(args["cursor"])
    tags = {k[5:-1]: v for k, v in args.items() if k.startswith("tags[") and k.endswith("]")}
    raw = args.get("limit")
    try:
        limit = int(raw) if raw not in (None, "") else None
    except ValueError:
        raise BadRequest("The field limit must be an integer") from None
    return {"id": args.get(pattern_key), "tags": tags, "limit": limit or None}


def _claimed(base: str) -> Callable[[Data], Data]:
    def render(d: Data) -> Data:
        def one(p: Promise) -> Data:
            return {"id": p.id, "href": f"{base}/promises/{p.id}", "data": wire.promise(p)}

        promises = {"root": one(d["root"])}
        if "leaf" in d:
            promises["leaf"] = one(d["leaf"])
        return {"type": d["type"], "promises": promises}

    return render


# ---- the routes --------------------------------------------------------------------------------


def install(app: Flask, service: Service) -> None:
    """Add the REST routes of promises and tasks to the app."""
    limit = service.cfg.server.max_body
    base = service.cfg.server_url.rstrip("/")

    def search(pattern_key: str) -> Response:
        try:
            query = search_query(request.args, pattern_key)
            if "cursor" not in query:
                query["state"] = request.args.get("state") or None
        except BadRequest as e:
            return fail(400, e.message)
        status, out = call(service, "rest.promise.search", query)
        if status >= 300:
            return answer(status, out, lambda d: d)
        nxt = out["cursor"]
        return _json(200, {"promises": [wire.promise(p) for p in out["promises"]],
                           "cursor": _cursor_out({k: v for k, v in query.items() if k != "cursor"}, nxt)})

    def get_promise(id: str) -> Response:
        return route(service, "rest.promise.get", lambda: {"id": id}, _promise)

    def patch_promise(id: str) -> Response:
        return route(service, "rest.promise.complete",
                     lambda: {**body(request, limit), **keys(request), "id": id}, _promise)

    def create_promise() -> Response:
        return route(service, "rest.promise.create", lambda: {**body(request, limit), **keys(request)}, _promise)

    def list_promises() -> Response:
        return search("q" if "q" in request.args and "id" not in request.args else "id")

    def post_under_promises(rest: str) -> Response:
        """POST /promises/…: `task`, `callback/{id}`, `subscribe/{id}`, and the earliest API's
        `{id}/create|resolve|reject|cancel`."""
        if rest == "task":
            return route(service, "rest.promise.create", lambda: {**body(request, limit), **keys(request)},
                         _promise_and_task)
        head, _, tail = rest.partition("/")
        if head == "callback" and tail:
            return route(service, "rest.promise.callback",
                         lambda: {**body(request, limit), "promiseId": tail}, _registration)
        if head == "subscribe" and tail:
            return route(service, "rest.promise.subscribe",
                         lambda: {**body(request, limit), "promiseId": tail}, _registration)
        id, _, action = rest.rpartition("/")
        if id and action == "create":
            return route(service, "rest.promise.create",
                         lambda: {**body(request, limit), **keys(request), "id": id}, _promise)
        states = {"resolve": "RESOLVED", "reject": "REJECTED", "cancel": "REJECTED_CANCELED"}
        if id and action in states:
            return route(service, "rest.promise.complete",
                         lambda: {**body(request, limit), **keys(request), "id": id, "state": states[action],
                                  "variant": "A"}, _promise)
        return fail(404, "Not found", 4040)

    def post_callbacks() -> Response:  # the deprecated form: the promise id in the body
        return route(service, "rest.promise.callback", lambda: body(request, limit), _registration)

    def post_subscriptions() -> Response:
        return route(service, "rest.promise.subscribe", lambda: body(request, limit), _registration)

    app.add_url_rule("/promises", "rest_promises_search", list_promises, methods=["GET"])
    app.add_url_rule("/promises", "rest_promises_create", create_promise, methods=["POST"])
    app.add_url_rule("/promises/<path:id>", "rest_promise_get", get_promise, methods=["GET"])
    app.add_url_rule("/promises/<path:id>", "rest_promise_patch", patch_promise, methods=["PATCH"])
    app.add_url_rule("/promises/<path:rest>", "rest_promise_post", post_under_promises, methods=["POST"])
    app.add_url_rule("/callbacks", "rest_callbacks", post_callbacks, methods=["POST"])
    app.add_url_rule("/subscriptions", "rest_subscriptions", post_subscriptions, methods=["POST"])

    # tasks ---------------------------------------------------------------------------------
    def task_json(d: Data) -> Data:
        return wire.task(d["task"])

    renders: dict[str, Callable[[Data], Any]] = {
        "claim": _claimed(base), "complete": task_json, "drop": lambda d: {},
        "heartbeat": lambda d: {"tasksAffected": d["tasksAffected"]},
    }

    def post_task(verb: str) -> Response:
        if verb not in renders:
            return fail(404, "Not found", 4043)
        keep_out = ("state", "value") if verb == "complete" else ()  # settling the promise there is gRPC's
        return route(service, f"rest.task.{verb}",
                     lambda: {k: v for k, v in body(request, limit).items() if k not in keep_out}, renders[verb])

    def get_task(verb: str, rest: str) -> Response:
        """The GET links of a task message (`href`): `/tasks/{verb}/{id}/{counter}`; the
        claimer's process id is `{id}/{counter}`."""
        id, _, n = rest.rpartition("/")
        if verb not in renders or not id or not n.lstrip("-").isdigit():
            return fail(404, "Not found", 4043)
        pid = f"{id}/{n}"
        data: Data = {"id": id, "counter": int(n), "processId": pid, "ttl": CLAIM_LEASE_MS}
        if verb == "heartbeat":
            data = {"processId": pid}
        return route(service, f"rest.task.{verb}", lambda: data, renders[verb])

    app.add_url_rule("/tasks/<verb>", "rest_task_post", post_task, methods=["POST"])
    app.add_url_rule("/tasks/<verb>/<path:rest>", "rest_task_get", get_task, methods=["GET"])
    from shared.legacy import rest_locks, rest_schedules  # they import this module: here, not at the top

    rest_schedules.install(app, service)
    rest_locks.install(app, service)


PREFIXES = ("promises", "schedules", "tasks", "locks", "callbacks", "subscriptions")


def is_legacy_path(path: str) -> bool:
    return path.lstrip("/").split("/", 1)[0] in PREFIXES


def install_gone(app: Flask) -> None:
    """`legacy.enabled = false`: every legacy prefix answers as the current reference server does."""
    from shared.http import legacy

    for prefix in PREFIXES:
        app.add_url_rule(f"/{prefix}", f"legacy_{prefix}", legacy, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        app.add_url_rule(f"/{prefix}/<path:path>", f"legacy_{prefix}_sub", legacy,
                         methods=["GET", "POST", "PUT", "PATCH", "DELETE"])

