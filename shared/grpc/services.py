"""The four services of the older server's gRPC API (docs/grpc.md), each RPC a few lines of
translation onto one REST request kind, run through the service's pipeline exactly as the REST
routes run them (`shared/legacy/rest.py`'s `call`): authentication by the bearer token of the
`authorization` metadata, decoding, authorization, the transaction. So idempotency keys, `strict`
and every rule are the REST API's; only the errors are spelled as gRPC status codes, with the
REST API's JSON error body as the status message.

Every RPC answers: a failure that is no request's fault is logged and answers INTERNAL; nothing
a client sends can take the server down.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from shared.auth import bearer
from shared.grpc import convert as cv
from shared.grpc.stubs import Stubs
from shared.kinds import REST
from shared.legacy import wire
from shared.legacy.rest import FORBIDDEN, BadRequest, _cursor_in, _cursor_out
from shared.legacy.rest_schedules import schedule as schedule_json
from shared.protocol import Envelope, any_str, dumps
from shared.service import Service

log = logging.getLogger("resonate.grpc")
Data = dict[str, Any]
Code = grpc.StatusCode
CODES = {400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED, 404: Code.NOT_FOUND,
         409: Code.ALREADY_EXISTS, 503: Code.UNAVAILABLE}
SEARCH_STATES = {0: None, 1: "pending", 2: "resolved", 3: "rejected"}  # promise.SearchState


class Failure(Exception):
    """An RPC that ends with a status other than OK: the code and the REST API's error body."""

    def __init__(self, status: int, data: Any) -> None:
        if isinstance(data, dict) and "code" in data:  # an engine failure carries its REST code
            code, message = data["code"], data["message"]
        else:
            code, message = (FORBIDDEN if status == 403 else status * 10), str(data)
        super().__init__(message)
        self.code = CODES.get(status) or (Code.INTERNAL if status >= 500 else Code.INVALID_ARGUMENT)
        self.details = dumps(wire.error(code, message)).decode()


def invalid(message: str) -> Failure:
    return Failure(400, message)


def rpc(method: Callable[[Any, Any, grpc.ServicerContext], Any]) -> Callable[[Any, Any, grpc.ServicerContext], Any]:
    """One RPC: its answer, or the status of its Failure; anything else is logged and INTERNAL."""
    name = method.__name__

    @functools.wraps(method)
    def handler(self: Any, req: Any, ctx: grpc.ServicerContext) -> Any:
        t0 = time.perf_counter()
        code = Code.OK
        try:
            return method(self, req, ctx)
        except Failure as f:
            code = f.code
            ctx.abort(f.code, f.details)
        except Exception as e:
            code = Code.INTERNAL
            log.exception("internal error in gRPC method=%s", name)
            ctx.abort(Code.INTERNAL, dumps(wire.error(5000, f"Internal error: {type(e).__name__}")).decode())
        finally:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("finished processing gRPC call method=%s code=%s latency_ms=%.2f", name, code.name,
                          (time.perf_counter() - t0) * 1000)

    return handler


class Api:
    """What every RPC needs: the service, the generated modules, one call through the pipeline."""

    def __init__(self, service: Service, stubs: Stubs) -> None:
        self.service = service
        self.pb = stubs

    def send(self, ctx: grpc.ServicerContext, kind: str, data: Data, request_id: str) -> tuple[int, Any]:
        """(status, data) of one request of a REST kind, as `shared.legacy.rest.call` runs it."""
        claims: Any = None
        if self.service.auth is not None:
            token = bearer(dict(ctx.invocation_metadata()).get("authorization"))
            claims = self.service.auth.authenticate(token, kind)
            if isinstance(claims, tuple):
                return claims
        nul = any_str(data, lambda s: "\x00" in s)  # no SQL store keeps U+0000 in text
        return self.service.handle(Envelope(kind, request_id, {}, data, None, None, nul), claims, REST)

    def call(self, ctx: grpc.ServicerContext, kind: str, data: Data, request_id: str) -> tuple[int, Any]:
        """`send`, a failure raised as one."""
        status, out = self.send(ctx, kind, data, request_id)
        if status >= 300:
            raise Failure(status, out)
        return status, out

    def promise(self, p: Any, task: bool = False) -> Any:
        if task:
            return cv.promise_out(self.pb.task.TaskPromise, self.pb.task.TaskValue, wire.promise(p))
        return cv.promise_out(self.pb.promise.Promise, self.pb.promise.Value, wire.promise(p))

    def schedule(self, s: Any) -> Any:
        return cv.schedule_out(self.pb.schedule.Schedule, self.pb.schedule.PromiseValue, schedule_json(s))


def _cursor(token: str, query: Data) -> Data:
    """A search's query: the one a cursor carries (the REST API's cursors: either API's works on
    both), else the request's own."""
    if not token:
        return query
    try:
        return _cursor_in(token)
    except BadRequest as e:
        raise invalid(e.message) from None


def _next(query: Data, last: str | None) -> str:
    return _cursor_out({k: v for k, v in query.items() if k != "cursor"}, last) or ""


def _required(req: Any, *fields: str) -> None:
    for f in fields:
        if not getattr(req, f):
            raise invalid(f"{f} must be provided")


# ---- promise.Promises ----------------------------------------------------------------------------


class Promises(Api):
    @rpc
    def ReadPromise(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        _, out = self.call(ctx, "rest.promise.get", {"id": req.id}, req.requestId)
        return self.pb.promise.ReadPromiseResponse(promise=self.promise(out["promise"]))

    @rpc
    def SearchPromises(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        if req.state not in SEARCH_STATES:
            raise invalid("state must be one of SEARCH_ALL, SEARCH_PENDING, SEARCH_RESOLVED, SEARCH_REJECTED")
        query = _cursor(req.cursor, {"id": req.id, "state": SEARCH_STATES[req.state], "tags": dict(req.tags),
                                     "limit": req.limit or None})
        _, out = self.call(ctx, "rest.promise.search", query, req.requestId)
        return self.pb.promise.SearchPromisesResponse(cursor=_next(query, out["cursor"]),
                                                      promises=[self.promise(p) for p in out["promises"]])

    @rpc
    def CreatePromise(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        if req.timeout <= 0:  # the older server's gRPC check (REST takes 0: created timed out)
            raise invalid("timeout must be greater than 0")
        data = {"id": req.id, "timeout": req.timeout, "param": cv.value_in(req.param),
                "ikey": cv.optional(req.idempotencyKey), "strict": req.strict}
        status, out = self.call(ctx, "rest.promise.create", data, req.requestId)
        return self.pb.promise.CreatePromiseResponse(noop=status == 200, promise=self.promise(out["promise"]))

    def _complete(self, req: Any, ctx: grpc.ServicerContext, state: str) -> tuple[bool, Any]:
        data = {"id": req.id, "state": state, "value": cv.value_in(req.value),
                "ikey": cv.optional(req.idempotencyKey), "strict": req.strict}
        status, out = self.call(ctx, "rest.promise.complete", data, req.requestId)
        return status == 200, self.promise(out["promise"])

    @rpc
    def CancelPromise(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        noop, p = self._complete(req, ctx, "REJECTED_CANCELED")
        return self.pb.promise.CancelPromiseResponse(noop=noop, promise=p)

    @rpc
    def ResolvePromise(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        noop, p = self._complete(req, ctx, "RESOLVED")
        return self.pb.promise.ResolvePromiseResponse(noop=noop, promise=p)

    @rpc
    def RejectPromise(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        noop, p = self._complete(req, ctx, "REJECTED")
        return self.pb.promise.RejectPromiseResponse(noop=noop, promise=p)


# ---- schedule.Schedules --------------------------------------------------------------------------


class Schedules(Api):
    @rpc
    def CreateSchedule(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        data = {"id": req.id, "description": req.description, "cron": req.cron, "tags": dict(req.tags),
                "promiseId": req.promiseId, "promiseTimeout": req.promiseTimeout,
                "promiseParam": cv.value_in(req.promiseParam), "promiseTags": dict(req.promiseTags),
                "ikey": cv.optional(req.idempotencyKey)}
        status, out = self.call(ctx, "rest.schedule.create", data, req.requestId)
        return self.pb.schedule.CreatedScheduleResponse(noop=status == 200, schedule=self.schedule(out["schedule"]))

    @rpc
    def ReadSchedule(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        _, out = self.call(ctx, "rest.schedule.get", {"id": req.id}, req.requestId)
        return self.pb.schedule.ReadScheduleResponse(schedule=self.schedule(out["schedule"]))

    @rpc
    def SearchSchedules(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        query = _cursor(req.cursor, {"id": req.id, "tags": dict(req.tags), "limit": req.limit or None})
        _, out = self.call(ctx, "rest.schedule.search", query, req.requestId)
        return self.pb.schedule.SearchSchedulesResponse(cursor=_next(query, out["cursor"]),
                                                        schedules=[self.schedule(s) for s in out["schedules"]])

    @rpc
    def DeleteSchedule(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        self.call(ctx, "rest.schedule.delete", {"id": req.id}, req.requestId)
        return self.pb.schedule.DeleteScheduleResponse()


# ---- lock.Locks ----------------------------------------------------------------------------------


class Locks(Api):
    @rpc
    def AcquireLock(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        _required(req, "resource_id", "execution_id", "process_id")
        if req.expiry_in_milliseconds <= 0:
            raise invalid("expiry_in_milliseconds must be greater than 0")
        data = {"resourceId": req.resource_id, "executionId": req.execution_id, "processId": req.process_id,
                "ttl": req.expiry_in_milliseconds}
        _, out = self.call(ctx, "rest.lock.acquire", data, req.request_id)
        lock = out["lock"]
        return self.pb.lock.AcquireLockResponse(lock=self.pb.lock.Lock(
            resource_id=lock.resource_id, execution_id=lock.execution_id, process_id=lock.process_id,
            expiry_in_milliseconds=lock.ttl, expires_at=lock.expires_at))

    @rpc
    def HeartbeatLocks(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        _required(req, "process_id")
        _, out = self.call(ctx, "rest.lock.heartbeat", {"processId": req.process_id}, req.request_id)
        return self.pb.lock.HeartbeatLocksResponse(locksAffected=min(out["locksAffected"], 2**31 - 1))

    @rpc
    def ReleaseLock(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        _required(req, "resource_id", "execution_id")
        data = {"resourceId": req.resource_id, "executionId": req.execution_id}
        self.call(ctx, "rest.lock.release", data, req.request_id)
        return self.pb.lock.ReleaseLockResponse()


# ---- task.Tasks ----------------------------------------------------------------------------------

TASK_STATES = {1: "RESOLVED", 2: "REJECTED"}  # what CompleteTask may settle the promise with


class Tasks(Api):
    @rpc
    def ClaimTask(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        """The task's root promise, filled in (the older server answered an empty one)."""
        _required(req, "task_id", "process_id")
        data = {"id": req.task_id, "counter": req.counter, "processId": req.process_id,
                "ttl": req.expiry_in_milliseconds}
        _, out = self.call(ctx, "rest.task.claim", data, req.requestId)
        return self.pb.task.ClaimTaskResponse(promise=self.promise(out["root"], task=True))

    @rpc
    def CompleteTask(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        """Settle the root promise and end the run, in one transaction."""
        _required(req, "task_id")
        if req.state not in TASK_STATES:
            raise invalid("state must be provided and be either RESOLVED or REJECTED")
        data = {"id": req.task_id, "counter": req.counter, "state": TASK_STATES[req.state],
                "value": cv.value_in(req.value)}
        self.call(ctx, "rest.task.complete", data, req.requestId)
        return self.pb.task.CompleteTaskResponse()


def register(server: grpc.Server, service: Service, stubs: Stubs) -> None:
    """Add the four services to a grpc server."""
    stubs.promise_grpc.add_PromisesServicer_to_server(Promises(service, stubs), server)
    stubs.schedule_grpc.add_SchedulesServicer_to_server(Schedules(service, stubs), server)
    stubs.lock_grpc.add_LocksServicer_to_server(Locks(service, stubs), server)
    stubs.task_grpc.add_TasksServicer_to_server(Tasks(service, stubs), server)
