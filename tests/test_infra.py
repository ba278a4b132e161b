"""The Pulumi program (infra/) under Pulumi's unit-test mocks: no CLI, no cloud.

Mocks are set before the program is imported; the mock records every registered resource with
its (camelCase) inputs and fills the computed outputs (email, url, uri, connectionName, address).
`deploy_with(config)` sets the stack config, runs the program once and waits (a
`pulumi.runtime.test` function returns only when every registration finished), so a
`Deployment` holds the complete list of one stack's resources; each stack shape is deployed once
per session and shared by the tests that read it.

Shapes (docs/deploy-gcp.md): DEFAULT (one `api` function, its own URL the base URL, no load
balancer), LB (`domain` implies the load balancer: api + poll behind one IP), CLOUDRUN (the
container image as a Cloud Run service in place of the api function).
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import pytest

PROJECT, REGION = "proj-1", "europe-west1"
NUMBER = "123456789"
PK = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"
INVOKER = "group:workers@example.com"
PASSWORD = "Sup3rSecretPassw0rdFromMocks0123"
DOMAIN = "resonate.example.com"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/resonate/server:v1"
RUN_URL = f"https://resonate-{NUMBER}.{REGION}.run.app"  # the Cloud Run service's deterministic URL

FUNCTION = "gcp:cloudfunctionsv2/function:Function"
RUN_SERVICE = "gcp:cloudrunv2/service:Service"
INVOKER_GRANT = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
LB_TYPES = ("gcp:compute/globalAddress:GlobalAddress",
            "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup",
            "gcp:compute/backendService:BackendService", "gcp:compute/uRLMap:URLMap",
            "gcp:compute/targetHttpProxy:TargetHttpProxy", "gcp:compute/targetHttpsProxy:TargetHttpsProxy",
            "gcp:compute/globalForwardingRule:GlobalForwardingRule",
            "gcp:compute/managedSslCertificate:ManagedSslCertificate")


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[tuple[str, str, dict]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        t, inputs = args.typ, dict(args.inputs)
        self.resources.append((t, args.name, inputs))
        out = dict(inputs)
        name = inputs.get("name", args.name)
        if t == "gcp:serviceaccount/account:Account":
            out["email"] = f"{inputs['accountId']}@{PROJECT}.iam.gserviceaccount.com"
        elif t == "gcp:sql/databaseInstance:DatabaseInstance":
            out["name"] = "resonate-db-abc"
            out["connectionName"] = f"{PROJECT}:{REGION}:resonate-db-abc"
        elif t == FUNCTION:
            out["url"] = f"https://{REGION}-{PROJECT}.cloudfunctions.net/{name}"
        elif t == RUN_SERVICE:
            out["uri"] = f"https://{name}-{NUMBER}.{REGION}.run.app"
        elif t == "gcp:compute/globalAddress:GlobalAddress":
            out["address"] = "203.0.113.7"
        elif t == "random:index/randomPassword:RandomPassword":
            out["result"] = PASSWORD
        elif t == "gcp:secretmanager/secret:Secret":
            out["name"] = f"projects/{NUMBER}/secrets/{inputs['secretId']}"
        elif t == "gcp:artifactregistry/repository:Repository":
            out["name"] = inputs["repositoryId"]
        return f"{args.name}-id", out

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": NUMBER, "projectId": PROJECT, "name": PROJECT}
        return {}


MOCKS = Mocks()
pulumi.runtime.set_mocks(MOCKS, project="resonate-gcp", stack="test", preview=False)

# ------------------------------------------------------------------------------ running the program

AUTH = {"authPublickey": PK, "authIss": "https://issuer.example", "authAud": "resonate"}
PRIVATE = {"invokers": json.dumps([INVOKER])}
DEFAULT = {**PRIVATE, **AUTH}  # no load balancer: the api function's URL, HTTPS
LB = {**DEFAULT, "domain": DOMAIN}  # domain implies loadBalancer
CLOUDRUN = {**DEFAULT, "runtime": "cloudrun", "image": IMAGE}
SHAPES = {"default": DEFAULT, "lb": LB, "cloudrun": CLOUDRUN}


@dataclass(frozen=True)
class Deployment:
    outputs: dict[str, Any]
    resources: tuple[tuple[str, str, dict], ...]

    def of_type(self, t: str) -> list[tuple[str, dict]]:
        return [(n, i) for typ, n, i in self.resources if typ == t]

    def one(self, t: str, name: str) -> dict:
        found = [i for n, i in self.of_type(t) if n == name]
        assert len(found) == 1, (t, name, [n for n, _ in self.of_type(t)])
        return found[0]

    def functions(self) -> dict[str, dict]:
        return {i["name"]: i for _, i in self.of_type(FUNCTION)}

    def service(self) -> dict:
        (_, svc), = self.of_type(RUN_SERVICE)
        return svc

    def entry_env(self) -> dict[str, str]:
        """The plain environment of what serves api (the function, or the Cloud Run service)."""
        if self.of_type(RUN_SERVICE):
            return {e["name"]: e["value"] for e in self.service()["template"]["containers"][0]["envs"]
                    if "value" in e}
        return dict(self.functions()["api"]["serviceConfig"]["environmentVariables"])

    def invokers(self, member: str) -> set[str]:
        """The Cloud Run services `member` may invoke."""
        return {i["name"] for _, i in self.of_type(INVOKER_GRANT) if i["member"] == member}

    def grants(self) -> dict[str, set[tuple[str, str]]]:
        """member -> {(role, on what)} over every IAM binding of the program."""
        out: dict[str, set[tuple[str, str]]] = {}
        for t, _, i in self.resources:
            if t == "gcp:projects/iAMMember:IAMMember":
                target = f"project:{i['project']}"
            elif t == "gcp:secretmanager/secretIamMember:SecretIamMember":
                target = f"secret:{i['secretId']}"
            elif t == "gcp:pubsub/topicIAMMember:TopicIAMMember":
                target = f"topic:{i['topic']}"
            elif t == "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember":
                target = f"subscription:{i['subscription']}"
            elif t == INVOKER_GRANT:
                target = f"run:{i['name']}"
            elif ("iam" in t.lower() and "Member" in t) or "Binding" in t or "Policy" in t.split(":")[-1]:
                raise AssertionError(f"unexpected IAM resource {t}")
            else:
                continue
            out.setdefault(i["member"], set()).add((i["role"], target))
        return out


def _archive() -> Path:
    import tempfile

    archive = Path(tempfile.mkdtemp(prefix="resonate-test-src-")) / "source.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("main.py", "# stub\n")
    return archive


def run_program(config: dict[str, str]) -> Deployment:
    """The program under these `resonate-gcp:*` settings (plus the project and region)."""
    from infra.stack import deploy  # after set_mocks

    pulumi.runtime.set_all_config({"gcp:project": PROJECT, "gcp:region": REGION,
                                   **{f"resonate-gcp:{k}": v for k, v in config.items()}})
    MOCKS.resources.clear()
    outputs = deploy(source_archive=_archive())
    resolved: dict = {}

    @pulumi.runtime.test
    def settle():
        return pulumi.Output.all(**outputs).apply(resolved.update)

    settle()
    return Deployment(resolved, tuple(MOCKS.resources))


@cache
def _deploy_cached(items: tuple[tuple[str, str], ...]) -> Deployment:
    return run_program(dict(items))


def deploy_with(config: dict[str, str]) -> Deployment:
    """Each distinct config is deployed once per session."""
    return _deploy_cached(tuple(sorted(config.items())))


def refused(config: dict[str, str]) -> str:
    """The message of a stack the program refuses to deploy; nothing may have been registered."""
    with pytest.raises(pulumi.RunError) as e:
        run_program(config)
    assert not MOCKS.resources, "nothing may be deployed"
    return str(e.value)


@pytest.fixture(params=list(SHAPES))
def shape(request) -> str:
    return request.param


@pytest.fixture
def stack(shape) -> Deployment:
    return deploy_with(SHAPES[shape])


@pytest.fixture
def default() -> Deployment:
    return deploy_with(DEFAULT)


@pytest.fixture
def lb() -> Deployment:
    return deploy_with(LB)


@pytest.fixture
def cloudrun() -> Deployment:
    return deploy_with(CLOUDRUN)


BASE_URLS = {"default": f"https://{REGION}-{PROJECT}.cloudfunctions.net/api", "lb": f"https://{DOMAIN}",
             "cloudrun": RUN_URL}
FUNCTIONS = {"default": {"api", "sweeper", "dispatch"}, "lb": {"api", "poll", "sweeper", "dispatch"},
             "cloudrun": {"sweeper", "dispatch"}}
ENTRY = {"default": "api", "lb": "api", "cloudrun": "resonate"}  # the Cloud Run service callers invoke

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # pulumi's marker of a secret value in mock inputs


def plain(v):
    return v["value"] if isinstance(v, dict) and SECRET_SIG in v else v


def url(fn: str) -> str:
    return f"https://{REGION}-{PROJECT}.cloudfunctions.net/{fn}"


def sa(k: str) -> str:
    return f"serviceAccount:resonate-{k}@{PROJECT}.iam.gserviceaccount.com"


# ------------------------------------------------------------------------------ every shape

def test_outputs(stack, shape):
    assert stack.outputs["baseUrl"] == BASE_URLS[shape]
    assert stack.outputs["sweeperUrl"] == url("sweeper")
    assert stack.outputs["dispatchTopic"] == "resonate-dispatch"
    assert stack.outputs["deadLetterTopic"] == "resonate-dispatch-dead"
    assert stack.outputs["databaseConnectionName"] == f"{PROJECT}:{REGION}:resonate-db-abc"
    assert ("urlMap" in stack.outputs) == (shape == "lb")


def test_database_private_protected_backed_up(stack):
    (_, db), = stack.of_type("gcp:sql/databaseInstance:DatabaseInstance")
    assert db["deletionProtection"] is True
    st = db["settings"]
    assert st["deletionProtectionEnabled"] is True
    assert st["tier"] == "db-f1-micro" and db["region"] == REGION
    assert st["backupConfiguration"]["enabled"] is True
    assert st["backupConfiguration"]["pointInTimeRecoveryEnabled"] is True
    ipc = st["ipConfiguration"]
    assert not ipc.get("authorizedNetworks")  # only the connector (IAM + mTLS) gets in
    assert ipc["sslMode"] == "ENCRYPTED_ONLY"
    assert stack.one("gcp:sql/database:Database", "resonate-database")["name"] == "resonate"
    user = stack.one("gcp:sql/user:User", "resonate-db-user")
    assert user["name"] == "resonate" and plain(user["password"]) == PASSWORD
    version = stack.one("gcp:secretmanager/secretVersion:SecretVersion", "resonate-db-url-v")
    assert SECRET_SIG in version["secretData"]  # marked secret: encrypted in the state, masked in logs
    assert plain(version["secretData"]) == f"postgres://resonate:{PASSWORD}@/resonate"


def test_functions_shapes(stack, shape):
    fns = stack.functions()
    assert set(fns) == FUNCTIONS[shape]
    objects = stack.of_type("gcp:storage/bucketObject:BucketObject")
    assert len(objects) == 1
    for name, f in fns.items():
        b, sc = f["buildConfig"], f["serviceConfig"]
        assert b["entryPoint"] == name and b["runtime"] == "python312"
        assert b["source"]["storageSource"]["object"] == objects[0][1]["name"]
        assert sc["minInstanceCount"] == 0, name  # nothing runs (or costs) when idle
        assert sc["serviceAccountEmail"] == f"resonate-{name}@{PROJECT}.iam.gserviceaccount.com"
        assert sc["environmentVariables"]["THREADS"] == str(int(sc["maxInstanceRequestConcurrency"]))
        assert float(sc["availableCpu"]) >= 1
    assert fns["sweeper"]["serviceConfig"]["timeoutSeconds"] > 65
    assert fns["dispatch"]["serviceConfig"]["timeoutSeconds"] > 180  # the push timeout
    for fn in ("sweeper", "dispatch"):  # called by Scheduler / Pub/Sub with OIDC, IAM-checked
        assert fns[fn]["serviceConfig"]["ingressSettings"] == "ALLOW_ALL"
    streams = "poll" if shape == "lb" else "api"  # whatever holds the SSE streams
    if streams in fns:
        sc = fns[streams]["serviceConfig"]
        assert sc["timeoutSeconds"] == 3600 and sc["maxInstanceRequestConcurrency"] == 1000
        assert sc["availableMemory"] == "1Gi"


def test_entry_environment(stack, shape):
    """Every function and the Cloud Run service: the same plain environment, nothing secret in it,
    the base URL as RESONATE_SERVER__URL, the database URL as a secret reference."""
    envs = {n: dict(f["serviceConfig"]["environmentVariables"]) for n, f in stack.functions().items()}
    secret_refs = {n: {s["key"]: (s["secret"], s["version"]) for s in f["serviceConfig"]["secretEnvironmentVariables"]}
                   for n, f in stack.functions().items()}
    if shape == "cloudrun":
        envs["resonate"] = stack.entry_env()
        secret_refs["resonate"] = {e["name"]: (e["valueSource"]["secretKeyRef"]["secret"],
                                               e["valueSource"]["secretKeyRef"]["version"])
                                   for e in stack.service()["template"]["containers"][0]["envs"] if "valueSource" in e}
    for name, env in envs.items():
        assert not any(PASSWORD in str(v) for v in env.values()), name
        assert PK not in env.values()
        assert "RESONATE_STORAGE__POSTGRES__URL" not in env
        assert secret_refs[name]["RESONATE_STORAGE__POSTGRES__URL"] == ("resonate-db-url", "latest"), name
        assert env["RESONATE_STORAGE__TYPE"] == "postgres"
        assert env["RESONATE_STORAGE__POSTGRES__INSTANCE"] == f"{PROJECT}:{REGION}:resonate-db-abc"
        assert env["RESONATE_LOG_FORMAT"] == "json"
        assert env["RESONATE_SERVER__URL"] == BASE_URLS[shape], name
        assert env["RESONATE_SWEEPER__URL"] == url("sweeper")
        assert env["RESONATE_SWEEPER__AUTH"] == "gcp"  # the waker presents an ID token to the private sweeper
        assert env["RESONATE_DISPATCH__TOPIC"] == f"projects/{PROJECT}/topics/resonate-dispatch"
        assert env["RESONATE_DISPATCH__AUDIENCE"] == url("dispatch")
        assert json.loads(env["RESONATE_DISPATCH__SERVICE_ACCOUNTS"]) == [
            f"resonate-pusher@{PROJECT}.iam.gserviceaccount.com"]
        assert env["RESONATE_DISPATCH__MAX_ATTEMPTS"] == "5"
        assert env["GOOGLE_CLOUD_PROJECT"] == PROJECT
        assert env["RESONATE_AUTH__PUBLICKEY"] == "/etc/resonate-auth/public.pem"
        assert env["RESONATE_AUTH__ISS"] == "https://issuer.example"
        # no HTTP push to private, loopback or metadata addresses from inside Google's network
        assert env["RESONATE_TRANSPORTS__HTTP_PUSH__DENY_PRIVATE"] == "true", name
        assert env["RESONATE_RETENTION__SETTLED_AFTER"] == str(30 * 86_400_000), name  # retentionDays: 30 days
    fns = stack.functions()
    for name in ("api", "poll"):
        if name in fns:
            assert fns[name]["serviceConfig"]["secretVolumes"][0]["secret"] == "resonate-auth-publickey"
    assert not fns["dispatch"]["serviceConfig"].get("secretVolumes")


def test_environment_is_a_valid_server_config(stack, shape):
    """The plain env plus a DB URL secret loads with the server's own config loader."""
    from shared.config import load

    env = stack.entry_env()
    env["RESONATE_AUTH__PUBLICKEY"] = "/secrets/auth/public.pem"  # a mounted file at runtime (not read by load)
    env["RESONATE_STORAGE__POSTGRES__URL"] = f"postgres://resonate:{PASSWORD}@/resonate"
    cfg = load(env={k: v for k, v in env.items() if k.startswith("RESONATE_")})
    assert cfg.dispatch.max_attempts == 5 and cfg.storage.postgres.ip_type == "public"
    assert cfg.server.url == BASE_URLS[shape] and cfg.sweeper.auth == "gcp"
    assert cfg.retention.settled_after == 30 * 86_400_000


def test_retention_days() -> None:
    """`retentionDays` sets every function's horizon; 0 keeps everything; a negative one is refused."""
    for days, want in (("7", str(7 * 86_400_000)), ("0", "0")):
        st = deploy_with({**SHAPES["default"], "retentionDays": days})
        for name, f in st.functions().items():
            assert f["serviceConfig"]["environmentVariables"]["RESONATE_RETENTION__SETTLED_AFTER"] == want, name
    assert "retentionDays=-1" in refused({**SHAPES["default"], "retentionDays": "-1"})


def test_push_subscription(stack):
    sub = stack.one("gcp:pubsub/subscription:Subscription", "resonate-dispatch-push")
    push = sub["pushConfig"]
    assert push["pushEndpoint"] == url("dispatch")
    assert push["oidcToken"] == {"serviceAccountEmail": f"resonate-pusher@{PROJECT}.iam.gserviceaccount.com",
                                 "audience": url("dispatch")}
    assert sub["deadLetterPolicy"]["deadLetterTopic"] == "resonate-dispatch-dead-id"
    assert sub["deadLetterPolicy"]["maxDeliveryAttempts"] == 5
    assert sub["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
    assert 180 < sub["ackDeadlineSeconds"] <= 600
    assert sub["topic"] == "resonate-dispatch-id"


def test_scheduler(stack):
    (_, job), = stack.of_type("gcp:cloudscheduler/job:Job")
    assert job["schedule"] == "* * * * *"
    t = job["httpTarget"]
    assert t["httpMethod"] == "POST" and t["uri"] == url("sweeper")
    assert t["oidcToken"] == {"serviceAccountEmail": f"resonate-scheduler@{PROJECT}.iam.gserviceaccount.com",
                              "audience": url("sweeper")}


def expected_grants(shape: str, callers: tuple[str, ...]) -> dict[str, set[tuple[str, str]]]:
    """The table in docs/deploy-gcp.md: each account's only grants, per shape; `callers` (allUsers,
    or the invokers) may invoke the entry services (api, plus poll behind the load balancer)."""
    db = {("roles/cloudsql.client", f"project:{PROJECT}"),
          ("roles/secretmanager.secretAccessor", "secret:resonate-db-url-id")}
    key = ("roles/secretmanager.secretAccessor", "secret:resonate-auth-key-id")
    pub = ("roles/pubsub.publisher", "topic:resonate-dispatch")
    agent = f"serviceAccount:service-{NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
    entries = {ENTRY[shape], "poll"} if shape == "lb" else {ENTRY[shape]}
    out = {
        sa("api"): db | {key, pub, ("roles/run.invoker", "run:sweeper")},
        sa("sweeper"): db | {pub},
        sa("dispatch"): db,
        sa("scheduler"): {("roles/run.invoker", "run:sweeper")},
        sa("pusher"): {("roles/run.invoker", "run:dispatch")},
        agent: {("roles/pubsub.publisher", "topic:resonate-dispatch-dead"),
                ("roles/pubsub.subscriber", "subscription:resonate-dispatch-push")},
        **{m: {("roles/run.invoker", f"run:{e}") for e in entries} for m in callers},
    }
    if shape == "lb":
        out[sa("poll")] = db | {key}
    return out


def test_least_privilege(stack, shape):
    """Private (public=false): only the listed invokers may call the entry service; no allUsers."""
    assert stack.grants() == expected_grants(shape, (INVOKER,))
    assert "allUsers" not in stack.grants()


def test_public_grants_all_users_invoke_on_the_entry_only(shape):
    """public=true (with Resonate auth): allUsers invoke api (and poll behind the LB), nothing else."""
    config = {k: v for k, v in SHAPES[shape].items() if k != "invokers"}
    d = deploy_with({**config, "public": "true"})
    assert d.grants() == expected_grants(shape, ("allUsers",))


# ------------------------------------------------------------------------------ default shape

def test_default_has_no_load_balancer(default):
    """One URL without a load balancer: nothing of an LB (each costs by the hour) and no poll."""
    for t in LB_TYPES:
        assert not default.of_type(t), t
    assert "poll" not in default.functions() and not default.of_type(RUN_SERVICE)
    assert "ipAddress" not in default.outputs


def test_default_api_serves_streams_on_its_own_url(default):
    """api answers every route, /poll streams included: stream-sized, reachable at its own URL
    (ingress all: IAM is the gate), which is RESONATE_SERVER__URL and the baseUrl output, in the
    deterministic form (no dependency on its own output)."""
    sc = default.functions()["api"]["serviceConfig"]
    assert sc["ingressSettings"] == "ALLOW_ALL"
    assert sc["timeoutSeconds"] == 3600 and sc["maxInstanceRequestConcurrency"] == 1000
    assert sc["environmentVariables"]["THREADS"] == "1000"
    assert sc["environmentVariables"]["RESONATE_SERVER__URL"] == url("api") == default.outputs["baseUrl"]
    assert default.invokers(INVOKER) == {"api"}


# ------------------------------------------------------------------------------ load-balancer shape

def test_load_balancer(lb):
    """Today's shape, unchanged: api + poll behind one IP, a NEG per function."""
    negs = {i["name"]: i for _, i in lb.of_type("gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup")}
    assert set(negs) == {f"resonate-{f}" for f in ("api", "poll", "sweeper", "dispatch")}
    for name, neg in negs.items():
        assert neg["networkEndpointType"] == "SERVERLESS"
        assert neg["cloudRun"]["service"] == name.removeprefix("resonate-")
    um = lb.one("gcp:compute/uRLMap:URLMap", "resonate-urlmap")
    assert um["defaultService"] == "backend-api-id"
    pm, = um["pathMatchers"]
    assert pm["defaultService"] == "backend-api-id"
    rules = {p: r["service"] for r in pm["pathRules"] for p in r["paths"]}
    assert rules["/poll/*"] == "backend-poll-id"
    for p in ("/", "/health", "/ready", "/metrics"):
        assert rules[p] == "backend-api-id"
    cert = lb.one("gcp:compute/managedSslCertificate:ManagedSslCertificate", "resonate-cert")
    assert cert["managed"]["domains"] == [DOMAIN]
    rule = lb.one("gcp:compute/globalForwardingRule:GlobalForwardingRule", "resonate-rule")
    assert rule["portRange"] == "443" and rule["target"] == "resonate-https-id"
    assert rule["ipAddress"] == "203.0.113.7"
    assert not lb.of_type("gcp:compute/targetHttpProxy:TargetHttpProxy")
    fns = lb.functions()
    for fn in ("api", "poll"):  # reached through the load balancer only
        assert fns[fn]["serviceConfig"]["ingressSettings"] == "ALLOW_INTERNAL_AND_GCLB"
    assert fns["api"]["serviceConfig"]["maxInstanceRequestConcurrency"] == 80


def test_load_balancer_without_domain_serves_plain_http():
    """`loadBalancer=true` without domain: HTTP on port 80 on the IP, which is the base URL (with
    public and no auth: insecure, so only with allowInsecure)."""
    d = deploy_with({"loadBalancer": "true", "public": "true", "allowInsecure": "true"})
    assert {"api", "poll"} <= set(d.functions())
    (_, rule), = d.of_type("gcp:compute/globalForwardingRule:GlobalForwardingRule")
    assert rule["portRange"] == "80"
    assert not d.of_type("gcp:compute/managedSslCertificate:ManagedSslCertificate")
    assert d.outputs["baseUrl"] == "http://203.0.113.7"
    assert d.invokers("allUsers") == {"api", "poll"}


# ------------------------------------------------------------------------------ runtime=cloudrun

def test_cloudrun_service_from_image(cloudrun):
    """The image as one Cloud Run service in place of api (and poll): scales to zero, stream-sized,
    its deterministic run.app URL is the base URL, runs the api entry point, not the local server."""
    repo = cloudrun.one("gcp:artifactregistry/repository:Repository", "resonate-images")
    assert repo["format"] == "DOCKER" and repo["location"] == REGION and repo["repositoryId"] == "resonate"
    assert cloudrun.outputs["imageRepository"] == f"{REGION}-docker.pkg.dev/{PROJECT}/resonate/server"
    svc = cloudrun.service()
    assert svc["name"] == "resonate" and svc["location"] == REGION
    assert svc["ingress"] == "INGRESS_TRAFFIC_ALL"
    tpl = svc["template"]
    assert tpl["scaling"]["minInstanceCount"] == 0
    assert tpl["timeout"] == "3600s" and tpl["maxInstanceRequestConcurrency"] == 1000
    assert tpl["serviceAccount"] == f"resonate-api@{PROJECT}.iam.gserviceaccount.com"
    c, = tpl["containers"]
    assert c["image"] == IMAGE
    assert "functions-framework --target=api" in " ".join(c["commands"] + c["args"])
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"} and c["resources"]["cpuIdle"] is True
    assert cloudrun.entry_env()["THREADS"] == "1000"
    assert c["volumeMounts"] == [{"name": "auth-key", "mountPath": "/etc/resonate-auth"}]
    assert tpl["volumes"][0]["secret"]["secret"] == "resonate-auth-publickey"
    assert cloudrun.outputs["serviceUrl"] == cloudrun.outputs["baseUrl"] == RUN_URL
    assert cloudrun.invokers(INVOKER) == {"resonate"}
    for t in LB_TYPES:
        assert not cloudrun.of_type(t), t


def test_cloudrun_without_image_creates_the_repository_first():
    """The first run creates the repository to push to; the service comes with `image`."""
    d = deploy_with({**DEFAULT, "runtime": "cloudrun"})
    assert d.of_type("gcp:artifactregistry/repository:Repository")
    assert not d.of_type(RUN_SERVICE) and set(d.functions()) == {"sweeper", "dispatch"}
    assert d.invokers(INVOKER) == set()
    assert d.outputs["baseUrl"] == RUN_URL


# ------------------------------------------------------------------------------ refused stacks

@pytest.mark.parametrize("config, problem", [
    ({"public": "true"}, "public=true without authPublickey"),
    ({"public": "true", "domain": DOMAIN}, "public=true without authPublickey"),
    ({"public": "true", "loadBalancer": "true"}, "public=true without authPublickey"),
    ({"loadBalancer": "true", "authPublickey": PK}, "domain is not set: tokens would travel over plain HTTP"),
    ({"loadBalancer": "true", "public": "true", "authPublickey": PK}, "domain is not set"),
    ({"loadBalancer": "true", "authGoogleServiceAccounts": '["w@p.iam.gserviceaccount.com"]'}, "domain is not set"),
], ids=["public-no-auth", "public-no-auth-domain", "public-no-auth-lb", "lb-auth-no-domain",
        "lb-public-auth-no-domain", "lb-google-no-domain"])
def test_insecure_stack_fails_unless_allowed(config, problem):
    """Open to the internet without auth, or tokens over the load balancer's plain HTTP: `pulumi up`
    fails with a message naming the settings and the way out; `allowInsecure=true` deploys it anyway."""
    message = refused(config)
    assert problem in message and "allowInsecure=true" in message, message
    assert deploy_with({**config, "allowInsecure": "true"}).functions()


@pytest.mark.parametrize("config", [
    {"authPublickey": PK},  # the function URL is HTTPS: a token never crosses plain HTTP
    {"public": "true", "authPublickey": PK},
    {"authGoogleServiceAccounts": '["w@p.iam.gserviceaccount.com"]'},
    {"public": "true", "authPublickey": PK, "domain": DOMAIN},
    PRIVATE,  # private (IAM invokers), no Resonate auth
    {**PRIVATE, "loadBalancer": "true"},
    {"public": "true", "authPublickey": PK, "runtime": "cloudrun", "image": IMAGE},
], ids=["auth", "public-auth", "google", "lb-public-auth-domain", "private", "lb-private", "cloudrun-public-auth"])
def test_secure_variants_need_no_override(config):
    d = deploy_with(config)
    assert d.outputs["baseUrl"].startswith("http://" if "ipAddress" in d.outputs and "domain" not in config
                                           else "https://")


@pytest.mark.parametrize("config, problem", [
    ({"runtime": "lambda"}, "runtime='lambda'"),
    ({"image": IMAGE}, "image is set but runtime is not cloudrun"),
    ({"runtime": "cloudrun", "image": IMAGE, "domain": DOMAIN}, "loadBalancer and domain are for runtime=functions"),
    ({"otlpEndpoint": "grpc://collector:4317"}, "otlpEndpoint: OTLP endpoint must be http(s)://host:port"),
])
def test_invalid_settings_are_refused_even_with_allow_insecure(config, problem):
    message = refused({**PRIVATE, **config, "allowInsecure": "true"})
    assert "invalid stack settings" in message and problem in message, message


# ------------------------------------------------------------------------------ the OTLP metrics export

OTLP = "https://otel-collector-abc-uc.a.run.app"


@pytest.mark.parametrize("base", ["default", "cloudrun"])
def test_otlp_endpoint_reaches_the_functions(base):
    """`otlpEndpoint`: every function exports to it (docs/operations.md#metrics-export-otlp); the
    Cloud Run service (the stock image has no `otel` extra) keeps GET /metrics and no variable."""
    d = deploy_with({**SHAPES[base], "otlpEndpoint": OTLP})
    fns = d.functions()
    assert fns
    for name, f in fns.items():
        assert f["serviceConfig"]["environmentVariables"]["RESONATE_OBSERVABILITY__OTLP_ENDPOINT"] == OTLP, name
    if base == "cloudrun":
        assert "RESONATE_OBSERVABILITY__OTLP_ENDPOINT" not in d.entry_env()


def test_no_otlp_endpoint_no_export(stack):
    for name, f in stack.functions().items():
        assert "RESONATE_OBSERVABILITY__OTLP_ENDPOINT" not in f["serviceConfig"]["environmentVariables"], name


def test_otlp_endpoint_puts_the_otel_extra_in_the_bundle():
    """The buildpack installs requirements.txt: opentelemetry-proto only when export is on."""
    from infra.package import requirements
    from infra.stack.config import Settings
    from infra.stack.functions import source_extras

    assert source_extras(Settings(project=PROJECT)) == ()
    assert source_extras(Settings(project=PROJECT, otlp_endpoint=OTLP)) == ("otel",)
    plain_reqs, otel_reqs = requirements(), requirements(extras=("otel",))
    assert "opentelemetry-proto" not in plain_reqs
    added = set(otel_reqs.splitlines()) - set(plain_reqs.splitlines())
    assert {r.split(">")[0].split("=")[0] for r in added} == {"opentelemetry-proto"}, added
    with pytest.raises(ValueError, match="no optional-dependencies group 'nope'"):
        requirements(extras=("nope",))
