"""Outbox claims for several processes on one Postgres database (shared/delivery/cluster.py).

A row is sent by whoever holds its claim: `claimed_until` is a lease on the database's clock, so
a process that dies while sending loses nothing (the lease runs out, the row is claimable again)
and two processes never send the same row at once. `poll://` rows carry their group and are
announced with NOTIFY (at enqueue, and again by `renotify`), so the process that holds a
matching SSE connection claims them; other rows (HTTP push) are claimed in batches with
`FOR UPDATE SKIP LOCKED`, so concurrent sweepers split them. No claim is granted while a debug
session is on: the outbox must stay put for `debug.snap`. With Pub/Sub dispatch, http(s) rows
stay claimed while Pub/Sub retries their message, and a row whose last attempt failed is parked
dead (`claimed_until` = DEAD: no sweeper re-publishes it; it stays visible for an operator).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from shared.records import DEBUG_SESSION, Message
from shared.storage.base import ClaimedRow as Row
from shared.storage.postgres_listen import OutboxListener
from shared.storage.postgres_tx import DB_NOW, DEAD, NOTIFY_CHANNEL

_COLS = "seq, kind, id, address, version"
_NO_DEBUG = f"NOT EXISTS (SELECT 1 FROM meta WHERE key = '{DEBUG_SESSION}')"
# http(s) rows may get a lease of their own (`http_ttl`): published to Pub/Sub, they stay claimed
# while Pub/Sub retries them (shared/delivery/pubsub_dispatch.py)
_HTTP = "address ~* '^https?://'"
_TTL = f"CASE WHEN {_HTTP} THEN CAST(:http_ttl AS bigint) ELSE CAST(:ttl AS bigint) END"
_CLAIM = f"UPDATE outbox SET claimed_until = {DB_NOW} + {_TTL} WHERE {{}} AND {_NO_DEBUG} RETURNING {_COLS}"
_CLAIM_SEQS = _CLAIM.format(f"seq = ANY(CAST(:s AS bigint[])) AND claimed_until < {DB_NOW}")
_CLAIM_KEYS = _CLAIM.format(f"key = ANY(CAST(:k AS text[])) AND claimed_until < {DB_NOW} AND poll_group IS NULL")
_CLAIM_PUSH = _CLAIM.format(f"seq IN (SELECT seq FROM outbox WHERE poll_group IS NULL AND claimed_until < {DB_NOW}"
                            " ORDER BY seq LIMIT :n FOR UPDATE SKIP LOCKED)")
_GROUP_ROWS = (f"SELECT {_COLS} FROM outbox WHERE poll_group = :g AND seq > :after AND claimed_until < {DB_NOW}"
               " ORDER BY seq LIMIT :n")
# a failed push backs off (0.5 s doubling to a minute), or, at its last allowed attempt
# (transports.http_push.max_attempts; 0: never), parks the row dead
_RELEASE = (f"UPDATE outbox SET attempts = attempts + :failed, claimed_until = CASE WHEN :failed = 0 THEN 0"
            f" WHEN CAST(:max AS bigint) > 0 AND attempts + 1 >= :max THEN {DEAD}"
            f" ELSE {DB_NOW} + LEAST(:cap, :base * power(2, LEAST(attempts, 20)))::bigint END"
            f" WHERE seq = :s AND version = :v AND claimed_until < {DEAD} RETURNING attempts, claimed_until >= {DEAD}")
# Pub/Sub dispatch: a row named by a message (seq + version), a failed attempt (the lease is
# renewed: Pub/Sub retries; the last attempt parks the row for good), a publish that failed
_DISPATCH_ROW = (f"SELECT {_COLS}, attempts, claimed_until >= {DEAD}, NOT {_NO_DEBUG} FROM outbox"
                 " WHERE seq = :s AND version = :v")
_LAST = "CAST(:max AS bigint) > 0 AND (attempts + 1 >= :max OR CAST(:attempt AS bigint) >= :max)"
_DISPATCH_FAILED = (f"UPDATE outbox SET attempts = attempts + 1, claimed_until = CASE WHEN {_LAST} THEN {DEAD}"
                    f" ELSE {DB_NOW} + :ttl END"
                    f" WHERE seq = :s AND version = :v AND claimed_until < {DEAD}"
                    f" RETURNING attempts, claimed_until >= {DEAD}")
_RETRY_LATER = (f"UPDATE outbox SET claimed_until = {DB_NOW} + :delay"
                f" WHERE seq = :s AND version = :v AND claimed_until < {DEAD}")
_DEAD_ROWS = f"SELECT {_COLS}, attempts FROM outbox WHERE claimed_until >= {DEAD} ORDER BY seq LIMIT :n"
_NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', x) FROM unnest(CAST(:p AS text[])) x"
_UNCLAIMED_UNBLOCK = f"kind = 'unblock' AND poll_group IS NOT NULL AND claimed_until < {DB_NOW} AND {_NO_DEBUG}"
_NO_RECEIVER = ("NOT EXISTS (SELECT 1 FROM poll_receivers r WHERE r.grp = outbox.poll_group"
                f" AND (outbox.poll_uni IS NULL OR r.id = outbox.poll_uni) AND r.expires_at > {DB_NOW})")
# re-announced: unclaimed poll rows that some process has a receiver for (a row whose group has
# no worker anywhere waits quietly: the worker that connects claims it itself)
_RENOTIFY = (f"WITH r AS (UPDATE outbox SET notified_at = {DB_NOW} WHERE seq IN (SELECT seq FROM outbox"
             f" WHERE poll_group IS NOT NULL AND claimed_until < {DB_NOW} AND created_at < {DB_NOW} - :settle"
             f" AND notified_at < {DB_NOW} - :every AND NOT {_NO_RECEIVER} ORDER BY seq LIMIT :n"
             f" FOR UPDATE SKIP LOCKED) AND {_NO_DEBUG} RETURNING seq, address)"
             f" SELECT count(pg_notify('{NOTIFY_CHANNEL}', seq || ' ' || address)) FROM r")
# dropped: unblocks with no receiver anywhere, and those no receiver claimed for `age` (stale registry)
_DROP_UNBLOCKS = (f"DELETE FROM outbox WHERE {_UNCLAIMED_UNBLOCK} AND ({_NO_RECEIVER}"
                  f" OR created_at < {DB_NOW} - :age) RETURNING 1")
_DROP_UNRECEIVED = (f"DELETE FROM outbox WHERE key = ANY(CAST(:k AS text[])) AND {_UNCLAIMED_UNBLOCK}"
                    f" AND {_NO_RECEIVER} RETURNING 1")
_RECEIVER_UP = ("INSERT INTO poll_receivers (grp, id, instance, expires_at, principal)"
                f" VALUES (:g, :id, :i, {DB_NOW} + :ttl, CAST(:p AS text)) ON CONFLICT (grp, id, instance)"
                " DO UPDATE SET expires_at = EXCLUDED.expires_at, principal = EXCLUDED.principal")
# auth on: one (group, id) at a time across instances (a transaction-scoped advisory lock; class
# "poll", so it never meets the migration lock), then a live entry of another principal on another
# instance refuses (entries without a principal: auth off, or written before migration 3)
_RECEIVER_LOCK = "SELECT pg_advisory_xact_lock(1886350444, hashtext(CAST(:g AS text) || '/' || CAST(:id AS text)))"
_RECEIVER_HELD = ("SELECT 1 FROM poll_receivers WHERE grp = :g AND id = :id AND instance <> :i"
                  f" AND principal IS NOT NULL AND principal <> :p AND expires_at > {DB_NOW} LIMIT 1")
_RECEIVER_DOWN = "DELETE FROM poll_receivers WHERE grp = :g AND id = :id AND instance = :i"
# only entries of connections still open here (any other lapses) that have not lapsed (a lapsed
# one may have let another principal in: the caller registers it again, checked)
_RECEIVERS_ALIVE = (f"UPDATE poll_receivers r SET expires_at = {DB_NOW} + :ttl"
                    " FROM unnest(CAST(:gs AS text[]), CAST(:ids AS text[])) AS k(g, id)"
                    f" WHERE r.instance = :i AND r.grp = k.g AND r.id = k.id AND r.expires_at > {DB_NOW}"
                    " RETURNING r.grp, r.id")
_RECEIVERS_LIVE = f"SELECT DISTINCT grp, id FROM poll_receivers WHERE expires_at >= {DB_NOW} ORDER BY grp, id"
_RECEIVERS_EXPIRED = f"DELETE FROM poll_receivers WHERE expires_at < {DB_NOW} - 60000"


def _rows(rows: list) -> list[Row]:
    return sorted((r[0], Message(r[1], r[2], r[3], r[4])) for r in rows)


def key_text(m: Message) -> str:
    return json.JSONEncoder(separators=(",", ":")).encode(m.key)  # as postgres_tx stores it


class PgClusterOutbox:
    """`OutboxClaims` (shared/storage/base.py), mixed into PostgresStore (which provides `write`,
    `read` and `_connect`)."""

    write: Any
    read: Any
    _connect: Callable[[], Any]

    def outbox_claims(self) -> PgClusterOutbox:
        """Other processes may share the database: every send needs a claim."""
        return self

    def listen(self, on_notes: Callable[[list[tuple[int, str]]], None], on_tick: Callable[[bool], None],
               tick_s: float) -> OutboxListener:
        """A thread holding a dedicated connection LISTENing on the outbox channel
        (`shared/storage/postgres_listen.py`); `close()` it to stop."""
        return OutboxListener(self._connect, on_notes, on_tick, tick_s).start()

    def claim_seqs(self, seqs: list[int], ttl_ms: int) -> list[Row]:
        """Claim these rows if nobody holds them (the NOTIFY path)."""
        if not seqs:
            return []
        return _rows(self.write(lambda tx: tx._x(_CLAIM_SEQS, s=seqs, ttl=ttl_ms, http_ttl=ttl_ms)))

    def claim_messages(self, ms: list[Message], ttl_ms: int, http_ttl_ms: int | None = None) -> list[Row]:
        """Claim the non-poll rows of these just-committed messages (the committing process sends
        them); http(s) rows for `http_ttl_ms` when given."""
        keys = [key_text(m) for m in ms]
        if not keys:
            return []
        http_ttl = ttl_ms if http_ttl_ms is None else http_ttl_ms
        return _rows(self.write(lambda tx: tx._x(_CLAIM_KEYS, k=keys, ttl=ttl_ms, http_ttl=http_ttl)))

    def claim_push(self, limit: int, ttl_ms: int, http_ttl_ms: int | None = None) -> list[Row]:
        """Claim up to `limit` unclaimed non-poll rows, oldest first, skipping rows others lock."""
        http_ttl = ttl_ms if http_ttl_ms is None else http_ttl_ms
        return _rows(self.write(lambda tx: tx._x(_CLAIM_PUSH, n=limit, ttl=ttl_ms, http_ttl=http_ttl)))

    def group_rows(self, group: str, after: int, limit: int) -> list[Row]:
        """Unclaimed rows for one poll group (a worker of it connected), in queue order."""
        return _rows(self.read(lambda tx: tx._x(_GROUP_ROWS, g=group, after=after, n=limit)))

    def release(self, seq: int, m: Message, failed: bool, notify: bool,
                max_attempts: int = 0) -> tuple[int, bool] | None:
        """Give a claim back: claimable again at once, or after a backoff that doubles with each
        failure (from 0.5 s up to a minute) when the send `failed`, or never again (dead) when
        that was failure number `max_attempts` (0: no limit); optionally announce the row again
        so another process's connection can take it. Returns (the row's failure count, dead),
        None if the row is gone or was replaced meanwhile."""

        def run(tx: Any) -> tuple[int, bool] | None:
            rows = tx._x(_RELEASE, s=seq, v=m.version, failed=int(failed), base=500, cap=60_000,
                         max=max_attempts if failed else 0)
            if rows and notify:
                tx._x(_NOTIFY, p=[f"{seq} {m.address}"])
            return (rows[0][0], bool(rows[0][1])) if rows else None

        return self.write(run)

    # Pub/Sub dispatch (shared/delivery/pubsub_dispatch.py) ------------------------------------
    def dispatch_row(self, seq: int, version: int) -> tuple[Message, int, bool, bool] | None:
        """The row a dispatch message names: (message, failed attempts, dead, debug session on);
        None when it is gone or was replaced (another version)."""
        rows = self.read(lambda tx: tx._x(_DISPATCH_ROW, s=seq, v=version))
        if not rows:
            return None
        r = rows[0]
        return Message(r[1], r[2], r[3], r[4]), r[5], bool(r[6]), bool(r[7])

    def dispatch_failed(self, seq: int, version: int, ttl_ms: int, max_attempts: int,
                        attempt: int = 0) -> tuple[int, bool] | None:
        """Count a failed delivery and keep the row claimed for `ttl_ms` (Pub/Sub retries the
        message meanwhile); when this was the last attempt (`max_attempts` failures counted here,
        or Pub/Sub's own `attempt` number reached it) the row is marked dead instead. Returns
        (failures, dead), None when the row is gone, replaced or already dead."""
        rows = self.write(lambda tx: tx._x(_DISPATCH_FAILED, s=seq, v=version, ttl=ttl_ms,
                                           max=max_attempts, attempt=attempt))
        return (rows[0][0], bool(rows[0][1])) if rows else None

    def retry_later(self, seq: int, version: int, delay_ms: int) -> None:
        """A publish failed: the row is claimable again after `delay_ms` (failures not counted)."""
        self.write(lambda tx: tx._x(_RETRY_LATER, s=seq, v=version, delay=delay_ms))

    def dead_rows(self, limit: int = 100) -> list[tuple[int, Message, int]]:
        """Rows given up after their last attempt: (seq, message, failures). A new version of an
        execute replaces its dead row; `UPDATE outbox SET claimed_until = 0, attempts = 0 WHERE
        claimed_until >= 2^62` sends them all again."""
        rows = self.read(lambda tx: tx._x(_DEAD_ROWS, n=limit))
        return [(r[0], Message(r[1], r[2], r[3], r[4]), r[5]) for r in rows]

    def renotify(self, limit: int, settle_ms: int, every_ms: int) -> int:
        """Announce unclaimed poll rows again (lost NOTIFY, dead claimant), each at most every `every_ms`."""
        return self.write(lambda tx: tx._x(_RENOTIFY, n=limit, settle=settle_ms, every=every_ms))[0][0]

    def drop_stale_unblocks(self, age_ms: int) -> int:
        """Drop unclaimed poll unblocks that have no receiver now, or that none claimed within
        `age_ms` (a registry entry outlived its connection): nobody listens."""
        def run(tx: Any) -> int:
            tx._x(_RECEIVERS_EXPIRED)
            return len(tx._x(_DROP_UNBLOCKS, age=age_ms))

        return self.write(run)

    def drop_unreceived(self, ms: list[Message]) -> int:
        """Just-committed poll unblocks with no receiver in any process are dropped at once."""
        keys = [key_text(m) for m in ms]
        return len(self.write(lambda tx: tx._x(_DROP_UNRECEIVED, k=keys))) if keys else 0

    # the registry of SSE connections -----------------------------------------------------------
    def receiver_up(self, group: str, id: str, instance: str, ttl_ms: int, principal: str | None = None) -> bool:
        """Register (or refresh) this instance's entry for a worker id; with a principal, only if
        no other principal's live entry on another instance holds it (False then, nothing written)."""
        def run(tx: Any) -> bool:
            if principal is not None:
                tx._x(_RECEIVER_LOCK, g=group, id=id)
                if tx._x(_RECEIVER_HELD, g=group, id=id, i=instance, p=principal):
                    return False
            tx._x(_RECEIVER_UP, g=group, id=id, i=instance, ttl=ttl_ms, p=principal)
            return True

        return self.write(run)

    def receiver_down(self, group: str, id: str, instance: str) -> None:
        self.write(lambda tx: tx._x(_RECEIVER_DOWN, g=group, id=id, i=instance))

    def receivers(self) -> list[tuple[str, str]]:
        """(group, id) of every live entry of every process (the console's workers view)."""
        rows = self.read(lambda tx: tx._x(_RECEIVERS_LIVE))
        return [(r[0], r[1]) for r in rows]

    def receivers_alive(self, instance: str, ttl_ms: int, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Extend this process's entries for the (group, id) it still holds, unless they lapsed
        (its LISTEN loop runs, so it is alive); returns those extended: the caller registers the
        others again. Entries of connections gone from here are left to lapse."""
        gs, ids = [g for g, _ in keys], [i for _, i in keys]
        rows = self.write(lambda tx: tx._x(_RECEIVERS_ALIVE, i=instance, ttl=ttl_ms, gs=gs, ids=ids))
        return {(r[0], r[1]) for r in rows}
