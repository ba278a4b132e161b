"""Hostile input over real HTTP, with inbound auth off and on, on every storage adapter.

Each case is sent to a live server (`--level debug`, JSON logs, debug operations on) and must get:
  - never a 5xx and never HTML: `POST /` answers a well-formed JSON envelope (HTTP status ==
    head.status), `GET /poll/...` an event stream or plain text;
  - a refusal (4xx) leaves the state unchanged (`debug.snap` before and after);
  - the log stays one JSON object per line, no tracebacks, no ERROR, and every control character
    of a client string appears escaped inside a quoted field (never raw, never unquoted).

Plus: the nesting limit is exact, `promises.max_listeners` is enforced (cap reached exactly is
fine, one more is a 400 that changes nothing, re-registering an address does not count twice),
the text log format stays one line per event, and the metrics listener follows `server.bind`.
"""
from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.support import marks
from tests.support.server import VERSION, ServerProc, free_port, process_backend_names, start_server
from tests.support.tokens import KeyPair, claims
from tests.support.wait import wait_until

pytestmark = pytest.mark.process

MIB = 1024 * 1024
FAR = 2**62
MAX_DEPTH = 64  # shared.protocol.MAX_DEPTH, the documented limit
CAP = 5  # --promises-max-listeners of the servers below
DEPTH_ERROR = f"Invalid request envelope: nesting deeper than {MAX_DEPTH}"
CONTROLS = {"CR": "\r", "LF": "\n", "ESC": "\x1b", "NUL": "\x00", "LS": "\u2028", "NEL": "\u0085"}
# the escaped forms JSON (or a Python literal) gives those characters
ESCAPES = re.compile(r"\\(?:r|n|u001b|u0000|u2028|u0085|x1b|x00|x85)", re.I)
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')


# ------------------------------------------------------------------------------------ servers


class Hostile:
    """A live server plus what the checks need: the admin token (auth on) and the log position."""

    def __init__(self, srv: ServerProc, auth: bool) -> None:
        self.srv = srv
        self.auth = auth
        self.offset = 0
        self.http = requests.Session()

    @property
    def token(self) -> str | None:
        return self.srv.token

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
        h = {"Content-Type": "application/json", **(headers or {})}
        return self.http.post(self.srv.url + "/", data=body, headers=h, timeout=60)

    def snap(self) -> dict[str, Any]:
        status, data = self.srv.rpc("debug.snap", {})
        assert status == 200, data
        return data

    def new_log_entries(self) -> list[dict[str, Any]]:
        """The complete log lines written since the last call, each parsed as one JSON object."""
        raw = self.srv.log.read_bytes()[self.offset:]
        end = raw.rfind(b"\n") + 1
        self.offset += end
        entries = []
        for line in raw[:end].decode("utf-8").splitlines():
            entry = json.loads(line)  # a line that is not one JSON object fails here
            assert isinstance(entry, dict), line
            entries.append(entry)
        return entries


def check_log(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        msg = e["message"]
        assert "stack_trace" not in e and e["severity"] != "ERROR", e
        assert "\n" not in msg and "\r" not in msg and "\u2028" not in msg and "\x85" not in msg, e
        bare = QUOTED.sub("", msg)  # outside quoted fields no client control character may show
        assert not ESCAPES.search(bare), f"unquoted client string in a log line: {msg!r}"


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair("ed25519")


@pytest.fixture(scope="module", params=[marks.param(b, (b, a), f"{b}-auth-{a}") for b in process_backend_names()
                        for a in ("off", "on")])
def hs(request: pytest.FixtureRequest, key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    backend, auth = request.param
    work = tmp_path_factory.mktemp(f"hostile-{backend}-{auth}")
    env = {"RESONATE_LOG_FORMAT": "json"}
    if auth == "on":
        env["RESONATE_AUTH__PUBLICKEY"] = key.write(work)
    srv = start_server(backend, work, env=env, args=["--level", "debug", "--promises-max-listeners", str(CAP)])
    if auth == "on":
        srv.token = key.sign(claims(3600, role="admin"))
    h = Hostile(srv, auth == "on")
    assert srv.rpc("debug.start", {})[0] == 200  # background loops paused: the state moves only by requests
    assert srv.rpc("debug.reset", {})[0] == 200
    assert srv.rpc("promise.create", {"id": "seed", "timeoutAt": FAR})[0] == 200
    yield h
    srv.stop()
    h.offset = 0
    check_log(h.new_log_entries())  # the whole log, once the server has flushed everything


# ------------------------------------------------------------------------------------ checks


def envelope(r: requests.Response) -> dict[str, Any]:
    """The response must be a well-formed envelope that is not a server error."""
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers.get("Content-Type", "").startswith("application/json"), (r.headers, r.text[:300])
    env = r.json()
    assert set(env) == {"kind", "head", "data"}, env
    assert isinstance(env["kind"], str) and isinstance(env["head"]["corrId"], str), env
    assert env["head"]["status"] == r.status_code and env["head"]["version"] == VERSION, env
    if r.status_code >= 400:
        assert isinstance(env["data"], str), env
    return env


def send(hs: Hostile, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """One hostile `POST /`: envelope, unchanged state when refused, clean log."""
    before = hs.snap()
    r = hs.post(body, headers)
    env = envelope(r)
    if r.status_code >= 400:
        assert hs.snap() == before, (r.status_code, env, body[:300])
    wait_until(lambda: hs.srv.log.stat().st_size > hs.offset, 10)
    check_log(hs.new_log_entries())
    return r.status_code, env


def wrap(kind: str, data: Any, head: dict[str, Any] | None = None, auth: str | None = None) -> bytes:
    h: dict[str, Any] = {"corrId": uuid.uuid4().hex, "version": VERSION, **(head or {})}
    if auth is not None:
        h["auth"] = auth
    return json.dumps({"kind": kind, "head": h, "data": data}).encode()  # ensure_ascii: \\uXXXX escapes


def nested(depth: int, leaf: str = '"x"', obj: bool = False) -> str:
    """JSON text of `depth` containers around `leaf` (arrays, or objects {"a": ...})."""
    return ('{"a":' * depth + leaf + "}" * depth) if obj else ("[" * depth + leaf + "]" * depth)


def raw_envelope(kind: str, data: str, head: str = "", auth: str | None = None) -> bytes:
    extra = (f',"auth":{json.dumps(auth)}' if auth else "") + head
    return (f'{{"kind":"{kind}","head":{{"corrId":"c-deep","version":"{VERSION}"{extra}}},"data":{data}}}').encode()


# ------------------------------------------------------------------------------ deep nesting

DEEP = [(f"{where}-{depth}-{'nul' if nul else 'plain'}", where, depth, nul)
        for where in ("data-array", "data-object", "head", "data-inside-list")
        for depth in (500, 10_000) for nul in (True, False)]


@pytest.mark.parametrize("case", DEEP, ids=lambda c: c[0])
def test_deep_nesting_is_a_400_envelope(hs: Hostile, case: tuple[str, str, int, bool]) -> None:
    _, where, depth, nul = case
    leaf = '"a\\u0000b"' if nul else '"x"'
    if where == "data-array":
        body = raw_envelope("promise.create", f'{{"id":"deep","timeoutAt":{FAR},"z":{nested(depth, leaf)}}}',
                            auth=hs.token)
    elif where == "data-object":
        body = raw_envelope("promise.create", f'{{"id":"deep","timeoutAt":{FAR},"z":{nested(depth, leaf, True)}}}',
                            auth=hs.token)
    elif where == "head":
        body = raw_envelope("promise.get", '{"id":"seed"}', head=f',"x":{nested(depth, leaf, True)}', auth=hs.token)
    else:  # a list of ordinary items with the deep one last (an array of arrays)
        body = raw_envelope("task.heartbeat", f'{{"pid":"p","tasks":[{{"id":"a","version":1}},{nested(depth, leaf)}]}}',
                            auth=hs.token)
    status, env = send(hs, body)
    assert status == 400 and env["data"] == DEPTH_ERROR, env


@pytest.mark.parametrize("body", [nested(500).encode(), nested(10_000, obj=True).encode(),
                                  b'{"kind":' + nested(300).encode() + b"}"], ids=["array", "object", "kind"])
def test_deep_bodies_that_are_not_envelopes(hs: Hostile, body: bytes) -> None:
    status, env = send(hs, body)
    assert status == 400 and env["data"] == DEPTH_ERROR, env
    assert (env["kind"], env["head"]["corrId"]) == ("unknown", "0"), env


def test_nesting_limit_is_exact(hs: Hostile) -> None:
    """The envelope object is level 1 and data level 2: 62 containers inside data reach 64."""
    ok = raw_envelope("promise.get", f'{{"id":"seed","z":{nested(MAX_DEPTH - 2)}}}', auth=hs.token)
    status, env = send(hs, ok)
    assert status == 200, env
    over = raw_envelope("promise.get", f'{{"id":"seed","z":{nested(MAX_DEPTH - 1)}}}', auth=hs.token)
    status, env = send(hs, over)
    assert status == 400 and env["data"] == DEPTH_ERROR, env
    assert (env["kind"], env["head"]["corrId"]) == ("promise.get", "c-deep"), env


# -------------------------------------------------------------------- strings: surrogates, size

@pytest.mark.parametrize("where", ["kind", "corrId", "id", "tag", "address", "auth"])
def test_lone_surrogates(hs: Hostile, where: str) -> None:
    bad = "a\ud800b"
    kind, data, head = "promise.get", {"id": "seed"}, {}
    if where == "kind":
        kind = bad
    elif where == "corrId":
        head = {"corrId": bad}
    elif where == "id":
        data = {"id": bad}
    elif where == "tag":
        kind, data = "promise.create", {"id": "sur", "timeoutAt": FAR, "tags": {"k": bad}}
    elif where == "address":
        kind, data = "promise.register_listener", {"awaited": "seed", "address": "poll://any@g/" + bad}
    status, env = send(hs, wrap(kind, data, head, auth=bad if where == "auth" else hs.token))
    assert status == 400 or (where == "auth" and status in (200, 401)), env  # auth off ignores head.auth


def test_huge_head_auth(hs: Hostile) -> None:
    status, env = send(hs, wrap("promise.get", {"id": "seed"}, auth="e" * MIB))
    assert status == (401 if hs.auth else 200), env


def test_huge_authorization_header(hs: Hostile) -> None:
    """1 MiB in one header line: refused by the HTTP layer (an empty 400, the header is over its
    64 KiB line limit) or, the client still sending, a closed connection; never a 5xx."""
    body = wrap("promise.get", {"id": "seed"}, auth=hs.token)
    before = hs.snap()
    with socket.create_connection(("127.0.0.1", hs.srv.port), timeout=30) as s:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
        try:
            s.sendall(head + b"e" * MIB + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            answer = s.recv(4096)
        except OSError:
            answer = b""
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500 and b"<html" not in answer.lower(), answer
    assert hs.snap() == before
    r = hs.post(wrap("promise.get", {"id": "seed"}, auth=hs.token), {"Authorization": "Bearer " + "e" * 60_000})
    assert envelope(r)["head"]["status"] == 200  # a big (but parseable) header is just ignored by POST /
    wait_until(lambda: hs.srv.log.stat().st_size > hs.offset, 10)
    check_log(hs.new_log_entries())


# ------------------------------------------------------------------- control characters in fields

def _control_cases() -> list[tuple[str, str, Callable[[str, str | None], bytes], bool]]:
    """(id, control, body builder, may be accepted): every field that may reach a log line."""
    out = []
    for name, c in CONTROLS.items():
        out += [
            (f"kind-{name}", c, lambda c, t: wrap(f"promise.get{c}", {"id": "seed"}, auth=t), False),
            (f"corrId-{name}", c, lambda c, t: wrap("promise.get", {"id": "seed"}, {"corrId": f"c{c}x"}, auth=t), True),
            (f"get-id-{name}", c, lambda c, t: wrap("promise.get", {"id": f"p{c}x"}, auth=t), False),
            (f"create-id-{name}", c, lambda c, t: wrap("promise.create", {"id": f"n{c}{uuid.uuid4().hex}",
                                                                          "timeoutAt": FAR}, auth=t), c != "\x00"),
            (f"task-id-{name}", c, lambda c, t: wrap("task.acquire", {"id": f"t{c}x", "version": 0, "pid": f"w{c}",
                                                                      "ttl": 1000}, auth=t), False),
            (f"listener-address-{name}", c, lambda c, t: wrap("promise.register_listener", {
                "awaited": "seed", "address": f"poll://any@g/x{c}y"}, auth=t), False),
            (f"listener-url-{name}", c, lambda c, t: wrap("promise.register_listener", {
                "awaited": "seed", "address": f"http://worker.example/x{c}y"}, auth=t), False),
            (f"target-{name}", c, lambda c, t: wrap("promise.create", {
                "id": "tg", "timeoutAt": FAR, "tags": {"resonate:target": f"poll://any@g{c}"}}, auth=t), False),
            (f"schedule-target-{name}", c, lambda c, t: wrap("schedule.create", {
                "id": "s", "cron": "* * * * *", "promiseId": "s.{{.timestamp}}", "promiseTimeout": 1000,
                "promiseTags": {"resonate:target": f"http://w{c}/x"}}, auth=t), False),
            (f"head-auth-{name}", c, lambda c, t: wrap("promise.get", {"id": "seed"}, auth=f"{t or 'x'}{c}"), True),
        ]
    return out


CONTROL_CASES = _control_cases()


@pytest.mark.parametrize("case", CONTROL_CASES, ids=lambda c: c[0])
def test_control_characters_in_fields(hs: Hostile, case: tuple[str, str, Any, bool]) -> None:
    name, c, build, may_accept = case
    status, env = send(hs, build(c, hs.token))
    if name.startswith(("listener-", "target-", "schedule-target-")):
        assert status == 400 and "address" in env["data"], env  # control characters never make an address
    elif name.startswith("head-auth-"):
        assert status == (401 if hs.auth else 200), env
    elif not may_accept:
        assert status in (400, 404), env
    else:
        assert status in (200, 404), env


@pytest.mark.parametrize("name", list(CONTROLS))
def test_control_characters_in_the_authorization_header(hs: Hostile, name: str) -> None:
    """`POST /` ignores the header; poll reads its token from it. CR and LF cannot be sent inside
    a header value (they end it), so those two travel percent-encoded in the poll path instead."""
    c = CONTROLS[name]
    value = ("Bearer " + (hs.token or "t") + c).encode("utf-8")
    if c not in "\r\n":
        status, env = send(hs, wrap("promise.get", {"id": "seed"}, auth=hs.token), {"Authorization": value})  # type: ignore[dict-item]
        assert status == 200, env
        poll(hs, "/poll/g/w1", {"Authorization": value}, refused=hs.auth)
    enc = "".join(f"%{b:02X}" for b in c.encode("utf-8"))
    auth = {"Authorization": f"Bearer {hs.token}"} if hs.token else {}
    assert poll(hs, f"/poll/g{enc}x/w1", auth, refused=False) == 400  # no address can name it
    assert poll(hs, f"/poll/g/w{enc}y", auth, refused=False) == 400
    poll(hs, "/poll/g/w1", {"Authorization": f"Bearer x{enc}"} if hs.auth else {}, refused=hs.auth)


def poll(hs: Hostile, path: str, headers: dict[str, Any], refused: bool) -> int:
    """A poll request: an event stream (closed at once) or a plain-text refusal; never a 5xx."""
    with requests.get(hs.srv.url + path, headers=headers, stream=True, timeout=30) as r:
        ctype = r.headers.get("Content-Type", "")
        assert r.status_code < 500, (path, r.status_code, r.text[:300])
        if refused:
            assert r.status_code in (401, 403) and ctype.startswith("text/plain"), (path, r.status_code, ctype)
        elif r.status_code == 200:
            assert ctype.startswith("text/event-stream"), (path, ctype)
        else:
            assert ctype.startswith("text/plain"), (path, r.status_code, ctype)
    wait_until(lambda: hs.srv.log.stat().st_size > hs.offset, 10)
    check_log(hs.new_log_entries())
    return r.status_code


# ------------------------------------------------------------------------ bodies that are not JSON

BODIES = {
    "not-json": b"not json at all",
    "truncated": b'{"kind":"promise.get","head":{"corrId":"c","version":"2026-04-01"},"data":{"id":"se',
    "array": b"[]",
    "string": b'"promise.get"',
    "number": b"42",
    "null": b"null",
    "empty": b"",
    "binary": bytes(range(256)),
    "bad-utf8": b'{"kind":"promise.get","head":{"corrId":"\xff\xfe","version":"2026-04-01"},"data":{}}',
    "control-bytes": b'{"kind":"promise.get\x1b","head":{"corrId":"c\x00","version":"2026-04-01"},"data":{}}',
}


@pytest.mark.parametrize("name", list(BODIES))
def test_bodies_that_are_not_envelopes(hs: Hostile, name: str) -> None:
    status, env = send(hs, BODIES[name])
    assert status == 400, env


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                   "application/xml", "text/html", ""])
def test_content_types_do_not_matter(hs: Hostile, ctype: str) -> None:
    """The body is the envelope whatever the declared type (the SDKs vary); flask never parses it."""
    status, env = send(hs, wrap("promise.get", {"id": "seed"}, auth=hs.token), {"Content-Type": ctype})
    assert status == 200, env
    status, env = send(hs, b"a=b&c=d", {"Content-Type": ctype})
    assert status == 400, env


def test_unexpected_methods_and_paths_answer_plain(hs: Hostile) -> None:
    for method, path in (("PUT", "/"), ("GET", "/"), ("POST", "/nope%0Aforged"), ("DELETE", "/poll/g/w"),
                         ("POST", "/poll/g/w"), ("GET", "/poll/%00/%E2%80%A8")):
        with hs.http.request(method, hs.srv.url + path, timeout=30, stream=True) as r:
            ctype = r.headers.get("Content-Type", "")
            assert r.status_code < 500 and "html" not in ctype, (method, path, r.status_code, ctype)
            if not ctype.startswith("text/event-stream"):
                assert b"<html" not in r.content.lower(), (method, path)
    wait_until(lambda: hs.srv.log.stat().st_size > hs.offset, 10)
    check_log(hs.new_log_entries())


# ------------------------------------------------------------------------------- max listeners

def test_max_listeners(hs: Hostile) -> None:
    srv = hs.srv
    pid = f"ml-{uuid.uuid4().hex[:8]}"
    assert srv.rpc("promise.create", {"id": pid, "timeoutAt": FAR})[0] == 200
    for i in range(CAP):
        st, d = srv.rpc("promise.register_listener", {"awaited": pid, "address": f"poll://uni@g/w{i}"})
        assert st == 200, d
    st, d = srv.rpc("promise.register_listener", {"awaited": pid, "address": "poll://uni@g/w0"})
    assert st == 200, d  # at the cap, an address already registered is no new listener
    before = hs.snap()
    st, d = srv.rpc("promise.register_listener", {"awaited": pid, "address": "poll://uni@g/one-more"})
    assert (st, d) == (400, f"Too many listeners on this promise (max {CAP})")
    assert hs.snap() == before
    assert sorted(x["address"] for x in before["listeners"] if x["id"] == pid) == [f"poll://uni@g/w{i}"
                                                                                   for i in range(CAP)]
    other = pid + "-other"  # the cap is per promise
    assert srv.rpc("promise.create", {"id": other, "timeoutAt": FAR})[0] == 200
    assert srv.rpc("promise.register_listener", {"awaited": other, "address": "poll://uni@g/one-more"})[0] == 200
    st, d = srv.rpc("promise.settle", {"id": pid, "state": "resolved", "value": {}})  # settled: listeners gone
    assert st == 200, d
    st, d = srv.rpc("promise.register_listener", {"awaited": pid, "address": "poll://uni@g/late"})
    assert st == 200 and d["promise"]["state"] == "resolved", d


# ------------------------------------------------------------------------- text format, metrics

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (DEBUG| INFO| WARN|ERROR) [\w.]+: .")


def test_text_log_stays_one_line_per_event(tmp_path: Path) -> None:
    srv = start_server("memory", tmp_path, args=["--level", "debug"], env={"RESONATE_LOG_FORMAT": "text"})
    try:
        for c in list(CONTROLS.values()) + ["\u2029", "\x7f", "\x9b", "\ud800"]:
            bodies = [wrap(f"k{c}", {}), wrap("promise.get", {"id": f"i{c}"}, {"corrId": f"c{c}"}),
                      wrap("promise.register_listener", {"awaited": "a", "address": f"poll://any@g{c}"}),
                      json.dumps({"kind": f"x{c}", "head": {"corrId": f"y{c}"}}).encode(),
                      b'{"kind":"' + c.encode("utf-8", "surrogatepass") + b'"']
            for body in bodies:
                r = srv.post(body, raw=True)
                assert r.status_code < 500 and r.headers["Content-Type"] == "application/json"
            enc = "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
            with requests.get(f"{srv.url}/poll/g{enc}/w{enc}", stream=True, timeout=30) as r:
                assert r.status_code < 500
            requests.get(f"{srv.url}/promises/x{enc}", timeout=30)  # a legacy path: a WARN line naming it
    finally:
        srv.stop()
    lines = srv.logs().splitlines()
    bad = [line for line in lines if not TEXT_LINE.match(line)]
    assert not bad and len(lines) > 50, bad[:5]
    assert " ERROR " not in srv.logs()


def test_metrics_listener_follows_server_bind(tmp_path: Path) -> None:
    mport = free_port()
    srv = start_server("memory", tmp_path, args=["--server-bind", "127.0.0.1", "--observability-metrics-port",
                                                 str(mport)])
    try:
        assert wait_until(lambda: f"Metrics server listening port={mport} bind=127.0.0.1" in srv.logs(), 10), srv.logs()
        proc = psutil.Process(srv.proc.pid)
        listening = {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
        assert (("127.0.0.1", mport) in listening and ("0.0.0.0", mport) not in listening
                and ("::", mport) not in listening), listening
        assert requests.get(f"http://127.0.0.1:{mport}/metrics", timeout=10).status_code == 200
        others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                  if a.family == socket.AF_INET and not a.address.startswith("127.")]
        for ip in others:  # another local address, if this machine has one: nothing listens there
            with pytest.raises(OSError):
                socket.create_connection((ip, mport), timeout=2).close()
    finally:
        srv.stop()


# ------------------------------------------------------------------- in process: the last guards

def test_unexpected_errors_answer_json_or_plain_text_never_html(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug anywhere (here: the envelope parser itself, then a route) still answers an envelope
    on `POST /` and plain text elsewhere, with the traceback in the log."""
    import shared.service
    from shared.config import load
    from shared.http import create_app
    from shared.service import Service
    from shared.storage.memory import MemoryStore

    service = Service(MemoryStore(), load({"debug": True}, env={}))

    def broken(raw: bytes) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(shared.service, "parse_envelope", broken)
    app = create_app(service, None)

    def boom() -> Any:
        raise KeyError("bug")

    app.add_url_rule("/boom", "boom", boom, methods=["GET", "POST"])
    c = app.test_client()
    r = c.post("/", data=wrap("promise.get", {"id": "x"}))
    assert r.status_code == 500 and r.mimetype == "application/json", r.data
    assert r.get_json() == {"kind": "unknown", "head": {"corrId": "0", "status": 500, "version": VERSION},
                            "data": "Internal error: RecursionError"}
    r = c.get("/boom")
    assert r.status_code == 500 and r.mimetype == "text/plain" and b"<" not in r.data, r.data
    r = c.open("/", method="PATCH")  # an HTTP error keeps its status
    assert r.status_code == 405 and b"<" not in r.data


def test_walks_of_client_data_are_iterative() -> None:
    from shared.protocol import any_str, parse_envelope, too_deep

    deep: Any = "a\x00"
    for _ in range(100_000):
        deep = [deep]
    assert any_str(deep, lambda s: "\x00" in s) and too_deep(deep) and not too_deep([[["x"]]], 3)
    assert too_deep([[[[]]]], 3) and not too_deep({"a": {"b": []}}, 3) and too_deep({"a": {"b": [{}]}}, 3)
    env, err = parse_envelope(raw_envelope("promise.get", '{"id":"x","z":' + nested(62) + "}"))
    assert err is None and env is not None
    env, err = parse_envelope(raw_envelope("promise.get", '{"id":"x","z":' + nested(63, obj=True) + "}"))
    assert err is not None and err["data"] == DEPTH_ERROR and err["head"]["corrId"] == "c-deep"


def test_function_whose_core_cannot_be_built_answers_503_not_html(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Cloud Function instance whose database is unreachable at its cold start: a 503 the SDKs
    retry (an envelope on `POST /`), never functions-framework's HTML 500."""
    import logging

    import functions_framework

    from tests.support.server import ROOT

    monkeypatch.setenv("RESONATE_STORAGE__TYPE", "postgres")
    monkeypatch.setenv("RESONATE_STORAGE__POSTGRES__URL", f"postgres://postgres@127.0.0.1:{free_port()}/nope")
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))  # the function module sets up logging on import
    try:
        app = functions_framework.create_app(target="api", source=str(ROOT / "functions" / "main.py"))
        c = app.test_client()
        r = c.post("/", data=wrap("promise.get", {"id": "x"}))
        assert r.status_code == 503 and r.mimetype == "application/json", r.data
        assert r.get_json()["head"] == {"corrId": "0", "status": 503, "version": VERSION}
        r = c.get("/ready")
        assert r.status_code == 503 and r.mimetype == "text/plain" and b"<" not in r.data
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
