"""Cloud Functions entry points (functions-framework): thin shells over the shared core.

Each function builds the core once per instance, from environment variables only, on its first
request (so importing this module stays cheap for cold starts), and hands every request to
the same flask routes the local server uses.

By default one function, `api`, serves everything at its own URL: `POST /`, the SSE streams
of `GET /poll/{group}/{id}`, `/health`, `/ready` and `/metrics`. `poll` is the same routes
under another name, for the optional load-balancer shape that sends `/poll/...` to a function
of its own. Either way an SSE stream holds one gunicorn gthread thread for its whole life, so
the function serving streams needs `THREADS` (functions-framework's thread pool) at least its
Cloud Run concurrency: functions-framework reads `THREADS` and `WORKERS` itself, identically
for every entry point, and nothing here overrides them.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, cast

import flask
import functions_framework

from shared.config import load
from shared.http import create_app
from shared.logs import q, setup_logging
from shared.protocol import dumps, response
from shared.runtime import Runtime
from shared.sweeper import run_window

if TYPE_CHECKING:
    from shared.delivery.pubsub_dispatch import DispatchHandler

# JSON lines with Cloud Logging's fields unless RESONATE_LOG_FORMAT says otherwise (config is
# loaded on the first request; logging must be ready before it)
setup_logging(os.environ.get("RESONATE_LEVEL", "info"), os.environ.get("RESONATE_LOG_FORMAT", "json"))


# deployed, pushes must not reach the VPC or the instance itself unless the environment says so
# ... and finished workflows are deleted 30 days (in ms) after they settled (docs/operations.md#retention)
CLOUD_DEFAULTS = {"transports.http_push.deny_private": True, "retention.settled_after": 2_592_000_000}


_built: dict[str, object] = {}
_build_lock = threading.Lock()  # gthread: many first requests arrive at once on a cold instance


def _runtime() -> Runtime:
    """The core of this instance: a connection pool and caches, nothing another instance needs
    (every fact lives in the database; an instance may be killed at any instant). Built once."""
    rt = _built.get("runtime")
    if rt is None:
        with _build_lock:
            rt = _built.get("runtime")
            if rt is None:
                # no always-on loops: the sweeper does them
                rt = Runtime(load(defaults=CLOUD_DEFAULTS), background=False)
                rt.delivery.start()
                _built["app"] = create_app(rt.service, rt.hub, metrics=rt.metrics)
                _built["runtime"] = rt
    return cast(Runtime, rt)


def _app() -> flask.Flask:
    _runtime()
    return cast(flask.Flask, _built["app"])


def _route(request: flask.Request) -> flask.Response:
    """Hand the request to the shared routes. They read the body from the framework's own
    (length-limited) stream, so the framework's after-request drain finds it consumed instead of
    waiting for bytes that never come (a 500 under servers that don't mark input terminated)."""
    try:
        app = _app()
    except Exception:  # the core could not be built (the database unreachable at a cold start)
        logging.getLogger("resonate").exception("Instance not ready method=%s path=%s", q(request.method),
                                                q(request.path))
        text = "Service unavailable: the server is not ready"
        if request.method == "POST" and request.path == "/":  # the SDKs read an envelope and retry a 503
            return flask.Response(dumps(response("unknown", "0", 503, text)), 503, mimetype="application/json")
        return flask.Response(text, 503, mimetype="text/plain")
    environ = {**request.environ, "wsgi.input": request.stream, "wsgi.input_terminated": True}
    with app.request_context(environ):
        resp = app.full_dispatch_request()
    _export()
    return resp


def _export() -> None:
    """The OTLP metrics and traces export (observability.otlp_endpoint), at the end of a request when its
    interval has passed: the instance has CPU now, and may have none (or be gone) after it
    answers, so a timer thread is not relied on here (docs/operations.md#metrics-export-otlp)."""
    rt = cast("Runtime | None", _built.get("runtime"))
    if rt is None:
        return
    if rt.exporter is not None:
        rt.exporter.maybe_export()
    if rt.tracer is not None:  # traces: the same cadence, or sooner once a batch of spans waits
        rt.tracer.maybe_export()


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    """The base URL: POST /, GET /poll/{group}/{id} (SSE), /health, /ready, GET /metrics (this
    instance's counters; admin token with auth on), and the older server's REST API
    (docs/legacy-api.md; its SSE port is not served here: a function has one URL)."""
    return _route(request)


@functions_framework.http
def poll(request: flask.Request) -> flask.Response:
    """The load-balancer shape only: GET /poll/{group}/{id}, the SSE stream of a worker (the load
    balancer sends nothing else here; every route is served the same as `api`'s)."""
    return _route(request)


@functions_framework.http
def sweeper(request: flask.Request) -> flask.Response:
    """Called by Cloud Scheduler every minute: timeouts, retries, leases, schedules, outbox,
    then retention."""
    rt = _runtime()
    body = run_window(rt.service, rt.delivery, rt.cfg.sweeper.window, poll_ms=rt.cfg.sweeper.poll_interval,
                      retain=lambda budget_s: rt.retention.run(budget_s))
    _export()
    return flask.jsonify(body)


@functions_framework.http
def dispatch(request: flask.Request) -> tuple[flask.Response, int]:
    """The Pub/Sub push subscription of `dispatch.topic` calls this with one message naming an
    outbox row: the caller's OIDC token is checked, the row pushed to its worker within the
    request, and the answer tells Pub/Sub to ack (2xx) or retry (500)
    (shared/delivery/pubsub_dispatch.py). Without a topic: the HTTP-push path on demand (claim
    the unsent push rows, push them, record the results before answering)."""
    rt = _runtime()
    if rt.cfg.dispatch.topic:
        status, body = _dispatcher(rt).handle(request.headers.get("Authorization"), request.get_data())
        _export()
        return flask.jsonify(body), status
    sent = rt.delivery.redrive()
    done = rt.delivery.flush(rt.cfg.transports.http_push.request_timeout / 1000 + 5)
    _export()
    return flask.jsonify({"sent": sent, "settled": done}), (200 if done else 503)


def _dispatcher(rt: Runtime) -> DispatchHandler:
    """The push handler of this instance, built on first use (google-auth is imported then)."""
    handler = _built.get("dispatcher")
    if handler is None:
        with _build_lock:
            handler = _built.get("dispatcher")
            if handler is None:
                from shared.delivery.pubsub_dispatch import DispatchHandler

                claims = rt.store.outbox_claims()
                if claims is None:  # config validation requires Postgres with dispatch.topic
                    raise RuntimeError("dispatch.topic needs a shared database (storage.type=postgres)")
                handler = _built["dispatcher"] = DispatchHandler(
                    claims, rt.store, rt.sender, rt.cfg.dispatch, rt.cfg.transports.http_push.request_timeout / 1000,
                    rt.metrics)
    return cast("DispatchHandler", handler)
