"""Records of the data model (docs/protocol.md#3-data-model) and their wire shapes.

Records are immutable: the engine derives new versions with `dataclasses.replace` and hands
them to the storage transaction, which makes snapshots and rollback trivial for every adapter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TARGET = "resonate:target"
TIMER = "resonate:timer"
DELAY = "resonate:delay"
BRANCH = "resonate:branch"
ORIGIN = "resonate:origin"
PARENT = "resonate:parent"
PREFIX = "resonate:prefix"
SCHEDULE = "resonate:schedule"
INVOKE = "resonate:invoke"  # the REST API's routing tag (docs/legacy-api.md); it sets resonate:target

# meta key, present while a debug session is on (docs/protocol.md#26-time-and-debug-mode); the
# engine and storage read it
DEBUG_SESSION = "debug_session"

PROMISE_STATES = ("pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout")
TASK_STATES = ("pending", "acquired", "suspended", "halted", "fulfilled")

RETRY = 0  # task timer types, `type` of debug.snap's taskTimeouts (docs/protocol.md#34-task)
LEASE = 1


@dataclass(frozen=True, slots=True)
class Promise:
    id: str
    state: str
    param: dict[str, Any]
    value: dict[str, Any]
    tags: dict[str, str]
    timeout_at: int
    created_at: int
    settled_at: int | None = None
    # idempotency keys of the older server's REST API (docs/legacy-api.md): the key the promise
    # was created with and the key of the request that settled it; None for the envelope protocol
    ikey_create: str | None = None
    ikey_settle: str | None = None

    @property
    def target(self) -> str | None:
        return self.tags.get(TARGET)

    @property
    def branch(self) -> str | None:
        return self.tags.get(BRANCH) or None

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "param": self.param,
            "value": self.value,
            "tags": self.tags,
            "timeoutAt": self.timeout_at,
            "createdAt": self.created_at,
        }
        if self.settled_at is not None:
            out["settledAt"] = self.settled_at
        return out


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    state: str
    version: int
    timer_type: int | None = None  # RETRY or LEASE; None when suspended/halted/fulfilled
    timer_at: int | None = None
    pid: str | None = None  # lease holder, only with a LEASE timer
    ttl: int | None = None

    def wire(self, resumes: int) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "state": self.state, "version": self.version, "resumes": resumes}
        if self.state == "acquired":
            out["ttl"] = self.ttl
            out["pid"] = self.pid
        return out


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    cron: str
    promise_id: str
    promise_timeout: int
    promise_param: dict[str, Any]
    promise_tags: dict[str, str]
    created_at: int
    next_run_at: int
    last_run_at: int | None = None
    # the REST API's extras (docs/legacy-api.md): free text, the schedule's own tags (searchable
    # there) and the idempotency key it was created with
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    ikey: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "cron": self.cron,
            "promiseId": self.promise_id,
            "promiseTimeout": self.promise_timeout,
            "promiseParam": self.promise_param,
            "promiseTags": self.promise_tags,
            "createdAt": self.created_at,
            "nextRunAt": self.next_run_at,
        }
        if self.last_run_at is not None:
            out["lastRunAt"] = self.last_run_at
        return out


@dataclass(frozen=True, slots=True)
class Lock:
    """A distributed lock of the REST API (docs/legacy-api.md#locks): `resource_id` held by
    `execution_id` of process `process_id` until `expires_at`; a heartbeat of the process pushes
    every one of its locks to now + its own `ttl` (ms)."""

    resource_id: str
    execution_id: str
    process_id: str
    ttl: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class Message:
    """One outbox row: an `execute` (id = task id, with version) or an `unblock` (id = promise id)."""

    kind: str
    id: str
    address: str
    version: int = 0

    @property
    def key(self) -> tuple[str, str] | tuple[str, str, str]:
        return (self.kind, self.id) if self.kind == "execute" else (self.kind, self.id, self.address)


@dataclass(slots=True)
class Effects:
    """What a committed transaction asks the shell to do next (deliver, re-arm timers)."""

    messages: list[Message] = field(default_factory=list)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)  # settled promises for unblocks
    deadline: int | None = None  # earliest timer written, to wake the timer loop early
    debug_changed: bool = False
    # for metrics: (timer kind, due time) of each timer a timeout pass handled, and how many
    # promises schedule firings created
    due: list[tuple[str, int]] = field(default_factory=list)
    schedule_promises: int = 0
    # dead outbox rows an operator re-drove (also in `messages`): a sender that remembers dead
    # rows in memory (InProcessClaims) forgets them
    revived: list[Message] = field(default_factory=list)

    def add_deadline(self, at: int) -> None:
        if self.deadline is None or at < self.deadline:
            self.deadline = at
