"""Typed values for the configuration tree: schema, coercion, the environment layer, assembly.

Kept apart from `shared.config` (the dataclasses and `load`) and free of heavy imports: the
Cloud Functions import `shared.config` on a cold start, so this module uses only the standard
library pieces that are loaded anyway (`dataclasses`, `typing`, `re`, `os`).

A *layer* is a flat dict `{dotted key: (raw value, where)}`; `where` names the layer for error
messages, e.g. `RESONATE_SERVER__PORT (environment)`, `resonate.toml, line 3 (file)`,
`--server-port (flag)`. Layers are merged key by key, then coerced to each field's type.
"""
from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

Value = tuple[Any, str]  # (raw value, where it came from)
Layer = dict[str, Value]

DEFAULT = "default"
_INT = re.compile(r"[+-]?\d+")
_I64_MAX = 2 ** 63 - 1


class ConfigError(ValueError):
    """An invalid configuration: the message names the key and the layer it came from."""


class Schema:
    """The leaves and sections of a dataclass tree, by dotted key (built once per root class)."""

    def __init__(self, root: type, limits: Mapping[str, tuple[int, int]]) -> None:
        self.root = root
        self.leaves: dict[str, tuple[Any, bool]] = {}  # key -> (int | float | bool | str | tuple, nullable)
        self.sections: dict[str, tuple[type, bool]] = {}  # key -> (dataclass, optional)
        self.limits = limits
        self._walk(root, "")

    def _walk(self, cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            kind, nullable = _unwrap(hints[f.name])
            key = prefix + f.name
            if is_dataclass(kind):
                self.sections[key] = (kind, nullable)  # type: ignore[assignment]
                self._walk(kind, key + ".")  # type: ignore[arg-type]
            else:
                self.leaves[key] = (kind, nullable)

    def section_of(self, key: str) -> str | None:
        """The innermost optional section holding `key` (it must exist once the key is set)."""
        parts = key.split(".")
        for i in range(len(parts) - 1, 0, -1):
            sec = ".".join(parts[:i])
            if self.sections.get(sec, (None, False))[1]:
                return sec
        return None


class Records:
    """The leaf kind of a list of records (`tuple[Route, ...]`: `[[tasks.routes]]`): each item
    parsed by the record class's `from_config` (a table, a JSON object or its string form)."""

    __slots__ = ("cls",)

    def __init__(self, cls: Any) -> None:
        self.cls = cls


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """`int | None` -> (int, True); `tuple[str, ...]` (or `list[str]`) -> (tuple, False);
    `tuple[Record, ...]` of a dataclass -> (Records(Record), False)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return _unwrap(inner[0])[0], True
    if typing.get_origin(hint) in (list, tuple):
        return (Records(args[0]) if args and is_dataclass(args[0]) else tuple), False
    return hint, False


def coerce(schema: Schema, key: str, raw: Any, where: str | None = None) -> Any:
    """`raw` as the type of `key`. Strings (environment, flags) are parsed as loose literals:
    integers, `true`/`false`, JSON arrays or comma-separated lists; file values must already
    have the right type (an integer written as a string is accepted, as the reference does)."""
    kind, nullable = schema.leaves[key]
    origin = f" from {where}" if where else ""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"invalid value for {key}{origin}: {raw!r} {why}")

    if raw is None and nullable:
        return None
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise bad("is not a boolean (true or false)")
    if kind is int:
        if isinstance(raw, str) and _INT.fullmatch(raw.strip()):
            val = int(raw)
        elif isinstance(raw, int) and not isinstance(raw, bool):
            val = raw
        else:
            raise bad("is not an integer")
        lo, hi = schema.limits.get(key, (0, _I64_MAX))
        if not lo <= val <= hi:
            raise bad(f"is out of range ({lo} to {hi})")
        return val
    if kind is float:  # a ratio (observability.trace_sample_ratio): its range is in the limits
        try:
            if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                raise ValueError
            num = float(raw)
        except ValueError:
            raise bad("is not a number") from None
        lo, hi = schema.limits.get(key, (0, _I64_MAX))
        if not lo <= num <= hi:  # NaN fails this too
            raise bad(f"is out of range ({lo} to {hi})")
        return num
    if isinstance(kind, Records):
        return _records(kind.cls, raw, bad, lambda why: ConfigError(f"invalid value for {key}{origin}: {why}"))
    if kind is tuple:
        if isinstance(raw, str):
            raw = _parse_list(raw, bad)
        if isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
            return tuple(x.strip() for x in raw if x.strip())
        raise bad("is not a list of strings")
    if isinstance(raw, str):
        return raw
    raise bad("is not a string")


def _records(cls: Any, raw: Any, bad: Any, fail: Any) -> tuple[Any, ...]:
    """A list of records: a TOML array of tables, a JSON array (of objects or strings) in a
    string, a comma-separated string of their string forms, or the flags' tuple of strings."""
    if isinstance(raw, str):
        raw = _parse_list(raw, bad, f"{cls.NOUN}s") if raw.strip() else []
    if not isinstance(raw, (list, tuple)):
        raise bad(f"is not a list of {cls.NOUN}s")
    out = []
    for i, item in enumerate(raw, 1):
        if isinstance(item, str) and not item.strip():
            continue  # `a=b,` : a trailing comma
        try:
            out.append(cls.from_config(item))
        except ValueError as e:
            raise fail(f"{cls.NOUN} {i}, {item!r}, {e}") from None
    return tuple(out)


def _parse_list(text: str, bad: Any, what: str = "strings") -> Any:
    """`["a","b"]` (JSON, as the reference documents) or `a,b`."""
    text = text.strip()
    if text.startswith("["):
        import json  # only for this form

        try:
            return json.loads(text)
        except ValueError:
            raise bad(f"is not a JSON array of {what}") from None
    return text.split(",")


def env_layer(schema: Schema, env: Mapping[str, str] | None) -> tuple[Layer, dict[str, str]]:
    """`RESONATE_SERVER__PORT=9000` -> {'server.port': ('9000', 'RESONATE_SERVER__PORT (environment)')}.

    Names are matched case-insensitively; unknown ones are ignored (the SDKs' `RESONATE_URL`,
    `RESONATE_TOKEN` share the prefix). Any name under an optional section (`RESONATE_AUTH__…`)
    creates that section, as the reference does. `OTEL_EXPORTER_OTLP_ENDPOINT` overrides
    `observability.otlp_endpoint` from the file and `RESONATE_*` (flags still win).
    """
    env = os.environ if env is None else env
    layer: Layer = {}
    present: dict[str, str] = {}
    for name in sorted(env):
        if not name.upper().startswith("RESONATE_"):
            continue
        key = name[len("RESONATE_"):].lower().replace("__", ".")
        where = f"{name} (environment)"
        for sec, (_, optional) in schema.sections.items():
            if optional and key.startswith(sec + ".") and sec not in present:
                present[sec] = where
        if key in schema.leaves:
            layer[key] = (env[name], where)
    otel = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if otel and "observability.otlp_endpoint" in schema.leaves:
        layer["observability.otlp_endpoint"] = (otel, "OTEL_EXPORTER_OTLP_ENDPOINT (environment)")
    return layer, present


def assemble(schema: Schema, values: Mapping[str, Value], present: Mapping[str, str]) -> Any:
    """Coerce every value and build the dataclass tree. An optional section exists when any
    layer named it (a TOML table, a variable or flag under it); its required fields must then
    be set, e.g. `auth.publickey`."""
    typed = {k: coerce(schema, k, raw, where) for k, (raw, where) in values.items()}
    created = dict(present)
    for key, (_, where) in values.items():
        sec = schema.section_of(key)
        while sec is not None:
            created.setdefault(sec, where)
            sec = schema.section_of(sec)
    return _build(schema, schema.root, "", typed, created)


def _build(schema: Schema, cls: type, prefix: str, typed: Mapping[str, Any], created: Mapping[str, str]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        key = prefix + f.name
        if key in schema.sections:
            sub, optional = schema.sections[key]
            if not optional or key in created:
                kwargs[f.name] = _build(schema, sub, key + ".", typed, created)
        elif key in typed:
            kwargs[f.name] = typed[key]
        elif f.default is MISSING and f.default_factory is MISSING:
            section = prefix.rstrip(".")
            raise ConfigError(f"{section}: missing field {f.name} (the [{section}] section was "
                              f"created by {created.get(section, 'the configuration')}; "
                              f"set {key} or remove the section)")
    return cls(**kwargs)


def env_name(key: str) -> str:
    """The environment variable of a dotted key: server.port -> RESONATE_SERVER__PORT."""
    return "RESONATE_" + key.upper().replace(".", "__")
