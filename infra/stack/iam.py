"""One service account per function (plus the scheduler's and the Pub/Sub pusher's) and the
exact grants each needs. Every grant is made here, so the test can check the whole list.
`resonate-poll` exists only in the load-balancer shape (the only one with a poll function);
with runtime=cloudrun the Cloud Run service runs as `resonate-api`."""
from __future__ import annotations

import pulumi
from pulumi_gcp import cloudrunv2, projects, pubsub, secretmanager, serviceaccount

from .config import Settings

ACCOUNTS = {  # account id -> display name
    "api": "resonate api (function or Cloud Run service)",
    "poll": "resonate poll function",
    "sweeper": "resonate sweeper function",
    "dispatch": "resonate dispatch function",
    "scheduler": "resonate Cloud Scheduler caller of sweeper",
    "pusher": "resonate Pub/Sub push identity (calls dispatch)",
}
DB_USERS = ("api", "poll", "sweeper", "dispatch")  # cloudsql.client + the DB URL secret
PUBLISHERS = ("api", "sweeper")  # publish push rows to the dispatch topic


def entry_services(s: Settings) -> tuple[str, ...]:
    """What callers invoke (and what reads the auth key): api, plus poll behind a load balancer."""
    return ("api", "poll") if s.load_balancer else ("api",)


def accounts(s: Settings, opts: pulumi.ResourceOptions) -> dict[str, serviceaccount.Account]:
    return {k: serviceaccount.Account(f"sa-{k}", account_id=f"resonate-{k}", display_name=v, opts=opts)
            for k, v in ACCOUNTS.items() if k != "poll" or s.load_balancer}


def sa_member(sa: serviceaccount.Account) -> pulumi.Output[str]:
    return sa.email.apply(lambda e: f"serviceAccount:{e}")


def grant_data(s: Settings, sas: dict[str, serviceaccount.Account], db_secret: secretmanager.Secret,
               topic: pubsub.Topic, key_secret: secretmanager.Secret | None,
               opts: pulumi.ResourceOptions) -> None:
    for k in (k for k in DB_USERS if k in sas):
        projects.IAMMember(f"{k}-cloudsql-client", project=s.project, role="roles/cloudsql.client",
                           member=sa_member(sas[k]), opts=opts)
        secretmanager.SecretIamMember(f"{k}-db-url-accessor", secret_id=db_secret.id,
                                      role="roles/secretmanager.secretAccessor", member=sa_member(sas[k]), opts=opts)
    if key_secret is not None:
        for k in entry_services(s):
            secretmanager.SecretIamMember(f"{k}-auth-key-accessor", secret_id=key_secret.id,
                                          role="roles/secretmanager.secretAccessor", member=sa_member(sas[k]),
                                          opts=opts)
    for k in PUBLISHERS:
        pubsub.TopicIAMMember(f"{k}-dispatch-publisher", topic=topic.name, role="roles/pubsub.publisher",
                              member=sa_member(sas[k]), opts=opts)


def invoker(name: str, s: Settings, service: pulumi.Input[str], member: pulumi.Input[str],
            opts: pulumi.ResourceOptions) -> cloudrunv2.ServiceIamMember:
    """roles/run.invoker on a Cloud Run service: a gen2 function's has the function's name."""
    return cloudrunv2.ServiceIamMember(name, project=s.project, location=s.region, name=service,
                                       role="roles/run.invoker", member=member, opts=opts)


def grant_invokers(s: Settings, sas: dict[str, serviceaccount.Account], services: dict[str, pulumi.Input[str]],
                   opts: pulumi.ResourceOptions) -> None:
    invoker("scheduler-invokes-sweeper", s, services["sweeper"], sa_member(sas["scheduler"]), opts)
    invoker("api-invokes-sweeper", s, services["sweeper"], sa_member(sas["api"]), opts)  # the waker
    invoker("pusher-invokes-dispatch", s, services["dispatch"], sa_member(sas["pusher"]), opts)
    # public: anyone (Resonate auth, if on, is the only check); private: Cloud Run lets only
    # these members' Google identities in (X-Serverless-Authorization or Authorization)
    members = ("allUsers",) if s.public else s.invokers
    for fn in entry_services(s):
        if fn not in services:  # runtime=cloudrun before its first image: no service yet
            continue
        for i, m in enumerate(members):
            invoker(f"{fn}-invoker-{i}", s, services[fn], m, opts)
