"""The registry of request kinds: each kind declared once, with its typed request's decoder,
its operation, what it touches (authorization, outbound policy) and how it runs.

Everything that needs the list of kinds reads it here: the service's pipeline, the metrics'
label set, authorization, the bash worker and the tests (bad input, differential, tenant
matrix). Adding a kind is one entry below plus its request class (`shared.requests`) and its
operation (`shared.engine`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import requests as rq
from shared import requests_console as rc
from shared import requests_locks as rl
from shared import requests_outbox as ro
from shared import requests_rest as rr
from shared import scope
from shared.engine import console, debug, locks, outbox_ops, promises, rest, rest_schedules, schedules, tasks
from shared.engine.core import Ctx, Resp
from shared.protocol import DecodeError, Reject
from shared.retention import Maintenance, promise_purge
from shared.scope import Touched

RPC, REST, OPERATOR, CONSOLE = "rpc", "rest", "operator", "console"  # `Kind.surfaces`
_REST = frozenset({REST})
_OPERATOR = frozenset({OPERATOR, CONSOLE})  # the operator's kinds are the console's too
_CONSOLE = frozenset({CONSOLE})
_RPC_CONSOLE = frozenset({RPC, CONSOLE})  # the protocol's kinds the console's actions reuse


@dataclass(frozen=True, slots=True)
class Kind[R: rq.Request]:
    """One request kind.

    read_first: tried on a read snapshot first, re-run as a write only when it must change
      something (a lazy timeout); searches and snapshots never write.
    debug: served only when the server runs with `debug` on.
    surfaces: where the kind is served (a kind is unknown everywhere else):
      RPC `POST /` (the SDKs' protocol surface, kept as the SDKs know it);
      REST the older server's REST API (docs/legacy-api.md): its routes build the request;
      OPERATOR `POST /operator` (dead letters, retention; the CLI);
      CONSOLE `POST /ui/api`, the web console's queries and actions (docs/console.md). There a
      kind that is not `read_first` is an action: with auth on, role admin only.
    batched: instead of `operation` (None then), an operator kind that runs across many short
      transactions of its own (a purge must never hold one long transaction); it gets the
      store, not a `Ctx`.
    """

    name: str
    decode: Callable[[dict[str, Any], bool], R]
    operation: Callable[[Ctx, R], Resp] | None
    touches: Callable[[R], Touched]
    read_first: bool = False
    debug: bool = False
    surfaces: frozenset[str] = frozenset({RPC})
    batched: Callable[[Maintenance, R], Resp] | None = None

    @property
    def metric_label(self) -> str:
        return self.name

    def admin_only(self, surface: str) -> bool:
        """An action of the console: with auth on, only a token of role admin may run it."""
        return surface == CONSOLE and not self.read_first


def _kinds(*entries: Kind[Any]) -> dict[str, Kind[Any]]:
    return {k.name: k for k in entries}


KINDS: dict[str, Kind[Any]] = _kinds(
    Kind("promise.get", rq.decode_promise_get, promises.promise_get, scope.by_id, read_first=True),
    Kind("promise.create", rq.decode_promise_create, promises.promise_create, scope.created),
    Kind("promise.settle", rq.decode_promise_settle, promises.promise_settle, scope.settled, surfaces=_RPC_CONSOLE),
    Kind("promise.register_callback", rq.decode_register_callback, promises.promise_register_callback,
         scope.callback),
    Kind("promise.register_listener", rq.decode_register_listener, promises.promise_register_listener,
         scope.listener),
    Kind("promise.search", rq.decode_promise_search, promises.promise_search, scope.everything, read_first=True),
    Kind("task.get", rq.decode_task_get, tasks.task_get, scope.by_id, read_first=True),
    Kind("task.create", rq.decode_task_create, tasks.task_create, scope.created),
    Kind("task.acquire", rq.decode_task_acquire, tasks.task_acquire, scope.by_id),
    Kind("task.release", rq.decode_task_release, tasks.task_release, scope.by_id),
    Kind("task.fulfill", rq.decode_task_fulfill, tasks.task_fulfill, scope.by_id),
    Kind("task.suspend", rq.decode_task_suspend, tasks.task_suspend, scope.suspend),
    Kind("task.fence", rq.decode_task_fence, tasks.task_fence, scope.fence),
    Kind("task.heartbeat", rq.decode_task_heartbeat, tasks.task_heartbeat, scope.heartbeat),
    Kind("task.halt", rq.decode_task_halt, tasks.task_halt, scope.by_id),
    Kind("task.continue", rq.decode_task_continue, tasks.task_continue, scope.by_id),
    Kind("task.search", rq.decode_task_search, tasks.task_search, scope.everything, read_first=True),
    Kind("schedule.get", rq.decode_schedule_get, schedules.schedule_get, scope.by_id, read_first=True),
    Kind("schedule.create", rq.decode_schedule_create, schedules.schedule_create, scope.schedule),
    Kind("schedule.delete", rq.decode_schedule_delete, schedules.schedule_delete, scope.by_id,
         surfaces=_RPC_CONSOLE),
    Kind("schedule.search", rq.decode_schedule_search, schedules.schedule_search, scope.everything,
         read_first=True),
    # the web console's views (shared/engine/console.py); its actions are the kinds above and
    # below that list CONSOLE among their surfaces
    Kind("console.promises", rc.decode_promises, console.promises, scope.prefixed, read_first=True,
         surfaces=_CONSOLE),
    Kind("console.promise", rc.decode_promise, console.promise, scope.by_id, read_first=True, surfaces=_CONSOLE),
    Kind("console.tasks", rc.decode_tasks, console.tasks, scope.prefixed, read_first=True, surfaces=_CONSOLE),
    Kind("console.schedules", rc.decode_schedules, console.schedules, scope.prefixed, read_first=True,
         surfaces=_CONSOLE),
    Kind("console.workers", rc.decode_workers, console.workers, scope.everything, read_first=True,
         surfaces=_CONSOLE),
    # the operator's outbox (docs/operations.md#dead-letters): every tenant's rows, so admin tokens only
    Kind("outbox.search", ro.decode_outbox_search, outbox_ops.outbox_search, scope.everything, read_first=True,
         surfaces=_OPERATOR),
    Kind("outbox.redrive", ro.decode_outbox_redrive, outbox_ops.outbox_redrive, scope.everything, surfaces=_OPERATOR),
    # operators only (unscoped: role admin, or prefix "", when auth is on)
    Kind("promise.purge", rq.decode_promise_purge, None, scope.everything, batched=promise_purge, surfaces=_OPERATOR),
    Kind("debug.start", rq.no_fields(rq.DebugStart), debug.debug_start, scope.everything, debug=True),
    Kind("debug.stop", rq.no_fields(rq.DebugStop), debug.debug_stop, scope.everything, debug=True),
    Kind("debug.reset", rq.no_fields(rq.DebugReset), debug.debug_reset, scope.everything, debug=True),
    Kind("debug.snap", rq.no_fields(rq.DebugSnap), debug.debug_snap, scope.everything, read_first=True,
         debug=True),
    Kind("debug.tick", rq.decode_debug_tick, debug.debug_tick, scope.everything, debug=True),
    # the older server's REST API (shared/legacy/rest.py)
    Kind("rest.promise.get", rr.decode_get, rest.get, scope.by_id, read_first=True, surfaces=_REST),
    Kind("rest.promise.create", rr.decode_create, rest.create, scope.created, surfaces=_REST),
    Kind("rest.promise.complete", rr.decode_complete, rest.complete, scope.settled, surfaces=_REST),
    Kind("rest.promise.search", rr.decode_search, rest.search, scope.everything, read_first=True, surfaces=_REST),
    Kind("rest.promise.callback", rr.decode_callback, rest.callback, scope.rest_callback, surfaces=_REST),
    Kind("rest.promise.subscribe", rr.decode_subscribe, rest.subscribe, scope.rest_subscribe, surfaces=_REST),
    Kind("rest.task.claim", rr.decode_claim, rest.claim, scope.rest_task, surfaces=_REST),
    Kind("rest.task.complete", rr.decode_complete_task, rest.complete_task, scope.rest_task, surfaces=_REST),
    Kind("rest.task.drop", rr.decode_drop, rest.drop, scope.rest_task, surfaces=_REST),
    Kind("rest.task.heartbeat", rr.decode_heartbeat, rest.heartbeat, scope.nothing, surfaces=_REST),
    Kind("rest.schedule.get", rr.decode_schedule_get, rest_schedules.get, scope.by_id, read_first=True, surfaces=_REST),
    Kind("rest.schedule.create", rr.decode_schedule_create, rest_schedules.create, scope.rest_schedule, surfaces=_REST),
    Kind("rest.schedule.delete", rr.decode_schedule_delete, rest_schedules.delete, scope.by_id, surfaces=_REST),
    Kind("rest.schedule.search", rr.decode_schedule_search, rest_schedules.search, scope.everything,
         read_first=True, surfaces=_REST),
    # its distributed locks (shared/legacy/rest_locks.py); a heartbeat names a process, and the
    # engine extends only the locks within the caller's scope
    Kind("rest.lock.acquire", rl.decode_acquire, locks.acquire, scope.rest_lock, surfaces=_REST),
    Kind("rest.lock.release", rl.decode_release, locks.release, scope.rest_lock, surfaces=_REST),
    Kind("rest.lock.heartbeat", rl.decode_heartbeat, locks.heartbeat, scope.nothing, surfaces=_REST),
)


def _served(surface: str) -> dict[str, Kind[Any]]:
    return {name: k for name, k in KINDS.items() if surface in k.surfaces}


RPC_KINDS = _served(RPC)  # what `POST /` serves
OPERATOR_KINDS = _served(OPERATOR)  # `POST /operator`
REST_KINDS = _served(REST)
CONSOLE_KINDS = _served(CONSOLE)  # `POST /ui/api`


def decode(kind: str, data: dict[str, Any], strict: bool = False, key_limit: int | None = None) -> rq.Request:
    """The typed request of a known kind; Reject(400) when `data` does not decode, or when an id,
    process id, address or indexed tag is longer than `key_limit` characters (the store's
    `max_key_length`; None: the bytes bound every store has)."""
    token = rq.KEY_CHARS.set(key_limit) if key_limit is not None else None
    try:
        return KINDS[kind].decode(data, strict)
    except DecodeError as e:
        raise Reject(400, f"Invalid request: {e}") from None
    finally:
        if token is not None:
            rq.KEY_CHARS.reset(token)


def touches(req: rq.Request) -> Touched:
    """What a decoded request touches (its kind's row)."""
    k: Kind[Any] = KINDS[req.kind]
    return k.touches(req)
