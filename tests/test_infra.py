"""The Pulumi program (infra/) under Pulumi's unit-test mocks: no CLI, no cloud.

Mocks are set (and the stack config given) before the program is imported; the mock records
every registered resource with its (camelCase) inputs and fills the computed outputs (email,
url, connectionName, address). `settle()` runs a `pulumi.runtime.test` function, which returns
only when every registration finished, so the checks below read a complete list.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pulumi
import pytest

PROJECT, REGION = "proj-1", "europe-west1"
NUMBER = "123456789"
PK = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"
INVOKER = "group:workers@example.com"
PASSWORD = "Sup3rSecretPassw0rdFromMocks0123"


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
        elif t == "gcp:cloudfunctionsv2/function:Function":
            out["url"] = f"https://{REGION}-{PROJECT}.cloudfunctions.net/{name}"
        elif t == "gcp:compute/globalAddress:GlobalAddress":
            out["address"] = "203.0.113.7"
        elif t == "random:index/randomPassword:RandomPassword":
            out["result"] = PASSWORD
        elif t == "gcp:secretmanager/secret:Secret":
            out["name"] = f"projects/{NUMBER}/secrets/{inputs['secretId']}"
        return f"{args.name}-id", out

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": NUMBER, "projectId": PROJECT, "name": PROJECT}
        return {}


MOCKS = Mocks()
pulumi.runtime.set_mocks(MOCKS, project="resonate-gcp", stack="test", preview=False)
pulumi.runtime.set_all_config({
    "gcp:project": PROJECT, "gcp:region": REGION,
    "resonate-gcp:public": "false", "resonate-gcp:invokers": json.dumps([INVOKER]),
    "resonate-gcp:domain": "resonate.example.com", "resonate-gcp:authPublickey": PK,
    "resonate-gcp:authIss": "https://issuer.example", "resonate-gcp:authAud": "resonate",
})


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    archive = tmp_path_factory.mktemp("src") / "source.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("main.py", "# stub\n")
    from infra.stack import deploy  # after set_mocks

    outputs = deploy(source_archive=archive)
    resolved: dict = {}

    @pulumi.runtime.test
    def settle():
        return pulumi.Output.all(**outputs).apply(resolved.update)

    settle()
    return resolved


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # pulumi's marker of a secret value in mock inputs


def plain(v):
    return v["value"] if isinstance(v, dict) and SECRET_SIG in v else v


def of_type(t: str) -> list[tuple[str, dict]]:
    return [(n, i) for typ, n, i in MOCKS.resources if typ == t]


def one(t: str, name: str) -> dict:
    found = [i for n, i in of_type(t) if n == name]
    assert len(found) == 1, (t, name, [n for n, _ in of_type(t)])
    return found[0]


def url(fn: str) -> str:
    return f"https://{REGION}-{PROJECT}.cloudfunctions.net/{fn}"


def sa(k: str) -> str:
    return f"serviceAccount:resonate-{k}@{PROJECT}.iam.gserviceaccount.com"


def functions() -> dict[str, dict]:
    return {i["name"]: i for _, i in of_type("gcp:cloudfunctionsv2/function:Function")}


def test_outputs(stack):
    assert stack["baseUrl"] == "https://resonate.example.com"
    assert stack["sweeperUrl"] == url("sweeper")
    assert stack["dispatchTopic"] == "resonate-dispatch"
    assert stack["deadLetterTopic"] == "resonate-dispatch-dead"
    assert stack["databaseConnectionName"] == f"{PROJECT}:{REGION}:resonate-db-abc"


def test_database_private_protected_backed_up(stack):
    (_, db), = of_type("gcp:sql/databaseInstance:DatabaseInstance")
    assert db["deletionProtection"] is True
    st = db["settings"]
    assert st["deletionProtectionEnabled"] is True
    assert st["tier"] == "db-f1-micro" and db["region"] == REGION
    assert st["backupConfiguration"]["enabled"] is True
    assert st["backupConfiguration"]["pointInTimeRecoveryEnabled"] is True
    ipc = st["ipConfiguration"]
    assert not ipc.get("authorizedNetworks")  # only the connector (IAM + mTLS) gets in
    assert ipc["sslMode"] == "ENCRYPTED_ONLY"
    assert one("gcp:sql/database:Database", "resonate-database")["name"] == "resonate"
    user = one("gcp:sql/user:User", "resonate-db-user")
    assert user["name"] == "resonate" and plain(user["password"]) == PASSWORD
    version = one("gcp:secretmanager/secretVersion:SecretVersion", "resonate-db-url-v")
    assert SECRET_SIG in version["secretData"]  # marked secret: encrypted in the state, masked in logs
    assert plain(version["secretData"]) == f"postgres://resonate:{PASSWORD}@/resonate"


def test_functions_shapes(stack):
    fns = functions()
    assert set(fns) == {"api", "poll", "sweeper", "dispatch"}
    objects = of_type("gcp:storage/bucketObject:BucketObject")
    assert len(objects) == 1
    for name, f in fns.items():
        b, sc = f["buildConfig"], f["serviceConfig"]
        assert b["entryPoint"] == name and b["runtime"] == "python312"
        assert b["source"]["storageSource"]["object"] == objects[0][1]["name"]
        assert sc["minInstanceCount"] == 0, name  # nothing runs (or costs) when idle
        assert sc["serviceAccountEmail"] == f"resonate-{name}@{PROJECT}.iam.gserviceaccount.com"
        assert sc["environmentVariables"]["THREADS"] == str(int(sc["maxInstanceRequestConcurrency"]))
        assert float(sc["availableCpu"]) >= 1
    poll = fns["poll"]["serviceConfig"]
    assert poll["timeoutSeconds"] == 3600 and poll["maxInstanceRequestConcurrency"] == 1000
    assert fns["sweeper"]["serviceConfig"]["timeoutSeconds"] > 65
    assert fns["dispatch"]["serviceConfig"]["timeoutSeconds"] > 180  # the push timeout
    assert fns["api"]["serviceConfig"]["ingressSettings"] == "ALLOW_INTERNAL_AND_GCLB"


def test_function_environment_has_no_secret(stack):
    for name, f in functions().items():
        sc = f["serviceConfig"]
        env = sc["environmentVariables"]
        assert not any(PASSWORD in str(v) for v in env.values()), name
        assert "RESONATE_STORAGE__POSTGRES__URL" not in env
        secrets = {s["key"]: s for s in sc["secretEnvironmentVariables"]}
        assert secrets["RESONATE_STORAGE__POSTGRES__URL"]["secret"] == "resonate-db-url"
        assert secrets["RESONATE_STORAGE__POSTGRES__URL"]["version"] == "latest"
        assert env["RESONATE_STORAGE__TYPE"] == "postgres"
        assert env["RESONATE_STORAGE__POSTGRES__INSTANCE"] == f"{PROJECT}:{REGION}:resonate-db-abc"
        assert env["RESONATE_LOG_FORMAT"] == "json"
        assert env["RESONATE_SERVER__URL"] == "https://resonate.example.com"
        assert env["RESONATE_SWEEPER__URL"] == url("sweeper")
        assert env["RESONATE_DISPATCH__TOPIC"] == f"projects/{PROJECT}/topics/resonate-dispatch"
        assert env["RESONATE_DISPATCH__AUDIENCE"] == url("dispatch")
        assert json.loads(env["RESONATE_DISPATCH__SERVICE_ACCOUNTS"]) == [
            f"resonate-pusher@{PROJECT}.iam.gserviceaccount.com"]
        assert env["RESONATE_DISPATCH__MAX_ATTEMPTS"] == "5"
        assert env["GOOGLE_CLOUD_PROJECT"] == PROJECT
        assert env["RESONATE_AUTH__PUBLICKEY"] == "/etc/resonate-auth/public.pem"
        assert env["RESONATE_AUTH__ISS"] == "https://issuer.example"
        assert PK not in env.values()
    fns = functions()
    assert fns["api"]["serviceConfig"]["secretVolumes"][0]["secret"] == "resonate-auth-publickey"
    assert not fns["dispatch"]["serviceConfig"].get("secretVolumes")


def test_environment_is_a_valid_server_config(stack):
    """The plain env plus a DB URL secret loads with the server's own config loader."""
    from shared.config import load

    env = dict(functions()["api"]["serviceConfig"]["environmentVariables"])
    env["RESONATE_AUTH__PUBLICKEY"] = "/secrets/auth/public.pem"  # a mounted file at runtime (not read by load)
    env["RESONATE_STORAGE__POSTGRES__URL"] = f"postgres://resonate:{PASSWORD}@/resonate"
    cfg = load(env={k: v for k, v in env.items() if k.startswith("RESONATE_")})
    assert cfg.dispatch.max_attempts == 5 and cfg.storage.postgres.ip_type == "public"
    assert cfg.server.url == "https://resonate.example.com"


def test_push_subscription(stack):
    sub = one("gcp:pubsub/subscription:Subscription", "resonate-dispatch-push")
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
    (_, job), = of_type("gcp:cloudscheduler/job:Job")
    assert job["schedule"] == "* * * * *"
    t = job["httpTarget"]
    assert t["httpMethod"] == "POST" and t["uri"] == url("sweeper")
    assert t["oidcToken"] == {"serviceAccountEmail": f"resonate-scheduler@{PROJECT}.iam.gserviceaccount.com",
                              "audience": url("sweeper")}


def grants() -> dict[str, set[tuple[str, str]]]:
    """member -> {(role, on what)} over every IAM binding of the program."""
    out: dict[str, set[tuple[str, str]]] = {}
    for t, _, i in MOCKS.resources:
        if t == "gcp:projects/iAMMember:IAMMember":
            target = f"project:{i['project']}"
        elif t == "gcp:secretmanager/secretIamMember:SecretIamMember":
            target = f"secret:{i['secretId']}"
        elif t == "gcp:pubsub/topicIAMMember:TopicIAMMember":
            target = f"topic:{i['topic']}"
        elif t == "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember":
            target = f"subscription:{i['subscription']}"
        elif t == "gcp:cloudrunv2/serviceIamMember:ServiceIamMember":
            target = f"run:{i['name']}"
        elif ("iam" in t.lower() and "Member" in t) or "Binding" in t or "Policy" in t.split(":")[-1]:
            raise AssertionError(f"unexpected IAM resource {t}")
        else:
            continue
        out.setdefault(i["member"], set()).add((i["role"], target))
    return out


def test_least_privilege(stack):
    g = grants()
    db = {("roles/cloudsql.client", f"project:{PROJECT}"),
          ("roles/secretmanager.secretAccessor", "secret:resonate-db-url-id")}
    key = ("roles/secretmanager.secretAccessor", "secret:resonate-auth-key-id")
    pub = ("roles/pubsub.publisher", "topic:resonate-dispatch")
    agent = f"serviceAccount:service-{NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
    assert g == {
        sa("api"): db | {key, pub, ("roles/run.invoker", "run:sweeper")},
        sa("poll"): db | {key},
        sa("sweeper"): db | {pub},
        sa("dispatch"): db,
        sa("scheduler"): {("roles/run.invoker", "run:sweeper")},
        sa("pusher"): {("roles/run.invoker", "run:dispatch")},
        INVOKER: {("roles/run.invoker", "run:api"), ("roles/run.invoker", "run:poll")},
        agent: {("roles/pubsub.publisher", "topic:resonate-dispatch-dead"),
                ("roles/pubsub.subscriber", "subscription:resonate-dispatch-push")},
    }
    assert "allUsers" not in g  # public = false


def test_load_balancer(stack):
    negs = {i["name"]: i for _, i in of_type("gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup")}
    assert set(negs) == {f"resonate-{f}" for f in ("api", "poll", "sweeper", "dispatch")}
    for name, neg in negs.items():
        assert neg["networkEndpointType"] == "SERVERLESS"
        assert neg["cloudRun"]["service"] == name.removeprefix("resonate-")
    um = one("gcp:compute/uRLMap:URLMap", "resonate-urlmap")
    assert um["defaultService"] == "backend-api-id"
    pm, = um["pathMatchers"]
    assert pm["defaultService"] == "backend-api-id"
    rules = {p: r["service"] for r in pm["pathRules"] for p in r["paths"]}
    assert rules["/poll/*"] == "backend-poll-id"
    for p in ("/", "/health", "/ready", "/metrics"):
        assert rules[p] == "backend-api-id"
    cert = one("gcp:compute/managedSslCertificate:ManagedSslCertificate", "resonate-cert")
    assert cert["managed"]["domains"] == ["resonate.example.com"]
    rule = one("gcp:compute/globalForwardingRule:GlobalForwardingRule", "resonate-rule")
    assert rule["portRange"] == "443" and rule["target"] == "resonate-https-id"
    assert rule["ipAddress"] == "203.0.113.7"
    assert not of_type("gcp:compute/targetHttpProxy:TargetHttpProxy")


_VARIANT = """
import json, sys, zipfile, tempfile, pathlib
import pulumi
from tests import test_infra as t  # sets the mocks (default config) on import
pulumi.runtime.set_all_config({"gcp:project": t.PROJECT, "gcp:region": t.REGION, **json.loads(sys.argv[1])})
t.MOCKS.resources.clear()
archive = pathlib.Path(tempfile.mkdtemp()) / "source.zip"
with zipfile.ZipFile(archive, "w") as z:
    z.writestr("main.py", "# stub")
from infra.stack import deploy
outputs = deploy(source_archive=archive)
got = {}
@pulumi.runtime.test
def settle():
    return pulumi.Output.all(**outputs).apply(got.update)
settle()
print(json.dumps({"outputs": got, "resources": [[ty, n, i] for ty, n, i in t.MOCKS.resources]}, default=str))
"""


def variant(config: dict[str, str]):
    """The program under other stack settings, in a second process (the mocks' config is per
    process): the CompletedProcess, its last stdout line the outputs and resources as JSON."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cfg = {f"resonate-gcp:{k}": v for k, v in config.items()}
    return subprocess.run([sys.executable, "-c", _VARIANT, json.dumps(cfg)], cwd=root, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.process  # a Pulumi program in a subprocess
def test_public_stack_without_domain_serves_plain_http_to_everyone():
    """The other setting of each switch: `public = true` grants allUsers invoke on api and poll
    only; no domain = HTTP on port 80 (without auth: insecure, so only with allowInsecure)."""
    r = variant({"public": "true", "allowInsecure": "true"})
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(r.stdout.strip().splitlines()[-1])
    res = data["resources"]
    public = {(i["role"], i.get("name")) for ty, _, i in res
              if ty == "gcp:cloudrunv2/serviceIamMember:ServiceIamMember" and i["member"] == "allUsers"}
    assert public == {("roles/run.invoker", "api"), ("roles/run.invoker", "poll")}, public
    rules = [i for ty, _, i in res if ty == "gcp:compute/globalForwardingRule:GlobalForwardingRule"]
    assert len(rules) == 1 and rules[0]["portRange"] == "80", rules
    assert not [n for ty, n, _ in res if ty == "gcp:compute/managedSslCertificate:ManagedSslCertificate"]
    assert any(str(v).startswith("http://203.0.113.7") for v in data["outputs"].values()), data["outputs"]


# ------------------------------------------------------------------------------ insecure stacks

@pytest.mark.parametrize("config, problem", [
    ({"public": "true", "domain": "resonate.example.com"}, "public=true without authPublickey"),
    ({"public": "true"}, "public=true without authPublickey"),
    ({"authPublickey": PK}, "domain is not set: tokens would travel over plain HTTP"),
    ({"public": "true", "authPublickey": PK}, "domain is not set: tokens would travel over plain HTTP"),
    ({"authGoogleServiceAccounts": '["w@p.iam.gserviceaccount.com"]'}, "domain is not set"),
], ids=["public-no-auth", "public-no-auth-no-domain", "auth-no-domain", "public-auth-no-domain", "google-no-domain"])
@pytest.mark.process  # a Pulumi program in a subprocess
def test_insecure_stack_fails_unless_allowed(config, problem):
    """Open to the internet without auth, or tokens over plain HTTP: `pulumi up` fails with a
    message naming the settings and the way out; `allowInsecure=true` deploys it anyway."""
    r = variant(config)
    assert r.returncode != 0, r.stdout[-2000:]
    assert problem in r.stderr and "allowInsecure=true" in r.stderr, r.stderr[-3000:]
    assert not r.stdout.strip(), "nothing may be deployed"
    r = variant({**config, "allowInsecure": "true"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])["resources"]
    assert len([n for ty, n, _ in res if ty == "gcp:cloudfunctionsv2/function:Function"]) == 4


@pytest.mark.process  # a Pulumi program in a subprocess
def test_secure_variants_need_no_override():
    r = variant({"public": "true", "authPublickey": PK, "domain": "resonate.example.com"})
    assert r.returncode == 0, r.stderr[-3000:]
    r = variant({"invokers": json.dumps([INVOKER])})  # private (IAM invokers), no Resonate auth, no domain
    assert r.returncode == 0, r.stderr[-3000:]


def test_functions_never_push_to_private_addresses(stack):
    for name, f in functions().items():
        assert f["serviceConfig"]["environmentVariables"]["RESONATE_TRANSPORTS__HTTP_PUSH__DENY_PRIVATE"] == "true", name
