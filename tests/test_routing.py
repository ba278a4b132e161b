"""Routing rules in the engine (docs/routing.md), in process over the memory store: which creates
are routed (the envelope protocol's promise.create, the REST API's creates, schedule firings)
and which are not (explicit targets, existing promises, refused creates, a running task's
steps, local steps and timers); a routed task's life is any task's (retry, lease, resume); the
caller's token confines the ids, not the operator's target.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from shared.config import load
from shared.delivery.hub import PollHub
from shared.http import create_app
from shared.records import Message
from shared.service import Service
from shared.storage.memory import MemoryStore
from tests.support.clock import SetClock
from tests.support.tokens import KeyPair, claims

T0 = 1_800_000_000_000
FAR = T0 + 3_600_000
ANALYTICS = "poll://any@analytics"
RULES = ("analytics/eu/*=poll://any@analytics-eu", "analytics/*=" + ANALYTICS)
B64 = "eyJmdW5jIjogInN1bW1hcml6ZSJ9"  # {"func": "summarize"}



class Server:
    """`POST /` and the REST routes of one Service over a memory store, its clock set by hand."""

    def __init__(self, rules: tuple[str, ...] = RULES, store: MemoryStore | None = None, **config: Any) -> None:
        self.clock = SetClock(T0)
        self.store = store or MemoryStore()
        self.service = Service(self.store, load({"tasks.routes": rules, "tasks.retry_timeout": 1000, **config},
                                                env={}), clock=self.clock)
        self.client = Client(create_app(self.service, PollHub()))
        self.token: str | None = None
        self.sent: list[Message] = []  # every message a commit handed to delivery, in order
        self.service.subscribe([lambda fx: self.sent.extend(fx.messages)])

    def rpc(self, kind: str, data: Any) -> tuple[int, Any]:
        head: dict[str, Any] = {"corrId": "c", "version": "2026-04-01"}
        if self.token is not None:
            head["auth"] = self.token
        r = self.client.post("/", data=json.dumps({"kind": kind, "head": head, "data": data}),
                             headers={"Content-Type": "application/json"})
        return r.status_code, r.get_json()["data"]

    def create(self, id: str, tags: dict[str, str] | None = None, timeout_at: int = FAR) -> tuple[int, Any]:
        return self.rpc("promise.create", {"id": id, "timeoutAt": timeout_at, "param": {"data": B64},
                                           "tags": tags or {}})

    def rest(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        r = self.client.open(path, method=method, json=body, headers=headers)
        return r.status_code, r.get_json()

    def task(self, id: str) -> dict[str, Any] | None:
        status, data = self.rpc("task.get", {"id": id})
        return data["task"] if status == 200 else None

    def outbox(self) -> list[Message]:
        return self.store.read(lambda tx: tx.outbox())

    def executes(self, id: str) -> list[tuple[str, int]]:
        """The execute messages sent for task `id`: (address, version), oldest first."""
        return [(m.address, m.version) for m in self.sent if m.kind == "execute" and m.id == id]

    def at(self, t: int) -> None:
        self.clock.t = t
        self.service.sweep(now=t)


@pytest.fixture
def srv() -> Server:
    return Server()


def routed(srv: Server, id: str, target: str = ANALYTICS) -> None:
    """The promise carries the rule's target, its task waits for a worker, an execute is queued."""
    assert srv.task(id) == {"id": id, "state": "pending", "version": 0, "resumes": 0}
    assert srv.executes(id) == [(target, 0)]
    p = srv.store.read(lambda tx: tx.get_promise(id))
    assert p is not None and p.tags.get("resonate:target") == target


def not_routed(srv: Server, id: str) -> None:
    assert srv.task(id) is None
    assert srv.executes(id) == []


# ---- the envelope protocol ---------------------------------------------------------------------


def test_matching_id_gets_the_target_a_task_and_an_execute(srv: Server) -> None:
    status, data = srv.create("analytics/1", {"team": "data"})
    assert status == 200
    assert data["promise"]["tags"] == {"team": "data", "resonate:target": ANALYTICS}  # stored, visible
    assert data["promise"]["param"] == {"data": B64}
    routed(srv, "analytics/1")


def test_non_matching_id_creates_no_task(srv: Server) -> None:
    status, data = srv.create("reports/1")
    assert status == 200 and data["promise"]["tags"] == {}
    not_routed(srv, "reports/1")
    assert srv.outbox() == []


def test_explicit_target_wins(srv: Server) -> None:
    assert srv.create("analytics/1", {"resonate:target": "poll://any@mine"})[0] == 200
    routed(srv, "analytics/1", "poll://any@mine")


def test_first_matching_rule_wins() -> None:
    srv = Server()
    for id in ("analytics/eu/1", "analytics/us/1"):
        assert srv.create(id)[0] == 200
    routed(srv, "analytics/eu/1", "poll://any@analytics-eu")
    routed(srv, "analytics/us/1", ANALYTICS)
    reordered = Server(rules=tuple(reversed(RULES)))
    assert reordered.create("analytics/eu/1")[0] == 200
    routed(reordered, "analytics/eu/1", ANALYTICS)


def test_an_existing_promise_is_unaffected() -> None:
    """Rules configured after a promise exists do not touch it, not even when it is created again."""
    store = MemoryStore()
    before = Server(rules=(), store=store)
    assert before.create("analytics/1")[0] == 200
    after = Server(store=store)
    status, data = after.create("analytics/1")
    assert status == 200 and data["promise"]["tags"] == {}
    not_routed(after, "analytics/1")


def test_a_refused_create_changes_nothing(srv: Server) -> None:
    status, _ = srv.create("analytics/1", {"resonate:delay": str(T0 + 10)})  # a delay needs an explicit target
    assert status == 400
    assert srv.rpc("promise.get", {"id": "analytics/1"})[0] == 404
    assert srv.outbox() == []


def test_an_already_timed_out_create_gets_the_target_and_a_fulfilled_task(srv: Server) -> None:
    """As with an explicit target: the promise is born timed out, its task fulfilled, nothing sent."""
    status, data = srv.create("analytics/late", timeout_at=T0 - 1)
    assert status == 200 and data["promise"]["state"] == "rejected_timedout"
    assert data["promise"]["tags"] == {"resonate:target": ANALYTICS}
    assert srv.task("analytics/late")["state"] == "fulfilled"  # type: ignore[index]
    assert srv.outbox() == []


def test_local_steps_and_timers_are_never_routed(srv: Server) -> None:
    """Promises an SDK settles itself: a second execution on another worker would be a bug."""
    assert srv.create("analytics/step", {"resonate:scope": "local"})[0] == 200
    assert srv.create("analytics/sleep", {"resonate:timer": "true"})[0] == 200
    assert srv.create("analytics/rpc", {"resonate:scope": "global"})[0] == 200
    not_routed(srv, "analytics/step")
    not_routed(srv, "analytics/sleep")
    routed(srv, "analytics/rpc")


def test_a_running_tasks_steps_are_not_routed(srv: Server) -> None:
    """task.fence creates a step of the task that holds the lease: the SDK runs it (or names its
    own target), whatever its id; the rule already matched the root."""
    assert srv.create("analytics/root")[0] == 200
    assert srv.rpc("task.acquire", {"id": "analytics/root", "version": 0, "pid": "p", "ttl": 60_000})[0] == 200
    status, data = srv.rpc("task.fence", {"id": "analytics/root", "version": 1, "action": {
        "kind": "promise.create", "head": {"corrId": "f", "version": "2026-04-01"},
        "data": {"id": "analytics/root:1", "timeoutAt": FAR, "param": {}, "tags": {}}}})
    assert status == 200 and data["action"]["head"]["status"] == 200
    assert data["action"]["data"]["promise"]["tags"] == {}
    not_routed(srv, "analytics/root:1")


def test_a_routed_task_lives_as_any_task(srv: Server) -> None:
    """Retry (nobody acquired it), lease expiry, suspension and resume, fulfilment: each re-send
    goes to the rule's target, and the promise settles through the task."""
    id = "analytics/life"
    assert srv.create(id)[0] == 200
    srv.at(T0 + 1000)  # tasks.retry_timeout: sent again, same version
    assert srv.executes(id) == [(ANALYTICS, 0), (ANALYTICS, 0)]
    assert srv.rpc("task.acquire", {"id": id, "version": 0, "pid": "p1", "ttl": 5000})[0] == 200
    srv.at(T0 + 7000)  # the lease lapsed: pending again, sent again
    assert srv.task(id)["state"] == "pending" and srv.executes(id)[-1] == (ANALYTICS, 1)  # type: ignore[index]
    assert srv.rpc("task.acquire", {"id": id, "version": 1, "pid": "p2", "ttl": 60_000})[0] == 200
    assert srv.create("analytics-input/1", {"resonate:target": "poll://any@other"})[0] == 200
    status, _ = srv.rpc("task.suspend", {"id": id, "version": 2, "actions": [{
        "kind": "promise.register_callback", "head": {"corrId": "s", "version": "2026-04-01"},
        "data": {"awaited": "analytics-input/1", "awaiter": id}}]})
    assert status == 200 and srv.task(id)["state"] == "suspended"  # type: ignore[index]
    assert srv.rpc("promise.settle", {"id": "analytics-input/1", "state": "resolved", "value": {}})[0] == 200
    assert srv.task(id)["state"] == "pending" and srv.executes(id)[-1] == (ANALYTICS, 2)  # type: ignore[index]
    assert srv.rpc("task.acquire", {"id": id, "version": 2, "pid": "p2", "ttl": 60_000})[0] == 200
    status, data = srv.rpc("task.fulfill", {"id": id, "version": 3, "action": {
        "kind": "promise.settle", "head": {"corrId": "d", "version": "2026-04-01"},
        "data": {"id": id, "state": "resolved", "value": {"data": "MQ=="}}}})
    assert status == 200 and data["promise"]["state"] == "resolved"
    assert srv.task(id)["state"] == "fulfilled"  # type: ignore[index]


# ---- the REST API ----------------------------------------------------------------------------------


def test_rest_creates_are_routed(srv: Server) -> None:
    """`POST /promises` and `POST /promises/{id}/create` as plain curl sends them: no tags. The
    routed target shows in the REST tags (only a target derived from the caller's own
    `resonate:invoke` is hidden there)."""
    status, p = srv.rest("POST", "/promises", {"id": "analytics/r1", "param": {"data": B64}, "timeout": FAR})
    assert status == 201 and p["tags"] == {"resonate:target": ANALYTICS}
    routed(srv, "analytics/r1")
    status, p = srv.rest("POST", "/promises/analytics/r2/create", {"param": {"data": B64}, "timeout": FAR})
    assert status == 201 and p["tags"] == {"resonate:target": ANALYTICS}
    routed(srv, "analytics/r2")
    assert srv.rest("GET", "/promises/analytics/r1")[1]["tags"] == {"resonate:target": ANALYTICS}
    status, p = srv.rest("POST", "/promises", {"id": "reports/r3", "timeout": FAR})
    assert status == 201 and p["tags"] == {}
    not_routed(srv, "reports/r3")


def test_rest_invoke_tag_and_timers_keep_their_meaning(srv: Server) -> None:
    status, p = srv.rest("POST", "/promises", {"id": "analytics/inv", "timeout": FAR,
                                               "tags": {"resonate:invoke": "poll://any@mine"}})
    assert status == 201 and p["tags"] == {"resonate:invoke": "poll://any@mine"}
    routed(srv, "analytics/inv", "poll://any@mine")
    status, p = srv.rest("POST", "/promises", {"id": "analytics/sleep", "timeout": FAR,
                                               "tags": {"resonate:timeout": "true"}})
    assert status == 201 and p["tags"] == {"resonate:timeout": "true"}
    not_routed(srv, "analytics/sleep")


def test_rest_create_with_a_task_keeps_its_receiver(srv: Server) -> None:
    """`POST /promises/task` always names a receiver (its `resonate:invoke`, else the default
    `poll://any@default`, as the older server): the caller holds the task, the rules stay out."""
    status, out = srv.rest("POST", "/promises/task", {"promise": {"id": "analytics/t", "timeout": FAR},
                                                      "task": {"processId": "p", "ttl": 60_000}})
    assert status == 201 and out["task"]["processId"] == "p"
    p = srv.store.read(lambda tx: tx.get_promise("analytics/t"))
    assert p.tags["resonate:target"] == "poll://any@default"


def test_rest_schedule_firings_are_routed(srv: Server) -> None:
    """A schedule's promise with no `resonate:invoke` is a promise created without a target."""
    status, _ = srv.rest("POST", "/schedules", {"id": "nightly", "cron": "* * * * *",
                                                "promiseId": "analytics/{{.id}}.{{.timestamp}}",
                                                "promiseTimeout": 60_000, "promiseParam": {"data": B64}})
    assert status == 201
    srv.at(T0 + 60_000)
    fired = [p for p in srv.store.read(lambda tx: tx.all_promises()) if p.id.startswith("analytics/nightly.")]
    assert len(fired) == 1
    routed(srv, fired[0].id)


# ---- authorization -------------------------------------------------------------------------------


def test_the_operators_target_is_not_the_callers(tmp_path: Path) -> None:
    """A tenant may create ids under its prefix; a rule's target is the operator's choice, so the
    token's groups are not checked against it, while a target the caller names still is."""
    key = KeyPair("ec256")
    srv = Server(rules=("t1/analytics/*=poll://any@analytics",), **{"auth.publickey": key.write(tmp_path)})
    srv.token = key.sign(claims(3600, prefix="t1/"))  # groups starting with t1/ only
    assert srv.create("t1/analytics/1")[0] == 200
    routed(srv, "t1/analytics/1")
    assert srv.create("t1/analytics/2", {"resonate:target": ANALYTICS}) == (403, "Forbidden")
    assert srv.create("t2/analytics/1") == (403, "Forbidden")  # the prefix still confines the ids
    assert srv.rest("POST", "/promises", {"id": "t2/analytics/2", "timeout": FAR})[0] == 403
    assert srv.rest("POST", "/promises", {"id": "t1/analytics/3", "timeout": FAR})[0] == 201
    routed(srv, "t1/analytics/3")
    assert [m.id for m in srv.outbox()] == ["t1/analytics/1", "t1/analytics/3"]
