"""The console's routes on the API port (the local server and the `api` function alike).

`GET /ui/` and its files are public (they hold no data); every query and action is an envelope
on `POST /ui/api`, authenticated from `head.auth` like `POST /` and authorized from its kind's
entry (`shared.kinds`: the console's actions need role admin); `GET /ui/events` needs a valid
token in `Authorization: Bearer` when auth is on. The pages load only their own files (a strict
Content-Security-Policy) and keep the token in the tab's `sessionStorage`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, Request, Response, redirect, request, send_from_directory

from shared.console.live import Changes
from shared.kinds import CONSOLE

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from shared.service import Service

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                                " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _secured(resp: Response) -> Response:
    resp.headers.update(SECURITY_HEADERS)
    return resp


def page(asset: str = "index.html") -> Response:
    """A file of the console; any other path under /ui is the page itself (the page routes by its hash)."""
    if "/" in asset or "\\" in asset or asset.startswith(".") or not (STATIC / asset).is_file():
        asset = "index.html"
    resp = send_from_directory(STATIC, asset, max_age=0 if asset == "index.html" else 300)
    return _secured(resp)


def events(service: Service, changes: Changes, req: Request) -> Response:
    if service.auth is not None:
        from shared.auth import header_credential

        claims = service.auth.authenticate(header_credential(req.headers), "console.events")
        if isinstance(claims, tuple):
            return Response(claims[1], claims[0], mimetype="text/plain")
    interval = service.cfg.ui.live_interval / 1000
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(changes.stream(interval), 200, content_type="text/event-stream", headers=headers,
                    direct_passthrough=True)


def install(app: Flask, service: Service) -> None:
    """Add `/ui` (pages), `POST /ui/api` (envelopes of the console's kinds), `GET /ui/events`."""
    from shared.http import rpc

    changes = Changes()
    service.observe(changes.on_effects)
    service.on_close.append(changes.close)

    def root() -> BaseResponse:
        return redirect("/ui/", 308)

    app.add_url_rule("/ui", "ui_root", root, methods=["GET"])
    app.add_url_rule("/ui/", "ui", page, methods=["GET"])
    app.add_url_rule("/ui/<path:asset>", "ui_asset", page, methods=["GET"])
    app.add_url_rule("/ui/api", "ui_api", lambda: rpc(service, request, CONSOLE), methods=["POST"])
    app.add_url_rule("/ui/events", "ui_events", lambda: events(service, changes, request), methods=["GET"])
