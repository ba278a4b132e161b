"""Move the Pub/Sub dispatch shape's dead letters back onto the dispatch topic.

When the dispatch subscription gives up on a message (its dead-letter policy,
`max_delivery_attempts` = `dispatch.max_attempts`), Pub/Sub moves it to the dead-letter topic,
whose pull subscription keeps it for 7 days (infra/stack/pubsub.py), and the outbox row it names
is marked dead. `redrive_dead_letters` pulls those messages and publishes each again, with its
data and attributes, plus REDRIVE_ATTRIBUTE: the `dispatch` function, seeing it on a dead row,
revives the row (as `outbox.redrive` does) before pushing. A message is acknowledged on the
dead-letter subscription only after its publish succeeded, so a failure loses nothing (the
message is redelivered on the dead-letter subscription after its ack deadline). A dry run pulls
and hands the messages straight back (ack deadline 0). Used by `resonate messages redrive --pubsub`;
honours PUBSUB_EMULATOR_HOST like every google client.
"""
from __future__ import annotations

import json
from typing import Any

REDRIVE_ATTRIBUTE = "resonate-redrive"
PULL_BATCH = 100
PULL_TIMEOUT_S = 5.0  # an empty subscription answers at this deadline (a long pull)
PUBLISH_TIMEOUT_S = 30.0
_PUBSUB_ATTRIBUTES = "CloudPubSubDeadLetter"  # attributes Pub/Sub adds when dead-lettering: not ours to copy


class RedriveError(Exception):
    """Pub/Sub refused or failed (bad name, permission, unreachable): the message says which step."""


def describe(message_id: str, data: bytes, attributes: dict[str, str]) -> dict[str, Any]:
    """One dead letter for the listing: its row (seq, version) when it is a dispatch message."""
    out: dict[str, Any] = {"messageId": message_id}
    try:
        ref = json.loads(data)
        if isinstance(ref, dict):
            out.update({k: ref[k] for k in ("seq", "version") if k in ref})
    except ValueError:
        pass
    if "kind" in attributes:
        out["kind"] = attributes["kind"]
    if "CloudPubSubDeadLetterSourceDeliveryCount" in attributes:
        out["deliveryAttempts"] = attributes["CloudPubSubDeadLetterSourceDeliveryCount"]
    return out


def redrive_dead_letters(subscription: str, topic: str, dry_run: bool = False,
                         limit: int = 1000) -> list[dict[str, Any]]:
    """Re-publish up to `limit` messages of `subscription` to `topic` (or, `dry_run`, only list
    them); returns what was moved, in pull order."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    moved: list[dict[str, Any]] = []
    seen: set[str] = set()  # a dry run hands messages back: stop when they come round again
    try:
        while len(moved) < limit:
            try:
                resp = subscriber.pull(request={"subscription": subscription,
                                                "max_messages": min(PULL_BATCH, limit - len(moved))},
                                       timeout=PULL_TIMEOUT_S, retry=None)
            except gexc.DeadlineExceeded:
                break
            except gexc.GoogleAPICallError as e:
                raise RedriveError(f"pulling {subscription} failed: {e}") from None
            fresh = [r for r in resp.received_messages if r.message.message_id not in seen]
            if not fresh:
                if resp.received_messages:
                    _hand_back(subscriber, subscription, [r.ack_id for r in resp.received_messages])
                break
            if dry_run:
                for r in fresh:
                    seen.add(r.message.message_id)
                    moved.append(describe(r.message.message_id, r.message.data, dict(r.message.attributes)))
                _hand_back(subscriber, subscription, [r.ack_id for r in resp.received_messages])
                continue
            moved += _republish(subscriber, publisher, subscription, topic, fresh)
    finally:
        subscriber.close()
    return moved


def _republish(subscriber: Any, publisher: Any, subscription: str, topic: str,
               received: list[Any]) -> list[dict[str, Any]]:
    from google.api_core import exceptions as gexc

    futures = []
    for r in received:
        attrs = {k: v for k, v in r.message.attributes.items() if not k.startswith(_PUBSUB_ATTRIBUTES)}
        attrs[REDRIVE_ATTRIBUTE] = "1"
        futures.append((r, publisher.publish(topic, r.message.data, **attrs)))
    acks, moved, failure = [], [], None
    for r, fut in futures:
        try:
            fut.result(timeout=PUBLISH_TIMEOUT_S)
        except Exception as e:  # not acked: it stays on the dead-letter subscription
            failure = failure or e
            continue
        acks.append(r.ack_id)
        moved.append(describe(r.message.message_id, r.message.data, dict(r.message.attributes)))
    if acks:
        try:
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": acks})
        except gexc.GoogleAPICallError as e:  # published but not acked: the next run publishes them again
            raise RedriveError(f"re-published {len(acks)} message(s) to {topic} but acknowledging them on "
                               f"{subscription} failed ({e}): they will be delivered twice") from None
    if failure is not None:
        raise RedriveError(f"publishing to {topic} failed: {failure}; {len(moved)} message(s) moved before, "
                           "the rest stay on the dead-letter subscription")
    return moved


def _hand_back(subscriber: Any, subscription: str, ack_ids: list[str]) -> None:
    subscriber.modify_ack_deadline(request={"subscription": subscription, "ack_ids": ack_ids,
                                            "ack_deadline_seconds": 0})
