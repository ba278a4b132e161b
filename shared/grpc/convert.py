"""Between the gRPC messages and the REST API's shapes (docs/grpc.md#mapping).

Going in, a message becomes the `data` dict a REST route would build, so the REST decoders check
it: payloads are raw bytes here and base64 there, an empty string means "not given". Going out,
a record is rendered by the REST API's own renderer first (`shared/legacy/wire.py`,
`rest_schedules.schedule`) and that JSON is copied into the message, so a promise or schedule
reads the same over both APIs (the same hidden tags, the same empty members). The state enums
(promise.State, task.TaskState) share their value names with the REST API's state strings.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any

Data = dict[str, Any]


def value_in(msg: Any) -> Data:
    """A Value/PromiseValue/TaskValue message as a REST value: headers, base64 data; members
    that are empty are left out (the REST decoder drops them too)."""
    out: Data = {}
    if msg.headers:
        out["headers"] = dict(msg.headers)
    if msg.data:
        out["data"] = base64.b64encode(msg.data).decode()
    return out


def data_out(text: str | None) -> bytes:
    """A stored payload as bytes: REST and the SDKs store base64, so it is decoded; a payload
    written by some other client as plain text (not base64) comes out as its UTF-8 bytes."""
    if not text:
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode()


def value_out(cls: Any, v: Data) -> Any:
    return cls(headers=v.get("headers") or {}, data=data_out(v.get("data")))


def promise_out(cls: Any, value_cls: Any, w: Data) -> Any:
    """A promise message (promise.Promise or task.TaskPromise) from the REST JSON of the promise
    (`wire.promise`); an unset key or time is "" or 0, as the older server sent them."""
    return cls(id=w["id"], state=cls.DESCRIPTOR.fields_by_name["state"].enum_type.values_by_name[w["state"]].number,
               param=value_out(value_cls, w["param"]), value=value_out(value_cls, w["value"]),
               timeout=w["timeout"], idempotencyKeyForCreate=w.get("idempotencyKeyForCreate", ""),
               idempotencyKeyForComplete=w.get("idempotencyKeyForComplete", ""), createdOn=w["createdOn"],
               completedOn=w.get("completedOn", 0), tags=w["tags"])


def schedule_out(cls: Any, value_cls: Any, w: Data) -> Any:
    """A schedule.Schedule from the REST JSON of the schedule (`rest_schedules.schedule`)."""
    return cls(id=w["id"], description=w["description"], cron=w["cron"], tags=w["tags"], promiseId=w["promiseId"],
               promiseTimeout=w["promiseTimeout"], promiseParam=value_out(value_cls, w["promiseParam"]),
               promiseTags=w["promiseTags"], idempotencyKey=w.get("idempotencyKey", ""),
               lastRunTime=w.get("lastRunTime", 0), nextRunTime=w["nextRunTime"], createdOn=w["createdOn"])


def optional(s: str) -> str | None:
    """proto3 has no absent string: "" is "not given" (an idempotency key, a cursor)."""
    return s or None
