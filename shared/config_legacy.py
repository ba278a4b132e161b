"""The old Go server's YAML configuration (`resonate serve --config resonate.yml`), mapped to
today's keys (docs/operations.md#configuration).

Keys with a modern equivalent become it (durations such as `10s` become milliseconds, the
Postgres fields one URL, `host:port` the bind address and port); keys without one are reported
with a warning naming the key, and ignored, so an old file still starts a server. Keys spelled
the modern way (`server: {port: 9000}`) are taken as they are. Go's loader ignored the case of
key names, so this one does too.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from shared.config_values import ConfigError, Layer, Schema

log = logging.getLogger("resonate.config")

STORE = "aio.subsystems.store.config."
PG = STORE + "postgres."
PG_FIELDS = ("host", "port", "username", "password", "database")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}

# legacy keys (lower case) without an equivalent -> why
UNMAPPED: dict[str, str] = {
    "api.size": "no submission queue",
    "aio.size": "no internal queues",
    "aio.subsystems.store.subsystem.size": "no internal queues",
    "aio.subsystems.store.subsystem.workers": "no internal queues",
    "aio.subsystems.store.subsystem.batchsize": "no internal queues",
    STORE + "sqlite.txtimeout": "no transaction timeout",
    PG + "txtimeout": "no transaction timeout",
    "aio.subsystems.network.subsystem.size": "no internal queues",
    "aio.subsystems.network.subsystem.workers": "no internal queues",
    "aio.subsystems.network.subsystem.batchsize": "no internal queues",
    "system.notificationcachesize": "no kernel tuning",
    "system.submissionbatchsize": "no kernel tuning",
    "system.completionbatchsize": "no kernel tuning (messages.batch_size is the only batch knob)",
}
# legacy key prefixes (lower case) without an equivalent -> why
UNMAPPED_PREFIXES: dict[str, str] = {
    "system.": "no kernel tuning",
    # the first Tasks API design's connections (id pattern, http URL, queue): never used by an SDK,
    # and its deliveries and claims had other bodies, so a worker written for it would not understand
    # ours; today's equivalent is the routing rules (tasks.routes, docs/routing.md)
    "aio.subsystems.queuing.": "the first Tasks API design's connections; see tasks.routes (docs/routing.md)",
}


def read_yaml(text: str, name: str, schema: Schema) -> tuple[Layer, dict[str, str]]:
    """The values of a legacy YAML file, as a file layer."""
    try:
        import yaml  # only legacy files need it
    except ImportError:
        raise ConfigError(f"{name} is YAML: reading it needs PyYAML (pip install PyYAML)") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {name}: {e}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"cannot parse {name}: expected a mapping of keys at the top level")
    flat: dict[str, tuple[str, Any]] = {}  # lower-case dotted key -> (key as written, value)
    _flatten(doc, "", flat, schema)
    layer: Layer = {}
    present: dict[str, str] = {}

    def where(written: str) -> str:
        return f"{name}, legacy key {written} (file)"

    def put(key: str, value: Any, written: str) -> None:
        layer[key] = (value, where(written))

    for low, (written, value) in flat.items():
        handler = _MAPPED.get(low)
        if handler is not None:
            handler(value, written, put)
        elif low in UNMAPPED or any(low.startswith(p) for p in UNMAPPED_PREFIXES):
            why = UNMAPPED.get(low) or next(w for p, w in UNMAPPED_PREFIXES.items() if low.startswith(p))
            log.warning("%s: legacy key %s has no equivalent in this server (%s); ignored", name, written, why)
        elif _is_pg(low):
            pass  # folded into storage.postgres.url below
        elif low in schema.leaves:
            layer[low] = (value, f"{name}, key {written} (file)")
        elif low in schema.sections and isinstance(value, dict):
            if schema.sections[low][1]:
                present.setdefault(low, f"{name}, key {written} (file)")
        else:
            log.warning("%s: unknown configuration key %s ignored", name, written)
    _postgres_url(flat, layer, name)
    return layer, present


def _is_pg(low: str) -> bool:
    return low.startswith(PG) and (low[len(PG):] in PG_FIELDS or low.startswith(PG + "query."))


def _flatten(node: dict[Any, Any], prefix: str, out: dict[str, tuple[str, Any]], schema: Schema) -> None:
    """Nested mappings to dotted keys; keys may also be written dotted (`metrics.port: 9090`)."""
    for k, v in node.items():
        written = f"{prefix}{k}"
        low = written.lower()
        if isinstance(v, dict) and v:
            _flatten(v, written + ".", out, schema)
        else:
            out[low] = (written, v)


def _addr(value: Any, written: str, put: Callable[[str, Any, str], None]) -> None:
    """`0.0.0.0:8001`, `:8001`, `[::]:8001` -> server.bind + server.port."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"invalid value for server.bind/server.port from legacy key {written}: "
                          f"{value!r} is not an address host:port")
    host, _, port = value.rpartition(":")
    put("server.bind", host or "0.0.0.0", written)
    put("server.port", port, written)


def _grpc_addr(value: Any, written: str, put: Callable[[str, Any, str], None]) -> None:
    """`0.0.0.0:50051` -> server.grpc_port (gRPC listens on server.bind, like every listener here)."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"invalid value for server.grpc_port from legacy key {written}: "
                          f"{value!r} is not an address host:port")
    host, _, port = value.rpartition(":")
    if host.strip("[]") not in ("", "0.0.0.0", "::"):
        log.warning("legacy key %s: gRPC listens on server.bind (the HTTP listener's address), not on %s", written,
                    host)
    put("server.grpc_port", port, written)


def duration_ms(value: Any, written: str, key: str) -> int:
    """A Go duration (`10s`, `250ms`, `1m30s`) in milliseconds."""
    text = value.strip() if isinstance(value, str) else ""
    if text == "0":
        return 0
    parts = _DURATION.findall(text)
    if not parts or "".join(a + u for a, u in parts) != text:
        raise ConfigError(f"invalid value for {key} from legacy key {written}: {value!r} is not a duration "
                          "such as '10s' or '250ms'")
    return round(sum(float(a) * _UNIT_MS[u] for a, u in parts))


def _to(key: str, convert: Callable[[Any, str, str], Any] | None = None) -> Callable[..., None]:
    def handler(value: Any, written: str, put: Callable[[str, Any, str], None]) -> None:
        put(key, convert(value, written, key) if convert else value, written)
    return handler


def _kind(value: Any, written: str, key: str) -> Any:
    return value.lower() if isinstance(value, str) else value


_MAPPED: dict[str, Callable[..., None]] = {
    "api.subsystems.http.addr": _addr,
    "api.subsystems.http.config.addr": _addr,
    "api.subsystems.http.timeout": _to("server.shutdown_timeout", duration_ms),
    "api.subsystems.http.config.timeout": _to("server.shutdown_timeout", duration_ms),
    "api.subsystems.grpc.addr": _grpc_addr,
    "api.subsystems.grpc.config.addr": _grpc_addr,
    STORE + "kind": _to("storage.type", _kind),
    STORE + "sqlite.path": _to("storage.sqlite.path"),
    "aio.subsystems.network.config.timeout": _to("transports.http_push.request_timeout", duration_ms),
    "metrics.port": _to("observability.metrics_port"),
    "baseurl": _to("server.url"),
}


def _postgres_url(flat: dict[str, tuple[str, Any]], layer: Layer, name: str) -> None:
    """host/port/username/password/database (+ query) -> storage.postgres.url, with the Go
    server's defaults (localhost, 5432, no user, database resonate), when any is given or the
    kind is postgres."""
    fields = {low[len(PG):]: v for low, (_, v) in flat.items()
              if _is_pg(low)}
    kind = layer.get("storage.type", (None, ""))[0]
    if not fields and kind != "postgres":
        return
    host = str(fields.get("host") or "localhost")
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    port = fields.get("port") or 5432
    if not str(port).isdigit():
        raise ConfigError(f"invalid value for storage.postgres.url from {name}, legacy key {PG}port (file): "
                          f"{port!r} is not a port number")
    user = quote(str(fields.get("username") or ""), safe="")
    password = quote(str(fields.get("password") or ""), safe="")
    login = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    database = quote(str(fields.get("database") or "resonate"), safe="")
    query = {k[len("query."):]: str(v) for k, v in fields.items() if k.startswith("query.")}
    url = f"postgres://{login}{host}:{port}/{database}" + (f"?{urlencode(query)}" if query else "")
    layer["storage.postgres.url"] = (url, f"{name}, legacy keys {PG}* (file)")
