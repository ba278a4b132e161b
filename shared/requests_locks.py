"""The typed requests of the older server's distributed locks (docs/legacy-api.md#locks), decoded
from the JSON body of `POST /locks/acquire|release|heartbeat` (`shared/legacy/rest_locks.py`).

The lock's duration went by three names over the older server's life: `expiryInSeconds`
(Jan–Mar 2024), `expiryInMilliseconds` (Apr–Sep 2024) and `ttl` (ms, from Oct 2024). All three
are accepted (the newest present wins); the engine keeps milliseconds. Every field is checked
here, before any transaction, so a refused request changes nothing.
"""
from __future__ import annotations

from typing import Any, ClassVar

from shared.frozen import frozen
from shared.protocol import I64_MAX, Reject, is_int
from shared.requests import Data, Request, _bounded

# the duration's field names, newest first, with the factor to milliseconds
TTL_FIELDS = (("ttl", 1), ("expiryInMilliseconds", 1), ("expiryInSeconds", 1000))


def _str(d: Data, key: str) -> str:
    """A required non-empty string, within the key bounds every store's indexes hold."""
    v = d.get(key)
    if not isinstance(v, str) or v == "":
        raise Reject(400, f"The field {key} is required")
    if "\x00" in v:  # no SQL store keeps U+0000 in text
        raise Reject(400, f"The field {key} must not contain NUL characters")
    return _bounded(v, key)


def _ttl(d: Data) -> int:
    """The lock's duration in ms: the first of `ttl`, `expiryInMilliseconds`, `expiryInSeconds`
    present (JSON null counts as absent); a non-negative 64-bit integer, seconds saturated."""
    for key, factor in TTL_FIELDS:
        v: Any = d.get(key)
        if v is None:
            continue
        if not is_int(v) or v < 0:
            raise Reject(400, f"The field {key} must be a non-negative 64-bit integer")
        return min(int(v) * factor, I64_MAX)
    raise Reject(400, "The field ttl is required")


@frozen
class LockAcquire(Request):
    """POST /locks/acquire: hold `resource` for `execution` (of process `process`) for `ttl` ms."""

    kind: ClassVar[str] = "rest.lock.acquire"
    resource: str
    execution: str
    process: str
    ttl: int


@frozen
class LockRelease(Request):
    """POST /locks/release: let go of `resource` if `execution` holds it."""

    kind: ClassVar[str] = "rest.lock.release"
    resource: str
    execution: str


@frozen
class LockHeartbeat(Request):
    """POST /locks/heartbeat: extend every lock `process` holds by its own ttl."""

    kind: ClassVar[str] = "rest.lock.heartbeat"
    process: str


def decode_acquire(d: Data, strict: bool) -> LockAcquire:
    return LockAcquire(_str(d, "resourceId"), _str(d, "executionId"), _str(d, "processId"), _ttl(d))


def decode_release(d: Data, strict: bool) -> LockRelease:
    return LockRelease(_str(d, "resourceId"), _str(d, "executionId"))


def decode_heartbeat(d: Data, strict: bool) -> LockHeartbeat:
    return LockHeartbeat(_str(d, "processId"))
