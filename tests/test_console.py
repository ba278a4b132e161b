"""The web console's server side (docs/console.md): its views on `POST /ui/api` on every store,
its surfaces (the SDKs' `POST /` never serves them), its actions (role admin only with auth
on), its pages' headers, `ui.enabled=false`, and the live stream.

The pages themselves are driven in a real browser by tests/test_console_browser.py.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
import requests

from tests.support.envelope import envelope
from tests.support.server import InprocServer, ServerProc, start_server
from tests.support.tokens import KeyPair, claims

FAR = 2**62


def ui(s: Any, kind: str, data: dict[str, Any], auth: str | None = None) -> tuple[int, Any]:
    head = {"auth": auth} if auth is not None else {}
    r = s.request("POST", "/ui/api", json=envelope(kind, data, **head))
    body = r.json()
    assert body["kind"] == kind and body["head"]["status"] == r.status_code, body
    return r.status_code, body["data"]


def ok(s: Any, kind: str, data: dict[str, Any], auth: str | None = None) -> Any:
    status, out = ui(s, kind, data, auth)
    assert status == 200, (kind, data, status, out)
    return out


def create(s: ServerProc, id: str, tags: dict[str, str] | None = None, func: str | None = None,
           time: int | None = None) -> None:
    param = {"data": base64.b64encode(json.dumps({"func": func, "args": []}).encode()).decode()} if func else {}
    status, out = s.rpc("promise.create", {"id": id, "timeoutAt": FAR, "tags": tags or {}, "param": param}, time=time)
    assert status == 200, out


def settle(s: ServerProc, id: str, state: str = "resolved", time: int | None = None) -> None:
    status, out = s.rpc("promise.settle", {"id": id, "state": state, "value": {}}, time=time)
    assert status == 200, out


def ids(out: dict[str, Any], key: str = "promises") -> list[str]:
    return [r["id"] for r in out[key]]


# ------------------------------------------------------------------------------ views, every store

def test_promise_list_filters_and_pages(rs: ServerProc) -> None:
    for i in range(5):
        create(rs, f"app/{i}", {"k": "v"} if i % 2 == 0 else {}, time=1000 + i)
    create(rs, "other/0", time=2000)
    settle(rs, "app/1", time=3000)
    settle(rs, "app/3", "rejected", time=3000)

    assert ids(ok(rs, "console.promises", {})) == [*(f"app/{i}" for i in range(5)), "other/0"]
    assert ids(ok(rs, "console.promises", {"prefix": "app/"})) == [f"app/{i}" for i in range(5)]
    assert ids(ok(rs, "console.promises", {"prefix": "app/", "state": "pending"})) == ["app/0", "app/2", "app/4"]
    assert ids(ok(rs, "console.promises", {"state": "settled"})) == ["app/1", "app/3"]
    assert ids(ok(rs, "console.promises", {"state": "rejected"})) == ["app/3"]
    assert ids(ok(rs, "console.promises", {"tags": {"k": "v"}})) == ["app/0", "app/2", "app/4"]
    assert ids(ok(rs, "console.promises", {"createdAfter": 1001, "createdBefore": 1003})) == ["app/1", "app/2"]

    seen, cursor, pages = [], None, 0
    while True:
        page = ok(rs, "console.promises", {"prefix": "app/", "limit": 2, **({"cursor": cursor} if cursor else {})})
        seen += ids(page)
        pages += 1
        cursor = page.get("cursor")
        if cursor is None:
            break
    assert seen == [f"app/{i}" for i in range(5)] and pages == 3

    row = ok(rs, "console.promises", {"prefix": "app/1"})["promises"][0]
    assert row["state"] == "resolved" and row["createdAt"] == 1001 and row["settledAt"] == 3000
    assert "param" not in row and "value" not in row  # a list row stays small


def test_promise_page_has_its_task_and_call_graph(rs: ServerProc) -> None:
    root = "wf-1"
    target = {"resonate:target": "poll://any@workers"}
    create(rs, root, {"resonate:origin": root, **target}, func="process_order", time=1000)
    create(rs, "wf-1.0", {"resonate:origin": root, "resonate:parent": root}, func="charge", time=1100)
    create(rs, "wf-1.0.0", {"resonate:origin": root, "resonate:parent": "wf-1.0"}, time=1150)
    create(rs, "wf-1.1", {"resonate:origin": root, "resonate:parent": root}, func="ship", time=1200)
    create(rs, "unrelated", time=1300)
    settle(rs, "wf-1.0", time=1500)

    out = ok(rs, "console.promise", {"id": "wf-1.0"})
    assert out["promise"]["id"] == "wf-1.0" and out["promise"]["state"] == "resolved"
    assert out["task"] is None  # a child step has no task of its own
    g = out["graph"]
    assert g["root"] == root and not g["truncated"]
    nodes = {n["id"]: n for n in g["nodes"]}
    assert set(nodes) == {"wf-1", "wf-1.0", "wf-1.0.0", "wf-1.1"}
    assert "parent" not in nodes["wf-1"] and nodes["wf-1.0.0"]["parent"] == "wf-1.0"
    assert nodes["wf-1"]["func"] == "process_order" and nodes["wf-1.1"]["func"] == "ship"
    assert nodes["wf-1.0"]["settledAt"] - nodes["wf-1.0"]["createdAt"] == 400

    top = ok(rs, "console.promise", {"id": root})
    assert top["task"]["state"] == "pending" and top["task"]["version"] >= 0
    assert {n["id"] for n in top["graph"]["nodes"]} == set(nodes)
    assert ui(rs, "console.promise", {"id": "missing"}) == (404, "Promise not found")


def test_tasks_schedules_and_workers(rs: ServerProc) -> None:
    target = {"resonate:target": "poll://any@workers"}
    for id in ("jobs/a", "jobs/b", "misc/c"):
        create(rs, id, target)
    jobs = ok(rs, "console.tasks", {"prefix": "jobs/"})["tasks"]
    assert [t["id"] for t in jobs] == ["jobs/a", "jobs/b"]
    status, out = rs.rpc("task.acquire", {"id": "jobs/a", "version": jobs[0]["version"], "pid": "worker-7",
                                          "ttl": 60_000})
    assert status == 200, out
    acquired = ok(rs, "console.tasks", {"state": "acquired"})["tasks"]
    assert [(t["id"], t["pid"], t["ttl"]) for t in acquired] == [("jobs/a", "worker-7", 60_000)]
    assert acquired[0]["leaseExpiresAt"] > 0

    status, out = rs.rpc("schedule.create", {"id": "nightly", "cron": "0 2 * * *", "promiseId": "n.{{.timestamp}}",
                                             "promiseTimeout": 60_000, "promiseTags": target})
    assert status == 200, out
    s = ok(rs, "console.schedules", {"prefix": "night"})["schedules"]
    assert [x["id"] for x in s] == ["nightly"]
    runs = s[0]["nextRuns"]
    assert len(runs) == 3 and runs == sorted(runs) and runs[1] - runs[0] == 86_400_000
    assert ok(rs, "console.schedules", {"prefix": "x"})["schedules"] == []

    assert isinstance(ok(rs, "console.workers", {})["groups"], list)


def test_a_star_in_a_prefix_never_widens_the_answer(rs: ServerProc) -> None:
    """`*` is a wildcard to the stores' id patterns; the views still answer ids under the prefix only."""
    for id in ("a*b/1", "aXb/2", "a*b"):
        create(rs, id)
    assert ids(ok(rs, "console.promises", {"prefix": "a*b/"})) == ["a*b/1"]
    assert ids(ok(rs, "console.promises", {"prefix": "a*"})) == ["a*b", "a*b/1"]


@pytest.mark.parametrize("data, error", [
    ({"limit": 0}, "limit must be between 1 and 200"),
    ({"limit": 201}, "limit must be between 1 and 200"),
    ({"state": "done"}, "state"),
    ({"createdAfter": 5, "createdBefore": 5}, "createdAfter"),
    ({"tags": {"k": 1}}, "tags"),
    ({"prefix": 7}, "prefix"),
])
def test_bad_queries_are_400(rs: ServerProc, data: dict[str, Any], error: str) -> None:
    status, out = ui(rs, "console.promises", data)
    assert status == 400 and error in out, out


def test_surfaces_are_kept_apart(rs: ServerProc) -> None:
    """The SDKs' `POST /` does not know the console's views; the console's route does not know
    the SDKs' other kinds; settling from the console is the same operation as from the SDK."""
    create(rs, "s/1")
    assert rs.rpc("console.promises", {}) == (400, "Unknown operation: console.promises")
    for kind in ("promise.create", "task.acquire", "promise.get", "rest.promise.get", "debug.snap"):
        assert ui(rs, kind, {"id": "s/1"}) == (400, f"Unknown operation: {kind}")
    out = ok(rs, "promise.settle", {"id": "s/1", "state": "rejected_canceled", "value": {}})
    assert out["promise"]["state"] == "rejected_canceled"
    assert rs.rpc("promise.get", {"id": "s/1"})[1]["promise"]["state"] == "rejected_canceled"


# ------------------------------------------------------------------------------ in process

@pytest.fixture
def inproc(tmp_path: Any) -> Any:
    s = InprocServer(tmp_path)
    yield s
    s.stop()


def test_pages_are_served_with_a_strict_policy(inproc: Any) -> None:
    r = inproc.request("GET", "/ui/")
    assert r.status_code == 200 and "<title>Resonate console</title>" in r.text
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        a = inproc.request("GET", f"/ui/{asset}")
        assert a.status_code == 200 and kind in a.headers["Content-Type"], a.headers
    assert "<title>" in inproc.request("GET", "/ui/promise/x").text  # any other path is the page
    for path in ("/ui/..%2froutes.py", "/ui/..%2f..%2fconfig.py", "/ui/%2e%2e/routes.py"):
        r = inproc.request("GET", path)  # never a file outside static/
        assert "import" not in r.text and "def " not in r.text, path
    assert inproc.request("GET", "/ui").status_code == 308


def test_a_huge_workflow_graph_is_cut(inproc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.engine import console

    monkeypatch.setattr(console, "MAX_GRAPH", 3)
    create(inproc, "big", {"resonate:origin": "big"})
    for i in range(5):
        create(inproc, f"big.{i}", {"resonate:origin": "big", "resonate:parent": "big"})
    g = ok(inproc, "console.promise", {"id": "big.4"})["graph"]
    assert [n["id"] for n in g["nodes"]] == ["big", "big.0", "big.1"] and g["truncated"]
    create(inproc, "small", {"resonate:origin": "small"})
    assert not ok(inproc, "console.promise", {"id": "small"})["graph"]["truncated"]


def test_ui_enabled_false_serves_nothing(tmp_path: Any) -> None:
    s = InprocServer(tmp_path, args=["--ui-enabled", "false"])
    try:
        for path in ("/ui/", "/ui/app.js", "/ui/events"):
            assert s.request("GET", path).status_code == 404
        assert s.request("POST", "/ui/api", json=envelope("console.workers", {})).status_code == 404
    finally:
        s.stop()


# ------------------------------------------------------------------------------ a server process

@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair("ec256")


@pytest.fixture(scope="module")
def authed(key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("console-auth")
    s = start_server("sqlite", work, debug=False, env={"RESONATE_AUTH__PUBLICKEY": key.write(work)})
    yield s
    s.stop()


@pytest.mark.process
def test_actions_need_role_admin_and_views_keep_to_the_prefix(authed: ServerProc, key: KeyPair) -> None:
    admin = key.sign(claims(3600, role="admin"))
    tenant = key.sign(claims(3600, role="worker", prefix="tA/"))
    root = key.sign(claims(3600, role="worker", prefix=""))  # unrestricted, yet not an admin
    for id in ("tA/1", "tA/2", "tB/1"):
        assert authed.rpc("promise.create", {"id": id, "timeoutAt": FAR}, auth=admin)[0] == 200

    assert ui(authed, "console.promises", {})[0] == 401
    assert ids(ok(authed, "console.promises", {"prefix": "t"}, admin)) == ["tA/1", "tA/2", "tB/1"]
    assert ids(ok(authed, "console.promises", {"prefix": "tA/"}, tenant)) == ["tA/1", "tA/2"]
    assert ui(authed, "console.promises", {}, tenant) == (403, "Forbidden")
    assert ui(authed, "console.promises", {"prefix": "tB/"}, tenant) == (403, "Forbidden")
    assert ui(authed, "console.promise", {"id": "tB/1"}, tenant) == (403, "Forbidden")
    assert ui(authed, "console.workers", {}, tenant) == (403, "Forbidden")
    assert ui(authed, "outbox.search", {}, tenant) == (403, "Forbidden")

    # its own promise, which `POST /` lets it settle: not from the console
    settle = {"id": "tA/1", "state": "resolved", "value": {}}
    assert ui(authed, "promise.settle", settle, tenant) == (403, "Forbidden")
    assert ui(authed, "promise.settle", settle, root) == (403, "Forbidden")
    assert ok(authed, "console.promise", {"id": "tA/1"}, tenant)["promise"]["state"] == "pending"
    assert ok(authed, "promise.settle", settle, admin)["promise"]["state"] == "resolved"


@pytest.mark.process
def test_live_stream_hints_after_a_commit(authed: ServerProc, key: KeyPair) -> None:
    admin = key.sign(claims(3600, role="admin"))
    assert requests.get(authed.url + "/ui/events", timeout=10).status_code == 401
    frames: list[str] = []
    got_hello, got_change = threading.Event(), threading.Event()

    def read() -> None:
        with requests.get(authed.url + "/ui/events", headers={"Authorization": f"Bearer {admin}"}, stream=True,
                          timeout=30) as r:
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            for line in r.iter_lines(decode_unicode=True):
                frames.append(line)
                if line == "event: hello":
                    got_hello.set()
                if line == "event: change":
                    got_change.set()
                    return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert got_hello.wait(20), frames
    assert authed.rpc("promise.create", {"id": f"live/{time.time_ns()}", "timeoutAt": FAR}, auth=admin)[0] == 200
    assert got_change.wait(20), frames
    assert all("live/" not in f for f in frames)  # a hint, never data
