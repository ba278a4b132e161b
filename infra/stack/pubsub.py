"""The dispatch topic, its dead-letter topic; the push subscription comes after the dispatch
function exists (`subscribe`)."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp import organizations, pubsub

from .config import Settings


@dataclass
class Topics:
    dispatch: pubsub.Topic
    dead_letter: pubsub.Topic
    dispatch_path: str  # projects/P/topics/T (known before creation: no dependency cycle)


def create_topics(s: Settings, opts: pulumi.ResourceOptions) -> Topics:
    dispatch = pubsub.Topic("resonate-dispatch", name="resonate-dispatch", opts=opts)
    dead = pubsub.Topic("resonate-dispatch-dead", name="resonate-dispatch-dead",
                        message_retention_duration="604800s", opts=opts)
    return Topics(dispatch, dead, f"projects/{s.project}/topics/resonate-dispatch")


def subscribe(s: Settings, topics: Topics, push_endpoint: pulumi.Input[str], audience: str,
              pusher_email: pulumi.Input[str], opts: pulumi.ResourceOptions) -> pubsub.Subscription:
    ack = min(600, s.push_timeout_s + 120)  # >= the dispatch function's whole run (push + margin)
    sub = pubsub.Subscription(
        "resonate-dispatch-push",
        name="resonate-dispatch-push",
        topic=topics.dispatch.id,
        ack_deadline_seconds=ack,
        message_retention_duration="604800s",
        push_config=pubsub.SubscriptionPushConfigArgs(
            push_endpoint=push_endpoint,
            oidc_token=pubsub.SubscriptionPushConfigOidcTokenArgs(
                service_account_email=pusher_email, audience=audience),
        ),
        retry_policy=pubsub.SubscriptionRetryPolicyArgs(minimum_backoff="10s", maximum_backoff="600s"),
        dead_letter_policy=pubsub.SubscriptionDeadLetterPolicyArgs(
            dead_letter_topic=topics.dead_letter.id, max_delivery_attempts=s.dispatch_max_attempts),
        expiration_policy=pubsub.SubscriptionExpirationPolicyArgs(ttl=""),  # never expires
        opts=opts,
    )
    # dead lettering: Pub/Sub's service agent publishes to the DLQ and acks on the subscription
    number = organizations.get_project_output(project_id=s.project).number
    agent = pulumi.Output.concat("serviceAccount:service-", number, "@gcp-sa-pubsub.iam.gserviceaccount.com")
    pubsub.TopicIAMMember("dlq-agent-publisher", topic=topics.dead_letter.name, role="roles/pubsub.publisher",
                          member=agent, opts=opts)
    pubsub.SubscriptionIAMMember("dlq-agent-subscriber", subscription=sub.name, role="roles/pubsub.subscriber",
                                 member=agent, opts=opts)
    # a subscription on the dead-letter topic keeps dead messages readable (pull) for 7 days
    pubsub.Subscription("resonate-dispatch-dead-pull", name="resonate-dispatch-dead-pull",
                        topic=topics.dead_letter.id, message_retention_duration="604800s",
                        expiration_policy=pubsub.SubscriptionExpirationPolicyArgs(ttl=""), opts=opts)
    return sub
