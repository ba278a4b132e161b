"""Routing rules (`[[tasks.routes]]`, docs/routing.md): the operator's id patterns and the target
each sends promises to, as the older server's Tasks API routed promises to a set of workers.

A rule is written as a table / JSON object `{pattern = "analytics/*", target = "poll://any@analytics"}`
or as the string `analytics/*=poll://any@analytics` (split at the first `=`). A pattern is matched
against the whole promise id: `*` stands for any run of characters, `/` and the empty run
included; every other character stands for itself. Matching is linear in the id (no regular
expressions: an operator's pattern with many `*` must not let a caller's id stall a transaction).

Kept free of heavy imports: `shared.config` imports it on every cold start.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Compiled", "Route", "check_routes", "compile_routes", "first_target"]

WILDCARD = "*"
TRANSPORT_KEYS = {"poll": "http_poll", "http": "http_push", "https": "http_push", "gcps": "gcps",
                  "bash": "bash_exec"}


@dataclass(frozen=True, slots=True)
class Route:
    """One rule: promises created without a target whose id matches `pattern` go to `target`."""
    pattern: str
    target: str

    NOUN = "rule"  # how configuration errors name one entry of the list

    @classmethod
    def from_config(cls, item: Any) -> Route:
        """A rule as any layer writes it; ValueError says what is wrong with `item`."""
        if isinstance(item, Route):
            return item
        if isinstance(item, str):
            pattern, eq, target = item.partition("=")
            if not eq:
                raise ValueError("is not 'pattern=target'")
            return cls(pattern.strip(), target.strip())
        if isinstance(item, dict):
            unknown = sorted(str(k) for k in item if k not in ("pattern", "target"))
            if unknown:
                raise ValueError(f"has unknown field(s) {', '.join(unknown)} (expected pattern and target)")
            for name in ("pattern", "target"):
                if not isinstance(item.get(name), str):
                    raise ValueError(f"needs a string {name}")
            return cls(item["pattern"], item["target"])
        raise ValueError("is not a table {pattern, target} or a string 'pattern=target'")

    def describe(self, index: int) -> str:
        """`rule 2 (pattern 'a/*', target 'poll://any@a')`: how errors and logs name it (1-based)."""
        return f"{self.NOUN} {index} (pattern {self.pattern!r}, target {self.target!r})"


Compiled = tuple[tuple[tuple[str, ...], str], ...]  # ((pattern split at '*', target), ...), in order


def compile_routes(routes: Iterable[Route]) -> Compiled:
    return tuple((tuple(r.pattern.split(WILDCARD)), r.target) for r in routes)


def matches(parts: tuple[str, ...], id: str) -> bool:
    """Whether `id` matches the pattern split at its wildcards: the first part a prefix, the last
    a suffix, the others found in order between them (leftmost is always right for `*` alone)."""
    if len(parts) == 1:
        return id == parts[0]
    head, tail = parts[0], parts[-1]
    if len(id) < len(head) + len(tail) or not id.startswith(head) or not id.endswith(tail):
        return False
    pos, end = len(head), len(id) - len(tail)
    for part in parts[1:-1]:
        at = id.find(part, pos, end)
        if at < 0:
            return False
        pos = at + len(part)
    return True


def first_target(routes: Compiled, id: str) -> str | None:
    """The target of the first rule whose pattern matches `id`, else None."""
    for parts, target in routes:
        if matches(parts, id):
            return target
    return None


def check_routes(routes: tuple[Route, ...], transports: Any, storage_type: str,
                 fail: Callable[[str], Exception]) -> None:
    """Startup validation: every pattern usable, every target an address the server can deliver
    to and its outbound destination policy allows (`shared.service.destination_refusal`, the
    check every caller-supplied target gets). `fail(message)` is the error to raise; the
    message names the rule."""
    from shared.protocol import has_control, parse_address
    from shared.requests import MAX_KEY_BYTES

    for i, r in enumerate(routes, 1):
        def bad(why: str, r: Route = r, i: int = i) -> Exception:
            return fail(f"tasks.routes: {r.describe(i)}: {why}")

        if not r.pattern.strip():
            raise bad("the pattern is empty")
        if has_control(r.pattern):
            raise bad("the pattern contains a control character")
        if len(r.pattern.replace(WILDCARD, "").encode("utf-8")) > MAX_KEY_BYTES:
            raise bad(f"the pattern can match no promise id (ids are at most {MAX_KEY_BYTES} bytes)")
        addr = parse_address(r.target)
        if addr is None:
            raise bad("the target is not a valid address (poll://any@GROUP, poll://uni@GROUP/ID, "
                      "http(s)://HOST/PATH, gcps://PROJECT/TOPIC)")
        if len(r.target.encode("utf-8")) > MAX_KEY_BYTES:
            raise bad(f"the target is longer than {MAX_KEY_BYTES} bytes")
        if storage_type == "mysql" and len(r.target) > 255:
            raise bad("the target is longer than 255 characters (storage.type=mysql keeps addresses in VARCHAR(255))")
        key = TRANSPORT_KEYS[addr.scheme]
        if not getattr(transports, key).enabled:
            raise bad(f"its transport is disabled (transports.{key}.enabled is false)")
        if addr.scheme in ("http", "https", "gcps"):  # the policy's judgement (may resolve the host name)
            from shared.service import destination_refusal

            why = destination_refusal(transports, r.target)
            if why is not None:
                raise bad(f"the outbound destination policy refuses it: {why}")
