"""Server configuration: the keys of operations.md §2.3 (plus this server's extensions).

Layers: defaults < `RESONATE_*` environment variables (`__` nests) < explicit overrides (CLI).
Functions read the environment only.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Mapping


class ConfigError(ValueError):
    pass


# Cloud SQL settings (shared.storage.cloudsql uses these too; kept here so config loads without it)
CLOUDSQL_IP_TYPES = ("private", "public", "psc")
CLOUDSQL_INSTANCE = re.compile(r"[^:/\s]+(?::[^:/\s]+)?:[^:/\s]+:[^:/\s]+")


@dataclass(frozen=True)
class HttpPoll:
    enabled: bool = True
    max_connections: int = 1000
    buffer_size: int = 100
    keepalive_interval: int = 15000  # ms between SSE comment keep-alives (§9.3)


@dataclass(frozen=True)
class HttpPush:
    enabled: bool = True
    concurrency: int = 256
    connect_timeout: int = 10000
    request_timeout: int = 180000


@dataclass(frozen=True)
class Transports:
    http_poll: HttpPoll = field(default_factory=HttpPoll)
    http_push: HttpPush = field(default_factory=HttpPush)


@dataclass(frozen=True)
class Server:
    host: str = "localhost"
    port: int = 8001
    bind: str = "0.0.0.0"
    url: str | None = None  # default http://{host}:{port}
    shutdown_timeout: int = 10000
    max_body: int = 10 * 1024 * 1024  # decision Q5


@dataclass(frozen=True)
class Sqlite:
    path: str = "resonate.db"


@dataclass(frozen=True)
class Postgres:
    url: str | None = None  # e.g. postgres://user:pass@host:5432/db
    pool_size: int = 10
    # Cloud SQL instance connection name "project:region:instance": connect through the Cloud SQL
    # Python Connector; user, password and database still come from url (its host is ignored)
    instance: str | None = None
    ip_type: str = "private"  # private | public | psc: which of the instance's addresses to dial
    iam_auth: bool = False  # IAM database login (the user is the service account, no password)


@dataclass(frozen=True)
class Storage:
    type: str = "sqlite"  # sqlite | postgres | memory
    sqlite: Sqlite = field(default_factory=Sqlite)
    postgres: Postgres = field(default_factory=Postgres)


@dataclass(frozen=True)
class Tasks:
    retry_timeout: int = 30000
    lease_timeout: int = 15000


@dataclass(frozen=True)
class Messages:
    redrive_interval: int = 1000  # ms between re-drives of undelivered outbox rows
    batch_size: int = 100


@dataclass(frozen=True)
class Timeouts:
    batch_size: int = 500  # rows per background transaction
    max_sleep: int = 60000


@dataclass(frozen=True)
class Sweeper:
    window: int = 65000  # ms one sweeper call keeps handling deadlines (> the 60 s tick: overlap)
    poll_interval: int = 250  # ms between looks for deadlines other instances wrote meanwhile
    url: str | None = None  # the sweeper function, called when a near deadline finds no sweeper running


@dataclass(frozen=True)
class Observability:
    metrics_port: int = 9090


@dataclass(frozen=True)
class Config:
    level: str = "info"
    log_format: str = "text"  # text (readable lines) | json (Google Cloud Logging fields); functions default to json
    debug: bool = False
    profile: str = "compat"  # compat | strict (protocol §1)
    server: Server = field(default_factory=Server)
    storage: Storage = field(default_factory=Storage)
    tasks: Tasks = field(default_factory=Tasks)
    messages: Messages = field(default_factory=Messages)
    timeouts: Timeouts = field(default_factory=Timeouts)
    sweeper: Sweeper = field(default_factory=Sweeper)
    transports: Transports = field(default_factory=Transports)
    observability: Observability = field(default_factory=Observability)

    @property
    def server_url(self) -> str:
        return self.server.url or f"http://{self.server.host}:{self.server.port}"

    @property
    def strict(self) -> bool:
        return self.profile == "strict"


def _coerce(raw: Any, target: Any, key: str) -> Any:
    kind = type(target) if target is not None else str
    if isinstance(raw, str) and kind is not str:
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{key}: cannot parse {raw!r}") from None
    if kind is bool and isinstance(raw, bool):
        return raw
    if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind is str and isinstance(raw, str):
        return raw
    raise ConfigError(f"{key}: expected {kind.__name__}, got {raw!r}")


def with_values(cfg: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Apply dotted-key values (e.g. {'server.port': 9000}) to a frozen config tree."""
    changes: dict[str, Any] = {}
    for f in fields(cfg):
        key = prefix + f.name
        cur = getattr(cfg, f.name)
        if is_dataclass(cur):
            sub = {k: v for k, v in values.items() if k.startswith(key + ".")}
            if sub:
                changes[f.name] = with_values(cur, sub, key + ".")
        elif key in values:
            changes[f.name] = _coerce(values[key], cur if cur is not None else "", key)
    return replace(cfg, **changes)


def from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """RESONATE_SERVER__PORT=9000 -> {'server.port': '9000'}; unknown names are ignored later."""
    env = os.environ if env is None else env
    out = {}
    for name, val in env.items():
        if name.upper().startswith("RESONATE_"):
            out[name[len("RESONATE_"):].lower().replace("__", ".")] = val
    return out


def load(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
    cfg = with_values(Config(), from_env(env))
    if overrides:
        cfg = with_values(cfg, overrides)
    if cfg.storage.type not in ("sqlite", "postgres", "memory"):
        raise ConfigError(f"storage.type: unknown storage backend {cfg.storage.type!r}; "
                          "valid options are 'sqlite', 'postgres' and 'memory'")
    pg = cfg.storage.postgres
    if cfg.storage.type == "postgres" and not pg.url and not pg.instance:
        raise ConfigError("storage.type=postgres requires RESONATE_STORAGE__POSTGRES__URL "
                          "(or RESONATE_STORAGE__POSTGRES__INSTANCE for Cloud SQL)")
    if pg.ip_type not in CLOUDSQL_IP_TYPES:
        raise ConfigError(f"storage.postgres.ip_type: expected 'private', 'public' or 'psc', got {pg.ip_type!r}")
    if pg.instance and not CLOUDSQL_INSTANCE.fullmatch(pg.instance):
        raise ConfigError("storage.postgres.instance: expected a Cloud SQL instance connection name "
                          f"'project:region:instance', got {pg.instance!r}")
    if cfg.profile not in ("compat", "strict"):
        raise ConfigError(f"profile: expected 'compat' or 'strict', got {cfg.profile!r}")
    for key, v in (("storage.postgres.pool_size", cfg.storage.postgres.pool_size),
                   ("transports.http_poll.max_connections", cfg.transports.http_poll.max_connections),
                   ("transports.http_poll.buffer_size", cfg.transports.http_poll.buffer_size),
                   ("transports.http_push.concurrency", cfg.transports.http_push.concurrency)):
        if v < 1:
            raise ConfigError(f"{key} must be at least 1 (got {v})")
    return cfg
