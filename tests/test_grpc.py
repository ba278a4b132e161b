"""The gRPC API (docs/grpc.md) driven by a client generated in the test run from our .proto files,
on a server process of every store (memory, SQLite, Postgres, MySQL) with inbound auth on: every
RPC's success, not found, already exists, strict conflicts, invalid arguments, and permission
denied for a token of another tenant's prefix; the same promise seen identically over gRPC, the
REST API and the envelope protocol; the task lifecycle a v0.6.0 worker drives (claim the task a
promise routed to its group got, complete it with the promise's value).
"""
from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from shared.legacy.ids import invoke_id
from tests.support.grpc_client import Client, connect, failure, generated, start_grpc_server
from tests.support.server import ServerProc, process_backends
from tests.support.tokens import KeyPair, claims
from tests.support.wait import wait_until

Code = grpc.StatusCode
FAR = 2**62
LEASE = 60_000


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair("ec256")


def token(key: KeyPair, prefix: str | None = None) -> str:
    if prefix is None:
        return key.sign(claims(3600, role="admin"))
    return key.sign(claims(3600, role="worker", prefix=prefix, sub=prefix))


@pytest.fixture(scope="module", params=process_backends())
def served(request: pytest.FixtureRequest, key: KeyPair, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ServerProc, Client]]:
    """A server of this store with auth on and its gRPC listener; a client holding an admin token."""
    work = tmp_path_factory.mktemp(f"grpc-{request.param}")
    pb = generated(tmp_path_factory.mktemp("grpc-client"))
    srv, port = start_grpc_server(request.param, work, env={"RESONATE_AUTH__PUBLICKEY": key.write(work)})
    srv.token = token(key)
    client = connect(port, pb, srv.token)
    yield srv, client
    client.channel.close()
    srv.stop()


@pytest.fixture
def c(served: tuple[ServerProc, Client]) -> Client:
    return served[1]


@pytest.fixture
def srv(served: tuple[ServerProc, Client]) -> ServerProc:
    return served[0]


@pytest.fixture
def uid() -> str:
    """A fresh id prefix: the module's tests share one server."""
    return f"g{uuid.uuid4().hex[:10]}/"


def rest(srv: ServerProc, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    r = srv.request(method, path, json=body, headers={"Authorization": f"Bearer {srv.token}", **headers})
    return r.status_code, (r.json() if r.content else None)


def now_ms() -> int:
    return int(time.time() * 1000)


# ---- promises ------------------------------------------------------------------------------------


def test_create_read_and_deduplicate(c: Client, uid: str) -> None:
    P = c.promise
    param = P.Value(headers={"h": "v"}, data=b"\x00\x01binary\xff")
    made = c.promises.CreatePromise(P.CreatePromiseRequest(id=uid + "p", idempotencyKey="ck", param=param,
                                                           timeout=FAR, requestId="r1"))
    assert not made.noop
    p = made.promise
    assert (p.id, p.state, p.timeout, p.idempotencyKeyForCreate) == (uid + "p", P.PENDING, FAR, "ck")
    assert (p.param.data, dict(p.param.headers), p.value.data, p.completedOn) == (param.data, {"h": "v"}, b"", 0)
    assert p.createdOn > 0 and p.HasField("param") and p.HasField("value")  # both always there
    assert c.promises.ReadPromise(P.ReadPromiseRequest(id=uid + "p")).promise == p
    again = c.promises.CreatePromise(P.CreatePromiseRequest(id=uid + "p", idempotencyKey="ck", timeout=FAR))
    assert again.noop and again.promise == p  # the stored promise, unchanged
    assert failure(lambda: c.promises.CreatePromise(P.CreatePromiseRequest(id=uid + "p", timeout=FAR)),
                   Code.ALREADY_EXISTS)["code"] == 4090
    assert failure(lambda: c.promises.CreatePromise(P.CreatePromiseRequest(id=uid + "p", idempotencyKey="other",
                                                                           timeout=FAR)), Code.ALREADY_EXISTS)
    assert failure(lambda: c.promises.ReadPromise(P.ReadPromiseRequest(id=uid + "missing")),
                   Code.NOT_FOUND)["code"] == 4040


def test_resolve_reject_cancel_with_keys_and_strict(c: Client, uid: str) -> None:
    P = c.promise
    for name, call, request, state in (
            ("res", c.promises.ResolvePromise, P.ResolvePromiseRequest, P.RESOLVED),
            ("rej", c.promises.RejectPromise, P.RejectPromiseRequest, P.REJECTED),
            ("can", c.promises.CancelPromise, P.CancelPromiseRequest, P.REJECTED_CANCELED)):
        id = uid + name
        c.promises.CreatePromise(P.CreatePromiseRequest(id=id, timeout=FAR))
        done = call(request(id=id, idempotencyKey="k", value=P.Value(data=b"v-" + name.encode())))
        assert not done.noop
        assert (done.promise.state, done.promise.value.data) == (state, b"v-" + name.encode())
        assert done.promise.idempotencyKeyForComplete == "k" and done.promise.completedOn >= done.promise.createdOn
        repeat = call(request(id=id, idempotencyKey="k", strict=True))
        assert repeat.noop and repeat.promise == done.promise  # same key, same state
        assert failure(lambda: call(request(id=id)), Code.PERMISSION_DENIED)["code"] in (4030, 4031, 4032)
    # the same key and another state: a repeat when not strict, refused when strict
    other = c.promises.RejectPromise(P.RejectPromiseRequest(id=uid + "res", idempotencyKey="k"))
    assert other.noop and other.promise.state == P.RESOLVED
    err = failure(lambda: c.promises.RejectPromise(P.RejectPromiseRequest(id=uid + "res", idempotencyKey="k",
                                                                           strict=True)), Code.PERMISSION_DENIED)
    assert err["code"] == 4030
    assert failure(lambda: c.promises.ResolvePromise(P.ResolvePromiseRequest(id=uid + "none")), Code.NOT_FOUND)
    # strict create of a settled promise with its key: refused (not strict: the stored promise)
    assert c.promises.CreatePromise(P.CreatePromiseRequest(id=uid + "x", idempotencyKey="ck", timeout=FAR))
    c.promises.ResolvePromise(P.ResolvePromiseRequest(id=uid + "x"))
    assert c.promises.CreatePromise(P.CreatePromiseRequest(id=uid + "x", idempotencyKey="ck", timeout=FAR)).noop
    assert failure(lambda: c.promises.CreatePromise(P.CreatePromiseRequest(
        id=uid + "x", idempotencyKey="ck", timeout=FAR, strict=True)), Code.ALREADY_EXISTS)


def test_a_promise_past_its_deadline_is_timed_out(c: Client, uid: str) -> None:
    P = c.promise
    id = uid + "late"
    c.promises.CreatePromise(P.CreatePromiseRequest(id=id, timeout=now_ms() + 300))
    assert wait_until(lambda: c.promises.ReadPromise(P.ReadPromiseRequest(id=id)).promise.state
                      == P.REJECTED_TIMEDOUT, 10)
    err = failure(lambda: c.promises.ResolvePromise(P.ResolvePromiseRequest(id=id, strict=True)), Code.PERMISSION_DENIED)
    assert err["code"] == 4033
    late = c.promises.ResolvePromise(P.ResolvePromiseRequest(id=id))  # not strict: a no-op, check the state
    assert late.noop and late.promise.state == P.REJECTED_TIMEDOUT


def test_search_pages_and_filters(srv: ServerProc, c: Client, uid: str) -> None:
    P = c.promise
    ids = [f"{uid}s{i}" for i in range(5)]
    for id in ids:
        c.promises.CreatePromise(P.CreatePromiseRequest(id=id, timeout=FAR))
    c.promises.ResolvePromise(P.ResolvePromiseRequest(id=ids[1]))
    c.promises.RejectPromise(P.RejectPromiseRequest(id=ids[2]))
    c.promises.CancelPromise(P.CancelPromiseRequest(id=ids[3]))
    seen, cursor, pages = [], "", 0
    while True:
        page = c.promises.SearchPromises(P.SearchPromisesRequest(id=uid + "*", limit=2, cursor=cursor))
        seen += [p.id for p in page.promises]
        pages += 1
        cursor = page.cursor
        if not cursor:
            break
    assert sorted(seen) == ids and pages == 3

    def search(state: int) -> list[str]:
        return sorted(p.id for p in c.promises.SearchPromises(P.SearchPromisesRequest(id=uid + "*", state=state))
                      .promises)

    assert search(P.SEARCH_ALL) == ids
    assert search(P.SEARCH_PENDING) == [ids[0], ids[4]]
    assert search(P.SEARCH_RESOLVED) == [ids[1]]
    assert search(P.SEARCH_REJECTED) == [ids[2], ids[3]]
    # the cursor is the REST API's: a gRPC page's cursor continues over REST, and the reverse
    first = c.promises.SearchPromises(P.SearchPromisesRequest(id=uid + "*", limit=2))
    status, body = rest(srv, "GET", f"/promises?cursor={first.cursor}")
    assert status == 200 and [p["id"] for p in body["promises"]] == ids[2:4]
    nxt = c.promises.SearchPromises(P.SearchPromisesRequest(cursor=body["cursor"]))
    assert [p.id for p in nxt.promises] == ids[4:] and nxt.cursor == ""


@pytest.mark.parametrize("build", [
    lambda P: P.SearchPromisesRequest(id="*", limit=101),
    lambda P: P.SearchPromisesRequest(id="*", limit=-1),
    lambda P: P.SearchPromisesRequest(id="*", state=9),
    lambda P: P.SearchPromisesRequest(id=""),
    lambda P: P.SearchPromisesRequest(cursor="not a cursor"),
], ids=["limit-101", "limit-negative", "unknown-state", "no-id", "bad-cursor"])
def test_search_refuses_invalid_arguments(c: Client, build: Callable[[Any], Any]) -> None:
    assert failure(lambda: c.promises.SearchPromises(build(c.promise)), Code.INVALID_ARGUMENT)["code"] == 4000


def test_invalid_promise_requests_change_nothing(c: Client, uid: str) -> None:
    P = c.promise
    for req in (P.CreatePromiseRequest(id=uid + "t0", timeout=0),  # the older server's gRPC rule
                P.CreatePromiseRequest(id=uid + "t-", timeout=-5),
                P.CreatePromiseRequest(id="", timeout=FAR),
                P.CreatePromiseRequest(id=uid + "nul\x00", timeout=FAR)):
        assert failure(lambda: c.promises.CreatePromise(req), Code.INVALID_ARGUMENT)["code"] == 4000
    assert failure(lambda: c.promises.ReadPromise(P.ReadPromiseRequest(id=uid + "t0")), Code.NOT_FOUND)
    assert failure(lambda: c.promises.ReadPromise(P.ReadPromiseRequest(id="")), Code.INVALID_ARGUMENT)
    assert not c.promises.SearchPromises(P.SearchPromisesRequest(id=uid + "*")).promises


# ---- one promise, three APIs -----------------------------------------------------------------------


def test_the_same_promise_over_grpc_rest_and_the_envelope_protocol(srv: ServerProc, c: Client, uid: str) -> None:
    P = c.promise
    id = uid + "same"
    c.promises.CreatePromise(P.CreatePromiseRequest(id=id, idempotencyKey="ck", timeout=FAR,
                                                    param=P.Value(headers={"a": "b"}, data=b'{"x": 1}')))
    status, body = rest(srv, "PATCH", f"/promises/{id}", {"state": "RESOLVED", "value": {"data": "b2s="}},
                        **{"Idempotency-Key": "sk"})
    assert status == 201
    g = c.promises.ReadPromise(P.ReadPromiseRequest(id=id)).promise
    status, r = rest(srv, "GET", f"/promises/{id}")
    assert status == 200
    assert (r["id"], r["state"], r["timeout"], r["createdOn"], r["completedOn"]) == \
        (g.id, P.State.Name(g.state), g.timeout, g.createdOn, g.completedOn)
    assert (r["idempotencyKeyForCreate"], r["idempotencyKeyForComplete"]) == \
        (g.idempotencyKeyForCreate, g.idempotencyKeyForComplete) == ("ck", "sk")
    assert base64.b64decode(r["param"]["data"]) == g.param.data == b'{"x": 1}'
    assert r["param"]["headers"] == dict(g.param.headers) == {"a": "b"}
    assert base64.b64decode(r["value"]["data"]) == g.value.data == b"ok"
    assert r["tags"] == dict(g.tags) == {}
    status, e = srv.rpc("promise.get", {"id": id})
    p = e["promise"]
    assert status == 200 and (p["state"], p["timeoutAt"], p["createdAt"], p["settledAt"]) == \
        ("resolved", g.timeout, g.createdOn, g.completedOn)
    assert (p["param"]["data"], p["value"]["data"]) == (r["param"]["data"], r["value"]["data"])
    # the other way: created by the envelope protocol (with tags), read over gRPC
    srv.rpc("promise.create", {"id": uid + "env", "timeoutAt": FAR, "param": {"data": "aGk="},
                               "tags": {"resonate:scope": "global", "k": "v"}})
    g2 = c.promises.ReadPromise(P.ReadPromiseRequest(id=uid + "env")).promise
    assert (g2.param.data, dict(g2.tags), g2.idempotencyKeyForCreate) == (b"hi", {"resonate:scope": "global",
                                                                                 "k": "v"}, "")


# ---- schedules -----------------------------------------------------------------------------------


def test_schedules(srv: ServerProc, c: Client, uid: str) -> None:
    S = c.schedule
    req = S.CreateScheduleRequest(id=uid + "sch", description="nightly", cron="0 3 * * *", tags={"team": "a"},
                                  promiseId="{{.id}}.{{.timestamp}}", promiseTimeout=60_000,
                                  promiseParam=S.PromiseValue(data=b"p", headers={"h": "1"}),
                                  promiseTags={"t": "1"}, idempotencyKey="k")
    made = c.schedules.CreateSchedule(req)
    s = made.schedule
    assert not made.noop
    assert (s.id, s.description, s.cron, dict(s.tags), s.promiseId, s.promiseTimeout) == \
        (uid + "sch", "nightly", "0 3 * * *", {"team": "a"}, "{{.id}}.{{.timestamp}}", 60_000)
    assert (s.promiseParam.data, dict(s.promiseParam.headers), dict(s.promiseTags), s.idempotencyKey) == \
        (b"p", {"h": "1"}, {"t": "1"}, "k")
    assert s.nextRunTime > s.createdOn > 0 and s.lastRunTime == 0
    again = c.schedules.CreateSchedule(req)
    assert again.noop and again.schedule == s
    assert failure(lambda: c.schedules.CreateSchedule(S.CreateScheduleRequest(
        id=uid + "sch", cron="* * * * *", promiseId="x")), Code.ALREADY_EXISTS)["code"] == 4091
    assert c.schedules.ReadSchedule(S.ReadScheduleRequest(id=uid + "sch")).schedule == s
    status, r = rest(srv, "GET", f"/schedules/{uid}sch")
    assert status == 200 and (r["description"], r["nextRunTime"], r["createdOn"], r["promiseParam"]["data"]) == \
        (s.description, s.nextRunTime, s.createdOn, base64.b64encode(b"p").decode())
    c.schedules.CreateSchedule(S.CreateScheduleRequest(id=uid + "sch2", cron="@hourly", promiseId="y"))
    found = c.schedules.SearchSchedules(S.SearchSchedulesRequest(id=uid + "*", limit=1))
    assert [x.id for x in found.schedules] == [uid + "sch"] and found.cursor
    rest_page = c.schedules.SearchSchedules(S.SearchSchedulesRequest(cursor=found.cursor))
    assert [x.id for x in rest_page.schedules] == [uid + "sch2"] and rest_page.cursor == ""
    tagged = c.schedules.SearchSchedules(S.SearchSchedulesRequest(id="*", tags={"team": "a"}))
    assert uid + "sch" in [x.id for x in tagged.schedules] and uid + "sch2" not in [x.id for x in tagged.schedules]
    assert c.schedules.DeleteSchedule(S.DeleteScheduleRequest(id=uid + "sch")) == S.DeleteScheduleResponse()
    assert failure(lambda: c.schedules.ReadSchedule(S.ReadScheduleRequest(id=uid + "sch")),
                   Code.NOT_FOUND)["code"] == 4041
    assert failure(lambda: c.schedules.DeleteSchedule(S.DeleteScheduleRequest(id=uid + "sch")), Code.NOT_FOUND)
    for bad in (S.CreateScheduleRequest(id=uid + "b", cron="not a cron", promiseId="x"),
                S.CreateScheduleRequest(id=uid + "b", cron="* * * * *", promiseId=""),
                S.CreateScheduleRequest(id="", cron="* * * * *", promiseId="x"),
                S.CreateScheduleRequest(id=uid + "b", cron="* * * * *", promiseId="x", promiseTimeout=-1)):
        assert failure(lambda: c.schedules.CreateSchedule(bad), Code.INVALID_ARGUMENT)
    assert failure(lambda: c.schedules.ReadSchedule(S.ReadScheduleRequest(id=uid + "b")), Code.NOT_FOUND)
    assert failure(lambda: c.schedules.SearchSchedules(S.SearchSchedulesRequest(id="*", limit=500)),
                   Code.INVALID_ARGUMENT)


# ---- locks ---------------------------------------------------------------------------------------


def test_locks(srv: ServerProc, c: Client, uid: str) -> None:
    L = c.lock
    rid = uid + "res"
    held = c.locks.AcquireLock(L.AcquireLockRequest(resource_id=rid, execution_id="e1", process_id=uid + "p1",
                                                    expiry_in_milliseconds=LEASE)).lock
    assert (held.resource_id, held.execution_id, held.process_id, held.expiry_in_milliseconds) == \
        (rid, "e1", uid + "p1", LEASE)
    assert held.expires_at >= now_ms() + LEASE - 5_000
    assert c.locks.AcquireLock(L.AcquireLockRequest(resource_id=rid, execution_id="e1", process_id=uid + "p1",
                                                    expiry_in_milliseconds=LEASE)).lock.resource_id == rid
    assert failure(lambda: c.locks.AcquireLock(L.AcquireLockRequest(
        resource_id=rid, execution_id="e2", process_id=uid + "p2", expiry_in_milliseconds=LEASE)),
        Code.PERMISSION_DENIED)["code"] == 4034
    assert c.locks.HeartbeatLocks(L.HeartbeatLocksRequest(process_id=uid + "p1")).locksAffected == 1
    assert c.locks.HeartbeatLocks(L.HeartbeatLocksRequest(process_id=uid + "nobody")).locksAffected == 0
    assert failure(lambda: c.locks.ReleaseLock(L.ReleaseLockRequest(resource_id=rid, execution_id="e2")),
                   Code.NOT_FOUND)["code"] == 4042
    # the REST API sees the same lock
    status, _ = rest(srv, "POST", "/locks/acquire", {"resourceId": rid, "executionId": "e3", "processId": "p3",
                                                     "ttl": LEASE})
    assert status == 403
    assert c.locks.ReleaseLock(L.ReleaseLockRequest(resource_id=rid, execution_id="e1")) == L.ReleaseLockResponse()
    assert failure(lambda: c.locks.ReleaseLock(L.ReleaseLockRequest(resource_id=rid, execution_id="e1")),
                   Code.NOT_FOUND)
    for bad in (L.AcquireLockRequest(execution_id="e", process_id="p", expiry_in_milliseconds=1),
                L.AcquireLockRequest(resource_id=rid, process_id="p", expiry_in_milliseconds=1),
                L.AcquireLockRequest(resource_id=rid, execution_id="e", expiry_in_milliseconds=1),
                L.AcquireLockRequest(resource_id=rid, execution_id="e", process_id="p")):
        assert failure(lambda: c.locks.AcquireLock(bad), Code.INVALID_ARGUMENT)["code"] == 4000
    assert failure(lambda: c.locks.HeartbeatLocks(L.HeartbeatLocksRequest()), Code.INVALID_ARGUMENT)
    assert failure(lambda: c.locks.ReleaseLock(L.ReleaseLockRequest(resource_id=rid)), Code.INVALID_ARGUMENT)
    status, _ = rest(srv, "POST", "/locks/acquire", {"resourceId": rid, "executionId": "e3", "processId": "p3",
                                                     "ttl": LEASE})
    assert status == 201  # nothing refused above took it


# ---- tasks ---------------------------------------------------------------------------------------


def routed(srv: ServerProc, id: str) -> str:
    """A promise whose task goes to the worker group `g` (gRPC cannot tag a promise): its task id."""
    status, _ = rest(srv, "POST", "/promises", {"id": id, "timeout": FAR, "param": {"data": "aW4="},
                                                "tags": {"resonate:invoke": "poll://any@g"}})
    assert status == 201
    return invoke_id(id)


def test_claim_and_complete_a_task(srv: ServerProc, c: Client, uid: str) -> None:
    T, P = c.task, c.promise
    task = routed(srv, uid + "job")
    claimed = c.tasks.ClaimTask(T.ClaimTaskRequest(task_id=task, counter=0, process_id=uid + "w",
                                                   execution_id="x", expiry_in_milliseconds=LEASE)).promise
    assert (claimed.id, claimed.state, claimed.param.data, claimed.timeout) == (uid + "job", T.PENDING, b"in", FAR)
    assert dict(claimed.tags) == {"resonate:invoke": "poll://any@g"}  # the promise, filled in
    assert failure(lambda: c.tasks.ClaimTask(T.ClaimTaskRequest(task_id=task, counter=0, process_id="w2",
                                                                expiry_in_milliseconds=LEASE)),
                   Code.PERMISSION_DENIED)["code"] == 4035
    assert failure(lambda: c.tasks.CompleteTask(T.CompleteTaskRequest(task_id=task, counter=7, state=T.RESOLVED)),
                   Code.PERMISSION_DENIED)["code"] == 4037
    assert failure(lambda: c.tasks.CompleteTask(T.CompleteTaskRequest(task_id=task, counter=0, state=T.PENDING)),
                   Code.INVALID_ARGUMENT)
    assert c.promises.ReadPromise(P.ReadPromiseRequest(id=uid + "job")).promise.state == P.PENDING  # untouched
    done = c.tasks.CompleteTask(T.CompleteTaskRequest(task_id=task, counter=0, state=T.RESOLVED,
                                                      value=T.TaskValue(data=b"out", headers={"k": "v"})))
    assert done == T.CompleteTaskResponse()
    p = c.promises.ReadPromise(P.ReadPromiseRequest(id=uid + "job")).promise
    assert (p.state, p.value.data, dict(p.value.headers)) == (P.RESOLVED, b"out", {"k": "v"})
    assert srv.rpc("task.get", {"id": uid + "job"})[1]["task"]["state"] == "fulfilled"  # one transaction: both
    # a repeat is fine; another state is not
    c.tasks.CompleteTask(T.CompleteTaskRequest(task_id=task, counter=0, state=T.RESOLVED))
    assert failure(lambda: c.tasks.CompleteTask(T.CompleteTaskRequest(task_id=task, counter=0, state=T.REJECTED)),
                   Code.PERMISSION_DENIED)["code"] == 4030
    # a task waiting to be claimed, another counter; unknown tasks
    task2 = routed(srv, uid + "job2")
    assert failure(lambda: c.tasks.ClaimTask(T.ClaimTaskRequest(task_id=task2, counter=3, process_id="w",
                                                                expiry_in_milliseconds=LEASE)),
                   Code.PERMISSION_DENIED)["code"] == 4037
    assert failure(lambda: c.tasks.CompleteTask(T.CompleteTaskRequest(task_id=task2, counter=0, state=T.REJECTED)),
                   Code.PERMISSION_DENIED)["code"] == 4038  # not claimed
    for missing in (invoke_id(uid + "nothing"), "not-a-task-id"):
        assert failure(lambda: c.tasks.ClaimTask(T.ClaimTaskRequest(task_id=missing, process_id="w",
                                                                    expiry_in_milliseconds=LEASE)),
                       Code.NOT_FOUND)["code"] == 4043
    for bad in (T.ClaimTaskRequest(process_id="w", expiry_in_milliseconds=LEASE),
                T.ClaimTaskRequest(task_id=task2, expiry_in_milliseconds=LEASE),
                T.ClaimTaskRequest(task_id=task2, process_id="w", expiry_in_milliseconds=-1)):
        assert failure(lambda: c.tasks.ClaimTask(bad), Code.INVALID_ARGUMENT)
    assert failure(lambda: c.tasks.CompleteTask(T.CompleteTaskRequest(state=T.RESOLVED)), Code.INVALID_ARGUMENT)
    claim = c.tasks.ClaimTask(T.ClaimTaskRequest(task_id=task2, counter=0, process_id="w",
                                                 expiry_in_milliseconds=LEASE))
    assert claim.promise.id == uid + "job2"  # the refusals above changed nothing
    c.tasks.CompleteTask(T.CompleteTaskRequest(task_id=task2, counter=0, state=T.REJECTED))
    status, r = rest(srv, "GET", f"/promises/{uid}job2")
    assert r["state"] == "REJECTED" and r["value"] == {}


def test_concurrent_calls_all_commit(c: Client, uid: str) -> None:
    """Calls from many client threads at once (on SQLite each commit runs on the server's thread
    pool): every one is answered and every promise is there."""
    P = c.promise
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(10):
                id = f"{uid}c{k}-{i}"
                c.promises.CreatePromise(P.CreatePromiseRequest(id=id, timeout=FAR))
                c.promises.ResolvePromise(P.ResolvePromiseRequest(id=id, value=P.Value(data=id.encode())))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    found = c.promises.SearchPromises(P.SearchPromisesRequest(id=uid + "c*", state=P.SEARCH_RESOLVED, limit=100))
    assert sorted((p.id, p.value.data) for p in found.promises) == \
        sorted((f"{uid}c{k}-{i}", f"{uid}c{k}-{i}".encode()) for k in range(8) for i in range(10))


# ---- authentication and tenants -----------------------------------------------------------------


def test_no_token_is_unauthenticated(c: Client, uid: str) -> None:
    P, L = c.promise, c.lock
    for call in (lambda: c.promises.ReadPromise(P.ReadPromiseRequest(id=uid + "x"), token=None),
                 lambda: c.promises.CreatePromise(P.CreatePromiseRequest(id=uid + "x", timeout=FAR), token=None),
                 lambda: c.locks.HeartbeatLocks(L.HeartbeatLocksRequest(process_id="p"), token="garbage")):
        assert failure(call, Code.UNAUTHENTICATED)["code"] == 4010
    assert failure(lambda: c.promises.ReadPromise(P.ReadPromiseRequest(id=uid + "x")), Code.NOT_FOUND)


def test_a_prefix_token_reaches_nothing_outside_its_prefix(srv: ServerProc, c: Client, key: KeyPair,
                                                           uid: str) -> None:
    """Tenant A's token on tenant B's records: PERMISSION_DENIED (4039), never NOT_FOUND, and
    nothing changes; on its own records the same calls work."""
    P, S, L, T = c.promise, c.schedule, c.lock, c.task
    a, b = uid + "A/", uid + "B/"
    for t in (a, b):
        c.promises.CreatePromise(P.CreatePromiseRequest(id=t + "p", timeout=FAR))
        c.schedules.CreateSchedule(S.CreateScheduleRequest(id=t + "s", cron="@daily", promiseId=t + "s.{{.timestamp}}"))
        c.locks.AcquireLock(L.AcquireLockRequest(resource_id=t + "l", execution_id="e", process_id="p",
                                                 expiry_in_milliseconds=LEASE))
        routed(srv, t + "job")
    tok = token(key, a)

    def calls(t: str) -> list[Callable[[], Any]]:
        task = invoke_id(t + "job")
        return [
            lambda: c.promises.ReadPromise(P.ReadPromiseRequest(id=t + "p"), token=tok),
            lambda: c.promises.CreatePromise(P.CreatePromiseRequest(id=t + "new", timeout=FAR), token=tok),
            lambda: c.promises.ResolvePromise(P.ResolvePromiseRequest(id=t + "p"), token=tok),
            lambda: c.promises.RejectPromise(P.RejectPromiseRequest(id=t + "p"), token=tok),
            lambda: c.promises.CancelPromise(P.CancelPromiseRequest(id=t + "p"), token=tok),
            lambda: c.schedules.CreateSchedule(S.CreateScheduleRequest(id=t + "s2", cron="@daily",
                                                                       promiseId=t + "x"), token=tok),
            lambda: c.schedules.ReadSchedule(S.ReadScheduleRequest(id=t + "s"), token=tok),
            lambda: c.schedules.DeleteSchedule(S.DeleteScheduleRequest(id=t + "s"), token=tok),
            lambda: c.locks.AcquireLock(L.AcquireLockRequest(resource_id=t + "l2", execution_id="e", process_id="p",
                                                             expiry_in_milliseconds=LEASE), token=tok),
            lambda: c.locks.ReleaseLock(L.ReleaseLockRequest(resource_id=t + "l", execution_id="e"), token=tok),
            lambda: c.tasks.ClaimTask(T.ClaimTaskRequest(task_id=task, counter=0, process_id="w",
                                                         expiry_in_milliseconds=LEASE), token=tok),
            lambda: c.tasks.CompleteTask(T.CompleteTaskRequest(task_id=task, counter=0, state=T.RESOLVED),
                                         token=tok),
        ]

    def state() -> tuple[Any, ...]:
        return (c.promises.SearchPromises(P.SearchPromisesRequest(id=uid + "*")),
                c.schedules.SearchSchedules(S.SearchSchedulesRequest(id=uid + "*")))

    before = state()
    for call in calls(b):
        assert failure(call, Code.PERMISSION_DENIED)["code"] == 4039
    for call in (lambda: c.promises.SearchPromises(P.SearchPromisesRequest(id="*"), token=tok),
                 lambda: c.schedules.SearchSchedules(S.SearchSchedulesRequest(id="*"), token=tok)):
        assert failure(call, Code.PERMISSION_DENIED)  # searches span tenants: admin only
    assert state() == before
    # a process heartbeat names no record: it extends only the caller's own tenant's locks
    assert c.locks.HeartbeatLocks(L.HeartbeatLocksRequest(process_id="p"), token=tok).locksAffected == 1
    own = calls(a)
    own[0]()  # read
    own[1]()  # create
    own[2]()  # resolve (then reject and cancel are refused as already resolved)
    assert failure(own[3], Code.PERMISSION_DENIED)["code"] == 4030
    for call in own[5:]:
        call()
