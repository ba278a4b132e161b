"""The gen2 Cloud Functions, all from one source archive in a bucket: `api` (every route: POST /,
the SSE streams under /poll, /health, /ready, /metrics), `sweeper`, `dispatch`; behind a load
balancer `poll` serves /poll and `api` the rest; with runtime=cloudrun a Cloud Run service
(stack/cloudrun.py) replaces `api` and only sweeper and dispatch are functions."""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pulumi
from pulumi_gcp import cloudfunctionsv2, secretmanager, serviceaccount, storage

from infra.package import build_source  # the deterministic source archive of the four functions

from .config import Settings

ENTRY_SERVICES = ("api", "poll")  # what callers reach (the rest is called by Google's services)
KEY_MOUNT = "/etc/resonate-auth"  # the auth public key secret is mounted here as public.pem


@dataclass(frozen=True)
class Shape:
    memory: str
    cpu: str
    timeout: int  # seconds
    concurrency: int
    min_instances: int
    max_instances: int
    ingress: str


STREAM_TIMEOUT_S = 3600  # the longest request Cloud Run allows a function: one SSE stream's life


def stream_shape(s: Settings, max_instances: int, ingress: str) -> Shape:
    """Whatever serves /poll: SSE streams, one request per worker for up to an hour; a gthread
    pool sized to the concurrency (THREADS), so >= 1 vCPU. min 0: an idle deployment costs
    nothing, a worker reconnects after a cold start (the SDKs retry the stream)."""
    return Shape("1Gi", "1", STREAM_TIMEOUT_S, s.poll_concurrency, 0, max_instances, ingress)


def shapes(s: Settings) -> dict[str, Shape]:
    """The functions of this stack and their shapes."""
    out: dict[str, Shape] = {}
    if s.load_balancer:
        lb_only = "ALLOW_INTERNAL_AND_GCLB"  # api/poll are reached through the load balancer only
        # POST / requests are short; 1 vCPU lets one instance serve 80 at once
        out["api"] = Shape("512Mi", "1", 60, 80, 0, s.api_max_instances, lb_only)
        out["poll"] = stream_shape(s, s.poll_max_instances, lb_only)
    elif not s.cloudrun:
        # one URL: api answers POST / and holds the /poll streams too; its own URL is the entry
        out["api"] = stream_shape(s, s.api_max_instances, "ALLOW_ALL")
    # one call a minute holding a 65 s window: timeout above it; the overlap may run 2 at once
    out["sweeper"] = Shape("512Mi", "1", 180, 4, 0, 3, "ALLOW_ALL")
    # one Pub/Sub push per outbox row: the worker push (push_timeout_s) plus a margin
    out["dispatch"] = Shape("512Mi", "1", s.push_timeout_s + 60, 40, 0, 20, "ALLOW_ALL")
    return out


def function_url(s: Settings, name: str) -> str:
    """A gen2 function's cloudfunctions.net URL, known before it exists (so the functions can be
    told each other's URLs, and their own, without a dependency cycle)."""
    return f"https://{s.region}-{s.project}.cloudfunctions.net/{name}"


def source_extras(s: Settings) -> tuple[str, ...]:
    """Optional dependency groups the bundle's requirements.txt lists: `otel` when the functions
    export metrics (otherwise the buildpack installs nothing the functions never import)."""
    return ("otel",) if s.otlp_endpoint else ()


def source_object(s: Settings, archive: Path | None, opts: pulumi.ResourceOptions
                  ) -> tuple[storage.Bucket, storage.BucketObject]:
    if archive is None:
        archive = build_source(Path(tempfile.mkdtemp(prefix="resonate-src-")), extras=source_extras(s))
    digest = hashlib.sha256(Path(archive).read_bytes()).hexdigest()[:16]
    bucket = storage.Bucket("resonate-source", location=s.region, uniform_bucket_level_access=True,
                            public_access_prevention="enforced", force_destroy=True, opts=opts)
    obj = storage.BucketObject("resonate-source-zip", bucket=bucket.name, name=f"source-{digest}.zip",
                               source=pulumi.FileAsset(str(archive)), opts=opts)
    return bucket, obj


def create(s: Settings, env: dict[str, pulumi.Input[str]], db_secret: secretmanager.Secret,
           key_secret: secretmanager.Secret | None, sas: dict[str, serviceaccount.Account],
           bucket: storage.Bucket, obj: storage.BucketObject, opts: pulumi.ResourceOptions
           ) -> dict[str, cloudfunctionsv2.Function]:
    out = {}
    for name, shape in shapes(s).items():
        secrets = [cloudfunctionsv2.FunctionServiceConfigSecretEnvironmentVariableArgs(
            key="RESONATE_STORAGE__POSTGRES__URL", project_id=s.project, secret=db_secret.secret_id,
            version="latest")]
        volumes = None
        fn_env = {**env, "THREADS": str(shape.concurrency)}
        if key_secret is not None and name in ENTRY_SERVICES:
            volumes = [cloudfunctionsv2.FunctionServiceConfigSecretVolumeArgs(
                mount_path=KEY_MOUNT, project_id=s.project, secret=key_secret.secret_id,
                versions=[cloudfunctionsv2.FunctionServiceConfigSecretVolumeVersionArgs(
                    path="public.pem", version="latest")])]
        out[name] = cloudfunctionsv2.Function(
            f"fn-{name}", name=name, location=s.region,
            description=f"resonate {name}",
            build_config=cloudfunctionsv2.FunctionBuildConfigArgs(
                runtime="python312", entry_point=name,
                source=cloudfunctionsv2.FunctionBuildConfigSourceArgs(
                    storage_source=cloudfunctionsv2.FunctionBuildConfigSourceStorageSourceArgs(
                        bucket=bucket.name, object=obj.name))),
            service_config=cloudfunctionsv2.FunctionServiceConfigArgs(
                available_memory=shape.memory, available_cpu=shape.cpu, timeout_seconds=shape.timeout,
                max_instance_request_concurrency=shape.concurrency,
                min_instance_count=shape.min_instances, max_instance_count=shape.max_instances,
                ingress_settings=shape.ingress, all_traffic_on_latest_revision=True,
                service_account_email=sas[name].email,
                environment_variables=fn_env,
                secret_environment_variables=secrets, secret_volumes=volumes),
            opts=opts)
    return out
