"""The typed request of each kind, and its decoding and validation from `data`.

Each `decode_*` function returns its kind's frozen record (`shared.frozen`) or raises `Reject(400, ...)`; the
registry (`shared.kinds`) pairs them with their operations. Decoding runs before any
transaction opens, so a rejected request never reads or changes state.
"""
from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ClassVar

from shared import cron
from shared.frozen import frozen
from shared.protocol import (
    DecodeError,
    Reject,
    enum,
    is_int,
    opt_int,
    opt_str,
    parse_address,
    req_int,
    req_obj,
    req_str,
    str_map,
    value,
)
from shared.records import BRANCH, DELAY, ORIGIN, PARENT, PREFIX, PROMISE_STATES, TARGET, TASK_STATES

SETTLE_STATES = ("resolved", "rejected", "rejected_canceled")
MAX_KEY_BYTES = 1024  # ids, pids, addresses and indexed tags: every store's indexes must hold them


# The store's own limit on those keys, in characters (`Store.max_key_length`: MySQL's VARCHAR(255)
# columns), set by `shared.kinds.decode` while it decodes one request; None: no store limit.
KEY_CHARS: ContextVar[int | None] = ContextVar("resonate_key_chars", default=None)


def _bounded(v: str, what: str) -> str:
    if len(v) > MAX_KEY_BYTES // 4 and len(v.encode("utf-8")) > MAX_KEY_BYTES:
        raise Reject(400, f"{what} must be at most {MAX_KEY_BYTES} bytes")
    return _store_bounded(v, what)


def _store_bounded(v: str, what: str) -> str:
    """The store's limit only (a value every store but one keeps unbounded, e.g. resonate:origin)."""
    n = KEY_CHARS.get()
    if n is not None and len(v) > n:
        raise Reject(400, f"{what} must be at most {n} characters (the storage backend's limit)")
    return v


@frozen
class CreateData:
    id: str
    timeout_at: int
    param: dict[str, Any]
    tags: dict[str, str]


@frozen
class SettleData:
    id: str
    state: str
    value: dict[str, Any]


class Request:
    """A decoded request: one frozen record per kind (below), its fields checked by the
    type checker wherever the engine reads them. `kind` names the registry entry
    (`shared.kinds`)."""

    __slots__ = ()
    kind: ClassVar[str]


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
    """promise.create data (docs/protocol.md#promisecreate), shared by task.create and task.fence actions."""
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
    if ORIGIN in c.tags:
        _store_bounded(c.tags[ORIGIN], ORIGIN)
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


# ---- the request of each kind, and its decoder ---------------------------------------------

Data = dict[str, Any]


@frozen
class PromiseGet(Request):
    kind: ClassVar[str] = "promise.get"
    id: str


@frozen
class PromiseCreate(Request):
    kind: ClassVar[str] = "promise.create"
    create: CreateData


@frozen
class PromiseSettle(Request):
    kind: ClassVar[str] = "promise.settle"
    settle: SettleData


@frozen
class RegisterCallback(Request):
    kind: ClassVar[str] = "promise.register_callback"
    awaited: str
    awaiter: str


@frozen
class RegisterListener(Request):
    kind: ClassVar[str] = "promise.register_listener"
    awaited: str
    address: str


@frozen
class PromiseSearch(Request):
    kind: ClassVar[str] = "promise.search"
    state: str | None
    tags: dict[str, str]
    limit: int
    cursor: str | None


@frozen
class TaskGet(Request):
    kind: ClassVar[str] = "task.get"
    id: str


@frozen
class TaskCreate(Request):
    kind: ClassVar[str] = "task.create"
    pid: str
    ttl: int
    create: CreateData


@frozen
class TaskAcquire(Request):
    kind: ClassVar[str] = "task.acquire"
    id: str
    version: int
    pid: str
    ttl: int


@frozen
class TaskRelease(Request):
    kind: ClassVar[str] = "task.release"
    id: str
    version: int


@frozen
class TaskFulfill(Request):
    kind: ClassVar[str] = "task.fulfill"
    id: str
    version: int
    settle: SettleData


@frozen
class TaskSuspend(Request):
    kind: ClassVar[str] = "task.suspend"
    id: str
    version: int
    awaited: tuple[str, ...]


@frozen
class TaskFence(Request):
    kind: ClassVar[str] = "task.fence"
    id: str
    version: int
    action_kind: str  # promise.create | promise.settle
    op: CreateData | SettleData


@frozen
class TaskHeartbeat(Request):
    kind: ClassVar[str] = "task.heartbeat"
    pid: str
    tasks: tuple[tuple[str, int], ...]  # (task id, version)


@frozen
class TaskHalt(Request):
    kind: ClassVar[str] = "task.halt"
    id: str


@frozen
class TaskContinue(Request):
    kind: ClassVar[str] = "task.continue"
    id: str


@frozen
class TaskSearch(Request):
    kind: ClassVar[str] = "task.search"
    state: str | None
    limit: int
    cursor: str | None


@frozen
class ScheduleGet(Request):
    kind: ClassVar[str] = "schedule.get"
    id: str


@frozen
class ScheduleCreate(Request):
    kind: ClassVar[str] = "schedule.create"
    id: str
    cron: str
    promise_id: str  # template: {{.id}} and {{.timestamp}} are expanded at each firing
    promise_timeout: int
    promise_param: dict[str, Any]
    promise_tags: dict[str, str]


@frozen
class ScheduleDelete(Request):
    kind: ClassVar[str] = "schedule.delete"
    id: str


@frozen
class ScheduleSearch(Request):
    kind: ClassVar[str] = "schedule.search"
    tags: dict[str, str]
    limit: int
    cursor: str | None


@frozen
class DebugStart(Request):
    kind: ClassVar[str] = "debug.start"


@frozen
class DebugStop(Request):
    kind: ClassVar[str] = "debug.stop"


@frozen
class DebugReset(Request):
    kind: ClassVar[str] = "debug.reset"


@frozen
class DebugSnap(Request):
    kind: ClassVar[str] = "debug.snap"


@frozen
class DebugTick(Request):
    kind: ClassVar[str] = "debug.tick"
    time: int


@frozen
class PromisePurge(Request):
    """An operator's purge of finished workflows (docs/operations.md#retention)."""
    kind: ClassVar[str] = "promise.purge"
    older_than: int  # ms: workflows whose last promise settled at least this long ago
    dry_run: bool


def decode_promise_purge(d: Data, strict: bool) -> PromisePurge:
    older_than = req_int(d, "olderThan")
    if older_than < 0:
        raise Reject(400, "Invalid request: olderThan must not be negative")
    dry_run = d.get("dryRun")
    if dry_run is None:
        dry_run = False
    elif not isinstance(dry_run, bool):
        raise DecodeError("invalid type for `dryRun`: expected a boolean")
    return PromisePurge(older_than, dry_run)


def decode_promise_get(d: Data, strict: bool) -> PromiseGet:
    return PromiseGet(_id(d, "Promise ID is required"))


def decode_promise_create(d: Data, strict: bool) -> PromiseCreate:
    return PromiseCreate(create_data(d, strict))


def decode_promise_settle(d: Data, strict: bool) -> PromiseSettle:
    return PromiseSettle(settle_data(d))


def decode_register_callback(d: Data, strict: bool) -> RegisterCallback:
    awaited, awaiter = _callback(d, strict)
    if strict and origin_of(awaited) != origin_of(awaiter):
        raise Reject(400, "Awaiter and awaited must belong to the same origin")
    return RegisterCallback(awaited, awaiter)


def decode_register_listener(d: Data, strict: bool) -> RegisterListener:
    awaited, address = req_str(d, "awaited"), req_str(d, "address")
    if address == "":
        raise Reject(400, "Address is required")
    _bounded(address, "Address")
    if parse_address(address) is None:
        raise Reject(400, "Invalid listener address")
    if awaited == "":
        raise Reject(400, "Awaited promise ID is required")
    return RegisterListener(_bounded(awaited, "Awaited promise ID"), address)


def decode_promise_search(d: Data, strict: bool) -> PromiseSearch:
    return PromiseSearch(enum(d, "state", PROMISE_STATES, False), str_map(d.get("tags"), "tags"), _limit(d, 100),
                         opt_str(d, "cursor"))


def decode_task_get(d: Data, strict: bool) -> TaskGet:
    return TaskGet(_id(d))


def decode_task_create(d: Data, strict: bool) -> TaskCreate:
    pid, ttl = _pid_ttl(d)
    a = _action(d, head_required=True)
    c = create_data(req_obj(a, "data"), strict)
    if TARGET not in c.tags:
        raise Reject(400, "Action must have a resonate:target tag")
    if DELAY in c.tags:
        raise Reject(400, "Action must not have a resonate:delay tag")
    return TaskCreate(pid, ttl, c)


def decode_task_acquire(d: Data, strict: bool) -> TaskAcquire:
    id, version = _id(d), _version(d)
    pid, ttl = _pid_ttl(d)
    return TaskAcquire(id, version, pid, ttl)


def decode_task_release(d: Data, strict: bool) -> TaskRelease:
    return TaskRelease(_id(d), _version(d))


def decode_task_fulfill(d: Data, strict: bool) -> TaskFulfill:
    id, version = _id(d), _version(d)
    a = _action(d, head_required=True)
    s = settle_data(req_obj(a, "data"))
    if s.id != id:
        raise Reject(400, "Action ID must match the task ID")
    return TaskFulfill(id, version, s)


def decode_task_suspend(d: Data, strict: bool) -> TaskSuspend:
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
    return TaskSuspend(id, version, tuple(awaited))


def decode_task_fence(d: Data, strict: bool) -> TaskFence:
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
    return TaskFence(id, version, kind, op)


def decode_task_heartbeat(d: Data, strict: bool) -> TaskHeartbeat:
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
        items.append((_bounded(req_str(t, "id"), "Task ID"), req_int(t, "version")))
    if strict:
        if not items:
            raise Reject(400, "Tasks array must not be empty")
        if len({origin_of(i) for i, _ in items}) > 1:
            raise Reject(400, "All tasks must belong to the same origin")
    return TaskHeartbeat(pid, tuple(items))


def decode_task_halt(d: Data, strict: bool) -> TaskHalt:
    return TaskHalt(_id(d))


def decode_task_continue(d: Data, strict: bool) -> TaskContinue:
    return TaskContinue(_id(d))


def decode_task_search(d: Data, strict: bool) -> TaskSearch:
    return TaskSearch(enum(d, "state", TASK_STATES, False), _limit(d, 100), opt_str(d, "cursor"))


def decode_schedule_get(d: Data, strict: bool) -> ScheduleGet:
    return ScheduleGet(_id(d, "Schedule ID is required"))


def decode_schedule_delete(d: Data, strict: bool) -> ScheduleDelete:
    return ScheduleDelete(_id(d, "Schedule ID is required"))


def decode_schedule_create(d: Data, strict: bool) -> ScheduleCreate:
    r = ScheduleCreate(req_str(d, "id"), req_str(d, "cron"), req_str(d, "promiseId"), req_int(d, "promiseTimeout"),
                       value(d.get("promiseParam"), "promiseParam"), str_map(d.get("promiseTags"), "promiseTags"))
    errors: list[str] = []
    _nonempty(r.id, "Schedule ID is required", errors)
    if strict and "." in r.id:
        errors.append("Schedule ID must not contain '.'")
    _nonempty(r.cron, "Cron expression is required", errors)
    _nonempty(r.promise_id, "Promise ID template is required", errors)
    if r.promise_timeout < 0:
        errors.append("Promise timeout must be a non-negative integer")
    if TARGET not in r.promise_tags:
        errors.append("promiseTags must include a resonate:target tag")
    _fail(errors)
    _bounded(r.id, "Schedule ID")
    _bounded(r.promise_tags[TARGET], TARGET)
    longest = r.promise_id.replace("{{.id}}", r.id).replace("{{.timestamp}}", str(2**63 - 1))
    _bounded(longest, "Promise ID template (expanded)")
    try:
        cron.validate(r.cron, strict)
    except cron.CronError:
        raise Reject(400, "Invalid cron expression") from None
    if parse_address(r.promise_tags[TARGET]) is None:
        raise Reject(400, "Invalid resonate:target address")
    return r


def decode_schedule_search(d: Data, strict: bool) -> ScheduleSearch:
    return ScheduleSearch(str_map(d.get("tags"), "tags"), _limit(d, 10), opt_str(d, "cursor"))


def decode_debug_tick(d: Data, strict: bool) -> DebugTick:
    t = d.get("time")
    if not isinstance(t, int) or not is_int(t):
        raise Reject(400, "Missing or invalid 'time' field")
    return DebugTick(t)


def no_fields[R: Request](cls: type[R]) -> Callable[[Data, bool], R]:
    """The decoder of a kind whose `data` carries nothing (the debug session kinds)."""
    def decode(d: Data, strict: bool) -> R:
        return cls()
    return decode
