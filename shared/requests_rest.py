"""The typed requests of the older server's REST API (docs/legacy-api.md), decoded from the
`data` dict its routes build (`shared/legacy/rest.py`) out of the path, the headers and the body.

Every field is checked here, before any transaction: a promise's `data` must be base64, states
are upper case on the wire, a `resonate:invoke` tag names where the promise's task goes (an
address, or a bare group name meaning `poll://any@<name>`) and becomes the engine's
`resonate:target`; `resonate:timeout: "true"` becomes `resonate:timer` (the promise resolves at its
deadline). The REST rendering (`shared/legacy/wire.py`) hides the derived tags again. A
schedule's cron is read in the older server's dialect (`cron_next`), whatever the profile.
"""
from __future__ import annotations

import base64
import binascii
import re
from fractions import Fraction
from typing import Any, ClassVar

from shared import cron
from shared.frozen import frozen
from shared.protocol import (
    I64_MAX,
    DecodeError,
    Reject,
    is_int,
    opt_int,
    opt_str,
    parse_address,
    req_int,
    str_map,
)
from shared.protocol import value as value_of
from shared.records import INVOKE, TARGET, TIMER
from shared.requests import CreateData, Data, Request, SettleData, _bounded

TIMEOUT_TAG = "resonate:timeout"  # "true": the promise resolves, not times out, at its deadline
STATES_IN = {"RESOLVED": "resolved", "REJECTED": "rejected", "REJECTED_CANCELED": "rejected_canceled"}
SEARCH_STATES = {"pending": ("pending",), "resolved": ("resolved",),
                 "rejected": ("rejected", "rejected_canceled", "rejected_timedout")}
DEFAULT_TARGET = "poll://any@default"  # the older server's default target: the poll group `default`
MIN_LEASE_MS = 1000  # a claim's lease at least: a ttl of 0 still lets the claimer's heartbeat count it
# (and a completion a whole second later still finds it lapsed, as the older server's clients expect)
MAX_LIMIT = 100


def receiver(v: Any, what: str = "recv") -> str:
    """A receiver as the REST API names it, as an address: `poll://…`, `http(s)://…`, a bare group
    name (`default` → `poll://any@default`), or `{"type": "poll"|"http", "data": {…}}`."""
    if isinstance(v, dict):
        kind, data = v.get("type"), v.get("data")
        if not isinstance(data, dict):
            raise Reject(400, f"{what}.data must be an object")
        if kind == "poll" and isinstance(data.get("group"), str) and data["group"]:
            id = data.get("id")
            address = f"poll://any@{data['group']}" + (f"/{id}" if isinstance(id, str) and id else "")
        elif kind == "http" and isinstance(data.get("url"), str):
            address = data["url"]
        else:
            raise Reject(400, f"{what} must be a poll or http receiver")
    elif isinstance(v, str) and v:
        address = v if ":" in v else f"poll://any@{v}"
    else:
        raise Reject(400, f"{what} is required")
    _bounded(address, what)
    if parse_address(address) is None:
        raise Reject(400, f"Invalid {what} address")
    return address


def b64_value(v: Any, what: str) -> dict[str, Any]:
    """A param/value: `headers` map and base64 `data`, JSON nulls allowed; empty members dropped."""
    try:
        out = value_of(v, what)
    except DecodeError as e:
        raise Reject(400, str(e)) from None
    data = out.get("data")
    if data == "":
        del out["data"]
    elif data is not None:
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise Reject(400, f"{what}.data must be base64") from None
    if out.get("headers") == {}:
        del out["headers"]
    return out


def _tags(v: Any) -> dict[str, str]:
    try:
        tags = str_map(v, "tags")
    except DecodeError as e:
        raise Reject(400, str(e)) from None
    if INVOKE in tags:
        tags[TARGET] = receiver(tags[INVOKE], INVOKE)
    if tags.get(TIMEOUT_TAG) == "true":
        tags[TIMER] = "true"
    return tags


def _ikey(d: Data) -> str | None:
    try:
        return opt_str(d, "ikey")
    except DecodeError as e:
        raise Reject(400, str(e)) from None


def _int(d: Data, key: str, default: int | None = None) -> int:
    v: Any = d.get(key)
    if v is None and default is not None:
        return default
    if not is_int(v) or v < 0:  # is_int: an int (not a bool) in the 64-bit range
        raise Reject(400, f"The field {key} must be a non-negative 64-bit integer")
    return int(v)


def _str(d: Data, key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or v == "":
        raise Reject(400, f"The field {key} is required")
    return _bounded(v, key)


def _create(d: Data) -> CreateData:
    """A promise to create: `id`, `timeout` (epoch ms; 0 when absent: created timed out),
    `param`, `tags`."""
    id = _str(d, "id")
    return CreateData(id, _int(d, "timeout", 0), b64_value(d.get("param"), "param"), _tags(d.get("tags")))


# ---- promises ------------------------------------------------------------------------------


@frozen
class RestPromiseGet(Request):
    kind: ClassVar[str] = "rest.promise.get"
    id: str


@frozen
class RestPromiseCreate(Request):
    """POST /promises (and /promises/task with `lease`: the task is born claimed by that process)."""

    kind: ClassVar[str] = "rest.promise.create"
    create: CreateData
    ikey: str | None
    strict: bool
    lease: tuple[str, int] | None


@frozen
class RestPromiseComplete(Request):
    """PATCH /promises/{id}; `always_timed_out`: the earliest API's rule that completing a
    promise past its deadline is always refused."""

    kind: ClassVar[str] = "rest.promise.complete"
    settle: SettleData
    ikey: str | None
    strict: bool
    always_timed_out: bool


@frozen
class RestPromiseSearch(Request):
    kind: ClassVar[str] = "rest.promise.search"
    pattern: str
    states: tuple[str, ...] | None
    tags: dict[str, str]
    limit: int
    cursor: str | None


@frozen
class RestCallback(Request):
    """POST /promises/callback/{id}: resume root promise `root`'s task when `promise` settles."""

    kind: ClassVar[str] = "rest.promise.callback"
    promise: str
    root: str
    timeout: int
    address: str


@frozen
class RestSubscribe(Request):
    """POST /promises/subscribe/{id}: notify `address` when `promise` settles."""

    kind: ClassVar[str] = "rest.promise.subscribe"
    promise: str
    subscriber: str
    timeout: int
    address: str


def decode_get(d: Data, strict: bool) -> RestPromiseGet:
    return RestPromiseGet(_str(d, "id"))


def decode_create(d: Data, strict: bool) -> RestPromiseCreate:
    lease = None
    if d.get("task") is not None:
        t = d["task"]
        if not isinstance(t, dict):
            raise Reject(400, "The field task must be an object")
        lease = (_str(t, "processId"), max(_int(t, "ttl"), MIN_LEASE_MS))
        body = d.get("promise")
        if not isinstance(body, dict):
            raise Reject(400, "The field promise is required")
    else:
        body = d
    c = _create(body)
    if lease is not None and TARGET not in c.tags:
        c = CreateData(c.id, c.timeout_at, c.param, {**c.tags, TARGET: DEFAULT_TARGET})
    return RestPromiseCreate(c, _ikey(d), d.get("strict") is True, lease)


def decode_complete(d: Data, strict: bool) -> RestPromiseComplete:
    state = d.get("state")
    if not isinstance(state, str) or state.upper() not in STATES_IN:
        raise Reject(400, "The field state must be one of RESOLVED, REJECTED, REJECTED_CANCELED")
    s = SettleData(_str(d, "id"), STATES_IN[state.upper()], b64_value(d.get("value"), "value"))
    return RestPromiseComplete(s, _ikey(d), d.get("strict") is True, d.get("variant") == "A")


def search_fields(d: Data) -> tuple[str, dict[str, str], int, str | None]:
    """(id pattern, tags, limit, cursor) of a search, promises' and schedules' alike."""
    pattern = d.get("id")
    if not isinstance(pattern, str) or pattern == "":
        raise Reject(400, "The field id is required")
    try:
        tags = str_map(d.get("tags"), "tags")
        limit = opt_int(d, "limit") or MAX_LIMIT
        cursor = opt_str(d, "cursor")
    except DecodeError as e:
        raise Reject(400, str(e)) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise Reject(400, f"The field limit must be between 1 and {MAX_LIMIT}")
    return pattern, tags, limit, cursor


def decode_search(d: Data, strict: bool) -> RestPromiseSearch:
    pattern, tags, limit, cursor = search_fields(d)
    state = d.get("state")
    states = None
    if state is not None:
        if not isinstance(state, str) or state.lower() not in SEARCH_STATES:
            raise Reject(400, "The field state must be one of pending, resolved, rejected")
        states = SEARCH_STATES[state.lower()]
    return RestPromiseSearch(pattern, states, tags, limit, cursor)


def decode_callback(d: Data, strict: bool) -> RestCallback:
    return RestCallback(_str(d, "promiseId"), _str(d, "rootPromiseId"), _int(d, "timeout", 0),
                        receiver(d.get("recv")))


def decode_subscribe(d: Data, strict: bool) -> RestSubscribe:
    return RestSubscribe(_str(d, "promiseId"), _str(d, "id"), _int(d, "timeout", 0), receiver(d.get("recv")))


# ---- tasks -----------------------------------------------------------------------------------


@frozen
class RestTaskClaim(Request):
    kind: ClassVar[str] = "rest.task.claim"
    id: str
    counter: int
    pid: str
    ttl: int


@frozen
class RestTaskComplete(Request):
    """POST /tasks/complete. `settle` (the gRPC API's CompleteTask, docs/grpc.md): the state and
    value the root promise settles with in the same transaction; None over REST."""

    kind: ClassVar[str] = "rest.task.complete"
    id: str
    counter: int
    settle: tuple[str, dict[str, Any]] | None


@frozen
class RestTaskDrop(Request):
    kind: ClassVar[str] = "rest.task.drop"
    id: str
    counter: int


@frozen
class RestTaskHeartbeat(Request):
    kind: ClassVar[str] = "rest.task.heartbeat"
    pid: str


def _task_ref(d: Data) -> tuple[str, int]:
    try:
        return _str(d, "id"), req_int(d, "counter")
    except DecodeError as e:
        raise Reject(400, str(e)) from None


def decode_claim(d: Data, strict: bool) -> RestTaskClaim:
    id, counter = _task_ref(d)
    return RestTaskClaim(id, counter, _str(d, "processId"), max(_int(d, "ttl", 0), MIN_LEASE_MS))


TASK_STATES_IN = {"RESOLVED": "resolved", "REJECTED": "rejected"}  # what completing a task may settle with


def decode_complete_task(d: Data, strict: bool) -> RestTaskComplete:
    """`id`, `counter`; and, with `state` (RESOLVED or REJECTED, any case), `value`: settle the
    root promise too (the REST route never sends them: its behaviour stays as it was)."""
    state = d.get("state")
    if state is None:
        return RestTaskComplete(*_task_ref(d), None)
    if not isinstance(state, str) or state.upper() not in TASK_STATES_IN:
        raise Reject(400, "The field state must be one of RESOLVED, REJECTED")
    return RestTaskComplete(*_task_ref(d), (TASK_STATES_IN[state.upper()], b64_value(d.get("value"), "value")))


def decode_drop(d: Data, strict: bool) -> RestTaskDrop:
    return RestTaskDrop(*_task_ref(d))


def decode_heartbeat(d: Data, strict: bool) -> RestTaskHeartbeat:
    return RestTaskHeartbeat(_str(d, "processId"))



# ---- schedules -------------------------------------------------------------------------------

REST_SCHEDULE = "resonate:rest"  # in a schedule's own tags: created through the REST API (its firing rule)
INVOCATION = "resonate:invocation"  # on the promises a REST schedule fires, with resonate:schedule
# the older server's cron descriptors (its parser: 5 fields, an optional leading seconds field,
# these, and `@every <duration>`), always in the standard dialect whatever the profile
DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
               "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_DURATION = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")
_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def _every_ms(text: str) -> int:
    """`@every`'s duration (Go's syntax: `1h30m`, `90s`, `1.5h`) in whole seconds, at least one, as ms."""
    s = text.strip().lstrip("+")
    if s == "0":
        return 1000
    pos, ns = 0, Fraction(0)
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise cron.CronError(f"invalid duration {text!r}")
        ns += Fraction(m.group(1)) * _NS[m.group(2)]
        pos = m.end()
    if pos == 0 or ns > I64_MAX:
        raise cron.CronError(f"invalid duration {text!r}")
    return max(int(ns) // 10**9, 1) * 1000


def cron_next(expr: str, after_ms: int) -> int:
    """A REST schedule's next run strictly after `after_ms` (whole seconds, UTC), in ms; CronError
    when the expression is not one the older server's parser took (`?` reads as `*`)."""
    e = expr.strip()
    if e.startswith("@every "):
        return min((after_ms // 1000) * 1000 + _every_ms(e[len("@every "):]), I64_MAX)
    e = DESCRIPTORS.get(e, e)
    if e.startswith("@"):
        raise cron.CronError(f"unknown descriptor {e!r}")
    return cron.next_after(e.replace("?", "*"), after_ms, strict=False)


@frozen
class RestScheduleGet(Request):
    kind: ClassVar[str] = "rest.schedule.get"
    id: str


@frozen
class RestScheduleDelete(Request):
    kind: ClassVar[str] = "rest.schedule.delete"
    id: str


@frozen
class RestScheduleCreate(Request):
    """POST /schedules. `promise_tags` as the engine keeps them (`resonate:invoke` also as
    `resonate:target`); `tags` the schedule's own (searchable)."""

    kind: ClassVar[str] = "rest.schedule.create"
    id: str
    description: str
    cron: str
    tags: dict[str, str]
    promise_id: str  # template: {{.id}} and {{.timestamp}} are expanded at each firing
    promise_timeout: int  # relative: a firing's deadline is its run time + this
    promise_param: dict[str, Any]
    promise_tags: dict[str, str]
    ikey: str | None


@frozen
class RestScheduleSearch(Request):
    kind: ClassVar[str] = "rest.schedule.search"
    pattern: str
    tags: dict[str, str]
    limit: int
    cursor: str | None


def decode_schedule_get(d: Data, strict: bool) -> RestScheduleGet:
    return RestScheduleGet(_str(d, "id"))


def decode_schedule_delete(d: Data, strict: bool) -> RestScheduleDelete:
    return RestScheduleDelete(_str(d, "id"))


def decode_schedule_create(d: Data, strict: bool) -> RestScheduleCreate:
    id = _str(d, "id")
    desc = d.get("description", d.get("desc"))  # the 0.6.7 client sends `description`, the Go server read `desc`
    if desc is not None and not isinstance(desc, str):
        raise Reject(400, "The field description must be a string")
    expr = _str(d, "cron")
    try:
        cron_next(expr, 0)
    except cron.CronError:
        raise Reject(400, "The field cron must be a valid cron expression") from None
    try:
        tags = str_map(d.get("tags"), "tags")
        promise_tags = _tags(str_map(d.get("promiseTags"), "promiseTags"))
    except DecodeError as e:
        raise Reject(400, str(e)) from None
    if REST_SCHEDULE in tags:
        raise Reject(400, f"The tag {REST_SCHEDULE} is reserved")
    if TARGET in promise_tags and parse_address(promise_tags[TARGET]) is None:
        raise Reject(400, f"Invalid {TARGET} address")
    template = _str(d, "promiseId")
    _bounded(template.replace("{{.id}}", id).replace("{{.timestamp}}", str(I64_MAX)), "promiseId (expanded)")
    return RestScheduleCreate(id, desc or "", expr, tags, template, _int(d, "promiseTimeout"),
                              b64_value(d.get("promiseParam"), "promiseParam"), promise_tags, _ikey(d))


def decode_schedule_search(d: Data, strict: bool) -> RestScheduleSearch:
    return RestScheduleSearch(*search_fields(d))
