"""Flag value helpers shared by the client commands: durations, JSON flags, the base64 data helper.

They reproduce the reference CLI's rules and error texts so scripts written
against it behave the same here.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from local.commands.client import CliError, compact, now_ms

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_I64_MAX = 2**63 - 1


def parse_duration(text: str) -> int:
    """`90s`, `1h30m`, `1d2h3m4s5ms` -> milliseconds. Every number needs a unit; "" is 0; a
    non-empty total of zero (`0s`) is an error, as in the reference."""
    total, i, n = 0, 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] in "0123456789":
            j += 1
        if j == i:
            raise CliError(f"Invalid duration '{text}': expected a number")
        num = int(text[i:j])
        if num > _I64_MAX:
            raise CliError(f"Invalid number in duration '{text}'")
        k = j
        while k < n and text[k].isalpha():
            k += 1
        unit = text[j:k]
        if unit == "":
            raise CliError(f"Missing unit in duration '{text}'")
        if unit not in _UNITS:
            raise CliError(f"Unknown unit '{unit}' in duration '{text}'")
        total += num * _UNITS[unit]
        if total > _I64_MAX:
            raise CliError(f"Invalid number in duration '{text}'")
        i = k
    if total == 0 and text not in ("", "0"):
        raise CliError(f"Invalid duration '{text}'")
    return total


def _no_constants(name: str) -> Any:
    raise ValueError(f"invalid JSON literal {name}")


def loads(text: str) -> Any:
    """Strict JSON (no NaN/Infinity, which the reference's parser rejects too)."""
    return json.loads(text, parse_constant=_no_constants)


def json_flag(text: str, flag: str) -> Any:
    """Parse a JSON-valued flag; `Error: Invalid --tags JSON: …` when it is not JSON."""
    try:
        return loads(text)
    except ValueError as e:
        raise CliError(f"Invalid {flag} JSON: {e}") from e


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def encode_data(value: Any) -> Any:
    """The value-encoding helper: a `data` member becomes base64 of its raw text (a JSON string)
    or of its compact JSON (anything else); other members and non-objects pass through."""
    if isinstance(value, dict) and "data" in value:
        data = value["data"]
        value = {**value, "data": b64(data if isinstance(data, str) else compact(data))}
    return value


def timeout_at(duration: str) -> int:
    """Absolute deadline now + duration, computed on the client as the reference does."""
    return now_ms() + parse_duration(duration)
