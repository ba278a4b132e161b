"""The operator's outbox kinds: list the queued messages (the dead ones: given up after
`transports.http_push.max_attempts` failed pushes) and re-drive dead ones.

They span every tenant (`shared.scope.everything`), so with auth on only an admin token (or one
with the empty prefix) runs them; the CLI's `resonate messages` commands send them. A row is
named by its queue position (`seq`), stable for the row's life: a new version of an execute
keeps its row's position but is no longer dead, so a re-drive never revives what replaced it.
"""
from __future__ import annotations

from typing import Any, ClassVar

from shared.frozen import frozen
from shared.protocol import DecodeError, Reject, is_int, opt_str
from shared.requests import Request, _limit

MAX_REDRIVE_IDS = 1000


@frozen
class OutboxSearch(Request):
    kind: ClassVar[str] = "outbox.search"
    dead: bool
    limit: int
    after: int  # queue position the page starts after (the cursor)


@frozen
class OutboxRedrive(Request):
    kind: ClassVar[str] = "outbox.redrive"
    ids: tuple[int, ...] | None  # None: every dead row


def _opt_bool(d: dict[str, Any], key: str) -> bool:
    v = d.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise DecodeError(f"invalid type for `{key}`: expected a boolean")
    return v


def decode_outbox_search(d: dict[str, Any], strict: bool) -> OutboxSearch:
    cursor = opt_str(d, "cursor")
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise Reject(400, "Invalid request: cursor must be the cursor of an earlier answer")
    return OutboxSearch(_opt_bool(d, "dead"), _limit(d, 100), int(cursor or 0))


def decode_outbox_redrive(d: dict[str, Any], strict: bool) -> OutboxRedrive:
    every = _opt_bool(d, "all")
    ids = d.get("ids")
    if every == (ids is not None):
        raise Reject(400, "Invalid request: give either `ids` (message ids) or `all: true`")
    if ids is None:
        return OutboxRedrive(None)
    if not isinstance(ids, list) or not ids or len(ids) > MAX_REDRIVE_IDS:
        raise DecodeError(f"invalid type for `ids`: expected a list of 1 to {MAX_REDRIVE_IDS} message ids")
    if not all(is_int(i) and i > 0 for i in ids):
        raise DecodeError("invalid `ids`: message ids are positive integers")
    return OutboxRedrive(tuple(dict.fromkeys(ids)))
