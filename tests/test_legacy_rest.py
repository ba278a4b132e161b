"""The older server's REST API (docs/legacy-api.md), in process over the memory store: the routes'
shapes and errors, the task lifecycle as the REST-era SDKs drive it, callbacks and subscriptions
delivered on the SSE listener's shapes, authentication, and `legacy.enabled = false`.

(The idempotency matrix, the published clients' own suites, locks, schedules and real SDK
workflows have their own test_legacy_* modules.)"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from shared.config import load
from shared.delivery.hub import PollHub
from shared.delivery.messages import encode
from shared.http import create_app
from shared.legacy import sse
from shared.legacy.ids import invoke_id, resume_id
from shared.protocol import parse_address
from shared.records import Message
from shared.service import Service
from shared.storage.memory import MemoryStore
from tests.support.clock import SetClock
from tests.support.tokens import KeyPair, claims

FAR = 2**62
B64 = base64.b64encode(b'{"x": 1}').decode()



def make(overrides: dict[str, Any] | None = None) -> tuple[Service, Client, SetClock]:
    clock = SetClock(1_800_000_000_000)
    svc = Service(MemoryStore(), load(overrides or {}, env={}), clock=clock)
    return svc, Client(create_app(svc, PollHub())), clock


@pytest.fixture
def rest() -> tuple[Service, Client, SetClock]:
    return make()


def ok(r: Any, status: int = 200) -> Any:
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    return r.get_json()


def error(r: Any, status: int, code: int) -> str:
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    body = r.get_json()
    assert body["error"]["code"] == code and body["error"]["details"][0]["@type"] == "RequestError", body
    return str(body["error"]["message"])


def snapshot(svc: Service) -> Any:
    return svc.store.read(lambda tx: (tx.all_promises(), tx.all_tasks(), tx.all_callbacks(), tx.all_listeners(),
                                      tx.outbox()))


# ---- promises ----------------------------------------------------------------------------------


def test_promise_shapes(rest: Any) -> None:
    svc, c, clock = rest
    p = ok(c.post("/promises", json={"id": "a/b c", "param": {"headers": {"h": "1"}, "data": B64}, "timeout": FAR,
                                     "tags": {"t": "1"}}, headers={"Idempotency-Key": "ik"}), 201)
    assert p == {"id": "a/b c", "state": "PENDING", "param": {"headers": {"h": "1"}, "data": B64}, "value": {},
                 "timeout": FAR, "tags": {"t": "1"}, "createdOn": clock.t, "idempotencyKeyForCreate": "ik"}
    assert ok(c.get("/promises/a/b%20c")) == p  # ids take the rest of the path, percent-decoded
    clock.t += 5
    done = ok(c.patch("/promises/a/b c", json={"state": "rejected_canceled", "value": {"headers": None, "data": None}}),
              201)
    assert done["state"] == "REJECTED_CANCELED" and done["value"] == {} and done["completedOn"] == clock.t
    assert "idempotencyKeyForComplete" not in done


def test_routing_and_timer_tags_are_translated_and_hidden(rest: Any) -> None:
    svc, c, clock = rest
    ok(c.post("/promises", json={"id": "w", "timeout": FAR, "tags": {"resonate:invoke": "workers"}}), 201)
    ok(c.post("/promises", json={"id": "s", "timeout": clock.t + 100, "tags": {"resonate:timeout": "true"}}), 201)
    stored = {p.id: p.tags for p in svc.store.read(lambda tx: tx.all_promises())}
    assert stored["w"]["resonate:target"] == "poll://any@workers"
    assert stored["s"]["resonate:timer"] == "true"
    assert ok(c.get("/promises/w"))["tags"] == {"resonate:invoke": "workers"}
    clock.t += 100
    assert ok(c.get("/promises/s"))["state"] == "RESOLVED"  # a timer promise resolves at its deadline
    assert [m.address for m in svc.store.read(lambda tx: tx.outbox())] == ["poll://any@workers"]


def test_created_timed_out_when_timeout_is_absent(rest: Any) -> None:
    svc, c, clock = rest
    p = ok(c.post("/promises", json={"id": "late"}), 201)
    assert p["state"] == "REJECTED_TIMEDOUT" and p["completedOn"] == 0


def test_search_pages_with_an_opaque_cursor(rest: Any) -> None:
    svc, c, clock = rest
    for i in range(5):
        ok(c.post("/promises", json={"id": f"job/{i}", "timeout": FAR, "tags": {"k": "v" if i % 2 else "w"}}), 201)
    ok(c.post("/promises", json={"id": "other", "timeout": FAR}), 201)
    ok(c.patch("/promises/job/3", json={"state": "REJECTED"}), 201)
    seen, url = [], "/promises?id=job/*&limit=2"
    while url:
        page = ok(c.get(url))
        seen += [p["id"] for p in page["promises"]]
        url = f"/promises?cursor={page['cursor']}" if page["cursor"] else ""
    assert seen == [f"job/{i}" for i in range(5)]
    assert [p["id"] for p in ok(c.get("/promises?id=*&tags[k]=v&state=pending"))["promises"]] == ["job/1"]
    assert [p["id"] for p in ok(c.get("/promises?q=*r&state=PENDING"))["promises"]] == ["other"]
    assert [p["id"] for p in ok(c.get("/promises?id=job/*&state=rejected"))["promises"]] == ["job/3"]


@pytest.mark.parametrize("method, path, body, status, code", [
    ("POST", "/promises", b"{not json", 400, 4000),
    ("POST", "/promises", b"[1]", 400, 4000),
    ("POST", "/promises", {"timeout": FAR}, 400, 4000),
    ("POST", "/promises", {"id": "x", "timeout": -1}, 400, 4000),
    ("POST", "/promises", {"id": "x", "timeout": "soon"}, 400, 4000),
    ("POST", "/promises", {"id": "x", "timeout": FAR, "param": {"data": "not base64!"}}, 400, 4000),
    ("POST", "/promises", {"id": "x", "timeout": FAR, "tags": {"resonate:invoke": "poll://"}}, 400, 4000),
    ("POST", "/promises", {"id": "x", "timeout": FAR, "tags": {"a": 1}}, 400, 4000),
    ("PATCH", "/promises/p", {"state": "PENDING"}, 400, 4000),
    ("PATCH", "/promises/p", {"state": "REJECTED_TIMEDOUT"}, 400, 4000),
    ("PATCH", "/promises/nope", {"state": "RESOLVED"}, 404, 4040),
    ("GET", "/promises/nope", None, 404, 4040),
    ("GET", "/promises", None, 400, 4000),
    ("GET", "/promises?id=*&state=done", None, 400, 4000),
    ("GET", "/promises?id=*&limit=1000", None, 400, 4000),
    ("GET", "/promises?cursor=!!", None, 400, 4000),
    ("POST", "/promises/task", {"promise": {"id": "x", "timeout": FAR}}, 400, 4000),
    ("POST", "/promises/callback/p", {"rootPromiseId": "p", "timeout": FAR, "recv": "default"}, 400, 4000),
    ("POST", "/promises/callback/p", {"timeout": FAR, "recv": "default"}, 400, 4000),
    ("POST", "/promises/subscribe/p", {"id": "s", "timeout": FAR}, 400, 4000),
    ("POST", "/tasks/claim", {"id": "__invoke:p", "processId": "w", "ttl": 5}, 400, 4000),
    ("POST", "/tasks/claim", {"id": "__invoke:nope", "counter": 0, "processId": "w", "ttl": 5}, 404, 4043),
    ("POST", "/tasks/claim", {"id": "tid1", "counter": 0, "processId": "w", "ttl": 5}, 404, 4043),
    ("POST", "/tasks/frobnicate", {}, 404, 4043),
    ("POST", "/tasks/heartbeat", {}, 400, 4000),
    ("POST", "/promises", {"id": "x\u0000", "timeout": FAR}, 400, 4000),
    ("POST", "/promises", b'{"id": "\\ud800", "timeout": 1}', 400, 4000),
    ("POST", "/promises", b"[" * 5000 + b"]" * 5000, 400, 4000),
    ("GET", "/promises/a%00b", None, 400, 4000),
    ("POST", "/promises", {"id": "x", "timeout": FAR}, 400, 4000),  # with a bad Strict header (below)
])
def test_bad_input_is_a_json_4xx_and_changes_nothing(rest: Any, method: str, path: str, body: Any,
                                                     status: int, code: int) -> None:
    svc, c, clock = rest
    ok(c.post("/promises", json={"id": "p", "timeout": FAR}), 201)
    before = snapshot(svc)
    headers = {"Strict": "maybe"} if body == {"id": "x", "timeout": FAR} else {}
    data = body if isinstance(body, bytes) else (json.dumps(body) if body is not None else None)
    error(c.open(path, method=method, data=data, headers=headers), status, code)
    assert snapshot(svc) == before


# ---- tasks, callbacks, subscriptions ----------------------------------------------------------


def test_a_run_with_a_remote_step_as_the_rest_era_sdk_drives_it(rest: Any) -> None:
    """/promises/task (claimed at once, nothing sent), a remote child, a callback, the task
    completed (suspended), the child's worker claims and resolves it, the root's resume is sent
    (with its leaf), claimed, the root resolved and its task completed twice."""
    svc, c, clock = rest
    out = ok(c.post("/promises/task", json={"promise": {"id": "root", "timeout": FAR,
                                                        "tags": {"resonate:invoke": "poll://any@default"}},
                                            "task": {"processId": "p1", "ttl": 10_000}},
                    headers={"Idempotency-Key": "root", "Strict": "False"}), 201)
    task = out["task"]
    assert task["id"] == invoke_id("root") and task["counter"] == 0
    assert svc.store.read(lambda tx: tx.outbox()) == []  # the caller runs it itself
    again = ok(c.post("/promises/task", json={"promise": {"id": "root", "timeout": FAR},
                                              "task": {"processId": "p9", "ttl": 10_000}},
                      headers={"Idempotency-Key": "root"}), 200)
    assert again["task"] is None and again["promise"]["id"] == "root"
    assert ok(c.post("/tasks/heartbeat", json={"processId": "p1"})) == {"tasksAffected": 1}
    ok(c.post("/promises", json={"id": "root.1", "timeout": FAR, "tags": {"resonate:invoke": "poll://any@other"}}),
       201)
    reg = ok(c.post("/promises/callback/root.1", json={"rootPromiseId": "root", "timeout": FAR,
                                                       "recv": "poll://any@default/p1"}), 201)
    assert reg["callback"]["id"] == resume_id("root", "root.1") and reg["promise"]["state"] == "PENDING"
    ok(c.post("/tasks/complete", json={"id": task["id"], "counter": 0}), 201)
    assert ok(c.post("/tasks/heartbeat", json={"processId": "p1"})) == {"tasksAffected": 0}
    # the child's worker
    [m] = svc.store.read(lambda tx: tx.outbox())
    render = sse.renderer(svc)
    msg = json.loads(render(encode(m, None)))
    assert msg["type"] == "invoke" and msg["task"] == {"id": invoke_id("root.1"), "counter": 0}
    assert msg["href"]["claim"].endswith(f"/tasks/claim/{invoke_id('root.1')}/0")
    claimed = ok(c.post("/tasks/claim", json={**msg["task"], "processId": "p2", "ttl": 5_000}), 201)
    assert claimed["type"] == "invoke" and "leaf" not in claimed["promises"]
    assert claimed["promises"]["root"]["data"]["id"] == "root.1"
    error(c.post("/tasks/claim", json={**msg["task"], "processId": "p2", "ttl": 5_000}), 403, 4035)
    ok(c.patch("/promises/root.1", json={"state": "RESOLVED", "value": {"data": B64}}), 201)
    ok(c.post("/tasks/complete", json={"id": invoke_id("root.1"), "counter": 0}), 200)  # completed by the resolve
    # the root's resume
    resume = [m for m in svc.store.read(lambda tx: tx.outbox()) if m.id == "root"]
    msg = json.loads(render(encode(resume[0], None)))
    assert msg["type"] == "resume" and msg["task"] == {"id": resume_id("root", "root.1"), "counter": 1}
    claimed = ok(c.post("/tasks/claim", json={**msg["task"], "processId": "p1", "ttl": 5_000}), 201)
    assert claimed["type"] == "resume"
    assert claimed["promises"]["leaf"]["data"]["value"] == {"data": B64}
    ok(c.patch("/promises/root", json={"state": "RESOLVED"}, headers={"Idempotency-Key": "root"}), 201)
    for _ in range(2):  # the SDK completes the task after resolving, and again when asked for the result
        ok(c.post("/tasks/complete", json={"id": msg["task"]["id"], "counter": 1}), 200)


def test_claims_complete_and_heartbeat_follow_the_lease(rest: Any) -> None:
    svc, c, clock = rest
    ok(c.post("/promises", json={"id": "t", "timeout": FAR, "tags": {"resonate:invoke": "default"}}), 201)
    tid = invoke_id("t")
    error(c.post("/tasks/claim", json={"id": tid, "counter": 1, "processId": "a", "ttl": 0}), 403, 4037)
    ok(c.post("/tasks/claim", json={"id": tid, "counter": 0, "processId": "a", "ttl": 0}), 201)
    error(c.post("/tasks/claim", json={"id": tid, "counter": 0, "processId": "b", "ttl": 0}), 403, 4035)
    assert ok(c.post("/tasks/heartbeat", json={"processId": "a"})) == {"tasksAffected": 1}  # a ttl of 0 still counts
    clock.t += 10_000  # the lease (at least 1 s) lapsed: its completion is refused
    error(c.post("/tasks/complete", json={"id": tid, "counter": 0}), 403, 4037)
    svc.sweep(clock.t)  # the timer loop gives the task back with a new counter
    ok(c.post("/tasks/claim", json={"id": tid, "counter": 1, "processId": "b", "ttl": 60_000}), 201)
    ok(c.post("/tasks/drop", json={"id": tid, "counter": 1}))
    ok(c.post("/tasks/claim", json={"id": tid, "counter": 2, "processId": "b", "ttl": 60_000}), 201)
    ok(c.get(f"/tasks/complete/{tid}/2"), 201)


def test_unclaimed_rest_tasks_are_resent_after_the_claim_timeout(rest: Any) -> None:
    svc, c, clock = rest
    ok(c.post("/promises", json={"id": "t", "timeout": FAR, "tags": {"resonate:invoke": "default"}}), 201)
    [t] = svc.store.read(lambda tx: tx.all_tasks())
    assert t.timer_at == clock.t + svc.cfg.legacy.claim_timeout


def test_subscriptions_notify_with_the_rest_shape(rest: Any) -> None:
    svc, c, clock = rest
    ok(c.post("/promises", json={"id": "n", "timeout": FAR}), 201)
    reg = ok(c.post("/promises/subscribe/n", json={"id": "p7", "timeout": FAR, "recv": "poll://uni@default/p7"}),
             201)
    assert reg["callback"]["promiseId"] == "n"
    ok(c.patch("/promises/n", json={"state": "RESOLVED", "value": {"data": B64}}), 201)
    [m] = svc.store.read(lambda tx: tx.outbox())
    assert m == Message("unblock", "n", "poll://uni@default/p7")
    p = svc.store.read(lambda tx: tx.get_promise("n"))
    msg = json.loads(sse.renderer(svc)(encode(m, p.wire())))
    assert msg == {"type": "notify", "promise": ok(c.get("/promises/n"))}
    late = ok(c.post("/promises/subscribe/n", json={"id": "p8", "timeout": FAR, "recv": "poll://uni@default/p8"}))
    assert late["callback"] is None and late["promise"]["state"] == "RESOLVED"


def test_rest_kinds_are_not_on_post_root(rest: Any) -> None:
    svc, c, clock = rest
    env = {"kind": "rest.promise.get", "head": {"corrId": "1", "version": "2026-04-01"}, "data": {"id": "x"}}
    r = c.post("/", json=env)
    assert r.status_code == 400 and r.get_json()["data"] == "Unknown operation: rest.promise.get"


def test_disabled_answers_410_on_every_legacy_prefix() -> None:
    svc, c, clock = make({"legacy.enabled": False})
    for method, path in [("POST", "/promises"), ("GET", "/promises/x"), ("POST", "/tasks/claim"),
                         ("POST", "/schedules"), ("POST", "/locks/acquire"), ("POST", "/callbacks")]:
        r = c.open(path, method=method, json={})
        assert r.status_code == 410 and "no longer supported" in r.get_json()["error"], (method, path)


def test_bearer_tokens_authenticate_rest_routes(tmp_path: Path) -> None:
    key = KeyPair("ec256")
    svc, c, clock = make({"auth.publickey": key.write(tmp_path)})
    body = {"id": "tenantA/x", "timeout": FAR}
    error(c.post("/promises", json=body), 401, 4010)
    error(c.post("/promises", json=body, headers={"Authorization": "Bearer nonsense"}), 401, 4010)
    worker = key.sign(claims(3600, role="worker", prefix="tenantA/"))
    ok(c.post("/promises", json=body, headers={"Authorization": f"Bearer {worker}"}), 201)
    error(c.post("/promises", json={**body, "id": "tenantB/x"}, headers={"Authorization": f"Bearer {worker}"}),
          403, 4039)
    error(c.get("/promises?id=*", headers={"Authorization": f"Bearer {worker}"}), 403, 4039)


def test_a_new_stream_replaces_only_the_same_principals_streams() -> None:
    """The REST-era listener's replacement of abandoned streams never ends another principal's."""
    hub = PollHub()
    mine = hub.register("g", "w1", "tenantA")
    other = hub.register("g", "w2", "tenantB")
    assert hub.disconnect_id("g", "w1", "tenantB") == 0 and not mine.closed
    assert hub.disconnect_id("g", "w1", "tenantA") == 1 and mine.closed and not other.closed


def test_a_stale_task_message_is_never_shown_on_the_listener(rest: Any) -> None:
    """A claim that lapsed re-queues its task; if the client finishes the work anyway (resolves
    the promise), that queued message names a task nobody may claim: the listener drops it
    (these clients claim the first message a stream brings, and would claim it in place of the
    next one). The row is done all the same."""
    svc, c, clock = rest
    ok(c.post("/promises", json={"id": "s", "timeout": FAR, "tags": {"resonate:invoke": "default"}}), 201)
    tid = invoke_id("s")
    ok(c.post("/tasks/claim", json={"id": tid, "counter": 0, "processId": "a", "ttl": 0}), 201)
    clock.t += 10_000
    svc.sweep(clock.t)  # the lease lapsed: the task is queued again, counter 1
    [queued] = svc.store.read(lambda tx: tx.outbox())
    assert (queued.kind, queued.id, queued.version) == ("execute", "s", 1)
    render = sse.renderer(svc)
    assert json.loads(render(encode(queued, None)) or b"")["task"] == {"id": tid, "counter": 1}  # still wanted
    ok(c.patch("/promises/s", json={"state": "RESOLVED"}), 201)  # the client finished anyway
    assert render(encode(queued, None)) is None

    hub = PollHub()
    conn = hub.register("default", "w", render=render)
    written: list[bool] = []
    addr = parse_address("poll://any@default")
    assert addr is not None and hub.deliver(addr, encode(queued, None), written.append)
    conn.queue.put_nowait(None)  # then the stream ends
    frames = list(hub.stream(conn, 30))
    assert frames == [b": connected\n\n"] and written == [True]  # done, never shown
