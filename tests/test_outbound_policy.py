"""Outbound safety: the destination policy (shared/delivery/destinations.py), credentials only to
allow-listed origins (shared/delivery/push_auth.py), no redirects, and the dead state of pushes
that keep failing (transports.http_push.max_attempts).

The policy is unit-tested here; everything else runs against real server processes on every
backend: registrations are refused with 400 and change nothing, pushes go (or do not go) to
capture servers on loopback addresses, and a test-only resolver (tests/support/resolver, a
`sitecustomize` on the server's PYTHONPATH) changes what a name resolves to between
registration and delivery.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from shared.config import ConfigError, load
from shared.delivery.destinations import Policy, check_url
from shared.delivery.push_auth import Origins, normalise_origin
from shared.storage.postgres import parse_url
from tests.support.capture import Capture
from tests.support.server import ROOT, ServerProc, backends, free_port, process_backends, start_server
from tests.support.wait import stays_false, wait_until

HOUR = 3_600_000
RESOLVER = Path(__file__).parent / "support" / "resolver"
PUSH = "RESONATE_TRANSPORTS__HTTP_PUSH__"

# ------------------------------------------------------------------------------- the policy itself

ALWAYS_REFUSED = [
    "169.254.169.254", "169.254.0.1", "169.254.255.255",  # link-local, the metadata server
    "fe80::1", "fe80::a9fe:a9fe", "febf::1",  # IPv6 link-local
    "fd00:ec2::254", "100.100.100.200", "168.63.129.16",  # AWS (IPv6), Alibaba, Azure metadata
    "0.0.0.0", "0.1.2.3", "::",  # this network, unspecified
    "224.0.0.1", "239.255.255.250", "ff02::1",  # multicast
    "255.255.255.255", "240.0.0.1",  # broadcast, reserved
    "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "::ffff:0.0.0.0",  # IPv4-mapped IPv6
    "::169.254.169.254", "64:ff9b::169.254.169.254", "2002:a9fe:a9fe::1",  # IPv4-compatible, NAT64, 6to4
]
PRIVATE = ["127.0.0.1", "127.255.0.9", "::1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
           "100.64.0.1", "100.127.255.254", "fc00::1", "fd12:3456::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
           "64:ff9b::10.0.0.1"]
PUBLIC = ["8.8.8.8", "192.0.2.1", "172.32.0.1", "100.128.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("deny_private", [False, True])
@pytest.mark.parametrize("ip", ALWAYS_REFUSED)
def test_always_refused_addresses(ip: str, deny_private: bool) -> None:
    """Whatever the configuration: even an allow entry covering everything does not lift it."""
    for policy in (Policy(deny_private=deny_private), Policy(allow=["0.0.0.0/0", "::/0"], deny_private=deny_private)):
        why = policy.refusal("h", ip)
        assert why is not None and "always refused" in why, (ip, why)
        assert check_url(policy, f"[{ip}]" if ":" in ip else ip, 80) == why


@pytest.mark.parametrize("name", ["metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata",
                                  "metadata.goog", "instance-data"])
def test_metadata_names_are_refused_before_resolving(name: str) -> None:
    for policy in (Policy(), Policy(allow=[name.lower().rstrip(".")])):
        assert "metadata" in (check_url(policy, name, 80) or "")
        assert "metadata" in (policy.refusal(name, "8.8.8.8") or "")  # whatever it resolves to


@pytest.mark.parametrize("spelling", ["2852039166", "0251.0376.0251.0376", "0xa9.0xfe.0xa9.0xfe", "169.254.43518"])
def test_other_spellings_of_the_metadata_address_are_judged_by_what_they_resolve_to(spelling: str) -> None:
    assert "169.254.169.254 in 169.254.0.0/16" in (check_url(Policy(), spelling, 80) or "")


@pytest.mark.parametrize("ip", PRIVATE)
def test_private_and_loopback_only_with_deny_private(ip: str) -> None:
    assert Policy().refusal("h", ip) is None
    assert "deny_private" in (Policy(deny_private=True).refusal("h", ip) or "")


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass_by_default(ip: str) -> None:
    assert Policy().refusal("h", ip) is None and Policy(deny_private=True).refusal("h", ip) is None


def test_localhost_names_with_deny_private() -> None:
    p = Policy(deny_private=True)
    for name in ("localhost", "LOCALHOST.", "api.localhost"):
        assert "loopback name" in (check_url(p, name, 80) or ""), name
    assert check_url(Policy(), "localhost", 80) is None


def test_deny_entries_by_cidr_and_name() -> None:
    p = Policy(deny=["203.0.113.0/24", "2001:db8::/32", "bad.example.com", ".evil.example"])
    assert "deny entry '203.0.113.0/24'" in (p.refusal("w", "203.0.113.7") or "")
    assert "deny entry '2001:db8::/32'" in (p.refusal("w", "2001:db8::5") or "")
    assert "deny entry '203.0.113.0/24'" in (p.refusal("w", "::ffff:203.0.113.7") or "")  # mapped form too
    assert "deny entry 'bad.example.com'" in (p.refusal("Bad.Example.com.", "8.8.8.8") or "")
    assert "deny entry '.evil.example'" in (p.refusal("a.b.evil.example", "8.8.8.8") or "")
    assert p.refusal("evil.example", "8.8.8.8") is None  # a dotted entry names what is below it only
    assert p.refusal("notbad.example.com", "8.8.8.8") is None  # names match exactly
    assert p.refusal("w", "203.0.114.1") is None


def test_allow_entries_restrict_and_lift_deny_private() -> None:
    p = Policy(allow=["10.8.0.0/16", "workers.example.com", ".run.app"], deny=["10.8.9.9"], deny_private=True)
    assert p.refusal("any", "10.8.1.2") is None  # explicitly allowed: deny_private does not apply
    assert p.refusal("workers.example.com", "10.200.0.1") is None  # allowed by name
    assert p.refusal("svc-abc.a.run.app", "34.1.2.3") is None
    assert "does not list" in (p.refusal("other.example.com", "34.1.2.3") or "")
    assert "does not list" in (p.refusal("any", "10.9.0.1") or "")
    assert "deny entry" in (p.refusal("any", "10.8.9.9") or "")  # deny wins over allow
    assert "always refused" in (p.refusal("workers.example.com", "169.254.169.254") or "")


def test_a_name_that_does_not_resolve() -> None:
    """Accepted unless an allow-list exists that does not name it (delivery checks again)."""
    host = "no-such-host.invalid"
    assert check_url(Policy(), host, 80) is None
    assert check_url(Policy(deny_private=True, deny=["10.0.0.0/8"]), host, 80) is None
    assert "does not resolve" in (check_url(Policy(allow=["10.0.0.0/8"]), host, 80) or "")
    assert check_url(Policy(allow=[host]), host, 80) is None


@pytest.mark.parametrize("key", ["allow", "deny"])
@pytest.mark.parametrize("value", ["10.0.0.0/33", "10.0.0.300/8", "999.1.1.1", "http://x.example.com", "a b",
                                   "bad..example.com", "-x.example.com", "x.example.com/path"])
def test_invalid_entries_stop_the_server_naming_key_and_value(key: str, value: str) -> None:
    env = {f"{PUSH}{key.upper()}": json.dumps(["10.0.0.0/8", value])}
    with pytest.raises(ConfigError) as e:
        load(env=env)
    assert f"transports.http_push.{key}" in str(e.value) and repr(value) in str(e.value)


def test_config_keys_and_defaults() -> None:
    cfg = load(env={})
    hp = cfg.transports.http_push
    assert (hp.allow, hp.deny, hp.deny_private, hp.max_attempts) == ((), (), False, 1447)
    assert cfg.transports.gcps.allow_projects == ()
    cfg = load(env={f"{PUSH}ALLOW": '["10.0.0.0/8","workers.example.com"]', f"{PUSH}DENY": "10.9.0.0/16,.bad.io",
                    f"{PUSH}DENY_PRIVATE": "true", f"{PUSH}MAX_ATTEMPTS": "3",
                    "RESONATE_TRANSPORTS__GCPS__ALLOW_PROJECTS": '["p1"]'})
    hp = cfg.transports.http_push
    assert (hp.allow, hp.deny, hp.deny_private, hp.max_attempts) == (
        ("10.0.0.0/8", "workers.example.com"), ("10.9.0.0/16", ".bad.io"), True, 3)
    assert cfg.transports.gcps.allow_projects == ("p1",)


def cloud_defaults() -> dict:
    """functions/main.py's CLOUD_DEFAULTS, read off its source (importing it sets up logging)."""
    import ast

    tree = ast.parse((ROOT / "functions/main.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["CLOUD_DEFAULTS"]:
            return ast.literal_eval(node.value)
    raise AssertionError("functions/main.py has no CLOUD_DEFAULTS")


def test_cloud_functions_deny_private_unless_the_environment_says_otherwise() -> None:
    """functions/main.py loads with CLOUD_DEFAULTS (checked on its source: importing it sets up
    the process's logging)."""
    assert cloud_defaults()["transports.http_push.deny_private"] is True
    assert "load(defaults=CLOUD_DEFAULTS)" in (ROOT / "functions/main.py").read_text()
    defaults = {"transports.http_push.deny_private": True}
    assert load(env={}, defaults=defaults).transports.http_push.deny_private is True
    for name in (f"{PUSH}DENY_PRIVATE", f"{PUSH}deny_private".lower()):
        assert load(env={name: "false"}, defaults=defaults).transports.http_push.deny_private is False


def test_default_max_attempts_is_about_a_day_of_backoff() -> None:
    from shared.delivery.outbox import backoff_s

    total = sum(backoff_s(n) for n in range(1, load(env={}).transports.http_push.max_attempts))
    assert 23.9 * 3600 < total < 24.1 * 3600, total / 3600


# ----------------------------------------------------------------------------- credential origins

def test_origins_compare_exactly_after_normalising() -> None:
    o = Origins(("HTTPS://Workers.Example.com:443/", "http://127.0.0.1:8080", "http://[::1]"))
    assert o.permits("https://workers.example.com/run?x=1") and o.permits("https://WORKERS.example.com:443/")
    assert o.permits("http://127.0.0.1:8080/a") and o.permits("http://[::1]:80/x")
    for url in ("http://workers.example.com/", "https://workers.example.com:8443/", "https://x.workers.example.com/",
                "http://127.0.0.1/", "http://127.0.0.1:8081/", "http://localhost:8080/",
                "https://workers.example.com.evil.io/", "https://workers.example.com@evil.io/"):
        assert not o.permits(url), url
    assert normalise_origin("http://H:80") == "http://h"
    for bad in ("https://w.example.com/path", "w.example.com", "ftp://w", "https://user@w", "https://w/?q"):
        with pytest.raises(ValueError):
            normalise_origin(bad)


@pytest.mark.parametrize("env", [
    {"MODE": "bearer", "TOKEN": "t"},
    {"MODE": "gcp", "AUDIENCE": "https://workers.example.com"},
])
def test_credentials_that_work_anywhere_need_an_origin_list(env: dict[str, str]) -> None:
    full = {f"{PUSH}AUTH__{k}": v for k, v in env.items()}
    with pytest.raises(ConfigError, match=r"transports\.http_push\.auth\.allow is required"):
        load(env=full)
    cfg = load(env={**full, f"{PUSH}AUTH__ALLOW": '["https://workers.example.com"]'})
    assert cfg.transports.http_push.auth is not None
    assert cfg.transports.http_push.auth.allow == ("https://workers.example.com",)
    load(env={f"{PUSH}AUTH__MODE": "gcp"})  # audience = each push URL: the list is optional
    with pytest.raises(ConfigError, match=r"transports\.http_push\.auth\.allow.*'https://w/x' is not an origin"):
        load(env={**full, f"{PUSH}AUTH__ALLOW": "https://w/x"})


@pytest.mark.process
def test_server_with_bearer_and_no_origin_list_refuses_to_start(tmp_path: Path) -> None:
    env = {**os.environ, f"{PUSH}AUTH__MODE": "bearer", f"{PUSH}AUTH__TOKEN": "s3cret"}
    r = subprocess.run([sys.executable, "-m", "local", "dev", "--server-port", str(free_port()),
                        "--observability-metrics-port", "0"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert "transports.http_push.auth.allow" in r.stderr + r.stdout, r.stderr
    assert "s3cret" not in r.stderr + r.stdout


# -------------------------------------------------------------------------------- live servers

@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., ServerProc]]:
    started: list[ServerProc] = []

    def go(backend: str, env: dict[str, str] | None = None, debug: bool = True, **kw: Any) -> ServerProc:
        srv = start_server(backend, tmp_path / f"s{len(started)}", debug=debug, env=env, **kw)
        started.append(srv)
        return srv

    yield go
    for srv in started:
        srv.stop()


@pytest.fixture
def captures() -> Iterator[Callable[..., Capture]]:
    running: list[Capture] = []

    def go(**kw: Any) -> Capture:
        c = Capture(**kw).start()
        running.append(c)
        return c

    yield go
    for c in running:
        c.stop()


def snap(srv: ServerProc) -> Any:
    st, data = srv.rpc("debug.snap", {})
    assert st == 200, data
    return data


def registrations(address: str, n: int) -> list[tuple[str, dict]]:
    """Every way a request registers a delivery address."""
    target = {"resonate:target": address}
    later = int(time.time() * 1000) + HOUR
    return [
        ("promise.register_listener", {"awaited": "listened", "address": address}),
        ("promise.create", {"id": f"p{n}", "timeoutAt": later, "tags": target}),
        ("task.create", {"pid": "w", "ttl": 60_000,
                         "action": {"kind": "promise.create", "head": {},
                                    "data": {"id": f"t{n}", "timeoutAt": later, "tags": target}}}),
        ("schedule.create", {"id": f"s{n}", "cron": "* * * * *", "promiseId": "{{.id}}.{{.timestamp}}",
                             "promiseTimeout": 60_000, "promiseTags": target}),
    ]


REFUSED_ALWAYS = ["http://169.254.169.254/computeMetadata/v1/", "http://metadata.google.internal/",
                  "http://[fe80::1]/", "https://[::ffff:169.254.169.254]/x", "http://2852039166/",
                  "http://METADATA/"]


@pytest.mark.parametrize("backend", backends())  # RPC answers only: in process too
def test_refused_registrations_answer_400_and_change_nothing(backend, launch):
    port = free_port()
    srv = launch(backend, {f"{PUSH}DENY_PRIVATE": "true", "RESONATE_TRANSPORTS__GCPS__ALLOW_PROJECTS": '["good-proj"]'})
    assert srv.rpc("debug.start", {})[0] == 200  # nothing is delivered inside a debug session
    later = int(time.time() * 1000) + HOUR
    assert srv.rpc("promise.create", {"id": "listened", "timeoutAt": later})[0] == 200
    before = snap(srv)
    refused = REFUSED_ALWAYS + [f"http://127.0.0.1:{port}/", "http://10.1.2.3/", f"http://localhost:{port}/x",
                                "http://[::1]/", "gcps://evil-proj/topic"]
    for n, address in enumerate(refused):
        for kind, data in registrations(address, n):
            st, msg = srv.rpc(kind, data)
            assert st == 400, (kind, address, st, msg)
            assert isinstance(msg, str) and "refused" in msg and repr(address) in msg, msg
    assert snap(srv) == before
    assert "Destination refused address=" in srv.logs()
    for n, address in enumerate(["http://192.0.2.1:9/w", "gcps://good-proj/topic"], start=100):
        for kind, data in registrations(address, n):
            st, out = srv.rpc(kind, data)
            assert st == 200, (kind, address, st, out)
    assert snap(srv) != before


@pytest.mark.parametrize("backend", process_backends())
def test_loopback_is_allowed_without_deny_private(backend, launch, captures):
    """The local default: workers on this machine keep working; metadata stays refused."""
    worker = captures()
    srv = launch(backend)
    later = int(time.time() * 1000) + HOUR
    assert srv.rpc("promise.create", {"id": "ok", "timeoutAt": later, "tags": {"resonate:target": worker.url("/w")}})[0] == 200
    assert wait_until(lambda: worker.count >= 1, 20), srv.logs()
    assert srv.rpc("promise.create", {"id": "md", "timeoutAt": later,
                                      "tags": {"resonate:target": REFUSED_ALWAYS[0]}})[0] == 400


def _hosts(path: Path, table: dict[str, list[str]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table))
    tmp.replace(path)  # atomically: the resolver reads it on every lookup


def _resolver_env(hosts: Path) -> dict[str, str]:
    pp = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(RESOLVER) + (os.pathsep + pp if pp else ""), "RESONATE_TEST_HOSTS": str(hosts)}


def dead_rows(srv: ServerProc) -> list[tuple[str, int]]:
    """(id, failures) of the outbox rows given up (SQLite, Postgres, MySQL: read from the database)."""
    if srv.backend == "sqlite":
        with sqlite3.connect(f"file:{srv.db}?mode=ro", uri=True) as c:
            return c.execute("SELECT id, attempts FROM outbox WHERE dead = 1 ORDER BY seq").fetchall()
    if srv.backend == "mysql":
        from tests.support.mysql import run

        return [tuple(r) for r in run("SELECT id, attempts FROM outbox WHERE claimed_until >= 4611686018427387904"
                                      " ORDER BY seq", srv.my_url or "")]
    c = pg8000.native.Connection(**parse_url(srv.pg_url or ""))
    try:
        return [tuple(r) for r in c.run("SELECT id, attempts FROM outbox WHERE claimed_until >= 4611686018427387904 ORDER BY seq")]
    finally:
        c.close()


@pytest.mark.parametrize("backend", process_backends())  # the test resolver lives in the process
def test_dns_rebinding_after_registration_never_reaches_a_refused_address(backend, launch, captures, tmp_path):
    """`rebind.test` resolves to an allowed address when registered and to a denied one (where a
    worker listens) when pushed: no request reaches it, and the row ends dead. `ok.test` (the
    control) shows the resolver and the hostname-based Host header at work."""
    port = free_port()
    denied = captures(host="127.0.0.2", port=port)  # the address DNS rebinds to
    control = captures(host="127.0.0.1", port=port)
    hosts = tmp_path / "hosts.json"
    _hosts(hosts, {"rebind.test": ["127.0.0.1"], "ok.test": ["127.0.0.1"]})
    srv = launch(backend, {**_resolver_env(hosts), f"{PUSH}DENY": '["127.0.0.2/32"]', f"{PUSH}MAX_ATTEMPTS": "2"})
    later = int(time.time() * 1000) + HOUR

    st, out = srv.rpc("promise.create", {"id": "ctl", "timeoutAt": later,
                                         "tags": {"resonate:target": f"http://ok.test:{port}/ctl"}})
    assert st == 200, out
    assert wait_until(lambda: control.count >= 1, 20), srv.logs()
    assert control.requests[0].headers["host"] == f"ok.test:{port}"

    assert srv.rpc("debug.start", {})[0] == 200  # park delivery between the check and the push
    st, out = srv.rpc("promise.create", {"id": "rb", "timeoutAt": later,
                                         "tags": {"resonate:target": f"http://rebind.test:{port}/rb"}})
    assert st == 200, out
    _hosts(hosts, {"rebind.test": ["127.0.0.2"], "ok.test": ["127.0.0.1"]})
    st, out = srv.rpc("promise.create", {"id": "rb2", "timeoutAt": later,
                                         "tags": {"resonate:target": f"http://rebind.test:{port}/rb"}})
    assert st == 400 and "127.0.0.2" in out, out  # registered now, it is refused at once
    assert srv.rpc("debug.stop", {})[0] == 200

    assert wait_until(lambda: "Outbound delivery given up after 2 failed attempts" in srv.logs(), 30), srv.logs()
    assert "push refused by the outbound destination policy" in srv.logs()
    assert denied.count == 0 and [r.path for r in control.requests] == ["/ctl"]
    if backend != "memory":
        assert dead_rows(srv) == [("rb", 2)]


@pytest.mark.parametrize("backend", process_backends())
def test_credentials_go_only_to_allow_listed_origins(backend, launch, captures):
    trusted, other = captures(), captures()
    srv = launch(backend, {f"{PUSH}AUTH__MODE": "bearer", f"{PUSH}AUTH__TOKEN": "s3cret-push-token",
                           f"{PUSH}AUTH__ALLOW": json.dumps([f"http://127.0.0.1:{trusted.port}"])}, debug=False)
    later = int(time.time() * 1000) + HOUR
    for id, url in (("a", trusted.url("/a")), ("b", other.url("/b")),
                    ("c", f"http://localhost:{trusted.port}/c")):  # same server, another origin
        st, out = srv.rpc("promise.create", {"id": id, "timeoutAt": later, "tags": {"resonate:target": url}})
        assert st == 200, out
    assert wait_until(lambda: trusted.count >= 2 and other.count >= 1, 20), srv.logs()
    by_path = {r.path: r.headers for r in trusted.requests + other.requests}
    assert by_path["/a"]["authorization"] == "Bearer s3cret-push-token"
    assert "authorization" not in by_path["/b"] and "authorization" not in by_path["/c"]
    assert "s3cret-push-token" not in srv.logs()


@pytest.mark.parametrize("backend", process_backends())
def test_redirects_are_never_followed(backend, launch, captures):
    elsewhere = captures()
    redirecting = captures(status=302, location=elsewhere.url("/stolen"))
    srv = launch(backend, {f"{PUSH}MAX_ATTEMPTS": "3"})
    later = int(time.time() * 1000) + HOUR
    assert srv.rpc("promise.create", {"id": "r", "timeoutAt": later,
                                      "tags": {"resonate:target": redirecting.url("/r")}})[0] == 200
    assert wait_until(lambda: "Outbound delivery given up after 3 failed attempts" in srv.logs(), 30), srv.logs()
    assert redirecting.count == 3 and elsewhere.count == 0
    assert "answered 302" in srv.logs()


@pytest.mark.parametrize("backend", process_backends())
def test_a_target_that_keeps_failing_ends_dead_after_max_attempts(backend, launch, captures, tmp_path):
    """Three attempts, then never again: not by the re-drive, not by the task's retry timer
    (1 s here, re-enqueueing the same message), not after a restart (SQLite); a new version of
    the task (here: released after being acquired) replaces the dead row and is sent."""
    failing = captures(status=500)
    args = ["--tasks-retry-timeout", "1000"]
    env = {f"{PUSH}MAX_ATTEMPTS": "3"}
    srv = launch(backend, env, debug=False, args=args)
    later = int(time.time() * 1000) + HOUR
    assert srv.rpc("promise.create", {"id": "f", "timeoutAt": later,
                                      "tags": {"resonate:target": failing.url("/f")}})[0] == 200
    assert wait_until(lambda: "Outbound delivery given up after 3 failed attempts" in srv.logs(), 30), srv.logs()
    assert srv.logs().count("Outbound delivery given up") == 1
    assert stays_false(lambda: failing.count > 3, 5)  # several retry-timer periods
    assert failing.count == 3
    if backend != "memory":
        assert dead_rows(srv) == [("f", 3)]
    if backend == "sqlite":
        srv.stop()
        srv = launch(backend, env, debug=False, args=args, db=srv.db)
        assert stays_false(lambda: failing.count > 3, 5)
        assert failing.count == 3 and dead_rows(srv) == [("f", 3)]
    # a new execute (another version) replaces the dead row and goes out
    st, data = srv.rpc("task.acquire", {"id": "f", "version": 0, "pid": "w", "ttl": 60_000})
    assert st == 200, data
    assert srv.rpc("task.release", {"id": "f", "version": 1})[0] == 200
    assert wait_until(lambda: failing.count > 3, 20), srv.logs()
    if backend != "memory":
        assert wait_until(lambda: dead_rows(srv) == [("f", 3)], 30), srv.logs()
