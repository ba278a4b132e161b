"""The database registry of SSE receivers, for processes sharing one Postgres database.

Each process records which (group, worker id) it holds a connection for, so an unblock with no
receiver anywhere is dropped at once, as on one server. With inbound auth on, the registry also
records each connection's principal (a digest of it), and a connection is admitted only if no
live entry of another principal holds its (group, id) on another instance (409 otherwise;
`OutboxClaims.receiver_up` checks and inserts under a per-(group, id) advisory lock, so two
simultaneous connects cannot both win). A dead instance's entries stop counting once they lapse,
at most RECEIVER_TTL_MS (30 s) after its last refresh; the same principal is never blocked by its
own entries.

The hub calls `admit` (before a connection can receive anything) and `on_disconnect`; the
cluster's LISTEN loop calls `refresh` every few seconds and after each reconnect.
"""
from __future__ import annotations

import hashlib
import logging
import uuid

from shared.delivery.hub import Connection, Held, PollHub, RegistryUnavailable
from shared.logs import q
from shared.storage.base import OutboxClaims

log = logging.getLogger("resonate.delivery")

RECEIVER_TTL_MS = 30_000  # a registry entry of a process that stopped refreshing it lapses


def principal_key(principal: str | None) -> str | None:
    """What the registry stores for a principal: a digest (fixed size, any characters, and no
    token subject in the table)."""
    if principal is None:
        return None
    return hashlib.sha256(principal.encode("utf-8", "surrogatepass")).hexdigest()


class ReceiverRegistry:
    def __init__(self, claims: OutboxClaims, hub: PollHub) -> None:
        self.claims = claims
        self.hub = hub
        self.instance = uuid.uuid4().hex  # this process's name in the registry

    def admit(self, conn: Connection) -> None:
        """Register the receiver before the stream starts (so unblocks for it are kept from now
        on). With a principal (auth on) the registry decides across instances: Held when another
        principal's live entry has the (group, id), RegistryUnavailable when that cannot be
        checked. With auth off a failed write is only logged (the entry is written again by the
        next refresh)."""
        try:
            admitted = self.claims.receiver_up(conn.group, conn.id, self.instance, RECEIVER_TTL_MS,
                                               principal_key(conn.principal))
        except Exception:
            if conn.principal is None:
                log.exception("registering SSE receiver group=%s id=%s failed", q(conn.group), q(conn.id))
                return
            log.exception("registering SSE receiver group=%s id=%s failed; connection refused",
                          q(conn.group), q(conn.id))
            raise RegistryUnavailable() from None
        if not admitted:
            log.warning("Poll refused: worker id held by another principal on another instance group=%s id=%s",
                        q(conn.group), q(conn.id))
            raise Held()

    def on_disconnect(self, conn: Connection) -> None:
        if self.hub.has_id(conn.group, conn.id):
            return  # another connection of the same worker is still here
        try:
            self.claims.receiver_down(conn.group, conn.id, self.instance)
        except Exception:
            log.warning("unregistering SSE receiver group=%s id=%s failed; it lapses", q(conn.group), q(conn.id))

    def refresh(self, reconnected: bool = False) -> None:
        """Extend this process's entries, and register again every connection whose entry lapsed
        (e.g. while the LISTEN connection was down; after a reconnect: all of them)."""
        holders = self.hub.holders()
        lapsed = holders
        if holders and not reconnected:
            alive = self.claims.receivers_alive(self.instance, RECEIVER_TTL_MS, list(holders))
            lapsed = {k: p for k, p in holders.items() if k not in alive}
        for (group, id), principal in lapsed.items():
            self._reregister(group, id, principal)

    def _reregister(self, group: str, id: str, principal: str | None) -> None:
        """Write a lapsed entry again. If another principal took the id meanwhile (our entry had
        lapsed, so its connect was admitted), it keeps it: ours are ended (the worker reconnects
        and is refused while the other holds it)."""
        if not self.hub.has_id(group, id):
            return  # gone since the snapshot: an entry now would only block others until it lapsed
        if self.claims.receiver_up(group, id, self.instance, RECEIVER_TTL_MS, principal_key(principal)):
            return
        n = self.hub.disconnect_id(group, id)
        log.warning("Poll connections ended: worker id taken by another principal while this instance's "
                    "registry entry had lapsed group=%s id=%s connections=%d", q(group), q(id), n)
