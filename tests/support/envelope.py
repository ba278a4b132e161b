"""The RPC envelope (docs/protocol.md), built and checked in one place for every suite.

`envelope()` builds a request, `check_reply()` asserts the echo rules every answer obeys
(kind and corrId echoed, head.status equal to the HTTP status, head.version). The servers of
tests/support/server.py, the conformance helpers, the fuzzers and the differential run all use
these two.
"""
from __future__ import annotations

import uuid
from typing import Any

from shared.protocol import VERSION  # "2026-04-01"

DEBUG_TIME = "resonate:debug_time"


def envelope(kind: Any, data: Any, *, corr: Any = None, time: int | None = None, version: Any = VERSION,
             **head: Any) -> dict[str, Any]:
    """{"kind", "head": {corrId, version, [resonate:debug_time], **head}, "data"}; a fresh corrId
    unless one is given; extra head fields (e.g. `auth`) as keyword arguments."""
    h: dict[str, Any] = {"corrId": uuid.uuid4().hex if corr is None else corr, "version": version, **head}
    if time is not None:
        h[DEBUG_TIME] = time
    return {"kind": kind, "head": h, "data": data}


def check_reply(reply: Any, kind: Any, corr: Any, status: int) -> None:
    """The echo rules of docs/protocol.md for a request whose kind and corrId could be read."""
    assert isinstance(reply, dict) and isinstance(reply.get("head"), dict), reply
    assert reply["kind"] == kind, reply
    assert reply["head"]["corrId"] == corr, reply
    assert reply["head"]["status"] == status, (status, reply)
    assert reply["head"]["version"] == VERSION, reply
