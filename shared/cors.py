"""CORS (docs/operations.md#cors): the headers the reference's CORS layer sends, on every route.

Off unless `server.cors.allow_origins` is non-empty (then `shared.http.create_app` installs it,
for the local server and the functions alike). `*` anywhere in the list: any origin, method and
request header, every response header exposed; otherwise exactly the listed origins with a fixed
set of methods and request headers. Every `OPTIONS` request on any path is answered here as a
preflight (200, empty body), before routing and auth: browsers send preflights without
credentials. No credentials, no `Max-Age`.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from flask import Flask, Response, request

log = logging.getLogger("resonate")  # its line belongs to the startup sequence (docs/operations.md#logs)

METHODS = "GET,POST,PUT,PATCH,DELETE,OPTIONS"
HEADERS = "origin,content-length,content-type,authorization"
VARY = "origin, access-control-request-method, access-control-request-headers"


def _usable(origin: str) -> bool:
    """An entry that can be a header value (the reference drops the others silently)."""
    return bool(origin) and all(" " < c < "\x7f" for c in origin)


def headers_for(origins: frozenset[str], anyone: bool, origin: str | None, requested: str | None,
                preflight: bool) -> dict[str, str]:
    """The CORS headers of one response (a function of the request only: easy to test)."""
    out = {"Vary": VARY}
    if anyone:
        out["Access-Control-Allow-Origin"] = "*"
    elif origin is not None and origin in origins:
        out["Access-Control-Allow-Origin"] = origin
    if preflight:
        out["Access-Control-Allow-Methods"] = "*" if anyone else METHODS
        # permissive: echo the requested headers rather than `*`, which browsers never let
        # cover `Authorization` (the header both SDKs send)
        out["Access-Control-Allow-Headers"] = (requested or "*") if anyone else HEADERS
    elif anyone:
        out["Access-Control-Expose-Headers"] = "*"
    return out


def install(app: Flask, allow_origins: Sequence[str]) -> None:
    """Answer preflights and add the headers to every response of `app`."""
    anyone = "*" in allow_origins
    origins = frozenset(o for o in allow_origins if _usable(o))
    log.info("CORS enabled origins=%s", json.dumps(list(allow_origins)))

    @app.before_request
    def _preflight() -> Response | None:
        if request.method != "OPTIONS":
            return None
        resp = Response(b"", 200)
        del resp.headers["Content-Type"]  # an empty answer, as the reference's layer sends
        return resp

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.update(headers_for(origins, anyone, request.headers.get("Origin"),
                                        request.headers.get("Access-Control-Request-Headers"),
                                        request.method == "OPTIONS"))
        return resp
