"""Stack settings (`pulumi config set ...`) with their defaults, read once."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi


@dataclass(frozen=True)
class Settings:
    project: str
    region: str = "us-central1"
    db_tier: str = "db-f1-micro"
    db_version: str = "POSTGRES_15"
    db_name: str = "resonate"
    db_user: str = "resonate"
    deletion_protection: bool = True
    public: bool = False  # allUsers may invoke the entry services (api, and poll behind a load balancer)
    invokers: tuple[str, ...] = ()  # members allowed to invoke them when not public
    domain: str | None = None  # managed certificate + HTTPS on a load balancer (implies load_balancer)
    load_balancer_requested: bool = False  # `loadBalancer=true`: the LB shape even without a domain
    runtime: str = "functions"  # functions (gen2 api function) | cloudrun (a Cloud Run service from `image`)
    image: str | None = None  # runtime=cloudrun: the full image reference to run
    auth_publickey: str | None = None  # PEM text of the JWT verification key (mounted as a file)
    auth_iss: str | None = None
    auth_aud: str | None = None
    auth_google_service_accounts: tuple[str, ...] = ()  # Google identities with full access
    dispatch_max_attempts: int = 5  # = RESONATE_DISPATCH__MAX_ATTEMPTS = max_delivery_attempts
    push_timeout_s: int = 180  # transports.http_push.request_timeout (the server's default)
    poll_concurrency: int = 1000  # SSE streams per instance of whatever serves /poll
    poll_max_instances: int = 10
    api_max_instances: int = 20
    retention_days: int = 30  # retention.settled_after: finished workflows are deleted after this; 0: never
    # OTLP/HTTP receiver of the functions' metrics export (RESONATE_OBSERVABILITY__OTLP_ENDPOINT; the
    # bundle then lists the `otel` extra): e.g. an OpenTelemetry Collector with the googlecloud exporter
    otlp_endpoint: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # more RESONATE_* (non-secret) settings
    allow_insecure: bool = False  # deploy even when `insecure()` names a problem (tests, demos)

    @property
    def project_env(self) -> dict[str, str]:
        return {"GOOGLE_CLOUD_PROJECT": self.project}

    @property
    def load_balancer(self) -> bool:
        """The load-balancer shape: `loadBalancer=true`, or implied by `domain`."""
        return self.load_balancer_requested or bool(self.domain)

    @property
    def cloudrun(self) -> bool:
        return self.runtime == "cloudrun"

    @property
    def resonate_auth(self) -> bool:
        """Resonate's own inbound auth is on (a JWT key, or Google identities with full access)."""
        return bool(self.auth_publickey or self.auth_google_service_accounts)


def insecure(s: Settings) -> list[str]:
    """What makes this stack unsafe to expose: each entry names the settings and the risk."""
    found = []
    if s.public and not s.resonate_auth:
        found.append("public=true without authPublickey or authGoogleServiceAccounts: anyone on the internet "
                     "could create, settle and read every promise (set an auth key, or public=false)")
    if s.resonate_auth and s.load_balancer and not s.domain:  # the default shape is HTTPS (its own URL)
        found.append("auth is on (authPublickey or authGoogleServiceAccounts) with loadBalancer=true but domain "
                     "is not set: tokens would travel over plain HTTP on port 80 (set domain for a managed "
                     "certificate and HTTPS, or drop loadBalancer to use the HTTPS function URL)")
    return found


OTLP_ENV = "RESONATE_OBSERVABILITY__OTLP_ENDPOINT"  # set on the functions when otlpEndpoint is
RUNTIMES = ("functions", "cloudrun")


def invalid(s: Settings) -> list[str]:
    """Settings that cannot be deployed at all (no allowInsecure for these)."""
    found = []
    if s.retention_days < 0:
        found.append(f"retentionDays={s.retention_days}: expected a number of days, 0 to keep everything")
    if s.runtime not in RUNTIMES:
        found.append(f"runtime={s.runtime!r}: expected 'functions' or 'cloudrun'")
    if s.image and not s.cloudrun:
        found.append("image is set but runtime is not cloudrun (pulumi config set runtime cloudrun)")
    if s.otlp_endpoint:
        from shared.otlp import metrics_url  # standard library only

        try:
            metrics_url(s.otlp_endpoint)
        except ValueError as e:
            found.append(f"otlpEndpoint: {e}")
    if s.cloudrun and s.load_balancer:
        found.append("runtime=cloudrun serves on its own run.app URL: loadBalancer and domain are for "
                     "runtime=functions")
    return found


def check(s: Settings) -> None:
    """Fail `pulumi up` (a RunError: the message, no traceback) on an insecure stack unless
    `allowInsecure=true` says it is meant."""
    bad = invalid(s)
    if bad:
        raise pulumi.RunError("invalid stack settings: " + "; ".join(bad))
    found = insecure(s)
    if found and not s.allow_insecure:
        raise pulumi.RunError("refusing to deploy an insecure stack: " + "; ".join(found)
                              + ". Set allowInsecure=true (pulumi config set allowInsecure true) to deploy anyway.")
    for problem in found:
        pulumi.log.warn(f"allowInsecure=true: deploying anyway: {problem}")


def _list(cfg: pulumi.Config, key: str) -> tuple[str, ...]:
    raw = cfg.get(key)
    if not raw:
        return ()
    try:
        val = json.loads(raw)
    except ValueError:
        val = raw.split(",")
    return tuple(str(v).strip() for v in (val if isinstance(val, list) else [val]) if str(v).strip())


def load() -> Settings:
    gcp = pulumi.Config("gcp")
    cfg = pulumi.Config()
    project = cfg.get("project") or gcp.require("project")
    retention = cfg.get_int("retentionDays")  # 0 is a choice (keep everything), not "unset"
    return Settings(
        project=project,
        region=cfg.get("region") or gcp.get("region") or "us-central1",
        db_tier=cfg.get("dbTier") or "db-f1-micro",
        db_version=cfg.get("dbVersion") or "POSTGRES_15",
        deletion_protection=cfg.get_bool("deletionProtection") is not False,
        public=bool(cfg.get_bool("public")),
        invokers=_list(cfg, "invokers"),
        domain=cfg.get("domain") or None,
        load_balancer_requested=bool(cfg.get_bool("loadBalancer")),
        runtime=(cfg.get("runtime") or "functions").strip().lower(),
        image=cfg.get("image") or None,
        auth_publickey=cfg.get("authPublickey") or None,
        auth_iss=cfg.get("authIss") or None,
        auth_aud=cfg.get("authAud") or None,
        auth_google_service_accounts=_list(cfg, "authGoogleServiceAccounts"),
        dispatch_max_attempts=cfg.get_int("dispatchMaxAttempts") or 5,
        poll_concurrency=cfg.get_int("pollConcurrency") or 1000,
        poll_max_instances=cfg.get_int("pollMaxInstances") or 10,
        api_max_instances=cfg.get_int("apiMaxInstances") or 20,
        retention_days=30 if retention is None else retention,
        otlp_endpoint=(cfg.get("otlpEndpoint") or "").strip() or None,
        extra_env=dict(cfg.get_object("env") or {}),
        allow_insecure=bool(cfg.get_bool("allowInsecure")),
    )
