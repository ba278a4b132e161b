"""The cloud simulation's front end: what Google puts in front of the function instances.

`python -m local.router --port N [--load-balancer] [--private AUDIENCE] [--service sweeper=M ...]`
(started by `local.cloudsim.CloudSim`, one process). By default the public port is what Cloud
Run's own front end is for the `api` function's URL: every path (`POST /`, `GET /poll/...`,
`/health`, ...) to an `api` instance. With `--load-balancer` it is the optional external load
balancer instead: `GET /poll/...` to a `poll` instance, everything else to an `api` instance.
Each `--service role=port` is that function's own URL (every path to an instance of the role).
Round robin over the live ones. The supervisor writes the table of ready instances to stdin as
JSON lines, `{"api": [[port, pid], ...], "poll": [...], ...}`; end of stdin (the supervisor died
or stopped) ends the router.

Like Cloud Run's front end it streams responses as they arrive (SSE), keeps pooled upstream
connections, tries the next instance when one refuses a connection (and, when none is up,
holds the request a while as Cloud Run does during a cold start), answers 502 when an instance
dies in the middle of a request, and ends an SSE stream whose instance died (the client
reconnects).

`--private AUDIENCE` plays Cloud Run's invoker check of a private service (`public=false`) on
the public port: a request needs a Google-style identity token, `Bearer <JWT>` in
`X-Serverless-Authorization` (checked first when present) or else in `Authorization`, whose
`aud` is AUDIENCE and whose `exp` is ahead (claims only: the simulation has no Google keys);
otherwise 403 before any instance sees it. The checked header goes on to the instance with the
token's signature removed, as Cloud Run forwards it; the other header goes on untouched.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse
import base64
import http.client
import json
import logging
import resource
import select
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
from gevent.fileobject import FileObjectPosix
from gevent.pywsgi import WSGIServer

from local.nodelay import NoDelayServer, OneSendHandler
from shared.logs import q

log = logging.getLogger("resonate.router")
HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
       "trailer", "trailers", "transfer-encoding", "upgrade", "expect"}
MAX_BODY = 32 * 1024 * 1024  # Cloud Run's request size limit
IDLE_S = 1.0  # pooled connections older than this are dropped (gunicorn closes idle ones after 2 s)
CONNECT_S = 2.0
REQUEST_S = 300.0  # Cloud Run's default request timeout
WAIT_S = 10.0  # how long a request waits for an instance when none is up


class Upstreams:
    """The live instances per role and a round-robin position; updated from stdin."""

    def __init__(self) -> None:
        self.table: dict[str, list[tuple[int, int]]] = {"api": [], "poll": []}
        self.next: dict[str, int] = {}
        self.changed = gevent.event.Event()

    def update(self, table: dict[str, Any]) -> None:
        self.table = {role: [(int(p), int(pid)) for p, pid in rows] for role, rows in table.items()}
        self.changed.set()
        self.changed = gevent.event.Event()

    def rotation(self, role: str) -> list[tuple[int, int]]:
        rows = self.table.get(role, [])
        if not rows:
            return []
        i = self.next.get(role, 0) % len(rows)
        self.next[role] = i + 1
        return rows[i:] + rows[:i]


class Pool:
    """Idle keep-alive connections per upstream port."""

    def __init__(self) -> None:
        self.idle: dict[int, list[tuple[http.client.HTTPConnection, float]]] = {}

    def get(self, port: int) -> tuple[http.client.HTTPConnection, bool]:
        """A usable idle connection (reused=True) or a new connected one (raises OSError if refused)."""
        stack = self.idle.get(port, [])
        now = time.monotonic()
        while stack:
            conn, since = stack.pop()
            sock = conn.sock
            if sock is not None and now - since < IDLE_S:
                try:
                    readable = select.select([sock], [], [], 0)[0]
                except (OSError, ValueError):
                    readable = [sock]
                if not readable:  # readable while idle means closed (or garbage): drop it
                    return conn, True
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CONNECT_S)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, False

    def put(self, port: int, conn: http.client.HTTPConnection) -> None:
        self.idle.setdefault(port, []).append((conn, time.monotonic()))

    def prune(self, live: set[int]) -> None:
        """Close the idle connections of instances that left the table."""
        for port in [p for p in self.idle if p not in live]:
            for conn, _ in self.idle.pop(port):
                conn.close()


def _forward_headers(environ: dict[str, Any], body_len: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
            if name.lower() not in HOP and name.lower() != "content-length":
                headers[name] = value
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    if body_len or environ["REQUEST_METHOD"] in ("POST", "PUT", "PATCH"):
        headers["Content-Length"] = str(body_len)
    peer = environ.get("REMOTE_ADDR", "")
    headers["X-Forwarded-For"] = (headers["X-Forwarded-For"] + ", " + peer) if "X-Forwarded-For" in headers else peer
    headers["X-Forwarded-Proto"] = "http"
    return headers


def _claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, unverified (None when it is not one)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


def invoker_check(headers: dict[str, str], audience: str) -> str | None:
    """Cloud Run's check of a private service, on the forwarded headers (changed in place): None
    when the caller presented an identity token for `audience` (its header now carries the token
    without its signature), else why not."""
    name = "X-Serverless-Authorization" if "X-Serverless-Authorization" in headers else "Authorization"
    value = headers.get(name, "")
    if value[:7].lower() != "bearer ":
        return f"no identity token in {name}"
    token = value[7:].strip()
    claims = _claims(token)
    if claims is None:
        return f"{name} holds no JWT"
    aud = claims.get("aud")
    if aud != audience and not (isinstance(aud, list) and audience in aud):
        return f"{name}: audience {aud!r} is not {audience!r}"
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp < time.time():
        return f"{name}: token expired"
    head, body, _signature = token.split(".")
    headers[name] = f"Bearer {head}.{body}."  # signature removed
    return None


def _error(start_response: Callable, status: int, message: str, path: str, body: bytes) -> list[bytes]:
    reason = {403: "Forbidden", 413: "Payload Too Large", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
    if path == "/" and status != 403:  # an RPC client expects an envelope: echo what it sent, as far as it parses
        try:
            req = json.loads(body)
            head = req.get("head") or {}
            kind = req.get("kind") if isinstance(req.get("kind"), str) else "error"
            out_head = {k: head[k] for k in ("corrId", "version") if k in head}
        except Exception:
            kind, out_head = "error", {}
        data = json.dumps({"kind": kind, "head": {**out_head, "status": status}, "data": message}).encode()
        ctype = "application/json"
    else:
        data, ctype = message.encode(), "text/plain"
    start_response(f"{status} {reason}", [("Content-Type", ctype), ("Content-Length", str(len(data)))])
    return [data]


def _stream(resp: http.client.HTTPResponse, conn: http.client.HTTPConnection) -> Iterator[bytes]:
    """Each chunk as it arrives; the upstream dying ends the stream (the client reconnects)."""
    try:
        while True:
            try:
                chunk = resp.read1(65536)
            except (OSError, http.client.HTTPException):
                return
            if not chunk:
                return
            yield chunk
    finally:
        conn.close()


def make_app(upstreams: Upstreams, pool: Pool, service: str | None = None, private: str | None = None
             ) -> Callable:
    """One function's URL (`service`: every path to that role), or the load balancer (service
    None: `GET /poll/...` to poll, the rest to api). `private`: the invoker check's audience."""

    def app(environ: dict[str, Any], start_response: Callable) -> Any:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        role = service or ("poll" if method == "GET" and path.startswith("/poll/") else "api")
        target = environ["RAW_URI"]
        body = environ["wsgi.input"].read(MAX_BODY + 1) if method not in ("GET", "HEAD") else b""
        if len(body) > MAX_BODY:
            return _error(start_response, 413, "request body too large", path, b"")
        headers = _forward_headers(environ, len(body))
        if private is not None:
            why = invoker_check(headers, private)
            if why is not None:
                log.info("invoker check refused %s %s: %s", q(method), q(path), why)
                return _error(start_response, 403, "Forbidden: the invoker check refused the request", path, body)
        deadline = time.monotonic() + WAIT_S
        while True:
            changed = upstreams.changed
            for port, pid in upstreams.rotation(role):
                try:
                    conn, _reused = pool.get(port)
                except OSError:
                    continue  # refused or unreachable: a dead instance, try the next one
                sock = conn.sock  # the response keeps using it even when http.client lets go of it
                try:
                    conn.timeout = REQUEST_S
                    sock.settimeout(REQUEST_S)
                    conn.request(method, target, body=body, headers=headers)
                except OSError:
                    conn.close()  # nothing reached a live process: safe to try another instance
                    continue
                try:
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    log.warning("%s instance pid %d died during %s %s: %r", role, pid, q(method), q(path), e)
                    return _error(start_response, 502, f"upstream {role} instance failed: {e!r}", path, body)
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP]
                out.append(("X-Sim-Instance", f"{role}/{pid}"))
                status = f"{resp.status} {resp.reason}"
                ctype = resp.getheader("Content-Type") or ""
                if ctype.startswith("text/event-stream") or resp.getheader("Content-Length") is None:
                    sock.settimeout(None)  # SSE: idle between events for as long as it likes
                    start_response(status, out)
                    return _stream(resp, conn)
                try:
                    data = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    return _error(start_response, 502, f"upstream {role} instance failed: {e!r}", path, body)
                if resp.will_close:
                    conn.close()
                else:
                    pool.put(port, conn)
                start_response(status, out)
                return [data]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _error(start_response, 503, f"no {role} instance available", path, body)
            changed.wait(min(remaining, 0.1))  # like Cloud Run holding a request during a cold start

    return app


class Handler(OneSendHandler):
    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        env["RAW_URI"] = self.path  # PATH_INFO is unquoted: forward the path exactly as it came
        return env


class Server(NoDelayServer):
    handler_class = Handler


def _read_table(upstreams: Upstreams, pool: Pool, servers: list[WSGIServer]) -> None:
    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    while True:
        line = stdin.readline()
        if not line:
            break
        try:
            upstreams.update(json.loads(line))
            pool.prune({port for rows in upstreams.table.values() for port, _ in rows})
        except (ValueError, TypeError) as e:
            log.error("bad table line %r: %s", line, e)
    log.info("supervisor gone: stopping")
    for server in servers[1:]:
        server.stop(timeout=1)
    servers[0].stop(timeout=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m local.router")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--load-balancer", action="store_true",
                   help="the public port splits paths: GET /poll/... to poll, the rest to api (default: all to api)")
    p.add_argument("--private", default=None, metavar="AUDIENCE",
                   help="Cloud Run's invoker check on the public port: an identity token for AUDIENCE")
    p.add_argument("--service", action="append", default=[], metavar="ROLE=PORT", help="a function's own URL")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ValueError, OSError):
        pass
    upstreams, pool = Upstreams(), Pool()
    public = make_app(upstreams, pool, None if args.load_balancer else "api", args.private)
    servers = [Server((args.bind, args.port), public, log=None, error_log=log)]
    for spec in args.service:
        role, port = spec.split("=", 1)
        servers.append(Server((args.bind, int(port)), make_app(upstreams, pool, role), log=None, error_log=log))
    for server in servers:
        server.init_socket()  # bind now: a port in use fails here, before anything is served
    for server in servers[1:]:
        server.start()
    gevent.spawn(_read_table, upstreams, pool, servers)
    servers[0].serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
