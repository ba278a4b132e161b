"""`resonate` / `python -m local`: serve (SQLite), dev (in memory, debug on), cloud-sim (functions + Postgres)."""
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
    (["--storage-postgres-instance"], "storage.postgres.instance", str,
     "Cloud SQL instance connection name project:region:instance (connects through the Cloud SQL connector)"),
    (["--storage-postgres-ip-type"], "storage.postgres.ip_type", str, "Cloud SQL address to use: private, public or psc"),
    (["--storage-postgres-iam-auth"], "storage.postgres.iam_auth", str, "Cloud SQL IAM database login: true or false"),
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
    h = "simulate the cloud: each function its own process over Postgres, behind one router"
    sp = sub.add_parser("cloud-sim", help=h, description=h)
    sp.add_argument("--port", "--server-port", type=int, default=8001, help="router (base URL) port, default 8001")
    for role, n in (("api", 2), ("poll", 2), ("sweeper", 1), ("dispatch", 1)):
        sp.add_argument(f"--{role}", type=int, default=n, help=f"{role} instances (default {n})")
    sp.add_argument("--tick", type=float, default=60.0,
                    help="seconds between sweeper calls, as Cloud Scheduler (default 60; 0: none)")
    sp.add_argument("--storage-postgres-url", default=None,
                    help="default: $RESONATE_STORAGE__POSTGRES__URL, else postgres://postgres@127.0.0.1:5432/resonate"
                         " (created if missing)")
    sp.add_argument("--log-dir", default=None, help="instance logs (default: a new temporary folder)")
    sp.add_argument("--debug", action="store_true", help="RESONATE_DEBUG=true in every function")
    return p


def cloud_sim(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from local.cloudsim import CloudSim

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sim = CloudSim(args.storage_postgres_url, args.port, api=args.api, poll=args.poll, sweeper=args.sweeper,
                   dispatch=args.dispatch, tick=args.tick, debug=args.debug, log_dir=args.log_dir)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    code = 0
    try:
        sim.start()
        print(f"cloud sim on {sim.url} (Ctrl-C stops it)", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, lambda *_: done.set())  # from here Ctrl-C is a clean stop
        while not done.wait(1.0) and sim.running:
            pass
        code = 0 if done.is_set() else 1
    except KeyboardInterrupt:
        pass
    except Exception as e:  # the database unreachable, a port in use, an instance that never came up
        print(f"Fatal: {e}", file=sys.stderr)
        code = 1
    sim.stop()
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "cloud-sim":
        return cloud_sim(args)
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
