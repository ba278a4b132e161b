"""The gRPC API in process, without a socket: the services over a MemoryStore with a stand-in for
grpc's call context. CompleteTask's one transaction (`rest.task.complete` with a state) next to
the REST route it leaves as it was; a storage that is busy or broken and a bug in the translation
become UNAVAILABLE and INTERNAL answers, never an escaped exception; payload bytes both ways.
"""
from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import pytest
from werkzeug.test import Client

from shared.config import load
from shared.delivery.hub import PollHub
from shared.grpc import convert, services
from shared.grpc.stubs import load as load_stubs
from shared.http import create_app
from shared.kinds import REST
from shared.legacy.ids import invoke_id
from shared.protocol import Envelope
from shared.service import Service
from shared.storage.base import Busy, StorageError
from shared.storage.memory import MemoryStore

FAR = 2**62


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code, self.error = code, json.loads(details)["error"]


class Context:
    """What the services read of grpc's ServicerContext."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


@pytest.fixture
def svc() -> Service:
    return Service(MemoryStore(), load({}, env={}))


def handle(svc: Service, kind: str, data: dict[str, Any]) -> tuple[int, Any]:
    return svc.handle(Envelope(kind, "", {}, data, None, None), None, REST)


def claimed(svc: Service, id: str) -> str:
    assert handle(svc, "rest.promise.create", {"id": id, "timeout": FAR, "tags": {"resonate:invoke": "g"}})[0] == 201
    task = invoke_id(id)
    assert handle(svc, "rest.task.claim", {"id": task, "counter": 0, "processId": "w", "ttl": 60_000})[0] == 201
    return task


def test_completing_a_task_with_a_state_settles_the_promise_in_the_same_transaction(svc: Service) -> None:
    task = claimed(svc, "p")
    status, out = handle(svc, "rest.task.complete", {"id": task, "counter": 0, "state": "REJECTED",
                                                     "value": {"data": "eA=="}})
    assert status == 201 and out["task"].state == "fulfilled"
    p = handle(svc, "rest.promise.get", {"id": "p"})[1]["promise"]
    assert (p.state, p.value) == ("rejected", {"data": "eA=="})
    assert handle(svc, "rest.task.complete", {"id": task, "counter": 0, "state": "rejected"})[0] == 200
    assert handle(svc, "rest.task.complete", {"id": task, "counter": 0, "state": "RESOLVED"})[1]["code"] == 4031
    for bad in ({"state": "REJECTED_CANCELED"}, {"state": "PENDING"}, {"state": 1},
                {"state": "RESOLVED", "value": {"data": "not base64!"}}):
        assert handle(svc, "rest.task.complete", {"id": task, "counter": 0, **bad})[0] == 400, bad


def test_the_rest_route_ignores_a_state_as_it_always_did(svc: Service) -> None:
    task = claimed(svc, "q")
    rest = Client(create_app(svc, PollHub()))
    r = rest.post("/tasks/complete", json={"id": task, "counter": 0, "state": "RESOLVED", "value": {"data": "eA=="}})
    assert r.status_code == 201 and r.get_json() == {"id": task, "counter": 0}
    p = handle(svc, "rest.promise.get", {"id": "q"})[1]["promise"]
    assert p.state == "pending"  # the run is over (suspended); the promise is not settled


def test_storage_failures_and_bugs_are_status_codes(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    stubs = load_stubs()
    api = services.Promises(svc, stubs)
    P = stubs.promise
    create = P.CreatePromiseRequest(id="x", timeout=FAR)
    assert api.CreatePromise(create, Context()).promise.id == "x"

    def busy(fn: Any) -> Any:
        raise Busy("database is locked")

    monkeypatch.setattr(svc.store, "write", busy)
    with pytest.raises(Aborted) as e:
        api.ResolvePromise(P.ResolvePromiseRequest(id="x"), Context())
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and e.value.error["code"] == 5030

    def broken(fn: Any) -> Any:
        raise StorageError("disk on fire")

    monkeypatch.setattr(svc.store, "write", broken)
    with pytest.raises(Aborted) as e:
        api.ResolvePromise(P.ResolvePromiseRequest(id="x"), Context())
    assert e.value.code == grpc.StatusCode.INTERNAL and e.value.error["code"] == 5000
    monkeypatch.undo()

    def bug(p: Any) -> Any:
        raise KeyError("a bug in the translation")

    monkeypatch.setattr(services.wire, "promise", bug)
    with pytest.raises(Aborted) as e:
        api.ReadPromise(P.ReadPromiseRequest(id="x"), Context())
    assert e.value.code == grpc.StatusCode.INTERNAL and "KeyError" in e.value.error["message"]


def test_payloads_are_bytes_over_grpc_and_base64_elsewhere() -> None:
    P = load_stubs().promise
    raw = bytes(range(256))
    assert convert.value_in(P.Value(data=raw, headers={"a": "b"})) == {"data": base64.b64encode(raw).decode(),
                                                                       "headers": {"a": "b"}}
    assert convert.value_in(P.Value()) == {}
    assert convert.data_out(base64.b64encode(raw).decode()) == raw
    assert convert.data_out("plain text, not base64") == b"plain text, not base64"  # another client's text
    assert convert.data_out(None) == convert.data_out("") == b""
