"""`resonate` / `python -m local`: serve (SQLite) and dev (in memory, debug on)."""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before anything opens sockets or threads: the server runs on gevent

import argparse  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from shared.config import ConfigError, load  # noqa: E402

# flag -> dotted config key (operations.md §2.3 names; short aliases for convenience)
FLAGS: list[tuple[list[str], str, type | None, str]] = [
    (["--server-port", "--port"], "server.port", int, "HTTP port (default 8001)"),
    (["--server-bind", "--bind"], "server.bind", str, "listen address (default 0.0.0.0)"),
    (["--server-host"], "server.host", str, "host used to build the default server URL"),
    (["--server-url"], "server.url", str, "public base URL sent to workers as head.serverUrl"),
    (["--server-shutdown-timeout"], "server.shutdown_timeout", int, "graceful shutdown budget in ms"),
    (["--storage-type"], "storage.type", str, "sqlite, postgres or memory"),
    (["--storage-sqlite-path", "--db"], "storage.sqlite.path", str, "SQLite database file"),
    (["--storage-postgres-url"], "storage.postgres.url", str,
     "Postgres URL (prefer RESONATE_STORAGE__POSTGRES__URL: flags are visible to other users)"),
    (["--storage-postgres-pool-size"], "storage.postgres.pool_size", int, "pooled Postgres connections"),
    (["--level"], "level", str, "log level: debug, info, warn, error"),
    (["--profile"], "profile", str, "compat (default) or strict"),
    (["--tasks-retry-timeout"], "tasks.retry_timeout", int, "task retry timeout R in ms"),
    (["--messages-redrive-interval"], "messages.redrive_interval", int, "outbox re-drive interval in ms"),
    (["--transports-http-poll-max-connections"], "transports.http_poll.max_connections", int, "SSE connection cap"),
    (["--transports-http-poll-buffer-size"], "transports.http_poll.buffer_size", int, "per-connection queue"),
    (["--transports-http-poll-keepalive-interval"], "transports.http_poll.keepalive_interval", int,
     "SSE keep-alive comment interval in ms"),
    (["--transports-http-push-enabled"], "transports.http_push.enabled", str, "true or false"),
    (["--transports-http-push-concurrency"], "transports.http_push.concurrency", int, "pushes in flight"),
    (["--observability-metrics-port"], "observability.metrics_port", int, "Prometheus port (0 disables)"),
]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resonate", description="Resonate durable-promise server")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help in (("serve", "start the server (SQLite, resonate.db by default)"),
                       ("dev", "start the server in memory with debug operations on")):
        sp = sub.add_parser(name, help=help, description=help)
        for names, key, typ, h in FLAGS:
            sp.add_argument(*names, dest=key, type=typ, default=None, help=h)
        sp.add_argument("--debug", dest="debug", action="store_true", default=None,
                        help="enable debug.* operations and head['resonate:debug_time']")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    if args.command == "dev":
        overrides.setdefault("storage.type", "memory")
        overrides["debug"] = True
    try:
        cfg = load(overrides)
    except ConfigError as e:
        print(f"Fatal: Configuration error: {e}", file=sys.stderr)
        return 1
    from local.server import serve

    return serve(cfg)
