"""The Resonate stack: `deploy()` declares every resource and returns the stack outputs.

Three shapes (docs/deploy-gcp.md): the default, one `api` function whose own URL is the base URL;
the load balancer (`loadBalancer=true` or `domain`): api + poll behind one reserved IP; and
`runtime=cloudrun`: the container image as a Cloud Run service in place of the api function.

Order (no cycles): APIs -> service accounts, topics, database, reserved IP (LB shape) -> functions
and the Cloud Run service (told the base URL and the other functions' URLs in their deterministic
forms, cloudfunctions.net / run.app) -> load balancer, push subscription, scheduler job, invoker
grants.
"""
from __future__ import annotations

import json
from pathlib import Path

import pulumi
from pulumi_gcp import compute, projects, secretmanager

from . import cloudrun, config, database, functions, iam, pubsub, routing, scheduler

APIS = ("run.googleapis.com", "cloudfunctions.googleapis.com", "cloudbuild.googleapis.com",
        "artifactregistry.googleapis.com", "sqladmin.googleapis.com", "secretmanager.googleapis.com",
        "pubsub.googleapis.com", "cloudscheduler.googleapis.com", "compute.googleapis.com",
        "iam.googleapis.com")


def environment(s: config.Settings, base_url: pulumi.Input[str], connection_name: pulumi.Input[str],
                topic_path: str, pusher_email: pulumi.Input[str]) -> dict[str, pulumi.Input[str]]:
    """The functions' plain environment: nothing secret (the DB URL is a secret env var)."""
    env: dict[str, pulumi.Input[str]] = {
        **s.project_env,
        "RESONATE_LOG_FORMAT": "json",
        "RESONATE_STORAGE__TYPE": "postgres",
        "RESONATE_STORAGE__POSTGRES__INSTANCE": connection_name,
        "RESONATE_STORAGE__POSTGRES__IP_TYPE": "public",  # no authorized networks: connector only
        "RESONATE_STORAGE__POSTGRES__POOL_SIZE": "5",
        "RESONATE_SERVER__URL": base_url,
        "RESONATE_SWEEPER__URL": functions.function_url(s, "sweeper"),
        # the waker calls the sweeper with an ID token (audience = that URL): sweeper is private
        "RESONATE_SWEEPER__AUTH": "gcp",
        "RESONATE_DISPATCH__TOPIC": topic_path,
        "RESONATE_DISPATCH__AUDIENCE": functions.function_url(s, "dispatch"),
        "RESONATE_DISPATCH__SERVICE_ACCOUNTS": pulumi.Output.from_input(pusher_email).apply(lambda e: json.dumps([e])),
        "RESONATE_DISPATCH__MAX_ATTEMPTS": str(s.dispatch_max_attempts),
        "RESONATE_TRANSPORTS__HTTP_PUSH__REQUEST_TIMEOUT": str(s.push_timeout_s * 1000),
        # never push to private, loopback or metadata addresses: a client chooses the push URL,
        # and the functions run inside Google's network (the metadata server hands out tokens)
        "RESONATE_TRANSPORTS__HTTP_PUSH__DENY_PRIVATE": "true",
        # finished workflows are deleted this long after they settled (docs/operations.md#retention)
        "RESONATE_RETENTION__SETTLED_AFTER": str(s.retention_days * 86_400_000),
    }
    if s.auth_publickey:
        env["RESONATE_AUTH__PUBLICKEY"] = f"{functions.KEY_MOUNT}/public.pem"
    if s.auth_iss:
        env["RESONATE_AUTH__ISS"] = s.auth_iss
    if s.auth_aud:
        env["RESONATE_AUTH__AUD"] = s.auth_aud
    if s.auth_google_service_accounts:
        env["RESONATE_AUTH__GOOGLE_AUDIENCE"] = base_url
        env["RESONATE_AUTH__GOOGLE_SERVICE_ACCOUNTS"] = json.dumps(list(s.auth_google_service_accounts))
    if s.otlp_endpoint:  # the metrics export (docs/operations.md#metrics-export-otlp)
        env[config.OTLP_ENV] = s.otlp_endpoint
    env.update(s.extra_env)
    return env


def base_url(s: config.Settings, ip: compute.GlobalAddress | None) -> pulumi.Output[str]:
    """Where callers (and the SDKs) reach the server, known before anything serves it."""
    if ip is not None:  # the load balancer: https://domain, else http://IP
        return routing.base_url(s, ip)
    if s.cloudrun:
        return cloudrun.service_url(s)
    return pulumi.Output.from_input(functions.function_url(s, "api"))


def deploy(source_archive: Path | None = None) -> dict[str, pulumi.Output]:
    s = config.load()
    config.check(s)
    apis = [projects.Service(f"api-{a.split('.')[0]}", project=s.project, service=a, disable_on_destroy=False)
            for a in APIS]
    opts = pulumi.ResourceOptions(depends_on=apis)

    sas = iam.accounts(s, opts)
    topics = pubsub.create_topics(s, opts)
    db = database.create(s, opts)
    key_secret = None
    if s.auth_publickey:  # a file on the instances: a secret mounted as a volume (api, poll)
        key_secret = secretmanager.Secret(
            "resonate-auth-key", secret_id="resonate-auth-publickey",
            replication=secretmanager.SecretReplicationArgs(auto=secretmanager.SecretReplicationAutoArgs()),
            opts=opts)
        key_version = secretmanager.SecretVersion("resonate-auth-key-v", secret=key_secret.id,
                                                  secret_data=s.auth_publickey, opts=opts)
    iam.grant_data(s, sas, db.url_secret, topics.dispatch, key_secret, opts)
    ip = routing.address(opts) if s.load_balancer else None
    base = base_url(s, ip)

    bucket, obj = functions.source_object(s, source_archive, opts)
    env = environment(s, base, db.connection_name, topics.dispatch_path, sas["pusher"].email)
    fn_opts = pulumi.ResourceOptions(depends_on=[*apis, db.url_version] + ([key_version] if key_secret else []))
    fns = functions.create(s, env, db.url_secret, key_secret, sas, bucket, obj, fn_opts)
    # the Cloud Run service of a gen2 function has the function's name
    services: dict[str, pulumi.Input[str]] = {k: f.name for k, f in fns.items()}
    out: dict[str, pulumi.Output] = {"baseUrl": base}
    if s.cloudrun:
        repo = cloudrun.repository(s, opts)
        out["imageRepository"] = repo.name.apply(lambda _: cloudrun.image_path(s))
        if s.image:
            svc = cloudrun.create(s, env, db.url_secret, key_secret, sas["api"], fn_opts)
            services["api"] = svc.name
            out["serviceUrl"] = svc.uri
        else:
            pulumi.log.warn("runtime=cloudrun without image: created the Artifact Registry repository only; push "
                            f"the image to {cloudrun.image_path(s)} (gcloud builds submit --tag "
                            f"{cloudrun.image_path(s)}), pulumi config set image {cloudrun.image_path(s)}:TAG, "
                            "and run pulumi up again")

    iam.grant_invokers(s, sas, services, opts)
    if ip is not None:
        lb = routing.create(s, ip, services, opts)
        url_map = lb["url_map"]
        assert isinstance(url_map, compute.URLMap)
        out["ipAddress"] = ip.address
        out["urlMap"] = url_map.name
    sub = pubsub.subscribe(s, topics, fns["dispatch"].url, functions.function_url(s, "dispatch"),
                           sas["pusher"].email, opts)
    job = scheduler.create(s, fns["sweeper"].url, sas["scheduler"].email, opts)
    return {
        **out,
        "sweeperUrl": fns["sweeper"].url,
        "dispatchUrl": fns["dispatch"].url,
        "dispatchTopic": topics.dispatch.name,
        "deadLetterTopic": topics.dead_letter.name,
        "pushSubscription": sub.name,
        "schedulerJob": job.name,
        "databaseConnectionName": db.connection_name,
        "databaseUrlSecret": db.url_secret.secret_id,
        "sourceBucket": bucket.name,
    }
