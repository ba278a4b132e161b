"""Cloud Functions entry points (functions-framework): thin shells over the shared core.

Each function builds the core once per instance, from environment variables only, on its first
request (so importing this module stays cheap for cold starts), and hands every request to
the same flask routes the local server uses.
"""
from __future__ import annotations

import functools
import logging

import flask
import functions_framework

from shared.config import load
from shared.http import create_app
from shared.runtime import Runtime
from shared.sweeper import run_window

logging.basicConfig(level=logging.INFO)


@functools.cache
def _runtime() -> Runtime:
    rt = Runtime(load(), background=False)  # no always-on loops in functions: the sweeper does them
    rt.delivery.start()
    return rt


@functools.cache
def _app() -> flask.Flask:
    rt = _runtime()
    return create_app(rt.service, rt.hub)


def _route(request: flask.Request) -> flask.Response:
    app = _app()
    with app.request_context(request.environ):
        return app.full_dispatch_request()


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    """POST /, /health, /ready (and the legacy 410 paths)."""
    return _route(request)


@functions_framework.http
def poll(request: flask.Request) -> flask.Response:
    """GET /poll/{group}/{id}: the SSE stream of a worker."""
    return _route(request)


@functions_framework.http
def sweeper(request: flask.Request) -> flask.Response:
    """Called by Cloud Scheduler every minute: timeouts, retries, leases, schedules, outbox."""
    rt = _runtime()
    return flask.jsonify(run_window(rt.service, rt.delivery, rt.cfg.sweeper.window))
