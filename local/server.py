"""One process: every route on one gevent WSGI listener, plus the background loops.

gevent gives each connection a greenlet, so thousands of idle SSE streams cost kilobytes each
while requests keep flowing; SQLite commits run on a native thread pool so an fsync never
stalls the event loop.
"""
from __future__ import annotations

import logging
import re
import resource
import signal

import gevent

from local.nodelay import NoDelayServer
from shared.config import Config
from shared.http import create_app
from shared.runtime import Runtime

log = logging.getLogger("resonate")


Server = NoDelayServer


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


def serve(cfg: Config) -> int:
    logging.basicConfig(level=cfg.level.upper() if cfg.level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR") else
                        {"warn": "WARNING"}.get(cfg.level, "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise_fd_limit()
    hub = gevent.get_hub()
    try:
        rt = Runtime(cfg, offload=hub.threadpool.apply)
    except Exception as e:
        log.error("Fatal: failed to open storage: %s", e)
        return 1
    app = create_app(rt.service, rt.hub)
    server = Server((cfg.server.bind.strip("[]"), cfg.server.port), app, log=None, error_log=log)
    where = {"sqlite": cfg.storage.sqlite.path, "memory": "in memory",
             "postgres": _redact(cfg.storage.postgres.url or "")}[cfg.storage.type]
    log.info("Resonate server listening on http://%s:%d (storage %s: %s, debug %s, profile %s)",
             cfg.server.bind, cfg.server.port, cfg.storage.type, where, "on" if cfg.debug else "off", cfg.profile)
    log.info("server URL for workers: %s", cfg.server_url)
    stopping = gevent.event.Event()

    def shutdown() -> None:
        if stopping.is_set():
            return
        stopping.set()
        log.info("shutting down")
        if rt.hub is not None:
            rt.hub.close_all()  # end SSE streams first, so in-flight requests are all that remain
        server.stop(timeout=cfg.server.shutdown_timeout / 1000)

    gevent.signal_handler(signal.SIGINT, shutdown)
    gevent.signal_handler(signal.SIGTERM, shutdown)
    server.start()
    rt.start()
    try:
        server.serve_forever()
    finally:
        rt.stop(cfg.server.shutdown_timeout / 1000)
        log.info("stopped")
    return 0
