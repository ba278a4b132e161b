"""The storage port: what the engine needs from a database, and nothing protocol-specific.

An adapter implements `Tx` (record reads/writes inside one transaction) and `Store` (runs a
function inside a transaction). Adapters never decide what a request means: they load, save,
query by index and order rows. Every list they return is ordered as documented here, so all
adapters give identical results (the differential test holds them to it).
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Protocol, TypeVar

from shared.records import Lock, Message, Promise, Schedule, Task

T = TypeVar("T")
Created = tuple[int | None, int | None]  # a creation-time range [from, to) in ms; None: unbounded
NO_RANGE: Created = (None, None)


class StorageError(Exception):
    """The database failed; the request answers 500 (or 503 when retries ran out)."""


class Busy(StorageError):
    """Contention retries ran out (serialization failures, deadlocks); nothing was committed.
    The request answers 503 so the client retries."""


class ReadOnlyViolation(Exception):
    """A read transaction tried to write; the caller re-runs the function in a write transaction."""


class Tx(Protocol):
    """Row access inside one transaction. `insert_*` of an existing promise/task raises
    StorageError; `update_*` replaces the row. Limits are >= 1. Ids order by code point.
    Records hold JSON-compatible values only."""

    # promises ------------------------------------------------------------------------------
    def get_promise(self, id: str) -> Promise | None: ...
    def get_promises(self, ids: Collection[str]) -> dict[str, Promise]:
        """The promises among `ids` that exist, by id, in one query (the outbox's unblock payloads)."""
    def insert_promise(self, p: Promise) -> None: ...
    def update_promise(self, p: Promise) -> None:
        """Replace the stored promise with the same id."""
    def search_promises(self, state: str | None, tags: dict[str, str], cursor: str | None, limit: int) -> list[Promise]:
        """Promises with that state (if given) whose tags contain every pair, id > cursor, by id, at most limit."""
    def promises_by_branch(self, branch: str) -> list[Promise]:
        """Promises whose resonate:branch tag equals branch, by id."""
    def due_promises(self, t: int, target_only: bool, limit: int) -> list[Promise]:
        """Pending promises with timeout_at <= t (only those with a target if target_only), by (timeout_at, id)."""

    # retention (shared/engine/retention.py): a workflow is the promises sharing one key, their
    # resonate:origin tag, or their own id when that tag is absent or empty -------------------
    def retention_page(self, before: int, after: str | None, limit: int) -> list[tuple[str, str, bool]]:
        """(id, workflow key, done) of the promises with id > after, by id, at most limit; done:
        settled with settled_at <= before. One bounded index range per call, so that listing a
        large table never runs as one long statement."""
    def workflow_promises(self, key: str, limit: int | None = None) -> list[Promise]:
        """The promises of the workflow `key` (origin tag == key, or no/empty origin tag and
        id == key), by id; the first `limit` of them if given."""
    def delete_promises(self, ids: Collection[str]) -> int:
        """Delete these promises with everything that hangs off them: their tasks, the callbacks
        in which they are the awaited or the awaiter, their listeners and their outbox rows.
        Returns the promises deleted (absent ids are skipped)."""

    # tasks ---------------------------------------------------------------------------------
    def get_task(self, id: str) -> Task | None: ...
    def insert_task(self, t: Task) -> None: ...
    def update_task(self, t: Task) -> None: ...
    def search_tasks(self, state: str | None, cursor: str | None, limit: int, prefix: str = "") -> list[Task]:
        """Tasks in `state` (if given) whose id starts with `prefix` (a `*` in it matches as in
        `search_promises_by_id`), id > cursor, by id, at most limit."""
    def due_tasks(self, t: int, limit: int) -> list[Task]:
        """Tasks whose timer_at <= t, by (timer_at, id)."""
    def tasks_leased_by(self, pid: str) -> list[Task]:
        """Acquired tasks whose lease holder is pid, by id."""

    # callbacks (awaited promise -> awaiter task) ------------------------------------------
    def add_callback(self, awaited: str, awaiter: str, ready: bool) -> None:
        """Insert the pair if absent; an existing row is left unchanged."""
    def mark_callbacks_ready(self, awaited: str) -> list[str]:
        """Mark every row of awaited ready; return their awaiters, by id."""
    def delete_callbacks(self, awaiter: str, ready_only: bool) -> None: ...
    def ready_counts(self, awaiters: list[str]) -> dict[str, int]:
        """Ready callbacks per awaiter, in one query (awaiters without any are absent)."""

    # listeners -----------------------------------------------------------------------------
    def add_listener(self, promise_id: str, address: str) -> None:
        """Insert the pair if absent."""
    def pop_listeners(self, promise_id: str) -> list[str]:
        """Delete the promise's listeners; return their addresses, sorted."""
    def count_listeners(self, promise_id: str, other_than: str | None = None) -> int:
        """The promise's listeners, not counting the one at `other_than` (if given): a
        re-registration of an address does not count against the cap twice."""

    # outbox --------------------------------------------------------------------------------
    def enqueue(self, m: Message) -> None:
        """Execute: upsert by task id (a replaced row keeps its queue position). Unblock: insert if absent."""
    def outbox(self, limit: int | None = None) -> list[Message]:
        """Queued messages in queue (insertion) order, dead rows included."""
    def outbox_page(self, after: int, limit: int) -> list[tuple[int, Message]]:
        """(queue position, message) of the queued rows after position `after`, in queue order,
        dead rows left out; lets background re-drives walk a long outbox in pages."""
    def record_failure(self, m: Message, max_attempts: int) -> tuple[int, bool] | None:
        """Count a failed delivery of the row equal to m: (its failures, now dead). The row is
        dead once it has `max_attempts` failures (0: never). None when the row is gone, was
        replaced, or is dead already. Enqueueing the same message again keeps the count and the
        dead mark; a different version of an execute starts clean."""
    def dead_messages(self) -> list[tuple[Message, int]]:
        """(message, failures) of the dead rows, in queue order."""
    def outbox_rows(self, dead_only: bool, after: int, limit: int) -> list[tuple[int, Message, int, bool]]:
        """(seq, message, failures, dead) of the rows after queue position `after`, in queue order
        (only the dead ones with `dead_only`): the operator's listing (`resonate messages list`)."""
    def revive_dead(self, seq: int | None) -> list[tuple[int, Message]]:
        """Clear the dead mark and the failure count of the dead row at `seq` (None: of every dead
        row), so delivery tries it again; returns the revived (seq, message) in queue order. A row that
        is gone, or no longer dead (acked, or replaced by a new version), is left alone."""
    def ack(self, m: Message) -> bool:
        """Delete the row iff it still equals m (an execute replaced meanwhile stays)."""
    def outbox_count(self) -> int:
        """Queued rows (the outbox-depth gauge, read at scrape time)."""

    # schedules -----------------------------------------------------------------------------
    def get_schedule(self, id: str) -> Schedule | None: ...
    def insert_schedule(self, s: Schedule) -> None: ...
    def update_schedule(self, s: Schedule) -> None: ...
    def delete_schedule(self, id: str) -> bool: ...
    def search_schedules(self, tags: dict[str, str], cursor: str | None, limit: int) -> list[Schedule]:
        """Schedules whose promise_tags contain every pair, id > cursor, by id, at most limit."""
    def due_schedules(self, t: int, limit: int) -> list[Schedule]:
        """Schedules with next_run_at <= t, by (next_run_at, id)."""

    # the older server's REST API (docs/legacy-api.md) -----------------------------------------
    def search_promises_by_id(self, pattern: str, states: Collection[str] | None, tags: dict[str, str],
                              cursor: str | None, limit: int, created: Created = NO_RANGE) -> list[Promise]:
        """Promises whose id matches `pattern` (`*`: any run of characters, possibly empty; every
        other character literal and case-sensitive), whose state is in `states` (if given),
        whose tags contain every pair and that were created within `created` ([from, to) in ms,
        None: unbounded); id > cursor, by id, at most limit."""
    def search_schedules_by_id(self, pattern: str, tags: dict[str, str], cursor: str | None,
                               limit: int) -> list[Schedule]:
        """Schedules whose id matches `pattern` (as above) and whose own `tags` contain every
        pair; id > cursor, by id, at most limit."""
    def ready_awaited(self, awaiter: str) -> list[str]:
        """The awaited promise ids of the awaiter's ready callbacks, by id."""
    def get_lock(self, resource_id: str) -> Lock | None: ...
    def put_lock(self, lock: Lock) -> None:
        """Insert the lock, or replace the row of the same resource_id."""
    def delete_lock(self, resource_id: str) -> bool:
        """Delete the resource's lock; whether there was one."""
    def locks_of_process(self, process_id: str) -> list[Lock]:
        """Locks held by the process, by resource_id."""
    def due_locks(self, t: int, limit: int) -> list[Lock]:
        """Locks with expires_at <= t, by (expires_at, resource_id)."""

    # timers, debug, snapshots ----------------------------------------------------------------
    def next_deadline(self, target_only: bool) -> int | None:
        """Earliest of: pending promise timeout (with target if target_only), task timer, schedule
        run, lock expiry."""
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str | None) -> None: ...
    def reset(self) -> None:
        """Delete every promise, task, callback, listener, schedule, lock and outbox row (not meta)."""
    def all_promises(self) -> list[Promise]: ...
    def all_tasks(self) -> list[Task]: ...
    def all_callbacks(self) -> list[tuple[str, str, bool]]:
        """(awaited, awaiter, ready) rows, by (awaiter, awaited)."""
    def all_listeners(self) -> list[tuple[str, str]]:
        """(promise_id, address), by (promise_id, address)."""


ClaimedRow = tuple[int, Message]  # (queue position, message) of an outbox row claimed by this process


class Subscription(Protocol):
    def close(self, timeout: float = 5.0) -> None:
        """Stop listening (and wait up to `timeout` for the listener to end)."""


class OutboxClaims(Protocol):
    """Outbox claims, for stores several processes share (Postgres: `shared/storage/postgres_outbox.py`
    documents the semantics). A row is sent only by the process holding its claim, a lease on the
    database's clock; `poll://` rows are announced to every listening process; processes register
    the SSE receivers they hold. None of it is granted during a debug session."""

    # announcements of poll rows --------------------------------------------------------------
    def listen(self, on_notes: Callable[[list[tuple[int, str]]], None], on_tick: Callable[[bool], None],
               tick_s: float) -> Subscription:
        """Hold a connection listening for announced poll rows, on a thread of its own:
        `on_notes([(seq, address), ...])` for each batch, `on_tick(True)` after every (re)connect
        (announcements made meanwhile are lost), `on_tick(False)` every `tick_s`. Reconnects by itself."""
    def renotify(self, limit: int, settle_ms: int, every_ms: int) -> int: ...

    # claims ------------------------------------------------------------------------------------
    def claim_seqs(self, seqs: list[int], ttl_ms: int) -> list[ClaimedRow]: ...
    def claim_messages(self, ms: list[Message], ttl_ms: int, http_ttl_ms: int | None = None) -> list[ClaimedRow]: ...
    def claim_push(self, limit: int, ttl_ms: int, http_ttl_ms: int | None = None) -> list[ClaimedRow]: ...
    def group_rows(self, group: str, after: int, limit: int) -> list[ClaimedRow]: ...
    def release(self, seq: int, m: Message, failed: bool, notify: bool,
                max_attempts: int = 0) -> tuple[int, bool] | None: ...
    def drop_stale_unblocks(self, age_ms: int) -> int: ...
    def drop_unreceived(self, ms: list[Message]) -> int: ...

    # rows handed to Pub/Sub dispatch -------------------------------------------------------------
    def dispatch_row(self, seq: int, version: int) -> tuple[Message, int, bool, bool] | None: ...
    def dispatch_failed(self, seq: int, version: int, ttl_ms: int, max_attempts: int,
                        attempt: int = 0) -> tuple[int, bool] | None: ...
    def retry_later(self, seq: int, version: int, delay_ms: int) -> None: ...
    def dead_rows(self, limit: int = 100) -> list[tuple[int, Message, int]]: ...

    # the registry of SSE receivers ---------------------------------------------------------------
    def receiver_up(self, group: str, id: str, instance: str, ttl_ms: int, principal: str | None = None) -> bool: ...
    def receiver_down(self, group: str, id: str, instance: str) -> None: ...
    def receivers_alive(self, instance: str, ttl_ms: int, keys: list[tuple[str, str]]) -> set[tuple[str, str]]: ...
    def receivers(self) -> list[tuple[str, str]]: ...


class Store(Protocol):
    name: str
    # The longest id, task id, process id, listener address and indexed tag value (resonate:target,
    # resonate:origin, resonate:branch) this store holds, in characters; None: only the bytes
    # bound every store has (shared/requests.py). The service rejects longer ones with 400
    # before any transaction.
    max_key_length: int | None

    def write(self, fn: Callable[[Tx], T]) -> T:
        """Run fn in one serialized write transaction; commit when it returns, roll back if it raises.

        Concurrent callers may share one commit (group commit); each caller's effects are still
        all-or-nothing. Returns only after the commit is durable. fn may run on another native
        thread and must not call the store or block on anything but the transaction.
        """
    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run fn on a consistent read snapshot without waiting for writers.

        Raises ReadOnlyViolation if fn tries to write; the caller then uses write().
        """
    def ping(self) -> None:
        """Raise StorageError if the database is unreachable."""
    def close(self) -> None: ...
    def outbox_claims(self) -> OutboxClaims | None:
        """The claims API when other processes may share the database (then every send needs a
        claim); None when this process is the outbox's only sender (memory, SQLite)."""


def ordered_ids(items: Iterable[str]) -> list[str]:
    """Deduplicate, keeping first occurrence order (the lazy-timeout touch lists of docs/protocol.md#5-operations)."""
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)
