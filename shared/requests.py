"""Decoding and validation of each request kind's `data` (§2.6 steps 9–10, §5).

`decode(kind, data, strict)` returns a typed request or raises `Reject(400, ...)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from shared import cron
from shared.protocol import (DecodeError, Reject, enum, is_int, opt_int, opt_str, parse_address, req_int,
                             req_obj, req_str, str_map, value)
from shared.records import DELAY, ORIGIN, BRANCH, PARENT, PREFIX, PROMISE_STATES, TARGET, TASK_STATES

SETTLE_STATES = ("resolved", "rejected", "rejected_canceled")
MAX_KEY_BYTES = 1024  # ids, pids, addresses and indexed tags: every store's indexes must hold them


def _bounded(v: str, what: str) -> str:
    if len(v) > MAX_KEY_BYTES // 4 and len(v.encode("utf-8")) > MAX_KEY_BYTES:
        raise Reject(400, f"{what} must be at most {MAX_KEY_BYTES} bytes")
    return v


@dataclass(frozen=True, slots=True)
class CreateData:
    id: str
    timeout_at: int
    param: dict[str, Any]
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class SettleData:
    id: str
    state: str
    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Req:
    """A decoded request: the kind plus its fields (kept generic to stay small)."""

    kind: str
    f: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.f[name]
        except KeyError:
            raise AttributeError(name) from None


def origin_of(id: str) -> str:
    return id.split(".", 1)[0]


def _fail(errors: list[str]) -> None:
    if errors:
        raise Reject(400, "; ".join(errors))


def _nonempty(v: str, msg: str, errors: list[str]) -> None:
    if v == "":
        errors.append(msg)


def _limit(d: dict[str, Any], default: int) -> int:
    n = opt_int(d, "limit")
    if n is None:
        return default
    if n < 1:
        raise Reject(400, "Limit must be a positive integer")
    if n > 1000:
        raise Reject(400, "Invalid 'limit' — must be between 1 and 1000")
    return n


def create_data(d: dict[str, Any], strict: bool) -> CreateData:
    """promise.create data (§5.2), shared by task.create and task.fence actions."""
    c = CreateData(req_str(d, "id"), req_int(d, "timeoutAt"), value(d.get("param"), "param"),
                   str_map(d.get("tags"), "tags"))
    errors: list[str] = []
    if c.id == "":
        errors.append("Promise ID is required")
    elif "\x00" in c.id:
        errors.append("Promise ID must not contain null bytes")
    if c.timeout_at < 0:
        errors.append("TimeoutAt must be a non-negative integer")
    if DELAY in c.tags:
        raw = c.tags[DELAY]
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not is_int(int(raw)):
            errors.append("resonate:delay must be a non-negative integer")
        elif int(raw) >= c.timeout_at:
            errors.append("resonate:delay must be less than timeoutAt")
        if TARGET not in c.tags:
            errors.append("resonate:delay requires a resonate:target tag")
    if strict:
        errors += _strict_id_errors(c.id, c.tags)
    _fail(errors)
    _bounded(c.id, "Promise ID")
    for tag in (TARGET, BRANCH):
        if tag in c.tags:
            _bounded(c.tags[tag], tag)
    if TARGET in c.tags and parse_address(c.tags[TARGET]) is None:
        raise Reject(400, "Invalid resonate:target address")
    return c


def _strict_id_errors(id: str, tags: dict[str, str]) -> list[str]:
    errors = []
    origin = tags.get(ORIGIN)
    if origin is not None:
        if "." in origin:
            errors.append("resonate:origin must not contain '.'")
        elif id != origin and not id.startswith(origin + "."):
            errors.append("Promise ID must be prefixed by resonate:origin")
    for tag, name in ((BRANCH, "branch"), (PARENT, "parent")):
        v = tags.get(tag)
        if v is not None and id != v and not id.startswith(v + "."):
            errors.append(f"Promise ID must be prefixed by resonate:{name}")
    if "." in tags.get(PREFIX, ""):
        errors.append("resonate:prefix must not contain '.'")
    return errors


def settle_data(d: dict[str, Any]) -> SettleData:
    s = SettleData(req_str(d, "id"), enum(d, "state", SETTLE_STATES, True) or "", value(d.get("value"), "value"))
    if s.id == "":
        raise Reject(400, "Promise ID is required")
    _bounded(s.id, "Promise ID")
    return s


def _action(d: dict[str, Any], head_required: bool) -> dict[str, Any]:
    a = req_obj(d, "action")
    if not isinstance(a.get("kind"), str):
        raise DecodeError("missing or invalid field `action.kind`")
    if head_required and "head" not in a:
        raise DecodeError("missing field `action.head`")
    return a


def _id(d: dict[str, Any], msg: str = "Task ID is required") -> str:
    v = req_str(d, "id")
    if v == "":
        raise Reject(400, msg)
    return _bounded(v, "ID")


def _version(d: dict[str, Any]) -> int:
    v = req_int(d, "version")
    if v < 0:
        raise Reject(400, "Version must be a non-negative integer")
    return v


def _pid_ttl(d: dict[str, Any]) -> tuple[str, int]:
    pid, ttl = req_str(d, "pid"), req_int(d, "ttl")
    errors: list[str] = []
    _nonempty(pid, "Process ID is required", errors)
    if ttl < 1:
        errors.append("TTL must be a positive integer")
    _fail(errors)
    return _bounded(pid, "Process ID"), ttl


def _callback(d: dict[str, Any], strict: bool) -> tuple[str, str]:
    awaited, awaiter = req_str(d, "awaited"), req_str(d, "awaiter")
    errors: list[str] = []
    _nonempty(awaited, "Awaited promise ID is required", errors)
    _nonempty(awaiter, "Awaiter promise ID is required", errors)
    if awaited and awaited == awaiter:
        errors.append("Awaited and awaiter must be different promises")
    _fail(errors)
    return _bounded(awaited, "Awaited promise ID"), _bounded(awaiter, "Awaiter promise ID")


# ---- per-kind decoders ---------------------------------------------------------------------

def _promise_get(d, strict):
    return {"id": _id(d, "Promise ID is required")}


def _promise_create(d, strict):
    return {"create": create_data(d, strict)}


def _promise_settle(d, strict):
    return {"settle": settle_data(d)}


def _register_callback(d, strict):
    awaited, awaiter = _callback(d, strict)
    if strict and origin_of(awaited) != origin_of(awaiter):
        raise Reject(400, "Awaiter and awaited must belong to the same origin")
    return {"awaited": awaited, "awaiter": awaiter}


def _register_listener(d, strict):
    awaited, address = req_str(d, "awaited"), req_str(d, "address")
    if address == "":
        raise Reject(400, "Address is required")
    _bounded(address, "Address")
    if parse_address(address) is None:
        raise Reject(400, "Invalid listener address")
    if awaited == "":
        raise Reject(400, "Awaited promise ID is required")
    return {"awaited": _bounded(awaited, "Awaited promise ID"), "address": address}


def _promise_search(d, strict):
    return {"state": enum(d, "state", PROMISE_STATES, False), "tags": str_map(d.get("tags"), "tags"),
            "limit": _limit(d, 100), "cursor": opt_str(d, "cursor")}


def _task_get(d, strict):
    return {"id": _id(d)}


def _task_create(d, strict):
    pid, ttl = _pid_ttl(d)
    a = _action(d, head_required=True)
    c = create_data(req_obj(a, "data"), strict)
    if TARGET not in c.tags:
        raise Reject(400, "Action must have a resonate:target tag")
    if DELAY in c.tags:
        raise Reject(400, "Action must not have a resonate:delay tag")
    return {"pid": pid, "ttl": ttl, "create": c}


def _task_acquire(d, strict):
    id, version = _id(d), _version(d)
    pid, ttl = _pid_ttl(d)
    return {"id": id, "version": version, "pid": pid, "ttl": ttl}


def _task_id_version(d, strict):
    return {"id": _id(d), "version": _version(d)}


def _task_fulfill(d, strict):
    id, version = _id(d), _version(d)
    a = _action(d, head_required=True)
    s = settle_data(req_obj(a, "data"))
    if s.id != id:
        raise Reject(400, "Action ID must match the task ID")
    return {"id": id, "version": version, "settle": s}


def _task_suspend(d, strict):
    id, version = _id(d), _version(d)
    actions = d.get("actions")
    if actions is None:
        raise DecodeError("missing field `actions`")
    if not isinstance(actions, list):
        raise DecodeError("invalid type for `actions`: expected an array")
    if not actions:
        raise Reject(400, "Actions array cannot be empty")
    awaited: list[str] = []
    for i, a in enumerate(actions):
        if not isinstance(a, dict) or not isinstance(a.get("kind"), str) or "head" not in a:
            raise DecodeError(f"invalid action at index {i}: expected {{kind, head, data}}")
        w, r = _callback(req_obj(a, "data"), strict)
        if r != id:
            raise Reject(400, "All action awaiter IDs must match the task ID")
        if w == id:
            raise Reject(400, "Action awaited promise must not equal the task ID")
        if strict and origin_of(w) != origin_of(id):
            raise Reject(400, "Awaited promise must belong to the same origin as the task")
        awaited.append(w)
    return {"id": id, "version": version, "awaited": awaited}


def _task_fence(d, strict):
    id, version = _id(d), _version(d)
    a = req_obj(d, "action")
    kind = a.get("kind")
    if not isinstance(kind, str):
        raise DecodeError("missing or invalid field `action.kind`")
    if "data" not in a:
        raise DecodeError("missing field `action.data`")
    inner = a["data"]
    if isinstance(inner, dict) and inner.get("id") == id:
        raise Reject(400, "Action ID must not equal the task ID")
    if kind not in ("promise.create", "promise.settle"):
        raise Reject(400, "Invalid fence action kind")
    if not isinstance(inner, dict):
        raise Reject(400, "Invalid action data: expected an object")
    try:
        op = create_data(inner, strict) if kind == "promise.create" else settle_data(inner)
    except DecodeError as e:
        raise Reject(400, f"Invalid action data: {e}") from None
    return {"id": id, "version": version, "action_kind": kind, "op": op}


def _task_heartbeat(d, strict):
    pid = req_str(d, "pid")
    if pid == "":
        raise Reject(400, "Process ID is required")
    _bounded(pid, "Process ID")
    raw = d.get("tasks")
    if raw is None:
        raise DecodeError("missing field `tasks`")
    if not isinstance(raw, list):
        raise DecodeError("invalid type for `tasks`: expected an array")
    items = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise DecodeError(f"invalid type for `tasks[{i}]`: expected an object")
        items.append((req_str(t, "id"), req_int(t, "version")))
    if strict:
        if not items:
            raise Reject(400, "Tasks array must not be empty")
        if len({origin_of(i) for i, _ in items}) > 1:
            raise Reject(400, "All tasks must belong to the same origin")
    return {"pid": pid, "tasks": items}


def _task_search(d, strict):
    return {"state": enum(d, "state", TASK_STATES, False), "limit": _limit(d, 100), "cursor": opt_str(d, "cursor")}


def _schedule_get(d, strict):
    return {"id": _id(d, "Schedule ID is required")}


def _schedule_create(d, strict):
    f = {"id": req_str(d, "id"), "cron": req_str(d, "cron"), "promise_id": req_str(d, "promiseId"),
         "promise_timeout": req_int(d, "promiseTimeout"),
         "promise_param": value(d.get("promiseParam"), "promiseParam"),
         "promise_tags": str_map(d.get("promiseTags"), "promiseTags")}
    errors: list[str] = []
    _nonempty(f["id"], "Schedule ID is required", errors)
    if strict and "." in f["id"]:
        errors.append("Schedule ID must not contain '.'")
    _nonempty(f["cron"], "Cron expression is required", errors)
    _nonempty(f["promise_id"], "Promise ID template is required", errors)
    if f["promise_timeout"] < 0:
        errors.append("Promise timeout must be a non-negative integer")
    if TARGET not in f["promise_tags"]:
        errors.append("promiseTags must include a resonate:target tag")
    _fail(errors)
    _bounded(f["id"], "Schedule ID")
    _bounded(f["promise_tags"][TARGET], TARGET)
    longest = f["promise_id"].replace("{{.id}}", f["id"]).replace("{{.timestamp}}", str(2**63 - 1))
    _bounded(longest, "Promise ID template (expanded)")
    try:
        cron.validate(f["cron"], strict)
    except cron.CronError:
        raise Reject(400, "Invalid cron expression") from None
    if parse_address(f["promise_tags"][TARGET]) is None:
        raise Reject(400, "Invalid resonate:target address")
    return f


def _schedule_search(d, strict):
    return {"tags": str_map(d.get("tags"), "tags"), "limit": _limit(d, 10), "cursor": opt_str(d, "cursor")}


def _empty(d, strict):
    return {}


def _debug_tick(d, strict):
    t = d.get("time")
    if not is_int(t):
        raise Reject(400, "Missing or invalid 'time' field")
    return {"time": t}


DECODERS: dict[str, Callable[[dict[str, Any], bool], dict[str, Any]]] = {
    "promise.get": _promise_get,
    "promise.create": _promise_create,
    "promise.settle": _promise_settle,
    "promise.register_callback": _register_callback,
    "promise.register_listener": _register_listener,
    "promise.search": _promise_search,
    "task.get": _task_get,
    "task.create": _task_create,
    "task.acquire": _task_acquire,
    "task.release": _task_id_version,
    "task.fulfill": _task_fulfill,
    "task.suspend": _task_suspend,
    "task.fence": _task_fence,
    "task.heartbeat": _task_heartbeat,
    "task.halt": _task_get,
    "task.continue": _task_get,
    "task.search": _task_search,
    "schedule.get": _schedule_get,
    "schedule.create": _schedule_create,
    "schedule.delete": _schedule_get,
    "schedule.search": _schedule_search,
    "debug.start": _empty,
    "debug.stop": _empty,
    "debug.reset": _empty,
    "debug.snap": _empty,
    "debug.tick": _debug_tick,
}


def decode(kind: str, data: dict[str, Any], strict: bool = False) -> Req:
    """Steps 9–10 of §2.6 for a known kind."""
    try:
        return Req(kind, DECODERS[kind](data, strict))
    except DecodeError as e:
        raise Reject(400, f"Invalid request: {e}") from None
