"""The engine: one function per request kind over a storage transaction (protocol §5)."""
from __future__ import annotations

from typing import Callable

from shared.engine import debug, promises, schedules, tasks
from shared.engine.core import Ctx, EngineConfig, Resp
from shared.engine.debug import DEBUG_SESSION
from shared.engine.timeouts import process_timeouts
from shared.requests import Req

Operation = Callable[[Ctx, Req], Resp]

OPERATIONS: dict[str, Operation] = {
    "promise.get": promises.promise_get,
    "promise.create": promises.promise_create,
    "promise.settle": promises.promise_settle,
    "promise.register_callback": promises.promise_register_callback,
    "promise.register_listener": promises.promise_register_listener,
    "promise.search": promises.promise_search,
    "task.get": tasks.task_get,
    "task.create": tasks.task_create,
    "task.acquire": tasks.task_acquire,
    "task.release": tasks.task_release,
    "task.fulfill": tasks.task_fulfill,
    "task.suspend": tasks.task_suspend,
    "task.fence": tasks.task_fence,
    "task.heartbeat": tasks.task_heartbeat,
    "task.halt": tasks.task_halt,
    "task.continue": tasks.task_continue,
    "task.search": tasks.task_search,
    "schedule.get": schedules.schedule_get,
    "schedule.create": schedules.schedule_create,
    "schedule.delete": schedules.schedule_delete,
    "schedule.search": schedules.schedule_search,
    "debug.start": debug.debug_start,
    "debug.stop": debug.debug_stop,
    "debug.reset": debug.debug_reset,
    "debug.snap": debug.debug_snap,
    "debug.tick": debug.debug_tick,
}

# Kinds tried on a read snapshot first; they fall back to a write transaction only when they
# must change something (a lazy timeout). Searches and snapshots never write.
READ_FIRST = frozenset({"promise.get", "task.get", "promise.search", "task.search", "schedule.get",
                        "schedule.search", "debug.snap"})

__all__ = ["OPERATIONS", "READ_FIRST", "Ctx", "EngineConfig", "Resp", "process_timeouts", "DEBUG_SESSION"]
