"""The official push-based Python worker (resonate-sdk-aws 0.8.0, unmodified) behind a local
HTTP endpoint that plays an AWS Lambda Function URL fronted the way Cloud Run fronts a service
deployed with --no-allow-unauthenticated.

Each POST:

1. must carry `Authorization: Bearer <Google ID token>`: checked with
   `google.oauth2.id_token.verify_token` against `--certs-url` (the fake Google issuer's
   certificates), audience = the URL it was called at, issuer Google's, `email` = `--email`
   (verified); a missing or invalid token answers 401, a wrong caller 403 — the handler is
   never called;
2. the first `--fail-first` authenticated deliveries answer 500 without calling the handler
   (a cold start that crashed), so Pub/Sub has to redeliver them;
3. otherwise becomes the Function URL event (HTTP payload format 2.0: `version`, `rawPath`,
   lower-case `headers` with `host` and `x-forwarded-proto`, `requestContext.http.method/path`,
   `requestContext.domainName`, `body` as text or base64 with `isBase64Encoded`), is passed to
   `resonate_aws.Resonate().handler()` and the handler's `{statusCode, headers, body}` is sent
   back as the HTTP response.

The worker is given no server URL (no `url=`, no RESONATE_URL): it calls back the `serverUrl`
each execute message carries. Every POST is appended as one JSON line to `--events`; the
workflow steps append side-effect lines to `--data`/steps.log.

    python push_worker.py --port P --path /worker --certs-url URL --email E --fail-first 2 \
        --events events.jsonl --data DIR
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import google.auth.transport.requests
from google.oauth2 import id_token
from resonate_aws import Resonate

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")

DATA = Path(".")
NAME = "aws-worker"


def append_line(file: str, line: str) -> None:
    fd = os.open(DATA / file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


# ── The durable functions (registered on the serverless Resonate) ─────────────────────────

resonate = Resonate(pid=f"{NAME}-{uuid.uuid4().hex[:8]}", ttl=timedelta(seconds=60))


@resonate.register
async def double(ctx, x):
    append_line("steps.log", f"double {ctx.info.id} {x} {os.getpid()}")
    return x * 2


@resonate.register
async def square(ctx, x):
    append_line("steps.log", f"square {ctx.info.id} {x} {os.getpid()}")
    return x * x


@resonate.register
async def add_one(ctx, x):
    append_line("steps.log", f"add_one {ctx.info.id} {x} {os.getpid()}")
    return x + 1


@resonate.register
async def pipeline(ctx, x):
    """Three steps: a local one, a remote one (a child task the server pushes back to this same
    function URL, so the workflow suspends and is pushed again when it settles), a local one."""
    a = await ctx.run(double, x)
    b = await ctx.rpc(square, a)
    c = await ctx.run(add_one, b)
    return {"x": x, "double": a, "square": b, "result": c, "by": NAME}


@resonate.register
async def napper(ctx, x):
    """A durable sleep on a push worker: the timer promise's task is pushed here too (and
    dropped by the shim); the server's deadline settles it and the workflow is pushed again."""
    a = await ctx.run(double, x)
    await ctx.sleep(timedelta(milliseconds=1500))
    return {"x": x, "double": a, "slept": True, "by": NAME}


handler = resonate.handler()


# ── The Function-URL front end ────────────────────────────────────────────────────────────

class Front:
    def __init__(self, certs_url: str, email: str, fail_first: int, events: Path) -> None:
        self.certs_url, self.email, self.fail_first, self.events = certs_url, email, fail_first, events
        self.lock = threading.Lock()
        self.authenticated = 0
        self.n = 0
        self.session = google.auth.transport.requests.Request()

    def record(self, ev: dict) -> None:
        line = json.dumps(ev) + "\n"
        with self.lock:
            with open(self.events, "a") as fh:
                fh.write(line)

    def check(self, header: str, called_at: str) -> tuple[int, dict | None, str]:
        if not header.startswith("Bearer "):
            return 401, None, "missing bearer token"
        try:
            claims = id_token.verify_token(header[len("Bearer "):], self.session, audience=called_at,
                                           certs_url=self.certs_url)
        except Exception as e:  # ValueError, malformed tokens, transport errors: not authenticated
            return 401, None, f"invalid token: {type(e).__name__}: {e}"
        if claims.get("iss") not in GOOGLE_ISSUERS:
            return 401, None, f"issuer {claims.get('iss')!r}"
        if claims.get("email") != self.email or claims.get("email_verified") is not True:
            return 403, claims, f"caller {claims.get('email')!r} not allowed"
        return 200, claims, "ok"


def event_for(method: str, path: str, headers: dict[str, str], body: bytes) -> dict:
    """The Lambda Function URL event (payload format 2.0) for one HTTP request."""
    raw_path, _, query = path.partition("?")
    ctype = headers.get("content-type", "")
    texty = ctype.startswith(("application/json", "text/")) or not ctype
    try:
        text, b64 = (body.decode("utf-8"), False) if texty else (base64.b64encode(body).decode(), True)
    except UnicodeDecodeError:
        text, b64 = base64.b64encode(body).decode(), True
    host = headers.get("host", "")
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": {**headers, "x-forwarded-proto": "http", "x-forwarded-port": host.rpartition(":")[2]},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.partition(".")[0],
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": headers.get("user-agent", "")},
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": text,
        "isBase64Encoded": b64,
    }


class Handler(BaseHTTPRequestHandler):
    front: Front
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *a: Any) -> None:
        logging.getLogger("front").debug(fmt, *a)

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.reply(200 if self.path == "/health" else 404, b"ok")

    def do_POST(self) -> None:
        f = self.front
        t0 = time.monotonic()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        called_at = f"http://{headers.get('host', '')}{self.path}"
        with f.lock:
            f.n += 1
            n = f.n
        ev: dict[str, Any] = {"n": n, "path": self.path, "called_at": called_at}
        try:
            msg = json.loads(body)
            ev["kind"] = msg.get("kind")
            ev["task"] = (msg.get("data") or {}).get("task")
            ev["serverUrl"] = (msg.get("head") or {}).get("serverUrl")
        except (ValueError, AttributeError):
            ev["kind"] = None
        status, claims, why = f.check(headers.get("authorization", ""), called_at)
        ev["auth"], ev["claims"] = why, claims
        if status != 200:  # refused in front of the function, as Cloud Run's IAM check does
            ev["status"] = status
            f.record(ev)
            return self.reply(status, json.dumps({"error": why}).encode(), {"Content-Type": "application/json"})
        with f.lock:
            f.authenticated += 1
            fail = f.authenticated <= f.fail_first
        if fail:  # the instance crashed before the handler ran: nothing acquired, Pub/Sub retries
            ev["status"], ev["failed_on_purpose"] = 500, True
            f.record(ev)
            return self.reply(500, b'{"error": "cold start failed (on purpose)"}', {"Content-Type": "application/json"})
        out = handler(event_for("POST", self.path, headers, body), None)
        ev["status"] = int(out.get("statusCode", 200))
        ev["handler"] = out.get("body")
        ev["ms"] = int((time.monotonic() - t0) * 1000)
        f.record(ev)
        payload = out.get("body") or ""
        raw = base64.b64decode(payload) if out.get("isBase64Encoded") else payload.encode()
        self.reply(ev["status"], raw, out.get("headers") or {})


def main() -> int:
    global DATA
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--certs-url", required=True)
    ap.add_argument("--email", required=True)
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--events", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    DATA = Path(a.data)
    DATA.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"%(asctime)s.%(msecs)03d [{NAME}] %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("resonate").setLevel(logging.DEBUG)
    logging.getLogger("resonate_aws").setLevel(logging.DEBUG)
    if os.environ.get("RESONATE_URL"):
        raise SystemExit("RESONATE_URL is set: the worker must call back the serverUrl it is sent")
    front = Front(a.certs_url, a.email, a.fail_first, Path(a.events))
    httpd = ThreadingHTTPServer(("127.0.0.1", a.port), type("H", (Handler,), {"front": front}))
    httpd.daemon_threads = True
    print(f"LISTENING http://127.0.0.1:{a.port}", flush=True)
    httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
