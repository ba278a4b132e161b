"""What a worker receives: the outbox row with its address parsed once, and the message JSON.

Every path that turns an outbox row into the bytes a worker sees (SSE, HTTP push, gcps, bash,
the `dispatch` function, `debug.snap`) builds them here, so they cannot drift apart:

    execute  {"kind": "execute", "head": {"serverUrl": …}, "data": {"task": {"id", "version"}}}
    unblock  {"kind": "unblock", "head": {}, "data": {"promise": <the promise's wire form>}}

(`serverUrl` only when the server knows its URL; `debug.snap` shows messages without it.)
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.protocol import Address, dumps, parse_address
from shared.records import Message

HTTP_SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message on its way out. `seq` is its queue position (0: a just-committed message not
    read back from the outbox); `address` is `message.address` parsed (None: unparseable)."""

    message: Message
    address: Address | None
    seq: int = 0

    @classmethod
    def of(cls, m: Message, seq: int = 0) -> OutboxRow:
        return cls(m, parse_address(m.address), seq)

    @property
    def scheme(self) -> str | None:
        return None if self.address is None else self.address.scheme

    @property
    def is_poll(self) -> bool:
        return self.address is not None and self.address.scheme == "poll"

    @property
    def is_http(self) -> bool:
        return self.address is not None and self.address.scheme in HTTP_SCHEMES


def rows_of(pairs: Iterable[tuple[int, Message]],
            parsed: Mapping[str, Address | None] | None = None) -> list[OutboxRow]:
    """Rows of (seq, message) pairs; `parsed`: addresses parsed already (address -> Address), reused."""
    out = []
    for seq, m in pairs:
        if parsed is not None and m.address in parsed:
            out.append(OutboxRow(m, parsed[m.address], seq))
        else:
            out.append(OutboxRow.of(m, seq))
    return out


def message_json(m: Message, promise: dict[str, Any] | None, server_url: str | None = None) -> dict[str, Any]:
    """The message as a worker receives it; `promise`: the wire form of an unblock's promise."""
    if m.kind == "execute":
        head = {"serverUrl": server_url} if server_url else {}
        return {"kind": "execute", "head": head, "data": {"task": {"id": m.id, "version": m.version}}}
    if promise is None:
        raise ValueError(f"the unblock of {m.id!r} needs its promise")
    return {"kind": "unblock", "head": {}, "data": {"promise": promise}}


def encode(m: Message, promise: dict[str, Any] | None, server_url: str | None = None) -> bytes:
    """`message_json` as the bytes every transport sends."""
    return dumps(message_json(m, promise, server_url))


def unblock_ids(rows: Iterable[OutboxRow], have: Mapping[str, Any] | None = None) -> set[str]:
    """Promise ids whose wire form the unblocks among `rows` need (those not in `have`)."""
    return {r.message.id for r in rows if r.message.kind == "unblock" and (have is None or r.message.id not in have)}
