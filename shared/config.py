"""Server configuration: the key table, the reference server's keys plus this server's extensions
(the rules: docs/operations.md#configuration).

Layers, each overriding the previous key by key:

1. the defaults below;
2. a file: `resonate.toml` in the working directory, or the file given with `--config` (TOML,
   or the old Go server's YAML, mapped by `shared.config_legacy`);
3. `RESONATE_*` environment variables (`__` nests: `RESONATE_SERVER__PORT`);
4. explicit overrides (the `serve`/`dev` flags).

`load()` reads a file only when the caller passes `file` or `cwd` (the CLI does); the Cloud
Functions and the tests call `load()` / `load({...}, env={})` and read no file. Every
secret-bearing key (database URLs, the push token) can come from the environment or the file,
so none ever has to be on a command line.

Keys of features not built yet are parsed and validated; configuring them is refused where
running without them would be wrong, in `_unsupported`.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from shared.config_routes import Route, check_routes
from shared.config_values import ConfigError, Layer, Schema, assemble, coerce, env_layer

__all__ = ["FILE_NAME", "Config", "ConfigError", "load", "parse_value"]

log = logging.getLogger("resonate.config")

FILE_NAME = "resonate.toml"  # looked up in the working directory
DEFAULT_WHERE = "the default"

# Cloud SQL settings (shared.storage.cloudsql uses these too; kept here so config loads without it)
CLOUDSQL_IP_TYPES = ("private", "public", "psc")
CLOUDSQL_INSTANCE = re.compile(r"[^:/\s]+(?::[^:/\s]+)?:[^:/\s]+:[^:/\s]+")

STORAGE_TYPES = ("sqlite", "postgres", "mysql", "memory")  # memory: this server's in-memory store (dev)
PUSH_AUTH_MODES = ("none", "bearer", "gcp")
SWEEPER_AUTH_MODES = ("none", "gcp")

# integer ranges other than the default 0 .. 2**63-1 (u16 ports, u32 pool sizes)
LIMITS: dict[str, tuple[int, int]] = {
    "server.port": (0, 65535),
    "server.grpc_port": (0, 65535),
    "observability.metrics_port": (0, 65535),
    "observability.trace_sample_ratio": (0, 1),
    "legacy.poll_port": (0, 65535),
    "legacy.claim_timeout": (1, 2**31 - 1),
    "retention.interval": (1, 2 ** 63 - 1),
    "ui.live_interval": (100, 3_600_000),
    "retention.batch_size": (1, 100_000),
    "storage.postgres.pool_size": (0, 2 ** 32 - 1),
    "storage.mysql.pool_size": (0, 2 ** 32 - 1),
}


class _Section:
    """Shared `__eq__`, `__hash__` and `__repr__` of the config classes: dataclass generates them
    per class at import (about 0.3 ms each, on every cold start); this `__repr__` also masks the
    secrets (fields declared with `repr=False`), so a logged config never shows a password."""
    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), *vars(self).values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" if f.repr or getattr(self, f.name) is None else f"{f.name}='***'"
            for f in fields(self)) + ")"  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False, repr=False)
class HttpPoll(_Section):
    enabled: bool = True
    max_connections: int = 1000
    # with inbound auth on: SSE connections one principal (token subject, else role/prefix) may
    # hold on this instance at once; more answer 429. 0: no per-token cap (negatives are
    # refused when parsed, naming the key)
    max_connections_per_token: int = 100
    buffer_size: int = 100
    keepalive_interval: int = 15000  # ms between SSE comment keep-alives


@dataclass(frozen=True, eq=False, repr=False)
class HttpPushAuth(_Section):
    """Outbound auth for pushes (`shared.delivery.push_auth`); the section's presence is what configures it."""
    mode: str = "none"  # none | bearer | gcp
    token: str | None = field(default=None, repr=False)  # bearer: the static token (a secret: environment or file)
    audience: str | None = None  # gcp: fixed OIDC audience (default: each delivery URL)
    header: str = "Authorization"
    # the only origins (`scheme://host[:port]`) credentials are attached to; required with `bearer`
    # and with `gcp` + a fixed audience (a token for one audience must not reach other hosts)
    allow: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False, repr=False)
class HttpPush(_Section):
    enabled: bool = True
    concurrency: int = 256
    connect_timeout: int = 10000
    request_timeout: int = 180000
    auth: HttpPushAuth | None = None
    # outbound destination policy (shared/delivery/destinations.py), checked when an address is
    # registered and again on the address each push connects to: CIDRs and host names
    allow: tuple[str, ...] = ()  # non-empty: only matching destinations
    deny: tuple[str, ...] = ()  # always refused
    deny_private: bool = False  # refuse loopback, RFC 1918, CGNAT, fc00::/7 (default true in the Cloud Functions)
    # failed attempts before an outbox row is given up ("dead": kept, never sent again); the
    # default is about 24 h of backoff (0.5 s doubling to 60 s); 0: retry forever
    max_attempts: int = 1447


@dataclass(frozen=True, eq=False, repr=False)
class Gcps(_Section):
    enabled: bool = False
    project: str | None = None  # parsed, unused (every gcps:// address names its project)
    allow_projects: tuple[str, ...] = ()  # non-empty: the only projects gcps:// may publish to
    concurrency: int = 256
    timeout: int = 10000


@dataclass(frozen=True, eq=False, repr=False)
class BashExec(_Section):
    enabled: bool = False
    allow: tuple[str, ...] = ()  # this server's extension: the only commands bash:// may run (names or paths)


@dataclass(frozen=True, eq=False, repr=False)
class Transports(_Section):
    http_poll: HttpPoll = field(default_factory=HttpPoll)
    http_push: HttpPush = field(default_factory=HttpPush)
    gcps: Gcps = field(default_factory=Gcps)
    bash_exec: BashExec = field(default_factory=BashExec)


@dataclass(frozen=True, eq=False, repr=False)
class Legacy(_Section):
    """The older server's REST API (docs/legacy-api.md)."""

    enabled: bool = True  # false: every legacy prefix answers 410, as the current reference server
    poll_port: int = 8002  # its SDKs' SSE listener, local server and containers only; 0: none
    claim_timeout: int = 5000  # ms before an unclaimed task of a REST-routed promise is sent again


@dataclass(frozen=True, eq=False, repr=False)
class Cors(_Section):
    allow_origins: tuple[str, ...] = ()  # empty: CORS off; "*": any origin (docs/operations.md#cors)


@dataclass(frozen=True, eq=False, repr=False)
class Server(_Section):
    host: str = "localhost"
    port: int = 8001
    bind: str = "0.0.0.0"
    grpc_port: int = 50051  # the older server's gRPC API (docs/grpc.md), local server and containers only; 0: none
    url: str | None = None  # default http://{host}:{port}
    shutdown_timeout: int = 10000
    max_body: int = 10 * 1024 * 1024  # larger bodies get a 413 envelope (docs/protocol.md#8-limits)
    cors: Cors = field(default_factory=Cors)


@dataclass(frozen=True, eq=False, repr=False)
class Sqlite(_Section):
    path: str = "resonate.db"


@dataclass(frozen=True, eq=False, repr=False)
class Postgres(_Section):
    url: str | None = field(default=None, repr=False)  # e.g. postgres://user:pass@host:5432/db (a secret)
    pool_size: int = 10
    # Cloud SQL instance connection name "project:region:instance": connect through the Cloud SQL
    # Python Connector; user, password and database still come from url (its host is ignored)
    instance: str | None = None
    ip_type: str = "private"  # private | public | psc: which of the instance's addresses to dial
    iam_auth: bool = False  # IAM database login (the user is the service account, no password)


@dataclass(frozen=True, eq=False, repr=False)
class Mysql(_Section):
    # mysql://user:pass@host:3306/db (a secret); TLS as query parameters: ?ssl-mode=VERIFY_IDENTITY&ssl-ca=ca.pem
    # (DISABLED, PREFERRED (default), REQUIRED, VERIFY_CA, VERIFY_IDENTITY; ssl-cert/ssl-key: a client
    # certificate); ?unix_socket=/path dials a socket. MySQL 8.0+ or MariaDB 10.6+; migrated at first start
    url: str | None = field(default=None, repr=False)
    pool_size: int = 10  # pooled connections per process
    # Cloud SQL for MySQL instance "project:region:instance": connect through the Cloud SQL Python
    # Connector; user, password and database still come from url (its host is ignored)
    instance: str | None = None
    ip_type: str = "private"  # private | public | psc
    iam_auth: bool = False  # IAM database login (the user is the service account, no password)


@dataclass(frozen=True, eq=False, repr=False)
class Storage(_Section):
    type: str = "sqlite"  # sqlite | postgres | mysql | memory
    sqlite: Sqlite = field(default_factory=Sqlite)
    postgres: Postgres = field(default_factory=Postgres)
    mysql: Mysql = field(default_factory=Mysql)


@dataclass(frozen=True, eq=False, repr=False)
class Auth(_Section):
    """Inbound JWT auth (docs/security.md): on iff the section exists, which requires `publickey` (or, this
    server's extension, `google_audience`: Google OIDC identity tokens only; `shared.auth`)."""
    publickey: str | None = None  # path to a PEM public key, or "none" (unsigned mode, tests only)
    iss: str | None = None
    aud: str | None = None
    google_audience: str | None = None  # accept Google-signed ID tokens with this `aud` (full access)
    google_service_accounts: tuple[str, ...] = ()  # ... whose `email` (or `sub`) is one of these
    google_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"  # Google's signing certificates


@dataclass(frozen=True, eq=False, repr=False)
class Promises(_Section):
    # listeners one promise may hold (promise.register_listener answers 400 beyond it): each is an
    # outbox row and a delivery when the promise settles, so an unbounded list is a fan-out lever
    max_listeners: int = 1000


@dataclass(frozen=True, eq=False, repr=False)
class Tasks(_Section):
    retry_timeout: int = 30000
    lease_timeout: int = 15000
    # routing rules (docs/routing.md), first match wins: a promise created without a
    # resonate:target whose id matches a pattern gets that rule's target. File: [[tasks.routes]]
    # tables {pattern, target}; environment: a JSON array of those objects or of
    # "pattern=target" strings (or the strings comma-separated); flags: --tasks-route, repeatable
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, eq=False, repr=False)
class Messages(_Section):
    poll_interval: int = 100  # reference message-loop period; here delivery runs right after commit
    redrive_interval: int = 1000  # ms between re-drives of undelivered outbox rows
    batch_size: int = 100


@dataclass(frozen=True, eq=False, repr=False)
class Timeouts(_Section):
    poll_interval: int = 1000  # reference timeout-loop period; here the timer loop sleeps to the next deadline
    batch_size: int = 500  # rows per background transaction
    max_sleep: int = 60000


@dataclass(frozen=True, eq=False, repr=False)
class Retention(_Section):
    """Deleting settled workflows (shared/retention.py, docs/operations.md#retention)."""
    settled_after: int = 0  # ms after its last settlement a finished workflow is deleted; 0: never
    interval: int = 60000  # ms between retention passes of the local server (the sweeper: once per call)
    batch_size: int = 100  # promises deleted per transaction


@dataclass(frozen=True, eq=False, repr=False)
class Ui(_Section):
    """The web console at `/ui` (shared/console/, docs/console.md)."""
    enabled: bool = True
    live_interval: int = 5000  # ms between the live stream's refresh hints (changes other instances commit)


@dataclass(frozen=True, eq=False, repr=False)
class Sweeper(_Section):
    window: int = 65000  # ms one sweeper call keeps handling deadlines (> the 60 s tick: overlap)
    poll_interval: int = 250  # ms between looks for deadlines other instances wrote meanwhile
    url: str | None = None  # the sweeper function, called when a near deadline finds no sweeper running
    # how that call authenticates: none, or gcp (a Google ID token, audience = url, from the
    # instance's own identity, as transports.http_push.auth.mode=gcp mints them; the deployed
    # sweeper admits only run.invoker callers)
    auth: str = "none"


@dataclass(frozen=True, eq=False, repr=False)
class Dispatch(_Section):
    """HTTP pushes through Pub/Sub (shared/delivery/pubsub_dispatch.py): with `topic` set, the
    committing instance publishes each push row and the topic's push subscription calls the
    `dispatch` function, which pushes to the worker; unset, pushes go out in-process."""
    topic: str | None = None  # projects/PROJECT/topics/TOPIC
    audience: str | None = None  # the `aud` of the push subscription's OIDC token
    service_accounts: tuple[str, ...] = ()  # the push subscription's service-account emails allowed
    certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"  # Google's signing certificates
    max_attempts: int = 5  # = the subscription's max_delivery_attempts: the last failure marks the row dead


@dataclass(frozen=True, eq=False, repr=False)
class Observability(_Section):
    metrics_port: int = 9090
    # OTLP/HTTP receiver of the metrics export (shared/otlp.py): http(s)://host:port, or host:port
    # (http); empty: no export (the reference's default, localhost:4317, was parsed and unused)
    otlp_endpoint: str = ""
    otlp_interval: int = 60000  # ms between exports (at the end of a request; 0: after every request)
    # share of new traces recorded (shared/tracing.py; a caller's sampled traceparent always is);
    # 0: no traces exported at all, metrics only
    trace_sample_ratio: float = 1.0


@dataclass(frozen=True, eq=False, repr=False)
class Config(_Section):
    level: str = "info"
    log_format: str = "text"  # text (readable lines) | json (Google Cloud Logging fields); functions default to json
    debug: bool = False
    profile: str = "compat"  # compat | strict (docs/protocol.md#12-profiles)
    server: Server = field(default_factory=Server)
    storage: Storage = field(default_factory=Storage)
    auth: Auth | None = None
    promises: Promises = field(default_factory=Promises)
    tasks: Tasks = field(default_factory=Tasks)
    messages: Messages = field(default_factory=Messages)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retention: Retention = field(default_factory=Retention)
    sweeper: Sweeper = field(default_factory=Sweeper)
    dispatch: Dispatch = field(default_factory=Dispatch)
    transports: Transports = field(default_factory=Transports)
    observability: Observability = field(default_factory=Observability)
    legacy: Legacy = field(default_factory=Legacy)
    ui: Ui = field(default_factory=Ui)

    @property
    def server_url(self) -> str:
        return self.server.url or f"http://{self.server.host}:{self.server.port}"

    @property
    def strict(self) -> bool:
        return self.profile == "strict"


_schema: Schema | None = None


def schema() -> Schema:
    """The key table of `Config`, built on first use (not at import: cold starts)."""
    global _schema
    if _schema is None:
        _schema = Schema(Config, LIMITS)
    return _schema


def parse_value(key: str, text: str) -> Any:
    """One command-line value as the type of `key` (the CLI's argparse `type=`); ConfigError
    names the key, the parser names the flag."""
    return coerce(schema(), key, text)


def load(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None, *,
         file: str | os.PathLike[str] | None = None, cwd: str | os.PathLike[str] | None = None,
         sources: Mapping[str, str] | None = None, defaults: Mapping[str, Any] | None = None) -> Config:
    """The configuration from every layer, validated.

    overrides: dotted keys to values, the top layer (`{"server.port": 9000}`); `sources` names
      where each came from for error messages (`{"server.port": "--server-port (flag)"}`).
    env: the environment (default `os.environ`; tests pass `{}`).
    file: a configuration file that must exist (`--config`): TOML, or legacy YAML when it ends
      in .yml/.yaml or is not TOML but YAML.
    cwd: without `file`, the folder where an optional `resonate.toml` is looked for.
    Neither `file` nor `cwd`: no file is read (the functions read the environment only).
    defaults: dotted keys to values replacing the built-in defaults (below every layer): the
      Cloud Functions' own defaults, e.g. `{"transports.http_push.deny_private": True}`.
    """
    sch = schema()
    values: Layer = {}
    for key, val in (defaults or {}).items():
        if key not in sch.leaves:
            raise ConfigError(f"unknown configuration key {key!r}")
        values[key] = (val, DEFAULT_WHERE)
    present: dict[str, str] = {}
    path = _file_path(file, cwd)
    if path is not None:
        from shared.config_file import read_file  # tomllib / yaml: only when there is a file

        file_values, present = read_file(path[0], path[1], sch)
        values.update(file_values)
    env_values, env_present = env_layer(sch, env)
    values.update(env_values)
    for sec, layer in env_present.items():
        present.setdefault(sec, layer)
    for key, val in (overrides or {}).items():
        if key not in sch.leaves:
            raise ConfigError(f"unknown configuration key {key!r}")
        values[key] = (val, (sources or {}).get(key, "override"))
    cfg: Config = assemble(sch, values, present)

    def where(key: str) -> str:
        return values[key][1] if key in values else DEFAULT_WHERE

    _validate(cfg, where)
    _validate_dispatch(cfg, where)
    _validate_otlp(cfg, where)
    if cfg.tasks.routes:
        check_routes(cfg.tasks.routes, cfg.transports, cfg.storage.type,
                     lambda msg: ConfigError(f"{msg} (tasks.routes from {where('tasks.routes')})"))
    if cfg.auth is not None:
        _validate_auth(cfg.auth, where, present)
        if cfg.auth.publickey == "none" and not cfg.debug:  # anyone could forge any claim
            raise ConfigError("auth.publickey='none' (unsigned tokens: signatures are not checked, so any caller "
                              "can claim role admin) is refused unless debug is on; set auth.publickey to a PEM "
                              f"public key (auth.publickey from {where('auth.publickey')})")
    _unsupported(cfg, where, present)
    return cfg


def _file_path(file: str | os.PathLike[str] | None, cwd: str | os.PathLike[str] | None) -> tuple[str, str] | None:
    """(path to read, name for messages): the given file, else `resonate.toml` in `cwd` if any."""
    if file is not None:
        name = os.fspath(file)
        full = name if os.path.isabs(name) or cwd is None else os.path.join(os.fspath(cwd), name)
        return full, name
    if cwd is not None:
        full = os.path.join(os.fspath(cwd), FILE_NAME)
        if os.path.isfile(full):
            return full, FILE_NAME
    return None


_TOPIC = re.compile(r"projects/[^/\s]+/topics/[^/\s]+")


def _validate_dispatch(cfg: Config, where: Callable[[str], str]) -> None:
    """Pub/Sub dispatch needs the shared database (the dispatch function reads the row) and an
    OIDC allow-list (any Google account can mint a token for any audience): fail closed."""
    d = cfg.dispatch
    if not d.topic:
        return

    def fail(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{msg} ({key} from {where(key)})")

    if not _TOPIC.fullmatch(d.topic):
        raise fail("dispatch.topic", f"dispatch.topic: expected 'projects/PROJECT/topics/TOPIC', got {d.topic!r}")
    if cfg.storage.type != "postgres":
        raise fail("dispatch.topic", "dispatch.topic requires storage.type=postgres (the dispatch function "
                                     "reads the outbox from the shared database)")
    if not d.audience or not d.service_accounts:
        raise fail("dispatch.topic", "dispatch.topic requires dispatch.audience and dispatch.service_accounts "
                                     "(the push subscription's OIDC audience and service-account emails)")


def _validate_otlp(cfg: Config, where: Callable[[str], str]) -> None:
    """A malformed endpoint fails at startup, not at the first export."""
    if not cfg.observability.otlp_endpoint:
        return
    from shared.otlp import metrics_url  # only when set (cold starts); protobuf only when exporting

    try:
        metrics_url(cfg.observability.otlp_endpoint)
    except ValueError as e:
        raise ConfigError(f"{e} (observability.otlp_endpoint from {where('observability.otlp_endpoint')})") from None


def _validate(cfg: Config, where: Callable[[str], str]) -> None:
    """The reference server's startup checks (with its messages), plus this server's extensions'."""
    def fail(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{msg} ({key} from {where(key)})")

    st, pg, my = cfg.storage.type, cfg.storage.postgres, cfg.storage.mysql
    if st not in STORAGE_TYPES:
        raise fail("storage.type", f"Unknown storage backend: {st!r}. Valid options are 'sqlite', 'postgres', "
                                   "and 'mysql' (and 'memory', this server's in-memory store).")
    if st == "postgres" and not pg.url and not pg.instance:
        raise fail("storage.type", "storage.type=postgres requires RESONATE_STORAGE__POSTGRES__URL "
                                   "(or RESONATE_STORAGE__POSTGRES__INSTANCE for Cloud SQL)")
    if st == "mysql" and not my.url and not my.instance:
        raise fail("storage.type", "MySQL storage selected but no URL configured. "
                                   "Set --storage-mysql-url or RESONATE_STORAGE__MYSQL__URL")
    choices: tuple[tuple[str, str, tuple[str, ...]], ...] = (
        ("storage.postgres.ip_type", pg.ip_type, CLOUDSQL_IP_TYPES),
        ("storage.mysql.ip_type", my.ip_type, CLOUDSQL_IP_TYPES),
        ("profile", cfg.profile, ("compat", "strict")),
        ("log_format", cfg.log_format, ("text", "json")),
        ("sweeper.auth", cfg.sweeper.auth, SWEEPER_AUTH_MODES))
    if cfg.transports.http_push.auth is not None:
        choices += (("transports.http_push.auth.mode", cfg.transports.http_push.auth.mode, PUSH_AUTH_MODES),)
    for key, val, allowed in choices:
        if val not in allowed:
            names = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
            raise fail(key, f"{key}: expected {names}, got {val!r}")
    if pg.instance and not CLOUDSQL_INSTANCE.fullmatch(pg.instance):
        raise fail("storage.postgres.instance", "storage.postgres.instance: expected a Cloud SQL instance "
                                                f"connection name 'project:region:instance', got {pg.instance!r}")
    if my.instance and not CLOUDSQL_INSTANCE.fullmatch(my.instance):
        raise fail("storage.mysql.instance", "storage.mysql.instance: expected a Cloud SQL instance "
                                             f"connection name 'project:region:instance', got {my.instance!r}")
    t = cfg.transports
    for key, v in (("storage.postgres.pool_size", pg.pool_size),
                   ("storage.mysql.pool_size", my.pool_size),
                   ("transports.http_poll.max_connections", t.http_poll.max_connections),
                   ("transports.http_poll.buffer_size", t.http_poll.buffer_size),
                   ("transports.http_push.concurrency", t.http_push.concurrency),
                   ("transports.gcps.concurrency", t.gcps.concurrency),
                   ("promises.max_listeners", cfg.promises.max_listeners)):
        if v < 1:
            raise fail(key, f"{key} must be at least 1 (got {v})")
    pa = t.http_push.auth
    if pa is not None and pa.mode == "bearer" and not pa.token:  # the reference would send "Bearer "
        raise fail("transports.http_push.auth.mode", "transports.http_push.auth.token is required when "
                   "transports.http_push.auth.mode is 'bearer' (set RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__TOKEN)")
    _validate_outbound(t, fail)
    if t.bash_exec.enabled and not t.bash_exec.allow:  # the reference runs anything any client sends
        raise fail("transports.bash_exec.enabled", "transports.bash_exec.allow is required when "
                   "transports.bash_exec.enabled is true (the commands bash:// may run, e.g. "
                   "RESONATE_TRANSPORTS__BASH_EXEC__ALLOW='[\"/opt/jobs/report.sh\"]')")


def _validate_outbound(t: Transports, fail: Callable[[str, str], ConfigError]) -> None:
    """The destination policy's entries parse (CIDR or host name), credentials have an origin
    allow-list where a token would be valid anywhere it is sent (shared/delivery/destinations.py,
    shared/delivery/push_auth.py; imported only when the keys are set)."""
    push = t.http_push
    if push.allow or push.deny:
        from shared.delivery.destinations import Rules

        for key, entries in (("transports.http_push.allow", push.allow), ("transports.http_push.deny", push.deny)):
            try:
                Rules.parse(key, entries)
            except ValueError as e:
                raise fail(key, f"invalid value for {e}") from None
    pa = push.auth
    if pa is None:
        return
    if pa.allow:
        from shared.delivery.push_auth import normalise_origin

        for entry in pa.allow:
            try:
                normalise_origin(entry)
            except ValueError as e:
                raise fail("transports.http_push.auth.allow", f"invalid value for transports.http_push.auth.allow: "
                           f"{e}") from None
    elif pa.mode == "bearer" or (pa.mode == "gcp" and pa.audience):
        what = "mode is 'bearer'" if pa.mode == "bearer" else "mode is 'gcp' with a fixed audience"
        raise fail("transports.http_push.auth.mode", f"transports.http_push.auth.allow is required when "
                   f"transports.http_push.auth.{what}: the origins (scheme://host[:port]) the credentials may be "
                   "sent to, e.g. RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__ALLOW='[\"https://workers.example.com\"]'")


def _validate_auth(auth: Auth, where: Callable[[str], str], present: Mapping[str, str]) -> None:
    """The [auth] section needs a verifier: `publickey` (else "missing field publickey"),
    or this server's Google OIDC keys, which need their allow-list (any Google account can mint
    an identity token for any audience)."""
    def fail(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{msg} ({key} from {where(key)})")

    if auth.publickey is None and auth.google_audience is None:
        keys = ("auth.iss", "auth.aud", "auth.google_service_accounts", "auth.google_certs_url")
        created = present.get("auth") or next((where(k) for k in keys if where(k) != DEFAULT_WHERE),
                                              "the configuration")
        raise ConfigError(f"auth: missing field publickey (the [auth] section was created by {created}; "
                          "set auth.publickey or remove the section)")
    if auth.publickey is not None and not auth.publickey.strip():
        raise fail("auth.publickey", "auth.publickey: expected a path to a PEM public key or 'none', got ''")
    if auth.google_audience is not None and not auth.google_service_accounts:
        raise fail("auth.google_audience", "auth.google_service_accounts is required when auth.google_audience "
                   "is set (set RESONATE_AUTH__GOOGLE_SERVICE_ACCOUNTS to the allowed service-account emails)")
    if auth.google_service_accounts and auth.google_audience is None:
        raise fail("auth.google_service_accounts", "auth.google_audience is required when "
                   "auth.google_service_accounts is set")


def _unsupported(cfg: Config, where: Callable[[str], str], present: Mapping[str, str]) -> None:
    """Keys of features this server does not have yet. Refused where running without the feature
    would be unsafe or wrong; warned about otherwise. Remove an entry when its feature lands
    (none today)."""
