"""The file layer of the configuration: `resonate.toml`, or the old Go server's YAML (`shared.config_legacy`).

Imported only when there is a file to read, so `tomllib` (and `yaml`, for legacy files only)
never weigh on a Cloud Functions cold start. Unknown keys are ignored as in the reference,
but with a warning naming the key and its line: a typo in a file is otherwise silent.
"""
from __future__ import annotations

import logging
import re
import tomllib
from typing import Any

from shared.config_values import ConfigError, Layer, Schema

log = logging.getLogger("resonate.config")

_HEADER = re.compile(r"\s*\[\[?([^\]]+)\]\]?\s*(?:#.*)?$")
_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""  # a bare or quoted key
_ASSIGN = re.compile(rf"\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def read_file(path: str, name: str, schema: Schema) -> tuple[Layer, dict[str, str]]:
    """The values of one file and the optional sections it creates (e.g. `[auth]`).

    `name` is how messages refer to the file. Legacy YAML is recognised by its extension
    (.yml, .yaml) or, for any other name, by not being TOML but being a YAML mapping."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {name}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read configuration file {name}: not UTF-8 ({e.reason} at byte {e.start})") from None
    lower = name.lower()
    if lower.endswith((".yml", ".yaml")):
        return _legacy(text, name, schema)
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        if not lower.endswith(".toml") and _is_yaml_mapping(text):
            return _legacy(text, name, schema)
        raise ConfigError(f"cannot parse {name}: {e}") from None
    return read_toml(table, text, name, schema)


def _legacy(text: str, name: str, schema: Schema) -> tuple[Layer, dict[str, str]]:
    from shared.config_legacy import read_yaml

    return read_yaml(text, name, schema)


def _is_yaml_mapping(text: str) -> bool:
    try:
        import yaml
    except ImportError:
        return False
    try:
        return isinstance(yaml.safe_load(text), dict)
    except yaml.YAMLError:
        return False


def read_toml(table: dict[str, Any], text: str, name: str, schema: Schema) -> tuple[Layer, dict[str, str]]:
    """Flatten a parsed TOML document along the schema; `text` only locates keys for messages."""
    lines = key_lines(text)
    layer: Layer = {}
    present: dict[str, str] = {}

    def where(key: str) -> str:
        n = lines.get(key)
        return f"{name}, line {n} (file)" if n else f"{name} (file)"

    def walk(tbl: dict[str, Any], prefix: str) -> None:
        for k, v in tbl.items():
            key = prefix + k
            if key in schema.sections:
                if not isinstance(v, dict):
                    raise ConfigError(f"invalid value for {key} from {where(key)}: {v!r} is not a table")
                if schema.sections[key][1]:
                    present.setdefault(key, where(key))
                walk(v, key + ".")
            elif key in schema.leaves:
                layer[key] = (v, where(key))
            else:
                log.warning("%s: unknown configuration key %s ignored", where(key).removesuffix(" (file)"), key)

    walk(table, "")
    return layer, present


def key_lines(text: str) -> dict[str, int]:
    """Best-effort line of each dotted key (`[server]` + `port = 1` -> {'server.port': 2}): good for
    ordinary files; multi-line strings or arrays may hide a key, which then gets no line."""
    out: dict[str, int] = {}
    table = ""
    for n, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            table = _dotted(m.group(1))
            out.setdefault(table, n)
            continue
        m = _ASSIGN.match(line)
        if m:
            key = _dotted(m.group(1))
            out.setdefault(f"{table}.{key}" if table else key, n)
    return out


def _dotted(raw: str) -> str:
    return ".".join(p.strip().strip("\"'") for p in raw.split("."))
