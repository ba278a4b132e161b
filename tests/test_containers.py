"""The container files (deploy/README.md), checked without Docker or a cluster.

`Dockerfile`, `compose.yaml` and `deploy/kubernetes/resonate.yaml` are parsed and held against the
code they configure: every `RESONATE_*` name must be one `shared.config` reads (the set is
derived from the key table, not listed here), every probe path a route the flask app answers,
every port one the configuration listens on. One test (`process`) runs the image's command and
its HEALTHCHECK against the installed package, with the image's environment.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import load, schema
from shared.config_values import env_name
from shared.storage.postgres import parse_url
from tests.support import marks
from tests.support.server import free_port
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "python:3.12-slim"
# names the image may set besides the server's own: the interpreter's, pip's (builder) and PATH
OTHER_ENV = re.compile(r"PATH|PYTHON[A-Z_]*|PIP_[A-Z_]*")


def accepted_env_names() -> set[str]:
    """Every environment name the configuration loader reads: one per key of the key table."""
    return {env_name(key) for key in schema().leaves}


# ------------------------------------------------------------------------------------ Dockerfile


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]

    def last(self, instruction: str) -> str:
        found = self.all(instruction)
        assert found, f"no {instruction} in the stage FROM {self.base}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """The stage's ENV, in order (`ENV A=1 B=2` and the legacy `ENV A 1`)."""
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            words = shlex.split(args)
            if "=" not in words[0]:
                out[words[0]] = args.split(None, 1)[1]
                continue
            for w in words:
                name, sep, value = w.partition("=")
                assert sep, f"ENV word without '=': {w!r}"
                out[name] = value
        return out


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments and blank lines dropped."""
    stages: list[Stage] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{instruction} before FROM"
            stages[-1].instructions.append((instruction, args))
    assert not pending, "the Dockerfile ends inside a continued line"
    return stages


def exec_form(args: str) -> list[str]:
    """`["a", "b"]` (the exec form; the shell form would run under /bin/sh -c)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """(options, command) of the stage's HEALTHCHECK."""
    args = stage.last("HEALTHCHECK")
    options: dict[str, str] = {}
    while args.startswith("--"):
        opt, _, args = args.partition(" ")
        name, _, value = opt[2:].partition("=")
        options[name] = value
        args = args.strip()
    kind, _, command = args.partition(" ")
    assert kind.upper() == "CMD", f"HEALTHCHECK {args!r}: expected CMD [...]"
    return options, exec_form(command.strip())


def seconds(duration: str) -> float:
    """A Docker duration (`10s`, `1m30s`, `500ms`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def dockerignored(path: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = Path(path).parts

    def match(pattern: str, i: int) -> bool:  # a folder that matches excludes everything under it
        if pattern.startswith("**/"):  # in any folder
            return fnmatch.fnmatch(parts[i - 1], pattern[3:])
        return fnmatch.fnmatch("/".join(parts[:i]), pattern)  # from the context's root

    return any(match(p, i) for p in patterns for i in range(1, len(parts) + 1))


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def image_env(final: Stage) -> dict[str, str]:
    return final.env()


def test_parser_reads_what_docker_reads() -> None:
    """The parser itself: continuation lines, both ENV forms, stage names, HEALTHCHECK options."""
    st = parse_dockerfile("# c\nFROM a:1 AS b\nRUN x \\\n  && y\nFROM c\nENV A=1 B=\"two words\"\nENV C 3 4\n"
                          "HEALTHCHECK --interval=5s CMD [\"python\", \"-c\", \"pass\"]\n")
    assert [(s.base, s.name) for s in st] == [("a:1", "b"), ("c", None)]
    assert st[0].all("RUN") == ["x  && y"]
    assert st[1].env() == {"A": "1", "B": "two words", "C": "3 4"}
    assert healthcheck(st[1]) == ({"interval": "5s"}, ["python", "-c", "pass"])
    assert seconds("1m30s") == 90 and seconds("500ms") == 0.5


def test_dockerfile_stages_user_ports_volume_command(stages: list[Stage], final: Stage) -> None:
    assert len(stages) >= 2, "multi-stage: a builder and the runtime image"
    assert all(s.base == BASE_IMAGE for s in stages), [s.base for s in stages]
    user = final.last("USER").split(":")[0]
    assert user not in ("", "root", "0"), f"the image runs as {user!r}"
    assert user.isdigit(), "a numeric uid, so Kubernetes can check runAsNonRoot"
    assert final.last("EXPOSE").split() == ["8001", "9090", "8002", "50051"]
    volumes = final.last("VOLUME")
    assert (exec_form(volumes) if volumes.startswith("[") else volumes.split()) == ["/data"]
    assert final.last("WORKDIR") == "/data"
    assert exec_form(final.last("CMD")) == ["resonate", "serve"]
    assert not final.all("ENTRYPOINT")
    options, command = healthcheck(final)
    assert command[0] == "python" and "/health" in " ".join(command)
    assert seconds(options["timeout"]) > float(re.search(r"timeout=(\d+(?:\.\d+)?)", command[-1])[1]), \
        "urllib gives up before Docker kills the check"


def test_dockerfile_runs_the_console_script_from_the_copied_venv(stages: list[Stage], final: Stage) -> None:
    """`resonate` is the project's console script, installed into the venv the final stage copies
    and puts first on PATH; only the builder installs anything (a wheel, no extras)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["resonate"] == "local.cli:main"
    builder = stages[0]
    run = " ".join(builder.all("RUN"))
    venv = re.search(r"python -m venv (\S+)", run)[1]
    assert f"{venv}/bin/pip install /wheels/*.whl" in run and "[" not in run, run
    # the gRPC stubs are generated (never committed) before the wheel is built, so the image has them
    assert "python -m shared.grpc.build --requirements" in run, run
    generate = re.search(r"python -m shared\.grpc\.build\s+&&", run)
    assert generate is not None and generate.start() < run.index("pip wheel"), run
    assert any(a.split() == ["--from=" + (builder.name or "0"), venv, venv] for a in final.all("COPY"))
    assert image_env(final)["PATH"].startswith(f"{venv}/bin:")
    assert not final.all("RUN") or "pip" not in " ".join(final.all("RUN")), "nothing installed in the final stage"
    for args in builder.all("COPY"):  # what the wheel is built from exists and reaches the build context
        for src in args.split()[:-1]:
            assert (ROOT / src).exists(), src
            assert not dockerignored(src), f"{src} is excluded by .dockerignore"
    for package in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
            "include"]:
        assert any(package.rstrip("*") in a.split()[:-1] for a in builder.all("COPY")), f"{package} not copied"


def test_dockerfile_environment_is_the_configuration_it_means(final: Stage) -> None:
    env = image_env(final)
    accepted = accepted_env_names()
    for name in env:
        assert name in accepted or OTHER_ENV.fullmatch(name), f"{name} is not read by shared/config.py"
    cfg = load(env={k: v for k, v in env.items() if k.startswith("RESONATE_")})
    assert cfg.server.bind == "0.0.0.0"  # the API and the metrics listener (local/metrics_listener.py)
    assert [str(cfg.server.port), str(cfg.observability.metrics_port), str(cfg.legacy.poll_port),
            str(cfg.server.grpc_port)] == final.last("EXPOSE").split()
    assert cfg.storage.type == "sqlite" and cfg.storage.sqlite.path.startswith("/data/")


def test_dockerignore_keeps_heavy_and_local_files_out() -> None:
    for path in (".venv", ".git", "node_modules", "tests/sdk/ts/node_modules", "local/__pycache__", "resonate.db",
                 ".pytest_cache", ".mypy_cache", ".ruff_cache"):
        assert dockerignored(path), path
    for path in ("pyproject.toml", "shared", "local/cli.py", "functions/main.py", "shared/grpc/protos"):
        assert not dockerignored(path), path
    assert dockerignored("shared/grpc/gen"), "a local checkout's stubs: the builder generates its own"


# ------------------------------------------------------------------------- the image's command


def entry_command(cmd: list[str]) -> list[str]:
    """The image's CMD as this interpreter runs it: the console script is its entry point."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"][cmd[0]]
    module, func = target.split(":")
    code = f"import sys; from {module} import {func}; sys.argv[0] = {cmd[0]!r}; sys.exit({func}())"
    return [sys.executable, "-c", code, *cmd[1:]]


def run_healthcheck(command: list[str], env: dict[str, str], timeout: float) -> int:
    assert command[0] == "python"
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=timeout).returncode


def grpc_health(port: int) -> str:
    """The gRPC listener's `grpc.health.v1` answer for the whole server."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@pytest.mark.process  # starts the server the image would run
def test_image_command_and_healthcheck(final: Stage, tmp_path: Path) -> None:
    """`resonate serve` with exactly the image's environment (/data a temporary folder, the
    ports free ones): it serves, keeps its database in the data folder, listens for metrics on
    the image's bind address, and the HEALTHCHECK passes while it runs and fails once it stops."""
    marks.require(marks.PROCESS, "starts a server process")
    data = tmp_path / "data"
    data.mkdir()
    port, metrics_port, sse_port, grpc_port = free_port(), free_port(), free_port(), free_port()
    env = {k: v.replace("/data", str(data)) for k, v in image_env(final).items() if k != "PATH"}
    env.update(RESONATE_SERVER__PORT=str(port), RESONATE_OBSERVABILITY__METRICS_PORT=str(metrics_port),
               RESONATE_LEGACY__POLL_PORT=str(sse_port), RESONATE_SERVER__GRPC_PORT=str(grpc_port),
               PATH=os.environ["PATH"], PYTHONPATH=str(ROOT),
               HOME=str(tmp_path))
    options, check = healthcheck(final)
    check_timeout = seconds(options["timeout"])

    assert run_healthcheck(check, env, check_timeout + 5) != 0, "the check passes with no server"
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(entry_command(exec_form(final.last("CMD"))), cwd=data, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: proc.poll() is not None or "Server listening" in log.read_text(), 30)
        assert proc.poll() is None, log.read_text()
        started = time.monotonic()
        assert run_healthcheck(check, env, check_timeout + 5) == 0, log.read_text()
        assert time.monotonic() - started < check_timeout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert b"resonate_" in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{sse_port}/default/w1", timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream") and r.readline() == b": connected\n"
        assert grpc_health(grpc_port) == "SERVING"
        text = log.read_text()
        assert f"Metrics server listening port={metrics_port} bind=0.0.0.0" in text, text
        assert f"Server listening bind=0.0.0.0 port={port}" in text, text
        assert f"gRPC server listening bind=0.0.0.0 port={grpc_port}" in text, text
        assert (data / "resonate.db").is_file(), "the SQLite database is not in the data volume"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # docker stop
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    assert rc == 0, log.read_text()
    assert run_healthcheck(check, env, check_timeout + 5) != 0, "the check passes after the server stopped"


# ----------------------------------------------------------------------------- compose, Kubernetes


@pytest.fixture(scope="module")
def routes() -> Any:
    """The flask app's url map (shared/http.py create_app) and a test client, over the memory store."""
    from shared.http import create_app
    from shared.runtime import Runtime

    rt = Runtime(load({"storage.type": "memory"}, env={}), metrics=False)
    app = create_app(rt.service, rt.hub)
    yield app
    rt.stop()


def answers(app: Any, path: str) -> bool:
    """`GET path` is a route of the app and answers 200."""
    try:
        app.url_map.bind("localhost").match(path, method="GET")
    except Exception:
        return False
    return app.test_client().get(path).status_code == 200


def test_the_app_answers_the_probe_paths(routes: Any) -> None:
    assert answers(routes, "/health") and answers(routes, "/ready")
    assert not answers(routes, "/healthz")  # the check can fail


def check_env_names(env: dict[str, Any], where: str) -> None:
    accepted = accepted_env_names()
    for name in env:
        assert name in accepted, f"{where}: {name} is not read by shared/config.py"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_server_on_postgres(compose: dict[str, Any], final: Stage, routes: Any) -> None:
    services = compose["services"]
    (db_name, db), = [(n, s) for n, s in services.items() if str(s.get("image", "")).startswith("postgres:")]
    (srv_name, srv), = [(n, s) for n, s in services.items() if "build" in s]
    assert re.fullmatch(r"postgres:1[56](\..*)?(-.*)?", db["image"]), db["image"]
    assert srv["build"] in (".", {"context": "."}) and (ROOT / "Dockerfile").is_file()
    assert srv["depends_on"] == {db_name: {"condition": "service_healthy"}}
    for name, s in services.items():
        assert s["healthcheck"]["test"], f"{name} has no health check"
    check = srv["healthcheck"]["test"]
    assert check[0] == "CMD" and check[1] == "python"
    path = re.search(r"127\.0\.0\.1:\d+(/\w*)", check[-1])[1]
    assert answers(routes, path), path

    env = {k: str(v) for k, v in srv["environment"].items()}
    check_env_names(env, "compose.yaml")
    cfg = load(env={**{k: v for k, v in image_env(final).items() if k.startswith("RESONATE_")}, **env})
    assert cfg.storage.type == "postgres"
    pg = parse_url(cfg.storage.postgres.url or "")
    dbenv = db["environment"]
    assert (pg["host"], pg["port"], pg["user"], pg["password"], pg["database"]) == \
        (db_name, 5432, dbenv["POSTGRES_USER"], dbenv["POSTGRES_PASSWORD"], dbenv["POSTGRES_DB"])
    assert sorted(srv["ports"]) == sorted(f"{p}:{p}" for p in (cfg.server.port, cfg.observability.metrics_port,
                                                               cfg.legacy.poll_port, cfg.server.grpc_port))
    assert f"127.0.0.1:{cfg.server.port}/" in check[-1]

    volume, _, mount = db["volumes"][0].partition(":")
    assert mount == "/var/lib/postgresql/data" and volume in compose["volumes"], "a named volume for the data"
    assert "MySQL" in (ROOT / "compose.yaml").read_text()


@pytest.fixture(scope="module")
def kube() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/resonate.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["Deployment", "Secret", "Service"] and len(docs) == 3
    return by_kind


def test_kubernetes_deployment(kube: dict[str, dict[str, Any]], final: Stage, routes: Any) -> None:
    secret, deploy, service = kube["Secret"], kube["Deployment"], kube["Service"]
    spec = deploy["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    assert container.get("args", exec_form(final.last("CMD"))) == exec_form(final.last("CMD"))
    assert "command" not in container

    env: dict[str, str] = {}
    secret_values = {**secret.get("stringData", {})}
    assert not secret.get("data"), "keep the example in stringData"
    for e in container["env"]:
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret_values, f"the Secret has no key {ref['key']!r}"
            env[e["name"]] = secret_values[ref["key"]]
        else:
            assert isinstance(e["value"], str), f"{e['name']}: Kubernetes wants a string"
            env[e["name"]] = e["value"]
    check_env_names(env, "deploy/kubernetes/resonate.yaml")
    assert "RESONATE_STORAGE__POSTGRES__URL" in {e["name"] for e in container["env"] if "valueFrom" in e}
    cfg = load(env={**{k: v for k, v in image_env(final).items() if k.startswith("RESONATE_")}, **env})
    assert cfg.storage.type == "postgres" and cfg.tasks.retry_timeout == 500

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"api": cfg.server.port, "metrics": cfg.observability.metrics_port,
                     "legacy-sse": cfg.legacy.poll_port, "grpc": cfg.server.grpc_port} == \
        {"api": 8001, "metrics": 9090, "legacy-sse": 8002, "grpc": 50051}
    for p in service["spec"]["ports"]:
        assert p["targetPort"] in ports, f"the Service targets {p['targetPort']!r}, not a named container port"
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)

    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "api"), probe
        assert answers(routes, get["path"]), get["path"]

    res = container["resources"]
    assert {"cpu", "memory"} <= res["requests"].keys() and {"cpu", "memory"} <= res["limits"].keys()

    pod_sc, sc = spec["template"]["spec"]["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert str(pod_sc["runAsUser"]) == final.last("USER").split(":")[0]
    if sc.get("readOnlyRootFilesystem"):  # the server then must not need to write outside the mounts
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert cfg.storage.type != "sqlite" or any(cfg.storage.sqlite.path.startswith(m + "/") for m in mounts)
    assert sc["allowPrivilegeEscalation"] is False
