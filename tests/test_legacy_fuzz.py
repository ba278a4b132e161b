"""Hostile input on the REST API's routes (docs/legacy-api.md), in process over the memory store:
whatever the path, headers and body, the answer is JSON (or an empty 204), never a 5xx, and a 4xx
changes nothing."""
from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from shared.config import load
from shared.delivery.hub import PollHub
from shared.http import create_app
from shared.service import Service
from shared.storage.memory import MemoryStore

FAR = 2**62
ROUTES = [("POST", "/promises"), ("GET", "/promises/{id}"), ("PATCH", "/promises/{id}"), ("GET", "/promises"),
          ("POST", "/promises/{id}/create"), ("POST", "/promises/{id}/resolve"), ("POST", "/promises/task"),
          ("POST", "/promises/callback/{id}"), ("POST", "/promises/subscribe/{id}"), ("POST", "/callbacks"),
          ("POST", "/subscriptions"), ("POST", "/tasks/claim"), ("POST", "/tasks/complete"), ("POST", "/tasks/drop"),
          ("POST", "/tasks/heartbeat"), ("GET", "/tasks/claim/{id}/0"), ("POST", "/schedules"),
          ("GET", "/schedules/{id}"), ("DELETE", "/schedules/{id}"), ("GET", "/schedules"),
          ("POST", "/locks/acquire"), ("POST", "/locks/release"), ("POST", "/locks/heartbeat")]
FIELDS = ["id", "timeout", "param", "value", "tags", "state", "promise", "task", "processId", "ttl", "counter",
          "rootPromiseId", "recv", "promiseId", "cron", "promiseTimeout", "promiseParam", "promiseTags",
          "resourceId", "executionId", "description", "limit", "cursor", "data", "headers"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False), st.text(max_size=20),
                    st.sampled_from(["p", "__invoke:p", "__resume:p:q", "default", "poll://any@g", "RESOLVED",
                                     "aGk=", "* * * * *", "!!", "poll://", "http://127.0.0.1:9/x"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4)),
                      max_leaves=12)
bodies = st.one_of(st.dictionaries(st.sampled_from(FIELDS), values, max_size=8), values,
                   st.binary(max_size=40).map(lambda b: b))
ids = st.one_of(st.sampled_from(["p", "q", "a/b", "%41", "__invoke:p", "x%2Fy", "ü"]),
                st.text(min_size=1, max_size=8).filter(lambda v: "\n" not in v and "\r" not in v))
header_values = st.one_of(st.sampled_from(["true", "False", "1", "maybe", ""]),
                          st.text(max_size=8).filter(lambda v: "\n" not in v and "\r" not in v))


def world() -> tuple[Service, Client]:
    svc = Service(MemoryStore(), load({}, env={}))
    c = Client(create_app(svc, PollHub()))
    c.post("/promises", json={"id": "p", "timeout": FAR, "tags": {"resonate:invoke": "default"}})
    c.post("/promises", json={"id": "q", "timeout": FAR}, headers={"Idempotency-Key": "k"})
    c.post("/tasks/claim", json={"id": "__invoke:p", "counter": 0, "processId": "w", "ttl": 60_000})
    c.post("/locks/acquire", json={"resourceId": "r", "executionId": "e", "processId": "w", "ttl": 60_000})
    return svc, c


def state(svc: Service) -> Any:
    return svc.store.read(lambda tx: (tx.all_promises(), tx.all_tasks(), tx.all_callbacks(), tx.all_listeners(),
                                      tx.outbox(), tx.search_schedules_by_id("*", {}, None, 100),
                                      tx.locks_of_process("w")))


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), id=ids, body=bodies, strict=header_values, ikey=st.one_of(st.none(), ids))
def test_rest_routes_never_fail_and_refusals_change_nothing(route: tuple[str, str], id: str, body: Any,
                                                             strict: str, ikey: str | None) -> None:
    svc, c = world()
    method, template = route
    before = state(svc)
    headers = {"Strict": strict, **({"Idempotency-Key": ikey} if ikey is not None else {})}
    data = body if isinstance(body, bytes) else json.dumps(body)
    r = c.open(template.replace("{id}", id), method=method, data=data if method != "GET" else None, headers=headers)
    assert r.status_code < 500, (r.status_code, r.get_data(as_text=True))
    if r.status_code != 204:
        out = r.get_json(silent=True)
        assert out is not None, r.get_data(as_text=True)
        if r.status_code >= 400:
            assert isinstance(out["error"]["code"], int) and out["error"]["message"], out
    if 400 <= r.status_code < 500:
        assert state(svc) == before
