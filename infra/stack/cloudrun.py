"""runtime=cloudrun: the repository's container image as one Cloud Run service in place of the
`api` function (same routes, same environment, same service account), plus the Artifact Registry
repository the image is pushed to. The sweeper and dispatch stay functions (Cloud Scheduler and
the Pub/Sub push subscription call them as in the default shape).

The image's default command is the local server (`resonate serve`: its own timer loop, SQLite by
default); here the container runs the `api` entry point of functions/main.py under
functions-framework instead, exactly what the function runs: no background loops (the sweeper
does them), Postgres through the Cloud SQL connector. The command finds functions/main.py where
the image installed it, so it does not depend on the image's layout.
"""
from __future__ import annotations

import pulumi
from pulumi_gcp import artifactregistry, cloudrunv2, organizations, secretmanager, serviceaccount

from .config import OTLP_ENV, Settings
from .functions import KEY_MOUNT, STREAM_TIMEOUT_S

SERVICE = "resonate"  # the Cloud Run service (URL https://resonate-PROJECT_NUMBER.REGION.run.app)
REPOSITORY = "resonate"  # Artifact Registry: REGION-docker.pkg.dev/PROJECT/resonate/IMAGE
PORT = 8080  # Cloud Run's PORT; functions-framework listens on $PORT
ENTRY = ("exec functions-framework --target=api --source=\"$(python -c "
         "'import importlib.util as u; print(u.find_spec(\"functions.main\").origin)')\"")


def service_url(s: Settings) -> pulumi.Output[str]:
    """The deterministic run.app URL (`https://SERVICE-PROJECT_NUMBER.REGION.run.app`), known
    before the service exists, so the service can be told its own URL without a cycle."""
    number = organizations.get_project_output(project_id=s.project).number
    return pulumi.Output.concat("https://", SERVICE, "-", number, ".", s.region, ".run.app")


def repository(s: Settings, opts: pulumi.ResourceOptions) -> artifactregistry.Repository:
    return artifactregistry.Repository(
        "resonate-images", repository_id=REPOSITORY, location=s.region, format="DOCKER",
        description="resonate server images (runtime=cloudrun)", opts=opts)


def image_path(s: Settings) -> str:
    return f"{s.region}-docker.pkg.dev/{s.project}/{REPOSITORY}/server"


def create(s: Settings, env: dict[str, pulumi.Input[str]], db_secret: secretmanager.Secret,
           key_secret: secretmanager.Secret | None, sa: serviceaccount.Account,
           opts: pulumi.ResourceOptions) -> cloudrunv2.Service:
    concurrency = s.poll_concurrency  # it holds the SSE streams too
    # the stock image installs no extras (Dockerfile): the OTLP export stays with the functions,
    # the service keeps GET /metrics (an image with the `otel` extra can get it through `env`)
    envs = [cloudrunv2.ServiceTemplateContainerEnvArgs(name=k, value=v)
            for k, v in {**env, "THREADS": str(concurrency)}.items()
            if not (k == OTLP_ENV and k not in s.extra_env)]
    envs.append(cloudrunv2.ServiceTemplateContainerEnvArgs(
        name="RESONATE_STORAGE__POSTGRES__URL",
        value_source=cloudrunv2.ServiceTemplateContainerEnvValueSourceArgs(
            secret_key_ref=cloudrunv2.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs(
                secret=db_secret.secret_id, version="latest"))))
    volumes, mounts = None, None
    if key_secret is not None:
        volumes = [cloudrunv2.ServiceTemplateVolumeArgs(
            name="auth-key", secret=cloudrunv2.ServiceTemplateVolumeSecretArgs(
                secret=key_secret.secret_id,
                items=[cloudrunv2.ServiceTemplateVolumeSecretItemArgs(path="public.pem", version="latest")]))]
        mounts = [cloudrunv2.ServiceTemplateContainerVolumeMountArgs(name="auth-key", mount_path=KEY_MOUNT)]
    return cloudrunv2.Service(
        "resonate-service", name=SERVICE, location=s.region, project=s.project,
        description="resonate api (POST /, /poll streams, /health, /ready, /metrics)",
        ingress="INGRESS_TRAFFIC_ALL",  # its run.app URL is the entry; IAM decides who may call
        deletion_protection=False,  # stateless: everything lives in the database
        template=cloudrunv2.ServiceTemplateArgs(
            service_account=sa.email,
            timeout=f"{STREAM_TIMEOUT_S}s",
            max_instance_request_concurrency=concurrency,
            scaling=cloudrunv2.ServiceTemplateScalingArgs(min_instance_count=0,
                                                          max_instance_count=s.api_max_instances),
            containers=[cloudrunv2.ServiceTemplateContainerArgs(
                image=s.image or "", commands=["/bin/sh", "-c"], args=[ENTRY],
                ports=cloudrunv2.ServiceTemplateContainerPortsArgs(container_port=PORT),
                envs=envs, volume_mounts=mounts,
                resources=cloudrunv2.ServiceTemplateContainerResourcesArgs(
                    limits={"cpu": "1", "memory": "1Gi"},
                    cpu_idle=True))],  # request-based billing: no CPU (and no charge) between requests
            volumes=volumes),
        opts=opts)
