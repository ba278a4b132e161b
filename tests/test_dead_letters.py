"""Dead letters an operator can act on, end to end (docs/operations.md#dead-letters).

A push target that answers 500 exhausts `transports.http_push.max_attempts`; its outbox rows go
dead; `resonate messages list --dead` shows them; once the target answers 200,
`resonate messages redrive ID` (then `--all`) delivers them and the rows are gone. On every
store, through the CLI as a subprocess against a server process.
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.capture import Capture
from tests.support.server import ServerProc, process_backends, start_server
from tests.support.wait import stays_false, wait_until
from tests.test_cli import cli

HOUR = 3_600_000
PUSH = "RESONATE_TRANSPORTS__HTTP_PUSH__"


def messages(srv: ServerProc, *flags: str) -> list[dict[str, Any]]:
    out = cli("messages", "list", *flags, "-S", srv.url, "--json").json()
    return out["messages"]


def create(srv: ServerProc, id: str, target: str) -> None:
    st, data = srv.rpc("promise.create", {"id": id, "timeoutAt": int(time.time() * 1000) + HOUR,
                                          "tags": {"resonate:target": target}})
    assert st == 200, data


@pytest.mark.parametrize("backend", process_backends())
def test_dead_messages_are_listed_and_redriven(backend: str, tmp_path: Any) -> None:
    target = Capture(status=500).start()
    srv = start_server(backend, tmp_path, debug=False, env={f"{PUSH}MAX_ATTEMPTS": "2"})
    try:
        create(srv, "dl-a", target.url("/a"))
        create(srv, "dl-b", target.url("/b"))
        assert wait_until(lambda: len(messages(srv, "--dead")) == 2, 30), (messages(srv), srv.logs())
        dead = {m["taskId"]: m for m in messages(srv, "--dead")}
        assert sorted(dead) == ["dl-a", "dl-b"]
        a = dead["dl-a"]
        assert (a["kind"], a["address"], a["attempts"], a["dead"]) == ("execute", target.url("/a"), 2, True)
        assert a in messages(srv)  # the whole outbox lists them too
        assert target.count == 4 and stays_false(lambda: target.count > 4, 2)  # dead: never sent again

        table = cli("messages", "list", "--dead", "-S", srv.url)
        assert table.rc == 0 and "dl-a" in table.out and target.url("/a") in table.out, table
        assert str(a["id"]) in table.out.split()

        # bad input: a clear error, nothing changes
        bad = cli("messages", "redrive", "x1", "-S", srv.url)
        assert bad.rc == 1 and "invalid message id" in bad.err, bad
        both = cli("messages", "redrive", str(a["id"]), "--all", "-S", srv.url)
        assert both.rc == 1 and "not both" in both.err, both
        assert len(messages(srv, "--dead")) == 2

        # an id that names no dead row is reported, and changes nothing
        out = cli("messages", "redrive", str(10**9), "-S", srv.url, "--json").json()
        assert out == {"redriven": [], "skipped": [10**9]}

        target.status = 200
        out = cli("messages", "redrive", str(a["id"]), "-S", srv.url, "--json").json()
        assert [m["taskId"] for m in out["redriven"]] == ["dl-a"] and out["skipped"] == []
        assert wait_until(lambda: [r.path for r in target.requests].count("/a") == 3, 20), srv.logs()
        assert wait_until(lambda: [m["taskId"] for m in messages(srv)] == ["dl-b"], 20), messages(srv)
        body = target.requests[-1].body
        assert body["kind"] == "execute" and body["data"]["task"]["id"] == "dl-a", body

        # the same id again: already delivered, nothing to do
        out = cli("messages", "redrive", str(a["id"]), "-S", srv.url, "--json").json()
        assert out == {"redriven": [], "skipped": [a["id"]]}

        text = cli("messages", "redrive", "--all", "-S", srv.url)
        assert text.rc == 0 and "dl-b" in text.out, text
        assert wait_until(lambda: [r.path for r in target.requests].count("/b") == 3, 20), srv.logs()
        assert wait_until(lambda: messages(srv) == [], 20), messages(srv)
        assert cli("messages", "list", "--dead", "-S", srv.url).out.strip() == "no dead messages"
    finally:
        srv.stop()
        target.stop()


@pytest.mark.parametrize("backend", process_backends()[:1])
def test_a_redriven_message_that_fails_again_goes_dead_again(backend: str, tmp_path: Any) -> None:
    """A re-drive starts the count afresh: max_attempts more tries, then dead again."""
    target = Capture(status=500).start()
    srv = start_server(backend, tmp_path, debug=False, env={f"{PUSH}MAX_ATTEMPTS": "2"})
    try:
        create(srv, "dl-c", target.url("/c"))
        assert wait_until(lambda: len(messages(srv, "--dead")) == 1, 30), srv.logs()
        (m,) = messages(srv, "--dead")
        out = cli("messages", "redrive", "--all", "-S", srv.url, "--json").json()
        assert [x["id"] for x in out["redriven"]] == [m["id"]]
        assert wait_until(lambda: target.count == 4, 20), srv.logs()
        assert wait_until(lambda: [(x["id"], x["attempts"]) for x in messages(srv, "--dead")] == [(m["id"], 2)], 20)
        assert stays_false(lambda: target.count > 4, 2)
    finally:
        srv.stop()
        target.stop()


@pytest.mark.parametrize("backend", process_backends())
def test_a_dead_unblock_is_redriven_with_its_promise(backend: str, tmp_path: Any) -> None:
    """An HTTP listener's unblock: re-driven, it carries the promise as settled."""
    target = Capture(status=500).start()
    srv = start_server(backend, tmp_path, debug=False, env={f"{PUSH}MAX_ATTEMPTS": "1"})
    try:
        st, data = srv.rpc("promise.create", {"id": "dl-p", "timeoutAt": int(time.time() * 1000) + HOUR})
        assert st == 200, data
        assert srv.rpc("promise.register_listener", {"awaited": "dl-p", "address": target.url("/l")})[0] == 200
        assert srv.rpc("promise.settle", {"id": "dl-p", "state": "resolved", "value": {"data": "eA=="}})[0] == 200
        assert wait_until(lambda: len(messages(srv, "--dead")) == 1, 30), (messages(srv), srv.logs())
        (m,) = messages(srv, "--dead")
        assert (m["kind"], m["promiseId"], m["attempts"]) == ("unblock", "dl-p", 1) and "taskId" not in m
        target.status = 200
        out = cli("messages", "redrive", str(m["id"]), "-S", srv.url, "--json").json()
        assert [x["promiseId"] for x in out["redriven"]] == ["dl-p"]
        assert wait_until(lambda: target.count == 2, 20), srv.logs()
        body = target.requests[-1].body
        assert body["kind"] == "unblock" and body["data"]["promise"]["id"] == "dl-p", body
        assert body["data"]["promise"]["state"] == "resolved", body
        assert wait_until(lambda: messages(srv) == [], 20), messages(srv)
    finally:
        srv.stop()
        target.stop()
