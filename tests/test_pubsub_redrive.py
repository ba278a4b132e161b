"""`resonate messages redrive --pubsub` against the REAL Pub/Sub emulator: dead letters move
from the dead-letter subscription back to the dispatch topic, acknowledged only once published.

(The whole path, with the `dispatch` function reviving the dead outbox row and pushing to a
worker that recovered, is in tests/test_pubsub_dispatch.py.)
"""
from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support.pubsub import Emulator, pubsub_emulator  # noqa: F401 (fixture)
from tests.test_cli import Out, cli

pytestmark = pytest.mark.process


def redrive(emu: Emulator, *args: str) -> Out:
    return cli("messages", "redrive", "--pubsub", *args, env=emu.env())


def dead_letter(seq: int) -> tuple[bytes, dict[str, str]]:
    """A dispatch message as Pub/Sub dead-letters it (its own attribute plus Pub/Sub's)."""
    return (json.dumps({"seq": seq, "version": 1}).encode(),
            {"kind": "execute", "CloudPubSubDeadLetterSourceDeliveryCount": "5",
             "CloudPubSubDeadLetterSourceSubscription": "dispatch-push"})


@pytest.fixture
def topics(pubsub_emulator: Emulator) -> dict[str, str]:
    s = uuid.uuid4().hex[:8]
    emu = pubsub_emulator
    names = {"dispatch": emu.create_topic(f"dispatch-{s}"), "dead": emu.create_topic(f"dead-{s}")}
    names["dispatch_sub"] = emu.create_pull_subscription(f"dispatch-{s}", f"dispatch-pull-{s}")
    names["dead_sub"] = emu.create_pull_subscription(f"dead-{s}", f"dead-pull-{s}")
    names["dead_short"] = f"dead-{s}"
    return names


def test_dead_letters_move_back_to_the_dispatch_topic(pubsub_emulator: Emulator, topics: dict[str, str]) -> None:
    emu = pubsub_emulator
    for seq in (11, 12, 13):
        data, attrs = dead_letter(seq)
        emu.publish(topics["dead_short"], data, **attrs)
    where = ["--subscription", topics["dead_sub"], "--topic", topics["dispatch"]]

    listed = redrive(emu, *where, "--dry-run", "--json").json()
    assert listed["dryRun"] is True
    assert sorted(m["seq"] for m in listed["messages"]) == [11, 12, 13]
    assert {m["deliveryAttempts"] for m in listed["messages"]} == {"5"}
    assert emu.pull(topics["dispatch_sub"], want=1, timeout=2) == []  # a dry run publishes nothing

    text = redrive(emu, *where)
    assert text.rc == 0 and "re-published 3 message(s)" in text.out, text
    moved = emu.pull(topics["dispatch_sub"], want=3, timeout=15)
    assert sorted(json.loads(d)["seq"] for d, _ in moved) == [11, 12, 13]
    for _, attrs in moved:  # ours kept, Pub/Sub's dropped, marked as a re-drive for the dispatch function
        assert attrs == {"kind": "execute", "resonate-redrive": "1"}, attrs
    assert emu.pull(topics["dead_sub"], want=1, timeout=3) == []  # acknowledged after the publish
    again = redrive(emu, *where)
    assert again.rc == 0 and again.out.strip() == "no dead-letter messages", again


def test_a_failed_publish_leaves_the_dead_letters_where_they_are(pubsub_emulator: Emulator,
                                                                topics: dict[str, str]) -> None:
    emu = pubsub_emulator
    data, attrs = dead_letter(21)
    emu.publish(topics["dead_short"], data, **attrs)
    missing = topics["dispatch"] + "-missing"
    out = redrive(emu, "--subscription", topics["dead_sub"], "--topic", missing)
    assert out.rc == 1 and "publishing to" in out.err, out
    kept: Any = emu.pull(topics["dead_sub"], want=1, timeout=20)  # redelivered after its ack deadline
    assert [json.loads(d)["seq"] for d, _ in kept] == [21]


def test_bad_flags_are_refused_before_any_call(pubsub_emulator: Emulator) -> None:
    out = redrive(pubsub_emulator, "--topic", "projects/p/topics/t")
    assert out.rc == 1 and "--subscription" in out.err, out
    out = redrive(pubsub_emulator, "--all", "--project", "p")
    assert out.rc == 1 and "no ids or --all" in out.err, out
    out = cli("messages", "redrive", "--dry-run", "--all")
    assert out.rc == 1 and "--dry-run goes with --pubsub" in out.err, out
