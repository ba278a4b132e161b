"""The scheme switch: which transport takes a message, and the one place its body is built.

`poll://` goes to a local SSE connection (the hub), `http(s)://` to `HttpPush`, any other
scheme to the transport registered for it (`gcps` Pub/Sub publishing, `bash` exec). Adding a
transport: implement `Transport` and pass it in `transports` under its scheme (the runtime does,
when the transport is enabled). Every message handed to a transport counts in
`resonate_messages_total`.
"""
from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from shared.delivery.messages import OutboxRow, encode
from shared.logs import q

if TYPE_CHECKING:
    from shared.delivery.hub import PollHub
    from shared.delivery.push import HttpPush
    from shared.metrics import Metrics
    from shared.tracing import Span, Tracer

log = logging.getLogger("resonate.delivery")

Done = Callable[[bool, str], None]  # (taken by the receiver, transport label: poll | push | gcps | bash)


class Transport(Protocol):
    def send(self, address: str, body: bytes, done: Callable[[bool], None]) -> None:
        """Hand `body` to `address`; `done(ok)` exactly once, when the receiver took it (True) or
        it failed (False: the outbox row is retried with backoff)."""
    def close(self) -> None: ...


class Outcome(enum.Enum):
    SENT = "sent"  # handed to a transport: `done` follows
    NO_RECEIVER = "no receiver"  # poll: no connection here takes it now
    DROPPED = "dropped"  # unparseable address, or its transport is not enabled: never deliverable here


class Sender:
    def __init__(self, hub: PollHub | None, push: HttpPush | None, transports: Mapping[str, Transport],
                 server_url: str | None, metrics: Metrics | None = None, tracer: Tracer | None = None) -> None:
        self.hub = hub
        self.push = push
        self.transports = dict(transports)
        self.server_url = server_url
        self.metrics = metrics
        self.tracer = tracer  # shared/tracing.py: a "deliver" span per row sent under a traced request

    def pushes(self, row: OutboxRow) -> bool:
        """An http(s) row with HTTP push enabled."""
        return row.is_http and self.push is not None

    def send(self, row: OutboxRow, promise: dict[str, Any] | None, done: Done) -> Outcome:
        """Send one row (`promise`: an unblock's payload). `done` is called only after SENT."""
        tracer = self.tracer
        span = tracer.deliver(row) if tracer is not None else None
        if tracer is None or span is None:
            return self._send(row, promise, done, None)

        def traced(ok: bool, transport: str) -> None:
            tracer.delivered(span, ok, transport)
            done(ok, transport)

        outcome = self._send(row, promise, traced, span)
        if outcome is not Outcome.SENT:
            tracer.undelivered(span, outcome.value)
        return outcome

    def _send(self, row: OutboxRow, promise: dict[str, Any] | None, done: Done, span: Span | None) -> Outcome:
        addr, m = row.address, row.message
        if addr is None:
            log.warning("dropping message to unparseable address %s", q(m.address))
            return Outcome.DROPPED
        scheme = addr.scheme
        if scheme == "poll" and self.hub is not None:
            if self.hub.deliver(addr, self.body(row, promise), lambda ok: done(ok, "poll")):
                self._count(row)
                return Outcome.SENT
            return Outcome.NO_RECEIVER
        if row.is_http and self.push is not None:
            self._count(row)
            self.push.send(addr.url, self.body(row, promise), lambda ok: done(ok, "push"),
                           span.headers() if span is not None else None)
            return Outcome.SENT
        other = self.transports.get(scheme)
        if other is not None:
            self._count(row)
            other.send(m.address, self.body(row, promise), lambda ok: done(ok, scheme))
            return Outcome.SENT
        log.warning("dropping message to %s: transport not enabled", q(m.address))
        return Outcome.DROPPED

    def body(self, row: OutboxRow, promise: dict[str, Any] | None) -> bytes:
        return encode(row.message, promise, self.server_url)

    def _count(self, row: OutboxRow) -> None:
        if self.metrics is not None:
            self.metrics.message(row.message.kind)

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()
        if self.push is not None:
            self.push.close()
