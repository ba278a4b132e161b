"""Inbound auth: key families and forms, unsigned mode, unusable keys, the config keys, and the
`/metrics` gate of the `api` function (docs/operations.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.server import start_server
from tests.support.tokens import KeyPair, claims, hs256_with, unsigned

pytestmark = pytest.mark.process


@pytest.mark.parametrize("kind,algs,foreign", [
    ("rsa", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"], ["ec256"]),
    ("rsa-pkcs1", ["RS256", "PS512"], ["ed25519"]),
    ("ec256", ["ES256"], ["rsa", "ec384"]),
    ("ec384", ["ES384"], ["ec256"]),
    ("ed25519", ["EdDSA"], ["rsa"]),
])
def test_key_families(kind: str, algs: list[str], foreign: list[str], tmp_path: Path) -> None:
    key = KeyPair(kind)
    s = start_server("memory", tmp_path, env={"RESONATE_AUTH__PUBLICKEY": key.write(tmp_path)})
    try:
        for alg in algs:  # no aud configured: a token carrying one is still accepted
            assert s.rpc("promise.get", {"id": "x"}, auth=key.sign(claims(role="admin", aud="any"), alg=alg))[0] == 404
        for other in foreign:
            assert s.rpc("promise.get", {"id": "x"}, auth=KeyPair(other).sign(claims(role="admin")))[0] == 401
        assert s.rpc("promise.get", {"id": "x"}, auth=hs256_with(key.public_pem, claims(role="admin")))[0] == 401
        family = {"rsa": "RSA", "rsa-pkcs1": "RSA", "ec256": "EC", "ec384": "EC", "ed25519": "Ed25519"}[kind]
        assert f"key_type={family}" in s.logs()
    finally:
        s.stop()


def test_unsigned_mode_skips_signatures_but_not_claims(tmp_path: Path) -> None:
    s = start_server("memory", tmp_path, env={"RESONATE_AUTH__PUBLICKEY": "none"})
    try:
        assert s.rpc("promise.get", {"id": "x"}, auth=unsigned(claims(role="admin")))[0] == 404
        assert s.rpc("promise.get", {"id": "x"}, auth=unsigned(claims(role="admin"), alg="RS256"))[0] == 404
        assert s.rpc("promise.get", {"id": "x"}, auth=unsigned(claims(role="admin"), alg="none"))[0] == 401
        assert s.rpc("promise.get", {"id": "x"}, auth=unsigned(claims(-120, role="admin")))[0] == 401
        assert s.rpc("promise.get", {"id": "b.x"}, auth=unsigned(claims(prefix="a")))[0] == 403
        assert "Auth enabled — unsigned mode (no signature verification)" in s.logs()
    finally:
        s.stop()


@pytest.mark.parametrize("content,message", [
    (None, "Failed to read public key file"),
    (b"not a pem", "Unsupported or invalid public key"),
    ("private", "Unsupported or invalid public key"),
    ("ec-p521", "Unsupported or invalid public key"),
])
def test_unusable_key_stops_the_server(content: Any, message: str, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "key.pem"
    if content == "private":
        content = KeyPair("ed25519").private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption())
    elif content == "ec-p521":
        content = ec.generate_private_key(ec.SECP521R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RuntimeError, match=f"(?s)server exited 1:.*Fatal: {message}"):
        start_server("memory", tmp_path, env={"RESONATE_AUTH__PUBLICKEY": str(path)})


# ------------------------------------------------------------------------ /metrics on the API port

def test_metrics_route_needs_an_admin_token(tmp_path: Path) -> None:
    from shared.config import load
    from shared.http import create_app
    from shared.runtime import Runtime

    key = KeyPair("ec256")
    rt = Runtime(load({"storage.type": "memory", "auth.publickey": key.write(tmp_path)}, env={}), background=False)
    app = create_app(rt.service, rt.hub, metrics=rt.metrics).test_client()
    admin = "Bearer " + key.sign(claims(role="admin"))
    assert app.post("/", json={"kind": "promise.get", "head": {"corrId": "c", "version": "2026-04-01"},
                               "data": {"id": "x"}}).status_code == 401
    r = app.get("/metrics")
    assert (r.status_code, r.data) == (401, b"Unauthorized")
    assert app.get("/metrics", headers={"Authorization": "Bearer junk"}).status_code == 401
    r = app.get("/metrics", headers={"Authorization": "Bearer " + key.sign(claims(role="w", prefix=""))})
    assert (r.status_code, r.data) == (403, b"Forbidden")
    r = app.get("/metrics", headers={"Authorization": admin})
    assert r.status_code == 200
    assert 'resonate_request_total{kind="promise.get",status="401"} 1.0' in r.data.decode()


def test_auth_keys_from_file_and_environment(tmp_path: Path) -> None:
    from shared.config import load

    (tmp_path / "resonate.toml").write_text('[auth]\npublickey = "/etc/k.pem"\niss = "i"\naud = "a"\n'
                                            'google_audience = "https://api"\n'
                                            'google_service_accounts = ["a@p.iam.gserviceaccount.com"]\n')
    cfg = load(cwd=tmp_path, env={"RESONATE_AUTH__GOOGLE_CERTS_URL": "http://127.0.0.1:1/certs"})
    assert cfg.auth is not None
    assert (cfg.auth.publickey, cfg.auth.iss, cfg.auth.aud, cfg.auth.google_audience,
            cfg.auth.google_service_accounts, cfg.auth.google_certs_url) == \
        ("/etc/k.pem", "i", "a", "https://api", ("a@p.iam.gserviceaccount.com",), "http://127.0.0.1:1/certs")
    env = {"RESONATE_AUTH__GOOGLE_AUDIENCE": "https://api", "RESONATE_AUTH__GOOGLE_SERVICE_ACCOUNTS": "a@x,b@y"}
    cfg = load({}, env=env)
    assert cfg.auth is not None and cfg.auth.publickey is None and cfg.auth.google_service_accounts == ("a@x", "b@y")


@pytest.mark.postgres  # the cloud simulation
@pytest.mark.cloudsim
def test_cloud_functions_topology(tmp_path: Path) -> None:
    """The same gates in the api function (every route, SSE included) behind the cloud simulation's router."""
    import requests

    from tests.support.cloudsim import start_cloudsim
    from tests.support.sse import SSE

    key = KeyPair("ec256")
    srv = start_cloudsim(tmp_path, tick=60.0, env={"RESONATE_AUTH__PUBLICKEY": key.write(tmp_path)})
    try:
        admin, user = key.sign(claims(role="admin")), key.sign(claims(role="w", prefix="a.", groups=["g"]))
        far = 2**62
        assert srv.rpc("promise.get", {"id": "x"}) == (401, "Unauthorized")
        assert srv.rpc("promise.create", {"id": "b.x", "timeoutAt": far}, auth=user) == (403, "Forbidden")
        assert SSE(srv.url + "/poll/g/1").status == 401
        s = SSE(srv.url + "/poll/g/1", headers={"Authorization": f"Bearer {user}"})
        try:
            assert srv.rpc("promise.create", {"id": "a.x", "timeoutAt": far,
                                              "tags": {"resonate:target": "poll://any@g"}}, auth=user)[0] == 200
            assert s.next(15)["data"]["task"]["id"] == "a.x"
        finally:
            s.close()
        assert requests.get(srv.url + "/metrics", timeout=10).status_code == 401
        assert requests.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {admin}"},
                            timeout=10).status_code == 200
        assert srv.rpc("promise.get", {"id": "b.x"}, auth=admin)[0] == 404
    finally:
        srv.stop()


@pytest.mark.postgres  # the cloud simulation
@pytest.mark.cloudsim
def test_poll_authorization_in_the_cloud_topology(tmp_path: Path) -> None:
    """Poll authorization across the poll instances behind the router: a foreign group is 403, a
    worker id held on one instance is refused (409) to another principal on whichever instance
    the router picks, while the holder keeps receiving; once it leaves, the other may take it."""
    from tests.support.cloudsim import start_cloudsim
    from tests.support.sse import SSE, bearer_stream, refusal
    from tests.support.wait import wait_until

    key = KeyPair("ec256")
    srv = start_cloudsim(tmp_path, tick=60.0, env={"RESONATE_AUTH__PUBLICKEY": key.write(tmp_path)})
    srv.token = key.sign(claims(role="admin"))
    far = 2**62
    holder_token = key.sign(claims(sub="tenant-b", prefix="b.", groups=["g"]))
    intruder = key.sign(claims(sub="tenant-a", prefix="a.", groups=["g", "a-*"]))
    taken: list[SSE] = []
    try:
        assert refusal(bearer_stream(srv.url + "/poll/b-jobs/1", intruder)) == (403, b"Forbidden", "text/plain")
        holder = bearer_stream(srv.url + "/poll/g/w1", holder_token)
        try:
            assert holder.status == 200
            instances = set()
            for _ in range(6):  # until a refusal came from another poll instance than the holder's
                s = bearer_stream(srv.url + "/poll/g/w1", intruder)
                assert refusal(s) == (409, b"Worker id held by another principal", "text/plain")
                instances.add(s.headers["X-Sim-Instance"])
                if instances - {holder.headers["X-Sim-Instance"]}:
                    break
            assert instances - {holder.headers["X-Sim-Instance"]}, instances
            assert srv.rpc("promise.create", {"id": "b.uni", "timeoutAt": far,
                                              "tags": {"resonate:target": "poll://uni@g/w1"}})[0] == 200
            assert holder.next(15)["data"]["task"]["id"] == "b.uni"
        finally:
            holder.close()

        def connect() -> bool:
            s = bearer_stream(srv.url + "/poll/g/w1", intruder)
            if s.status == 200:
                taken.append(s)
            return s.status == 200

        assert wait_until(connect, 40, interval=0.3)
        assert srv.rpc("promise.create", {"id": "a.uni", "timeoutAt": far,
                                          "tags": {"resonate:target": "poll://uni@g/w1"}})[0] == 200
        assert taken[0].next(15)["data"]["task"]["id"] == "a.uni"
    finally:
        for s in taken:
            s.close()
        srv.stop()
