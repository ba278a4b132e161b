"""`gcps://project/topic` delivery against the REAL Google Pub/Sub emulator (docs/protocol.md,
docs/operations.md), on SQLite and on Postgres (cluster delivery).

The server is a real subprocess with PUBSUB_EMULATOR_HOST set; topics and pull subscriptions are
made and read with the real google-cloud-pubsub clients. When the emulator cannot run here,
these tests FAIL (tests/support/pubsub.py says why): they never skip.
"""
from __future__ import annotations

import base64
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import marks
from tests.support.pubsub import Emulator, pubsub_emulator  # noqa: F401 (fixture)
from tests.support.server import ServerProc, backend_names, start_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.process

HOUR = 3_600_000
FAILED = "WARN resonate.gcps: GCP Pub/Sub"  # delivery failed / publish timed out
BACKENDS = [b for b in ("sqlite", "postgres") if b in backend_names()] or ["sqlite"]


@pytest.fixture(params=[marks.param(b) for b in BACKENDS])
def server(request, tmp_path: Path, pubsub_emulator: Emulator) -> Iterator[ServerProc]:
    env = {**pubsub_emulator.env(), "RESONATE_TRANSPORTS__GCPS__ENABLED": "true",
           "RESONATE_TRANSPORTS__GCPS__TIMEOUT": "1000"}
    srv = start_server(request.param, tmp_path, debug=False, env=env)
    yield srv
    srv.stop()


def topic(emu: Emulator) -> tuple[str, str, str]:
    """A fresh topic with a pull subscription: (topic id, subscription path, gcps address)."""
    name = "t-" + uuid.uuid4().hex[:12]
    emu.create_topic(name)
    sub = emu.create_pull_subscription(name, "s-" + name)
    return name, sub, f"gcps://{emu.project}/{name}"


def create(srv: ServerProc, id: str, target: str | None = None) -> dict:
    tags = {"resonate:target": target} if target else {}
    st, d = srv.rpc("promise.create", {"id": id, "timeoutAt": int(time.time() * 1000) + HOUR, "tags": tags})
    assert st == 200, d
    return d["promise"]


def outbox(srv: ServerProc) -> list[tuple[str, str, str]]:
    """(kind, id, address) of every row still queued."""
    if srv.backend == "sqlite":
        assert srv.db is not None
        with sqlite3.connect(f"file:{srv.db}?mode=ro", uri=True, timeout=10) as c:
            return [tuple(r) for r in c.execute("SELECT kind, id, address FROM outbox ORDER BY seq")]
    import pg8000.native

    from shared.storage.postgres import parse_url

    assert srv.pg_url is not None
    c = pg8000.native.Connection(**parse_url(srv.pg_url))
    try:
        return [tuple(r) for r in c.run("SELECT kind, id, address FROM outbox ORDER BY seq")]
    finally:
        c.close()



def one_message(emu: Emulator, sub: str, timeout: float = 15) -> tuple[dict, dict[str, str]]:
    got = emu.pull(sub, want=1, timeout=timeout)
    assert len(got) == 1, f"no message on {sub} within {timeout}s"
    data, attributes = got[0]
    return json.loads(data), attributes


def test_execute_is_published_as_the_message_json(server: ServerProc, pubsub_emulator: Emulator) -> None:
    _, sub, address = topic(pubsub_emulator)
    create(server, "gcps-exec-1", address)
    msg, attributes = one_message(pubsub_emulator, sub)
    assert attributes == {}  # no attributes
    assert msg["kind"] == "execute" and msg["data"] == {"task": {"id": "gcps-exec-1", "version": 0}}
    assert isinstance(msg["head"], dict) and msg["head"].get("serverUrl", "x")  # never an empty serverUrl
    assert wait_until(lambda: outbox(server) == [], 10), outbox(server)  # published: the row is gone
    assert pubsub_emulator.pull(sub, want=1, timeout=1) == []  # exactly one publish


def test_unblock_reaches_a_gcps_listener(server: ServerProc, pubsub_emulator: Emulator) -> None:
    _, sub, address = topic(pubsub_emulator)
    create(server, "gcps-awaited")
    st, d = server.rpc("promise.register_listener", {"awaited": "gcps-awaited", "address": address})
    assert st == 200, d
    value = {"data": base64.b64encode(b'"done"').decode()}
    st, d = server.rpc("promise.settle", {"id": "gcps-awaited", "state": "resolved", "value": value})
    assert st == 200, d
    msg, attributes = one_message(pubsub_emulator, sub)
    assert attributes == {}
    assert msg["kind"] == "unblock" and msg["head"] == {}
    promise = msg["data"]["promise"]
    assert promise["id"] == "gcps-awaited" and promise["state"] == "resolved" and promise["value"] == value
    assert promise == d["promise"]  # the full settled record, as SSE and HTTP workers get it
    assert wait_until(lambda: outbox(server) == [], 10), outbox(server)


def test_missing_topic_keeps_the_row_and_the_outage_is_recovered(server: ServerProc,
                                                                 pubsub_emulator: Emulator) -> None:
    """Emulator down: the publish fails, the row stays; back up (empty: topics are recreated):
    the row is published by a later re-drive and only then removed (at-least-once)."""
    name = "t-" + uuid.uuid4().hex[:12]
    address = f"gcps://{pubsub_emulator.project}/{name}"
    pubsub_emulator.stop()
    try:
        create(server, "gcps-outage", address)
        assert wait_until(lambda: FAILED in server.logs(), 15), server.logs()
        time.sleep(1.5)  # more failed attempts
        assert outbox(server) == [("execute", "gcps-outage", address)]
    finally:
        pubsub_emulator.start()
    # the restarted emulator has no topics: attempts now fail with NotFound. Right after one
    # failed (the next attempt is at least a 0.5 s backoff away) create the topic and its
    # subscription, so the message cannot be published before anyone subscribes.
    seen = server.logs().count("NotFound")
    assert wait_until(lambda: server.logs().count("NotFound") > seen, 90), server.logs()[-3000:]
    pubsub_emulator.create_topic(name)
    sub = pubsub_emulator.create_pull_subscription(name, "s-" + name)
    msg, _ = one_message(pubsub_emulator, sub, timeout=90)
    assert msg["data"] == {"task": {"id": "gcps-outage", "version": 0}}
    assert wait_until(lambda: outbox(server) == [], 10), outbox(server)


def test_disabled_transport_drops_the_message(tmp_path: Path, pubsub_emulator: Emulator) -> None:
    """Off (the default): logged and dropped, nothing is published."""
    _, sub, address = topic(pubsub_emulator)
    srv = start_server("sqlite", tmp_path, debug=False, env=pubsub_emulator.env())
    try:
        create(srv, "gcps-off", address)
        assert wait_until(lambda: "transport not enabled" in srv.logs(), 10), srv.logs()
        assert wait_until(lambda: outbox(srv) == [], 10)
        assert pubsub_emulator.pull(sub, want=1, timeout=2) == []
    finally:
        srv.stop()
