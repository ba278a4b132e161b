"""`resonate` / `python -m local`: serve (SQLite), dev (in memory, debug on), cloud-sim (functions + Postgres)."""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before anything opens sockets or threads: the server runs on gevent

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from shared.config import Config, ConfigError, load, parse_value, schema

# serve/dev flags: names -> dotted config key (the key with `.` and `_` as `-`, a few short aliases), help.
# Values are parsed as the key's type (shared.config.parse_value): a bad one is a usage error
# (exit 2) naming the flag and the key. Flags apply independently (unlike the reference, where some
# flags count only next to another one, e.g. --auth-iss without --auth-publickey).
# Secrets (database URLs, the push token) have flags as in the reference, but the environment
# or resonate.toml is the place for them: a command line is visible to every local user.
SECRET = " (a secret: prefer the environment or resonate.toml, a command line is visible to other users)"
FLAGS: list[tuple[list[str], str, str]] = [
    (["--level"], "level", "log level: debug, info, warn, error"),
    (["--log-format"], "log_format", "text (default) or json (Google Cloud Logging fields)"),
    (["--profile"], "profile", "compat (default) or strict"),
    (["--server-host"], "server.host", "host used to build the default server URL"),
    (["--server-port", "--port"], "server.port", "HTTP port (default 8001)"),
    (["--server-bind", "--bind"], "server.bind", "listen address (default 0.0.0.0; [::] for IPv6)"),
    (["--server-grpc-port"], "server.grpc_port", "gRPC port (default 50051; 0 disables)"),
    (["--server-url"], "server.url", "public base URL sent to workers as head.serverUrl"),
    (["--server-shutdown-timeout"], "server.shutdown_timeout", "graceful shutdown budget in ms (default 10000)"),
    (["--server-cors-allow-origin"], "server.cors.allow_origins",
     "allowed CORS origin, repeatable (replaces the configured list; * for any)"),
    (["--storage-type"], "storage.type", "sqlite (default), postgres, mysql, or memory"),
    (["--storage-sqlite-path", "--db"], "storage.sqlite.path", "SQLite database file (default resonate.db)"),
    (["--storage-postgres-url"], "storage.postgres.url", "Postgres URL postgres://user:pass@host:5432/db" + SECRET),
    (["--storage-postgres-pool-size"], "storage.postgres.pool_size", "pooled Postgres connections (default 10)"),
    (["--storage-postgres-instance"], "storage.postgres.instance",
     "Cloud SQL instance connection name project:region:instance (connects through the Cloud SQL connector)"),
    (["--storage-postgres-ip-type"], "storage.postgres.ip_type", "Cloud SQL address to use: private, public or psc"),
    (["--storage-postgres-iam-auth"], "storage.postgres.iam_auth", "Cloud SQL IAM database login: true or false"),
    (["--storage-mysql-url"], "storage.mysql.url",
     "MySQL URL mysql://user:pass@host:3306/db (TLS: ?ssl-mode=...&ssl-ca=...)" + SECRET),
    (["--storage-mysql-pool-size"], "storage.mysql.pool_size", "pooled MySQL connections (default 10)"),
    (["--storage-mysql-instance"], "storage.mysql.instance",
     "Cloud SQL for MySQL instance connection name project:region:instance (connects through the Cloud SQL "
     "connector; user, password and database from the URL)"),
    (["--storage-mysql-ip-type"], "storage.mysql.ip_type", "Cloud SQL address to use: private, public or psc"),
    (["--storage-mysql-iam-auth"], "storage.mysql.iam_auth", "Cloud SQL IAM database login: true or false"),
    (["--auth-publickey"], "auth.publickey",
     "PEM public key for inbound JWT auth, or none (unsigned tokens; only with --debug)"),
    (["--auth-iss"], "auth.iss", "required JWT issuer"),
    (["--auth-aud"], "auth.aud", "required JWT audience"),
    (["--promises-max-listeners"], "promises.max_listeners", "listeners one promise may hold (default 1000)"),
    (["--tasks-lease-timeout"], "tasks.lease_timeout", "task lease in ms (default 15000)"),
    (["--tasks-retry-timeout"], "tasks.retry_timeout", "task retry timeout R in ms (default 30000)"),
    (["--tasks-route"], "tasks.routes",
     "routing rule PATTERN=TARGET, e.g. 'analytics/*=poll://any@analytics', repeatable (replaces the configured "
     "list; first match wins): a promise created without a target whose id matches PATTERN goes to TARGET"),
    (["--timeouts-poll-interval"], "timeouts.poll_interval",
     "reference timeout-loop period in ms (accepted; the timer loop here wakes at each deadline)"),
    (["--retention-settled-after"], "retention.settled_after",
     "delete a workflow this many ms after its last promise settled (default 0: never)"),
    (["--retention-interval"], "retention.interval", "ms between retention passes (default 60000)"),
    (["--retention-batch-size"], "retention.batch_size", "promises deleted per transaction (default 100)"),
    (["--ui-enabled"], "ui.enabled", "serve the web console at /ui: true or false (default true)"),
    (["--ui-live-interval"], "ui.live_interval", "ms between the console's live refresh hints (default 5000)"),
    (["--messages-poll-interval"], "messages.poll_interval",
     "reference message-loop period in ms (accepted; delivery here starts right after commit)"),
    (["--messages-batch-size"], "messages.batch_size", "outbox rows per pass (default 100)"),
    (["--messages-redrive-interval"], "messages.redrive_interval", "outbox re-drive interval in ms (default 1000)"),
    (["--transports-http-push-enabled"], "transports.http_push.enabled", "true or false (default true)"),
    (["--transports-http-push-concurrency"], "transports.http_push.concurrency", "pushes in flight (default 256)"),
    (["--transports-http-push-connect-timeout"], "transports.http_push.connect_timeout", "push connect timeout in ms"),
    (["--transports-http-push-request-timeout"], "transports.http_push.request_timeout", "push request timeout in ms"),
    (["--transports-http-push-auth-mode"], "transports.http_push.auth.mode",
     "outbound push auth: none, bearer or gcp"),
    (["--transports-http-push-auth-token"], "transports.http_push.auth.token", "bearer token" + SECRET),
    (["--transports-http-push-auth-aud"], "transports.http_push.auth.audience", "fixed OIDC audience (gcp mode)"),
    (["--transports-http-push-auth-header"], "transports.http_push.auth.header", "header carrying the token"),
    (["--transports-http-poll-enabled"], "transports.http_poll.enabled", "true or false (default true)"),
    (["--transports-http-poll-max-connections"], "transports.http_poll.max_connections", "SSE connection cap"),
    (["--transports-http-poll-max-connections-per-token"], "transports.http_poll.max_connections_per_token",
     "SSE connections per token principal on this instance, auth on (default 100; 0: no cap)"),
    (["--transports-http-poll-buffer-size"], "transports.http_poll.buffer_size", "per-connection queue"),
    (["--transports-http-poll-keepalive-interval"], "transports.http_poll.keepalive_interval",
     "SSE keep-alive comment interval in ms"),
    (["--transports-gcps-enabled"], "transports.gcps.enabled",
     "Pub/Sub transport for gcps:// addresses: true or false (default false)"),
    (["--transports-gcps-project"], "transports.gcps.project", "Pub/Sub project (unused, as in the reference)"),
    (["--transports-gcps-concurrency"], "transports.gcps.concurrency", "publishes in flight (default 256)"),
    (["--transports-gcps-timeout"], "transports.gcps.timeout", "publish timeout in ms (default 10000)"),
    (["--transports-bash-exec-enabled"], "transports.bash_exec.enabled",
     "bash:// executor: true or false (default false; DANGEROUS, needs transports.bash_exec.allow)"),
    (["--observability-metrics-port"], "observability.metrics_port", "Prometheus port (default 9090; 0 disables)"),
    (["--legacy-enabled"], "legacy.enabled", "serve the older server's REST API (default true; false: 410 Gone)"),
    (["--legacy-poll-port"], "legacy.poll_port", "the REST-era SDKs' SSE port (default 8002; 0 disables)"),
    (["--observability-otlp-endpoint"], "observability.otlp_endpoint",
     "OTLP/HTTP receiver of the metrics export, http(s)://host:port (default: none, no export)"),
    (["--observability-otlp-interval"], "observability.otlp_interval",
     "ms between OTLP metrics exports (default 60000)"),
    (["--observability-trace-sample-ratio"], "observability.trace_sample_ratio",
     "share of new traces exported with the metrics, 0 to 1 (default 1.0; 0: no traces)"),
]
# one value per flag; the flags together replace the list (the metavar names one value)
REPEATABLE = {"server.cors.allow_origins": "ORIGIN", "tasks.routes": "PATTERN=TARGET"}


def _typed(key: str) -> Callable[[str], Any]:
    """argparse `type=` for a config key: the value as the key's type, or a usage error."""
    def parse(text: str) -> Any:
        if key in REPEATABLE:
            return text  # one list item per flag
        try:
            return parse_value(key, text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _serve_flags(sp: argparse.ArgumentParser) -> None:
    """The configuration flags of serve and dev, each stored under its dotted key."""
    sp.add_argument("--config", dest="config_file", metavar="PATH", default=None,
                    help="configuration file instead of ./resonate.toml: TOML, or the old server's YAML "
                         "(.yml/.yaml; keys mapped, unmapped ones warned about)")
    leaves = schema().leaves
    for names, key, h in FLAGS:
        metavar = ("true|false" if leaves[key][0] is bool else REPEATABLE[key] if key in REPEATABLE
                   else key.rsplit(".", 1)[-1].upper())
        sp.add_argument(*names, dest=key, type=_typed(key), default=None, help=h, metavar=metavar,
                        action="append" if key in REPEATABLE else "store")
    sp.add_argument("--debug", dest="debug", action="store_true", default=None,
                    help="enable debug.* operations and head['resonate:debug_time']")


def _config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The flags on the command line: {key: value} and {key: '--flag (flag)'} for messages."""
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for names, key, _ in [*FLAGS, (["--debug"], "debug", "")]:
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = tuple(value) if key in REPEATABLE else value
            sources[key] = f"{names[0]} (flag)"
    return overrides, sources


def _load(args: argparse.Namespace, overrides: dict[str, Any], sources: dict[str, str]) -> Config:
    """defaults < ./resonate.toml (or --config) < RESONATE_* < flags. `dev` keeps debug on (this
    server's choice) and, as in the reference, puts a SQLite store in memory unless
    --storage-sqlite-path is given; a Postgres type from the file or environment is kept."""
    if args.command == "dev":
        overrides.setdefault("debug", True)
        sources.setdefault("debug", "dev")
    cfg = load(overrides, file=args.config_file, cwd=os.getcwd(), sources=sources)
    if args.command == "dev" and cfg.storage.type == "sqlite" and "storage.sqlite.path" not in overrides:
        cfg = replace(cfg, storage=replace(cfg.storage, type="memory"))
    return cfg


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resonate", description="Resonate durable-promise server")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help in (("serve", "start the server (SQLite, resonate.db by default)"),
                       ("dev", "start the server in memory with debug operations on")):
        _serve_flags(sub.add_parser(name, help=help, description=help))
    h = "simulate the cloud: each function its own process over Postgres, one base URL served by the api function"
    sp = sub.add_parser("cloud-sim", help=h, description=h)
    sp.add_argument("--port", "--server-port", type=int, default=8001, help="base URL port, default 8001")
    for role, n in (("api", 2), ("sweeper", 1), ("dispatch", 1)):
        sp.add_argument(f"--{role}", type=int, default=n, help=f"{role} instances (default {n})")
    sp.add_argument("--load-balancer", action="store_true",
                    help="the load-balancer shape: the base URL sends GET /poll/... to poll instances, the rest to api")
    sp.add_argument("--poll", type=int, default=None, help="poll instances (with --load-balancer; default 2)")
    sp.add_argument("--private", action="store_true",
                    help="Cloud Run's invoker check: callers need an identity token for the base URL"
                         " (X-Serverless-Authorization or Authorization)")
    sp.add_argument("--tick", type=float, default=60.0,
                    help="seconds between sweeper calls, as Cloud Scheduler (default 60; 0: none)")
    sp.add_argument("--storage-postgres-url", default=None,
                    help="default: $RESONATE_STORAGE__POSTGRES__URL, else postgres://postgres@127.0.0.1:5432/resonate"
                         " (created if missing)")
    sp.add_argument("--log-dir", default=None, help="instance logs (default: a new temporary folder)")
    sp.add_argument("--debug", action="store_true", help="RESONATE_DEBUG=true in every function")
    from local import commands  # client commands: promises, tasks, schedules, invoke, tree; --version

    commands.register(p, sub)
    return p


def cloud_sim(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from local.cloudsim import CloudSim

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.poll and not args.load_balancer:
        print("Fatal: --poll needs --load-balancer (without it the api function serves the streams)", file=sys.stderr)
        return 2
    sim = CloudSim(args.storage_postgres_url, args.port, api=args.api, poll=args.poll, sweeper=args.sweeper,
                   dispatch=args.dispatch, tick=args.tick, debug=args.debug, log_dir=args.log_dir,
                   load_balancer=args.load_balancer, private=args.private)
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


def _early_logging(overrides: dict[str, Any]) -> None:
    """Console logging before the configuration is loaded, so its warnings come out formatted;
    `serve` sets it up again from the final configuration."""
    import os

    from shared.logs import setup_logging

    setup_logging(str(overrides.get("level") or os.environ.get("RESONATE_LEVEL", "info")),
                  str(overrides.get("log_format") or os.environ.get("RESONATE_LOG_FORMAT", "text")), warn=False)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from local import commands

    if commands.is_client(args):
        return commands.run(args)
    if args.command == "cloud-sim":
        return cloud_sim(args)
    overrides, sources = _config(args)
    _early_logging(overrides)
    try:
        cfg = _load(args, overrides, sources)
    except ConfigError as e:
        print(f"Fatal: Configuration error: {e}", file=sys.stderr)
        return 1
    from local.server import serve

    return serve(cfg)
