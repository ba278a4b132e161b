"""Envelope parsing, field decoders and addresses (docs/protocol.md#22-request-envelope,
#24-request-pipeline, #4-addresses). No I/O, no state.

Every check that can reject a request without reading state lives here, so a rejected request
never opens a transaction and can never change anything.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VERSION = "2026-04-01"
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
# Arrays/objects may nest at most this deep in a body (the envelope object is level 1). The SDKs
# send at most 6; a deeper body is refused right after parsing, before anything else looks at it.
MAX_DEPTH = 64
DEPTH_ERROR = f"Invalid request envelope: nesting deeper than {MAX_DEPTH}"


class Reject(Exception):
    """A request that fails before any state is read: status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DecodeError(Exception):
    """A field has the wrong type or is missing (becomes 'Invalid request: <detail>')."""


@dataclass(frozen=True, slots=True)
class Envelope:
    kind: str
    corr_id: str
    head: dict[str, Any]
    data: dict[str, Any]
    auth: str | None
    debug_time: int | None
    nul: bool = False  # some string in data holds U+0000, which no SQL store keeps as text


def response(kind: str, corr_id: str, status: int, data: Any) -> dict[str, Any]:
    return {"kind": kind, "head": {"corrId": corr_id, "status": status, "version": VERSION}, "data": data}


def dumps(obj: Any) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate echoed back (e.g. a corrId): escape it
        return json.dumps(obj, separators=(",", ":")).encode()


_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


def has_lone_surrogate(v: Any) -> bool:
    return any_str(v, _unencodable)


def _unencodable(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def any_str(v: Any, bad: Callable[[str], bool]) -> bool:
    """Whether `bad` holds for any string (key or value) in v. An explicit stack, never
    recursion: client data must not be able to exhaust the interpreter's stack."""
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if bad(x):
                return True
        elif isinstance(x, dict):
            for k, y in x.items():
                if bad(k):
                    return True
                stack.append(y)
        elif isinstance(x, list):
            stack.extend(x)
    return False


def too_deep(v: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays/objects nest more than `limit` levels in v (v itself, if a container, is
    level 1). Iterative; stops at the first container beyond the limit."""
    stack = [(v, 1)]
    while stack:
        x, depth = stack.pop()
        if isinstance(x, dict):
            x = x.values()
        elif not isinstance(x, list):
            continue
        if depth > limit:
            return True
        stack.extend((y, depth + 1) for y in x if isinstance(y, (dict, list)))
    return False


_KIND_RE = re.compile(rb'"kind"\s*:\s*"((?:[^"\\]|\\.)*)"')
_CORR_RE = re.compile(rb'"corrId"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _best_effort(raw: bytes, pattern: re.Pattern[bytes], default: str) -> str:
    m = pattern.search(raw)
    if not m:
        return default
    try:
        value = json.loads(b'"' + m.group(1) + b'"')
        return value if isinstance(value, str) else default
    except ValueError:
        return default


def _may_nest(raw: bytes) -> bool:
    """Cheap pre-check (C speed): fewer brackets than MAX_DEPTH cannot nest deeper than it."""
    return raw.count(b"[") + raw.count(b"{") > MAX_DEPTH


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and I64_MIN <= v <= I64_MAX


def parse_envelope(raw: bytes) -> tuple[Envelope | None, dict[str, Any] | None]:
    """Step 2 of the request pipeline (docs/protocol.md#24-request-pipeline); also notes NUL
    characters in `data` for step 7. Returns (envelope, None) or (None, error response)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        # RecursionError: far deeper than MAX_DEPTH, the same answer as any too-deep body
        error = DEPTH_ERROR if isinstance(e, RecursionError) else f"Invalid request envelope: {e}"
        return None, response(_best_effort(raw, _KIND_RE, "unknown"), _best_effort(raw, _CORR_RE, "0"), 400, error)
    obj = body if isinstance(body, dict) else {}
    kind = obj.get("kind")
    head = obj.get("head")
    kind_echo = kind if isinstance(kind, str) else "unknown"
    corr = head.get("corrId") if isinstance(head, dict) else None
    corr_echo = corr if isinstance(corr, str) else "0"

    def bad(msg: str) -> tuple[None, dict[str, Any]]:
        return None, response(kind_echo, corr_echo, 400, msg)

    if _may_nest(raw) and too_deep(body):  # first: before anything else looks into the body
        return bad(DEPTH_ERROR)
    if not isinstance(body, dict):
        return bad("Invalid request envelope: expected an object")
    if not isinstance(kind, str):
        return bad("Invalid request envelope: missing or invalid field `kind`")
    if not isinstance(head, dict):
        return bad("Invalid request envelope: missing or invalid field `head`")
    if not isinstance(corr, str):
        return bad("Invalid request envelope: missing or invalid field `head.corrId`")
    version = head.get("version")
    if not isinstance(version, str):
        return bad("Invalid request envelope: missing or invalid field `head.version`")
    auth = head.get("auth")
    if auth is not None and not isinstance(auth, str):
        return bad("Invalid request envelope: invalid field `head.auth`")
    debug_time = head.get("resonate:debug_time")
    if debug_time is not None and not is_int(debug_time):
        return bad("Invalid request envelope: invalid field `head.resonate:debug_time`")
    if "data" not in body:
        return bad("Invalid request envelope: missing field `data`")
    if kind == "":
        return bad("Missing or invalid 'kind' field — must be a non-empty string")
    data = body["data"]
    if not isinstance(data, dict):
        return bad("Invalid 'data' field — must be an object")
    if version != VERSION:
        return bad(f'Unsupported protocol version \'{version}\', supported versions: ["{VERSION}"]')
    if _SURROGATE_ESCAPE.search(raw) and has_lone_surrogate(body):  # not storable as UTF-8
        return bad("Invalid request envelope: strings must be valid Unicode (lone surrogate)")
    nul = b"\\u0000" in raw and any_str(data, lambda x: "\x00" in x)
    return Envelope(kind, corr, head, data, auth, debug_time, nul), None


# ---- field decoders ------------------------------------------------------------------------

def req_str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if v is None:
        raise DecodeError(f"missing field `{key}`")
    if not isinstance(v, str):
        raise DecodeError(f"invalid type for `{key}`: expected a string")
    return v


def opt_str(d: dict[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise DecodeError(f"invalid type for `{key}`: expected a string")
    return v


def req_int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if v is None:
        raise DecodeError(f"missing field `{key}`")
    if not is_int(v):
        raise DecodeError(f"invalid type for `{key}`: expected a 64-bit integer")
    return v


def opt_int(d: dict[str, Any], key: str) -> int | None:
    v = d.get(key)
    if v is not None and not is_int(v):
        raise DecodeError(f"invalid type for `{key}`: expected a 64-bit integer")
    return v


def str_map(v: Any, key: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise DecodeError(f"invalid type for `{key}`: expected a map of strings")
    return dict(v)


def value(v: Any, key: str) -> dict[str, Any]:
    """A Value (docs/protocol.md#31-value): optional `headers` map and optional `data` string; nothing else is kept."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise DecodeError(f"invalid type for `{key}`: expected an object")
    out: dict[str, Any] = {}
    if v.get("headers") is not None:
        out["headers"] = str_map(v["headers"], f"{key}.headers")
    if v.get("data") is not None:
        if not isinstance(v["data"], str):
            raise DecodeError(f"invalid type for `{key}.data`: expected a string")
        out["data"] = v["data"]
    return out


def req_obj(d: dict[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key)
    if v is None:
        raise DecodeError(f"missing field `{key}`")
    if not isinstance(v, dict):
        raise DecodeError(f"invalid type for `{key}`: expected an object")
    return v


def enum(d: dict[str, Any], key: str, allowed: tuple[str, ...], required: bool) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise DecodeError(f"missing field `{key}`")
        return None
    if not isinstance(v, str) or v not in allowed:
        raise DecodeError(f"invalid value for `{key}`: expected one of {', '.join(allowed)}")
    return v


# ---- addresses (docs/protocol.md#4-addresses) --------------------------------------------------

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.S)
_HOST_BAD = set(" /?#@[]\\<>\"{}|^`%\t\r\n")


@dataclass(frozen=True, slots=True)
class Address:
    scheme: str
    cast: str = ""  # poll: "uni" or "any"
    group: str = ""  # poll group / gcps project
    id: str = ""  # poll id / gcps topic
    url: str = ""


# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: never part of an
# address (they would split a header, a URL or a log line wherever the address travels)
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control(s: str) -> bool:
    return _CONTROL_RE.search(s) is not None


def parse_address(addr: str) -> Address | None:
    """Parse a delivery address; None when invalid (also: any control character). Poll groups
    keep their case."""
    if has_control(addr):
        return None
    m = _SCHEME_RE.match(addr)
    if not m:
        return None
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme in ("http", "https"):
        if not rest.startswith("//"):
            return None
        hostport = rest[2:].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
        if not hostport or any(c in " \t\r\n" for c in addr):
            return None
        return Address(scheme, url=addr)
    if scheme == "bash":
        return Address(scheme, url=addr)
    if not rest.startswith("//"):
        return None
    netloc, _, path = rest[2:].partition("/")
    if scheme == "poll":
        userinfo, at, group = netloc.rpartition("@")
        if not at or userinfo not in ("uni", "any") or not group or any(c in _HOST_BAD for c in group):
            return None
        return Address(scheme, cast=userinfo, group=group, id=path)
    if scheme == "gcps":
        if not netloc or not path or any(c in _HOST_BAD for c in netloc):
            return None
        return Address(scheme, group=netloc, id=path)
    return None
