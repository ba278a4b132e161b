"""One process: every route on one gevent WSGI listener, plus the background loops (and, beside
them on the same hub, the REST-era SSE listener and the gRPC listener, `shared/grpc/server.py`).

gevent gives each connection a greenlet, so thousands of idle SSE streams cost kilobytes each
while requests keep flowing; SQLite commits run on a native thread pool so an fsync never
stalls the event loop.

Startup and shutdown (docs/operations.md#logs, docs/operations.md#shutdown): SIGINT/SIGTERM
closes the listener, ends SSE streams, lets requests in progress finish (a write is answered
only after its commit, so every acknowledged write is durable and an unanswered one may or may
not be), drains deliveries, stops the loops and closes the store, all within
`server.shutdown_timeout`.
"""
from __future__ import annotations

import logging
import os
import re
import resource
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
from gevent.pywsgi import LoggingLogAdapter

from local import metrics_listener
from local.nodelay import NoDelayServer, OneSendHandler
from shared.auth import AuthError
from shared.auth import log_startup as log_auth
from shared.config import Config
from shared.http import create_app, fast_rpc
from shared.logs import q, setup_logging
from shared.runtime import Runtime

if TYPE_CHECKING:
    from shared.grpc.server import GrpcListener

log = logging.getLogger("resonate")
access = logging.getLogger("resonate.http")


class Handler(OneSendHandler):
    """pywsgi's connection handler, tracked so shutdown can tell idle keep-alive connections
    (closed at once) from requests in progress (awaited)."""

    idle = True  # waiting for the next request line: nothing is lost by hanging up

    def handle(self) -> None:
        self.greenlet = gevent.getcurrent()
        conns = self.server.connections
        conns.add(self)
        try:
            super().handle()
        finally:
            conns.discard(self)

    def read_requestline(self) -> str:
        self.idle = True
        if self.server.draining:  # no new request on a kept-alive connection once shutdown began
            return ""
        line = super().read_requestline()
        self.idle = not line
        return line

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Any:
        if self.server.draining and not any(k.lower() == "connection" for k, _ in headers):
            headers = [*headers, ("Connection", "close")]  # the client must not reuse it
        return super().start_response(status, headers, exc_info)

    def hang_up(self) -> None:
        sock = self.__dict__.get("socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the greenlet blocked reading it
            except OSError:
                pass

    def log_request(self) -> None:  # the per-request access line, at DEBUG
        if access.isEnabledFor(logging.DEBUG):
            method, _, rest = (self.requestline or "").partition(" ")
            uri = rest.rsplit(" ", 1)[0]
            latency = ((self.time_finish or time.time()) - self.time_start) * 1000
            access.debug("finished processing request method=%s uri=%s status=%s latency_ms=%.2f",
                         q(method), q(uri), (self._orig_status or self.status or "000").split()[0], latency)


class Server(NoDelayServer):
    handler_class = Handler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[Handler] = set()
        self.draining = False

    def drain(self, deadline: float, close_streams: Any = None) -> int:
        """Stop accepting, hang up idle connections, wait for requests in progress until
        `deadline` (monotonic). Returns how many connections were still busy then."""
        self.draining = True
        self.close()
        while True:
            if close_streams is not None:
                close_streams()  # also a stream registered by a request already past its request line
            for h in list(self.connections):
                if h.idle:
                    h.hang_up()
            if not self.connections or time.monotonic() >= deadline:
                return len(self.connections)
            gevent.sleep(0.02)

    def kill_all(self) -> None:
        """End the requests still in progress: nothing they had not committed is acknowledged."""
        gevent.killall([h.greenlet for h in list(self.connections)], block=False)
        gevent.sleep(0.05)
        for h in list(self.connections):  # one that swallowed the kill: its socket goes anyway
            h.hang_up()


def _redact(url: str) -> str:
    """The database URL for logs, without its password."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def raise_fd_limit() -> None:
    """Each SSE stream holds a socket: lift the soft descriptor limit (often 1024) to the hard one."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ValueError, OSError) as e:
        log.warning("could not raise the open-files limit: %s", e)


def _log_config(cfg: Config) -> None:
    """The first startup lines: starting, operational config, debug mode, auth (our keys: a timer
    loop that sleeps until the next deadline, a re-drive interval instead of a message poll
    interval). Loads the auth key: AuthError if unusable."""
    log.info("Resonate Server starting port=%d storage=%s profile=%s", cfg.server.port, cfg.storage.type, cfg.profile)
    log.info("Operational config timeout_max_sleep_ms=%d message_redrive_interval_ms=%d message_batch_size=%d "
             "task_retry_timeout_ms=%d task_lease_timeout_ms=%d shutdown_timeout_ms=%d", cfg.timeouts.max_sleep,
             cfg.messages.redrive_interval, cfg.messages.batch_size, cfg.tasks.retry_timeout,
             cfg.tasks.lease_timeout, cfg.server.shutdown_timeout)
    if cfg.debug:
        log.info("Debug mode enabled — debug operations allowed, background loops paused during a debug session")
    log_auth(cfg)


def _log_storage(cfg: Config, opened: bool) -> None:
    """The storage startup lines, before (`opened` False) and after the store opened."""
    kind, pg = cfg.storage.type, cfg.storage.postgres
    if kind == "sqlite":
        if opened:
            log.info("SQLite initialized")
        else:
            log.info("Using SQLite backend path=%s", q(cfg.storage.sqlite.path))
    elif kind == "postgres" and opened:
        log.info("PostgreSQL initialized")
        log.info("Cluster delivery enabled — outbox rows claimed in the database, poll:// announced with NOTIFY")
    elif kind == "postgres":
        where = (f"instance={pg.instance} ip_type={pg.ip_type} iam_auth={str(pg.iam_auth).lower()}" if pg.instance
                 else f"url={q(_redact(pg.url or ''))}")
        log.info("Using PostgreSQL backend %s", where)
        log.info("PostgreSQL pool configured pool_size=%d", pg.pool_size)
    elif kind == "mysql" and opened:
        log.info("MySQL initialized")
        log.info("Cluster delivery enabled — outbox rows claimed in the database, poll:// announced in outbox_notes")
    elif kind == "mysql":
        log.info("Using MySQL backend url=%s", q(_redact(cfg.storage.mysql.url or "")))
        log.info("MySQL pool configured pool_size=%d", cfg.storage.mysql.pool_size)
    elif not opened:
        log.info("Using %s backend%s", "in-memory" if kind == "memory" else kind,
                 " — data is lost at exit" if kind == "memory" else "")


def _log_transports(cfg: Config) -> None:
    """The transport startup lines (push and SSE poll are the transports this server has)."""
    t = cfg.transports
    log.info("Transport config http_push_connect_timeout_ms=%d http_push_request_timeout_ms=%d "
             "http_push_concurrency=%d http_poll_max_connections=%d http_poll_max_connections_per_token=%d "
             "http_poll_buffer_size=%d http_poll_keepalive_ms=%d", t.http_push.connect_timeout,
             t.http_push.request_timeout, t.http_push.concurrency, t.http_poll.max_connections,
             t.http_poll.max_connections_per_token, t.http_poll.buffer_size, t.http_poll.keepalive_interval)
    if not t.http_push.enabled:
        log.info("HTTP push transport disabled")
    elif t.http_push.auth is not None:
        log.info("HTTP push outbound auth enabled mode=%s", t.http_push.auth.mode.capitalize())
    if not t.http_poll.enabled:
        log.info("HTTP poll transport disabled")


def _storage_summary(cfg: Config) -> str:
    """Where the data lives, as the ready banner's fields."""
    kind, pg = cfg.storage.type, cfg.storage.postgres
    if kind == "sqlite":
        return f"storage=sqlite path={q(os.path.abspath(cfg.storage.sqlite.path))}"
    if kind == "postgres":
        if pg.instance:
            return f"storage=postgres instance={pg.instance}"
        return f"storage=postgres url={q(_redact(pg.url or ''))}"
    if kind == "memory":
        return "storage=memory (data is lost at exit)"
    return f"storage={kind}"


def _log_ready(cfg: Config) -> None:
    """The banner after the listen line: the URL, the storage, and how to point each SDK at it
    (the versions the suite tests; on resonate-sdk 0.8.1 the import is resonate.resonate)."""
    url = cfg.server_url
    log.info("Ready url=%s %s", url, _storage_summary(cfg))
    log.info('Python SDK (resonate-sdk 0.8.1): from resonate.resonate import Resonate; resonate = Resonate(url="%s")',
             url)
    log.info('TypeScript SDK (@resonatehq/sdk 0.11.5): const resonate = new Resonate({ url: "%s" })', url)
    if cfg.ui.enabled:
        log.info("Web console: %s/ui/", url)


def _fatal(message: str) -> int:
    """`Fatal: <message>` on stderr, status 1."""
    print(f"Fatal: {message}", file=sys.stderr, flush=True)
    return 1


def _force_exit(code: int) -> None:
    """Leave now: greenlets or threads that did not stop must not hold the process (an
    unfinished SQLite transaction is simply not in the database after restart)."""
    logging.shutdown()
    sys.stdout.flush()
    os._exit(code)


def shutdown(server: Server, rt: Runtime, timeout_s: float, grpc: GrpcListener | None = None) -> bool:
    """Graceful shutdown (docs/operations.md#shutdown) within `timeout_s`: requests (HTTP and gRPC
    calls alike) get the budget but a quarter (at most 2 s), kept for deliveries, loops and the
    store. False when something is still running at the end: the caller must leave without
    waiting for it."""
    start = time.monotonic()
    deadline = start + timeout_s
    reserve = min(2.0, timeout_s / 4)
    close_streams = rt.close_streams
    grpc_stopped = grpc.stop(max(0.0, deadline - reserve - time.monotonic())) if grpc is not None else None
    busy = server.drain(deadline - reserve, close_streams)
    if busy:
        log.warning("Requests still in progress at the shutdown timeout, closing them count=%d", busy)
        server.kill_all()
    if grpc_stopped is not None:  # calls still running at the grace's end were cancelled by grpc
        if not grpc_stopped.wait(max(0.0, deadline - reserve - time.monotonic()) + 0.5):
            log.warning("gRPC server did not stop within the shutdown timeout")
        log.info("gRPC server stopped")
    log.info("HTTP server stopped, draining background tasks...")
    flushed = rt.delivery.flush(max(0.0, deadline - time.monotonic()))
    if not flushed:
        log.warning("Deliveries still in flight at the shutdown timeout (they stay in the outbox and are re-sent)")
    log.info("Timeout processing loop shutting down")
    log.info("Message processing loop shutting down")
    stopper = gevent.spawn(rt.stop, max(0.1, deadline - time.monotonic()))
    stopper.join(timeout=max(0.0, deadline - time.monotonic()) + 0.05)
    if not stopper.ready():
        log.warning("Background tasks did not finish within shutdown timeout, forcing exit")
    return stopper.ready() and flushed


def _start_grpc(cfg: Config, rt: Runtime) -> GrpcListener | str:
    """The gRPC listener, or why it cannot start (the fatal message)."""
    from shared.grpc.server import start
    from shared.grpc.stubs import StubsMissing

    try:
        return start(rt.service, cfg.server.bind, cfg.server.grpc_port, cfg.server.max_body)
    except StubsMissing as e:
        return f"Cannot start the gRPC server (server.grpc_port={cfg.server.grpc_port}): {e}"
    except OSError as e:
        return f"Failed to bind to {cfg.server.bind}:{cfg.server.grpc_port} (server.grpc_port): {e}"


def serve(cfg: Config) -> int:
    setup_logging(cfg.level, cfg.log_format)
    raise_fd_limit()
    try:
        _log_config(cfg)
    except AuthError as e:
        return _fatal(str(e))
    _log_storage(cfg, opened=False)
    hub = gevent.get_hub()
    try:
        rt = Runtime(cfg, offload=hub.threadpool.apply, metrics=cfg.observability.metrics_port != 0)
    except Exception as e:
        what = {"sqlite": "Failed to open SQLite database", "postgres": "Failed to connect to Postgres",
                "mysql": "Failed to connect to MySQL"}
        return _fatal(f"{what.get(cfg.storage.type, 'Failed to open storage')}: {e}")
    _log_storage(cfg, opened=True)
    _log_transports(cfg)
    app = fast_rpc(create_app(rt.service, rt.hub), rt.service)
    bind = cfg.server.bind.strip("[]")
    # the HTTP layer's own refusals (a malformed request line or header, bad framing: an empty 400)
    # are the client's doing: WARN, not ERROR (its messages show client bytes as Python literals)
    server = Server((bind, cfg.server.port), app, log=None, error_log=LoggingLogAdapter(log, logging.WARNING))
    try:
        server.start()
    except OSError as e:
        rt.store.close()
        return _fatal(f"Failed to bind to {cfg.server.bind}:{cfg.server.port}: {e}")
    legacy_sse = None
    if cfg.legacy.enabled and cfg.legacy.poll_port and rt.hub is not None:  # the REST-era SDKs' SSE port
        from shared.legacy import sse

        legacy_sse = Server((bind, cfg.legacy.poll_port), sse.create_app(rt.service, rt.hub), log=None,
                            error_log=LoggingLogAdapter(log, logging.WARNING))
        try:
            legacy_sse.start()
        except OSError as e:
            server.stop(timeout=0)
            rt.store.close()
            return _fatal(f"Failed to bind to {cfg.server.bind}:{cfg.legacy.poll_port} (legacy.poll_port): {e}")
    grpc: GrpcListener | None = None
    if cfg.server.grpc_port:  # the older server's gRPC API (docs/grpc.md)
        started = _start_grpc(cfg, rt)
        if isinstance(started, str):
            server.stop(timeout=0)
            if legacy_sse is not None:
                legacy_sse.stop(timeout=0)
            rt.store.close()
            return _fatal(started)
        grpc = started
    received = gevent.event.AsyncResult()

    def on_signal(name: str) -> None:
        if received.ready():  # a second Ctrl-C: the operator does not want to wait
            log.warning("Received %s again, exiting now", name)
            _force_exit(1)
        received.set(name)

    gevent.signal_handler(signal.SIGINT, on_signal, "SIGINT")
    gevent.signal_handler(signal.SIGTERM, on_signal, "SIGTERM")
    rt.start()
    scrape = (metrics_listener.start(rt.metrics, cfg.observability.metrics_port, cfg.server.bind)
              if rt.metrics is not None and cfg.observability.metrics_port else None)
    log.info("Server listening bind=%s port=%d server_url=%s", cfg.server.bind, cfg.server.port, cfg.server_url)
    if legacy_sse is not None:
        log.info("Legacy SSE listener (REST-era SDKs) listening bind=%s port=%d", cfg.server.bind, cfg.legacy.poll_port)
    if grpc is not None:
        log.info("gRPC server listening bind=%s port=%d", cfg.server.bind, grpc.port)
    _log_ready(cfg)
    name = received.get()
    log.info("Received %s, initiating graceful shutdown...", name)
    if scrape is not None:
        scrape.close()  # stop accepting scrapes; one in progress finishes on its own greenlet
    if legacy_sse is not None:
        legacy_sse.close()  # no new streams; the open ones end with the hub's close_all
    finished = shutdown(server, rt, cfg.server.shutdown_timeout / 1000, grpc)
    log.info("Resonate Server stopped")
    if not finished:  # e.g. a push still waiting for its worker: the interpreter's exit would join it
        _force_exit(0)  # the exit status stays 0
    return 0
