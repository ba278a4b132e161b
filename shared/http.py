"""HTTP handlers (flask), written once: the local app and the Cloud Functions both call them.

`POST /` (RPC), `GET /poll/{group}/{id}` (SSE), `/health`, `/ready`, legacy 410s
(docs/protocol.md#21-endpoints), and `GET /metrics` where the API port must carry it (the `api`
function; the local server has its own metrics port). Inbound auth (`shared.auth`): `POST /`
checks `head.auth` in the service (its headers are not read), the poll stream and `/metrics`
check `Authorization: Bearer` here; `X-Serverless-Authorization` (Cloud Run's invoker check of a
private deployment) is never read as a credential. CORS (`shared.cors`) wraps every route.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from flask import Flask, Request, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from shared.delivery.hub import AtCapacity, PollHub, Refused
from shared.kinds import CONSOLE, OPERATOR, RPC
from shared.logs import q
from shared.protocol import dumps, has_control, response
from shared.service import Service

if TYPE_CHECKING:
    from shared.auth import Authenticator
    from shared.metrics import Metrics

log = logging.getLogger("resonate.http")
JSON = "application/json"
LEGACY_BODY = dumps({"error": "This endpoint is no longer supported. Please update to the latest SDK."})
_CHUNK = 1 << 16


def read_body(req: Request, limit: int) -> bytes | None:
    """The request body, or None when it exceeds limit (the rest is drained, never reset)."""
    stream = req.stream
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            while stream.read(_CHUNK):
                pass
            return None
        parts.append(chunk)


def rpc(service: Service, req: Request, surface: str = RPC) -> Response:
    try:
        raw = read_body(req, service.cfg.server.max_body)
    except Exception as e:  # a broken upload (bad chunked framing, a client gone mid-body)
        log.warning("Unreadable request body rejected error=%s", q(f"{type(e).__name__}: {e}"))
        body = dumps(response("unknown", "0", 400, "Invalid request envelope: the body could not be read"))
        return Response(body, 400, mimetype=JSON)
    if raw is None:
        body = dumps(response("unknown", "0", 413, f"Request body exceeds {service.cfg.server.max_body} bytes"))
        return Response(body, 413, mimetype=JSON)
    # W3C trace context, read only when traces are exported (shared/tracing.py); the local server's
    # fast path sends every request with a `traceparent` here
    trace = (req.headers.get("traceparent"), req.headers.get("tracestate")) if service.tracer is not None else None
    status, body = service.rpc(raw, surface, trace)
    return Response(body, status, mimetype=JSON)


def _read_exact(stream: Any, n: int) -> bytes | None:
    """Exactly n bytes of the request body, or None when the client sent fewer (it hung up)."""
    parts: list[bytes] = []
    left = n
    while left > 0:
        chunk = stream.read(min(left, _CHUNK))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_JSON_HEADER = ("Content-Type", JSON)
# a request carrying a trace: the JSON log lines take it from flask's request context (shared.logs)
_TRACED = frozenset({"HTTP_X_CLOUD_TRACE_CONTEXT", "HTTP_TRACEPARENT"})


def fast_rpc(app: WSGIApp, service: Service) -> WSGIApp:
    """The envelope routes (`POST /`, `/operator` and the console's `/ui/api`) with a
    Content-Length straight to `Service.rpc`; everything else (other routes, chunked or oversized
    bodies, CORS on, a request with trace headers) through the flask `app`.
    The same answers as the flask route `rpc` (status line, Content-Type and Content-Length
    headers, envelope bytes) without flask's per-request context, routing and response objects:
    about a fifth of the CPU a small RPC costs the local server. Only the local server's listener
    uses it; the functions keep the flask app that functions-framework requires."""
    if service.cfg.server.cors.allow_origins:  # the CORS headers are added by flask hooks
        return app
    limit = service.cfg.server.max_body
    reasons = {code: f"{code} {text.upper()}" for code, text in HTTP_STATUS_CODES.items()}
    surfaces = {"/": RPC, "/operator": OPERATOR, **({"/ui/api": CONSOLE} if service.cfg.ui.enabled else {})}

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH") or ""
        surface = surfaces.get(environ["PATH_INFO"])
        if surface is None or environ["REQUEST_METHOD"] != "POST" or not length.isdigit() \
                or int(length) > limit or _TRACED.intersection(environ):
            return app(environ, start_response)
        try:
            raw = _read_exact(environ["wsgi.input"], int(length))
            if raw is None:
                raise ValueError(f"the client sent fewer than {length} bytes")
        except Exception as e:  # as `rpc` answers a broken upload
            log.warning("Unreadable request body rejected error=%s", q(f"{type(e).__name__}: {e}"))
            status = 400
            body = dumps(response("unknown", "0", 400, "Invalid request envelope: the body could not be read"))
        else:
            status, body = service.rpc(raw, surface)
        start_response(reasons.get(status) or f"{status} UNKNOWN",
                       [_JSON_HEADER, ("Content-Length", str(len(body)))])
        return [body]

    return wsgi


def client_socket(environ: dict[str, Any]) -> Any:
    """The connection's socket under gunicorn or gevent's pywsgi (whose Input wraps a SocketIO)."""
    if environ.get("gunicorn.socket") is not None:
        return environ["gunicorn.socket"]
    raw = getattr(getattr(environ.get("wsgi.input"), "rfile", None), "raw", None)
    return getattr(raw, "_sock", None)


def poll(hub: PollHub, keepalive_ms: int, group: str, id: str, auth: Authenticator | None = None, *,
         render: Callable[[bytes], bytes | None] | None = None, replace: bool = False, at_capacity: int | None = None,
         content_type: str = "text/event-stream") -> Response:
    """The SSE stream of worker `id` in `group`. With auth on: a valid bearer token entitled to
    the group (401/403), then the hub's rules for its principal: the id not held by another
    principal (409), the principal under its connection cap (429); all plain text.

    The REST-era SDKs' listener (shared/legacy/sse.py) adds: `render` (its message shapes),
    `replace` (a new stream ends the same principal's older ones of that id: those SDKs abandon
    streams without closing them), `at_capacity` (its status when every slot is taken) and its
    content type."""
    group, id = unquote(group), unquote(id)
    if not group or not id:
        return Response("", 404)
    if has_control(group) or has_control(id):  # no address can name it (nor any store keep a NUL)
        return Response("Invalid poll address", 400, mimetype="text/plain")
    principal: str | None = None
    if auth is not None:  # `Authorization: Bearer`, checked before registering
        held = auth.check_poll(request.headers, group)
        if isinstance(held, tuple):
            return Response(held[1], held[0], mimetype="text/plain")
        principal = held
    if replace:
        hub.disconnect_id(group, id, principal)
    try:
        conn = hub.register(group, id, principal, render=render)
    except AtCapacity as e:
        return Response(e.message, at_capacity or e.status, mimetype="text/plain")
    except Refused as e:
        log.warning("Poll refused: %s status=%d group=%s id=%s", e.message, e.status, q(group), q(id))
        return Response(e.message, e.status, mimetype="text/plain")
    sock = client_socket(request.environ)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if sock is not None:
        hub.watch(conn, sock)
        # the watcher reads this socket until it closes: the connection ends with the stream, or
        # the server would read a next request from it too (gunicorn drops the header; gevent obeys)
        headers["Connection"] = "close"
    return Response(hub.stream(conn, keepalive_ms / 1000), 200, content_type=content_type, headers=headers,
                    direct_passthrough=True)


def health() -> Response:
    return Response("", 200)


def ready(service: Service) -> Response:
    try:
        service.store.ping()
        return Response("", 200)
    except Exception as e:  # 503, empty body, this ERROR line (docs/operations.md#health-and-readiness)
        log.error("Readiness check failed: storage database unavailable error=%s", e)
        return Response("", 503)


def operator_check(service: Service, req: Request) -> Response | None:
    """The inbound-auth gate of operator routes on the API port: the answer
    that refuses the caller, or None to serve. The reference leaves `/metrics` open because it
    has a port of its own; on the shared port, with auth on, it needs `Authorization: Bearer`
    with a valid token of role admin (401 without a valid token, 403 with another role)."""
    if service.auth is None:
        return None
    refused = service.auth.check_admin(req.headers, q(req.path))
    return None if refused is None else Response(refused[1], refused[0], mimetype="text/plain")


def metrics_route(service: Service, metrics: Metrics, req: Request) -> Response:
    from shared.metrics import CONTENT_TYPE

    refused = operator_check(service, req)
    if refused is not None:
        return refused
    return Response(metrics.exposition(), 200, content_type=CONTENT_TYPE)


def legacy(path: str = "") -> Response:
    log.warning("Legacy endpoint hit — this path is no longer supported. Please update to the latest SDK."
                " method=%s path=%s", q(request.method), q(request.path))
    return Response(LEGACY_BODY, 410, mimetype=JSON)


def create_app(service: Service, hub: PollHub | None, metrics: Metrics | None = None) -> Flask:
    """One flask app with every route (the local server; functions expose subsets). `metrics`
    adds `GET /metrics` (the functions; the local server serves it on its metrics port)."""
    app = Flask("resonate")
    # ids are the rest of a REST path and may hold `//` or end in `/`: no redirects to a cleaned path
    app.url_map.merge_slashes = False
    keepalive = service.cfg.transports.http_poll.keepalive_interval
    if service.cfg.server.cors.allow_origins:
        from shared.cors import install

        install(app, service.cfg.server.cors.allow_origins)
    if metrics is not None:
        app.add_url_rule("/metrics", "metrics", lambda: metrics_route(service, metrics, request), methods=["GET"])

    app.add_url_rule("/", "rpc", lambda: rpc(service, request), methods=["POST"])
    # operators' actions and queries (dead letters, retention): envelopes of kinds `POST /` never serves
    app.add_url_rule("/operator", "operator", lambda: rpc(service, request, OPERATOR), methods=["POST"])
    app.add_url_rule("/health", "health", health, methods=["GET"])
    app.add_url_rule("/ready", "ready", lambda: ready(service), methods=["GET"])
    if hub is not None:
        app.add_url_rule("/poll/<group>/<id>", "poll",
                         lambda group, id: poll(hub, keepalive, group, id, service.auth), methods=["GET"])
    if service.cfg.ui.enabled:  # the web console (docs/console.md)
        from shared.console import routes as console

        console.install(app, service)
    from shared.legacy import rest

    if service.cfg.legacy.enabled:  # the older server's REST API (docs/legacy-api.md)
        rest.install(app, service)
    else:
        rest.install_gone(app)

    @app.errorhandler(404)
    def _not_found(e: Any) -> Response:
        if service.cfg.legacy.enabled and rest.is_legacy_path(request.path):  # the REST API answers JSON
            return rest.fail(404, "Not found", 4040)
        return Response("", 404, mimetype="text/plain")

    @app.errorhandler(405)
    def _not_allowed(e: Any) -> Response:
        allow = ", ".join(getattr(e, "valid_methods", None) or [])
        headers = {"Allow": allow} if allow else None
        if service.cfg.legacy.enabled and rest.is_legacy_path(request.path):
            out = rest.fail(405, "Method not allowed", 4050)
            out.headers.update(headers or {})
            return out
        return Response("", 405, mimetype="text/plain", headers=headers)

    app.register_error_handler(Exception, _any_error)
    return app


def _any_error(e: Exception) -> Response:
    """Every other error of any route, never flask's HTML page: an HTTP error keeps its status,
    anything else is a 500 (logged with its traceback); `POST /` always answers an envelope."""
    status = e.code if isinstance(e, HTTPException) and e.code else 500
    if status >= 500:
        log.error("Unhandled error method=%s path=%s", q(request.method), q(request.path), exc_info=e)
    text = "Internal error" if status >= 500 else (e.name if isinstance(e, HTTPException) else "Bad request")
    if request.method == "POST" and request.path == "/":
        return Response(dumps(response("unknown", "0", status, text)), status, mimetype=JSON)
    return Response(text, status, mimetype="text/plain")
