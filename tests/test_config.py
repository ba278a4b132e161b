"""Configuration (docs/operations.md): layers, file discovery, legacy YAML, errors, the CLI."""
from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.config import Config, ConfigError, load

ROOT = Path(__file__).resolve().parents[1]

# the key table (shared/config.py): key -> (default, CLI flag)
SPEC: dict[str, tuple[Any, str]] = {
    "level": ("info", "--level"),
    "debug": (False, "--debug"),
    "server.host": ("localhost", "--server-host"),
    "server.port": (8001, "--server-port"),
    "server.bind": ("0.0.0.0", "--server-bind"),
    "server.shutdown_timeout": (10000, "--server-shutdown-timeout"),
    "server.url": (None, "--server-url"),
    "server.cors.allow_origins": ((), "--server-cors-allow-origin"),
    "storage.type": ("sqlite", "--storage-type"),
    "storage.sqlite.path": ("resonate.db", "--storage-sqlite-path"),
    "storage.postgres.url": (None, "--storage-postgres-url"),
    "storage.postgres.pool_size": (10, "--storage-postgres-pool-size"),
    "storage.mysql.url": (None, "--storage-mysql-url"),
    "storage.mysql.pool_size": (10, "--storage-mysql-pool-size"),
    "auth.publickey": (None, "--auth-publickey"),
    "auth.iss": (None, "--auth-iss"),
    "auth.aud": (None, "--auth-aud"),
    "tasks.lease_timeout": (15000, "--tasks-lease-timeout"),
    "tasks.retry_timeout": (30000, "--tasks-retry-timeout"),
    "timeouts.poll_interval": (1000, "--timeouts-poll-interval"),
    "messages.poll_interval": (100, "--messages-poll-interval"),
    "messages.batch_size": (100, "--messages-batch-size"),
    "transports.http_push.enabled": (True, "--transports-http-push-enabled"),
    "transports.http_push.concurrency": (256, "--transports-http-push-concurrency"),
    "transports.http_push.connect_timeout": (10000, "--transports-http-push-connect-timeout"),
    "transports.http_push.request_timeout": (180000, "--transports-http-push-request-timeout"),
    "transports.http_push.auth.mode": (None, "--transports-http-push-auth-mode"),
    "transports.http_push.auth.token": (None, "--transports-http-push-auth-token"),
    "transports.http_push.auth.audience": (None, "--transports-http-push-auth-aud"),
    "transports.http_push.auth.header": (None, "--transports-http-push-auth-header"),
    "transports.http_poll.enabled": (True, "--transports-http-poll-enabled"),
    "transports.http_poll.max_connections": (1000, "--transports-http-poll-max-connections"),
    "transports.http_poll.max_connections_per_token": (100, "--transports-http-poll-max-connections-per-token"),
    "transports.http_poll.buffer_size": (100, "--transports-http-poll-buffer-size"),
    "transports.gcps.enabled": (False, "--transports-gcps-enabled"),
    "transports.gcps.project": (None, "--transports-gcps-project"),
    "transports.gcps.concurrency": (256, "--transports-gcps-concurrency"),
    "transports.gcps.timeout": (10000, "--transports-gcps-timeout"),
    "transports.bash_exec.enabled": (False, "--transports-bash-exec-enabled"),
    "observability.metrics_port": (9090, "--observability-metrics-port"),
    # the reference's default (localhost:4317) was parsed and unused; empty here: the export is off
    "observability.otlp_endpoint": ("", "--observability-otlp-endpoint"),
    "observability.otlp_interval": (60000, "--observability-otlp-interval"),
}


def get(cfg: Any, key: str) -> Any:
    """cfg value by dotted key; None when an optional section on the way is absent."""
    for part in key.split("."):
        if cfg is None:
            return None
        cfg = getattr(cfg, part)
    return cfg


def toml(values: dict[str, Any]) -> str:
    """A resonate.toml for dotted keys (one table per section)."""
    tables: dict[str, list[str]] = {}
    for key, v in values.items():
        table, _, name = key.rpartition(".")
        tables.setdefault(table, []).append(f"{name} = {json.dumps(v)}")
    return "\n".join((f"[{t}]\n" if t else "") + "\n".join(lines) + "\n" for t, lines in sorted(tables.items()))


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            dump: bool = False) -> subprocess.CompletedProcess:
    """`python -m local ...`, or with dump=True the configuration serve/dev would run with (JSON)."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("RESONATE_")}
    full_env = {**base, "PYTHONPATH": str(ROOT), **(env or {})}
    code = ("import sys, json, dataclasses; from local.cli import _parser, _config, _load; "
            "a = _parser().parse_args(sys.argv[1:]); o, s = _config(a); "
            "print(json.dumps(dataclasses.asdict(_load(a, o, s))))")
    cmd = [sys.executable, "-c", code, *args] if dump else [sys.executable, "-m", "local", *args]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------- keys and defaults

@pytest.mark.process  # runs the CLI in a subprocess
def test_every_spec_key_has_its_default_env_and_flag() -> None:
    cfg = load({}, env={})
    for key, (default, _) in SPEC.items():
        assert get(cfg, key) == default, key
    assert cfg.auth is None and cfg.transports.http_push.auth is None  # optional sections: absent
    assert cfg.server_url == "http://localhost:8001"
    r = subprocess.run([sys.executable, "-c", "import json, local.cli as c; "
                        "print(json.dumps({n: k for names, k, _ in c.FLAGS for n in names}))"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    flags = json.loads(r.stdout)
    usage = run_cli("serve", "--help", cwd=ROOT).stdout
    for key, (_, flag) in SPEC.items():
        assert key == "debug" or flags.get(flag) == key, (key, flag)
        assert flag in usage, flag


@pytest.mark.process  # runs the CLI in a subprocess
def test_promises_max_listeners_key_env_and_flag(tmp_path: Path) -> None:
    """This server's bound on one promise's listeners (not a reference key): default, env, flag."""
    assert load({}, env={}).promises.max_listeners == 1000
    assert load(env={"RESONATE_PROMISES__MAX_LISTENERS": "7"}).promises.max_listeners == 7
    cfg = json.loads(run_cli("serve", "--promises-max-listeners", "9", cwd=tmp_path, dump=True).stdout)
    assert cfg["promises"]["max_listeners"] == 9


def test_existing_fields_keep_their_names() -> None:
    cfg = load({}, env={})
    assert (cfg.storage.postgres.instance, cfg.sweeper.window, cfg.sweeper.url, cfg.sweeper.poll_interval) == \
        (None, 65000, None, 250)
    assert (cfg.messages.redrive_interval, cfg.timeouts.batch_size, cfg.timeouts.max_sleep) == (1000, 500, 60000)
    assert (cfg.transports.http_poll.keepalive_interval, cfg.server.max_body, cfg.log_format, cfg.profile) == \
        (15000, 10 * 1024 * 1024, "text", "compat")


# ------------------------------------------------------------------------------------- precedence

# key -> (default, file value, environment string, flag value, value the environment string means)
MATRIX: dict[str, tuple[Any, Any, str, Any, Any]] = {
    "server.port": (8001, 8101, "8201", 8301, 8201),
    "transports.http_push.enabled": (True, False, "true", False, True),
    "storage.sqlite.path": ("resonate.db", "file.db", "env.db", "flag.db", "env.db"),
    "transports.http_poll.max_connections": (1000, 11, "22", 33, 22),
    "server.cors.allow_origins": ((), ["https://file"], '["https://env1","https://env2"]', ("https://flag",),
                                  ("https://env1", "https://env2")),
}


@pytest.mark.parametrize("layers", [c for n in range(4) for c in itertools.combinations(("file", "env", "flag"), n)],
                         ids=lambda c: "+".join(c) or "defaults")
def test_precedence(tmp_path: Path, layers: tuple[str, ...]) -> None:
    """defaults < resonate.toml < RESONATE_* < flags, for an int, a bool, a string, a deeper
    nested key and a list, every layer over every other."""
    if "file" in layers:
        (tmp_path / "resonate.toml").write_text(toml({k: v[1] for k, v in MATRIX.items()}))
    env = {"RESONATE_" + k.upper().replace(".", "__"): v[2] for k, v in MATRIX.items()} if "env" in layers else {}
    flags = {k: v[3] for k, v in MATRIX.items()} if "flag" in layers else {}
    cfg = load(flags, env=env, cwd=tmp_path, sources={k: "--flag (flag)" for k in flags})
    for key, (default, file, _, flag, env_value) in MATRIX.items():
        want = flag if "flag" in layers else env_value if "env" in layers else file if "file" in layers else default
        assert get(cfg, key) == (tuple(want) if isinstance(want, list) else want), (key, layers)


@pytest.mark.process  # runs the CLI in a subprocess
def test_precedence_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "resonate.toml").write_text(toml({"server.port": 8101, "server.host": "file-host",
                                                  "tasks.retry_timeout": 500, "level": "warn"}))
    r = run_cli("serve", "--server-port", "8301", "--server-cors-allow-origin", "https://a",
                "--server-cors-allow-origin", "https://b", "--transports-http-poll-enabled", "false",
                cwd=tmp_path, env={"RESONATE_SERVER__PORT": "8201", "RESONATE_SERVER__HOST": "env-host"}, dump=True)
    cfg = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert cfg["server"]["port"] == 8301 and cfg["server"]["host"] == "env-host"
    assert cfg["tasks"]["retry_timeout"] == 500 and cfg["level"] == "warn"
    assert cfg["server"]["cors"]["allow_origins"] == ["https://a", "https://b"]  # flags replace the list
    assert cfg["transports"]["http_poll"]["enabled"] is False


def test_server_url_is_derived_after_every_layer(tmp_path: Path) -> None:
    (tmp_path / "resonate.toml").write_text('[server]\nhost = "h"\n')
    assert load({"server.port": 9}, env={}, cwd=tmp_path).server_url == "http://h:9"
    assert load({}, env={"RESONATE_SERVER__URL": "https://x"}, cwd=tmp_path).server_url == "https://x"


def test_environment_names_and_values() -> None:
    cfg = load(env={"resonate_server__port": "9000", "RESONATE_URL": "http://sdk", "RESONATE_TOKEN": "t",
                    "RESONATE_NOT__A__KEY": "x", "RESONATE_DEBUG": "TRUE",
                    "RESONATE_SERVER__CORS__ALLOW_ORIGINS": "https://a, https://b",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "RESONATE_OBSERVABILITY__OTLP_ENDPOINT": "x:1"})
    assert cfg.server.port == 9000 and cfg.debug is True
    assert cfg.server.cors.allow_origins == ("https://a", "https://b")
    assert cfg.observability.otlp_endpoint == "collector:4317"  # OTEL_… beats RESONATE_…


# ------------------------------------------------------------------------------------ discovery

def test_file_is_read_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI passes cwd (or --config); load() without them, as the functions and tests call it,
    reads no file even when the working directory has one."""
    (tmp_path / "resonate.toml").write_text("[server]\nport = 1234\n")
    monkeypatch.chdir(tmp_path)
    assert load({}, env={}).server.port == 8001
    assert load(env={}).server.port == 8001
    assert load({}, env={}, cwd=tmp_path).server.port == 1234
    assert load({}, env={}, cwd=tmp_path / "nowhere").server.port == 8001  # absent: skipped


@pytest.mark.process  # runs the CLI in a subprocess
def test_config_flag_replaces_the_working_directory_file(tmp_path: Path) -> None:
    (tmp_path / "resonate.toml").write_text("[server]\nport = 1234\n")
    other = tmp_path / "etc"
    other.mkdir()
    (other / "prod.toml").write_text("[server]\nbind = \"[::]\"\n")
    cfg = load({}, env={}, cwd=tmp_path, file=other / "prod.toml")
    assert (cfg.server.port, cfg.server.bind) == (8001, "[::]")
    assert load({}, env={}, cwd=tmp_path, file="etc/prod.toml").server.bind == "[::]"  # relative to cwd
    with pytest.raises(ConfigError, match="cannot read configuration file missing.toml"):
        load({}, env={}, cwd=tmp_path, file="missing.toml")
    server = json.loads(run_cli("serve", "--config", "etc/prod.toml", cwd=tmp_path, dump=True).stdout)["server"]
    assert (server["port"], server["bind"]) == (8001, "[::]")


def test_unknown_file_keys_warn_with_their_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "resonate.toml").write_text('level = "info"\n\n[server]\nprot = 1\n\n[nope]\nx = 1\n')
    with caplog.at_level(logging.WARNING, logger="resonate.config"):
        load({}, env={}, cwd=tmp_path)
    assert "resonate.toml, line 4: unknown configuration key server.prot ignored" in caplog.text
    assert "unknown configuration key nope ignored" in caplog.text


def test_full_reference_layout(tmp_path: Path) -> None:
    """A full configuration file in the layout of docs/configuration.md (minus the sections this server refuses: auth, MySQL)."""
    (tmp_path / "resonate.toml").write_text('''
level = "info"
debug = false
[server]
host = "resonate.internal"
port = 8001
bind = "0.0.0.0"
shutdown_timeout = 10000
url = "https://resonate.example.com"
[server.cors]
allow_origins = ["https://app.example.com"]
[storage]
type = "postgres"
[storage.sqlite]
path = "resonate.db"
[storage.postgres]
url = "postgres://resonate:secret@db:5432/resonate"
pool_size = 20
[storage.mysql]
url = "mysql://resonate:secret@db:3306/resonate"
pool_size = 20
[tasks]
lease_timeout = 15000
retry_timeout = 500
[timeouts]
poll_interval = 1000
[messages]
poll_interval = 100
batch_size = 100
[transports.http_push]
enabled = true
concurrency = 256
connect_timeout = 10000
request_timeout = 180000
[transports.http_push.auth]
mode = "gcp"
header = "Authorization"
[transports.http_poll]
enabled = true
max_connections = 1000
buffer_size = 100
[transports.gcps]
enabled = true
concurrency = 256
timeout = 10000
[transports.bash_exec]
enabled = false
[observability]
metrics_port = 9090
''')
    cfg = load({}, env={}, cwd=tmp_path)
    assert cfg.storage.postgres.pool_size == 20 and cfg.storage.mysql.pool_size == 20
    assert cfg.transports.http_push.auth is not None and cfg.transports.http_push.auth.mode == "gcp"
    assert cfg.transports.gcps.enabled and cfg.server.cors.allow_origins == ("https://app.example.com",)
    assert cfg.server_url == "https://resonate.example.com" and cfg.tasks.retry_timeout == 500
    assert "secret" not in repr(cfg)  # secrets are masked in logs


# ----------------------------------------------------------------------------------- legacy YAML

GO_YAML = """
api:
  size: 100
  subsystems:
    http:
      addr: 127.0.0.1:9001
      timeout: 2.5s
    grpc:
      addr: 0.0.0.0:50051
aio:
  size: 100
  subsystems:
    store:
      subsystem: {size: 100, workers: 1, batchSize: 100}
      config:
        kind: postgres
        sqlite: {path: old.db, txTimeout: 250ms}
        postgres:
          host: db.internal
          port: 6543
          username: res
          password: "p@ss word"
          database: prod
          query: {sslmode: disable}
          txTimeout: 250ms
    network:
      subsystem: {size: 100, workers: 3, batchSize: 100}
      config: {timeout: 1m30s}
system: {notificationCacheSize: 100, submissionBatchSize: 100, completionBatchSize: 100}
metrics: {port: 9191}
baseUrl: https://resonate.example.com
mystery: 1
"""


def test_legacy_yaml_maps_keys_and_warns_about_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "resonate.yml").write_text(GO_YAML)
    with caplog.at_level(logging.WARNING, logger="resonate.config"):
        cfg = load({}, env={}, cwd=tmp_path, file="resonate.yml")
    assert (cfg.server.bind, cfg.server.port, cfg.server.shutdown_timeout) == ("127.0.0.1", 9001, 2500)
    assert cfg.storage.type == "postgres" and cfg.storage.sqlite.path == "old.db"
    assert cfg.storage.postgres.url == "postgres://res:p%40ss%20word@db.internal:6543/prod?sslmode=disable"
    assert cfg.transports.http_push.request_timeout == 90000
    assert cfg.observability.metrics_port == 9191 and cfg.server_url == "https://resonate.example.com"
    assert cfg.server.grpc_port == 50051  # api.subsystems.grpc.addr (docs/grpc.md)
    for key in ("api.size", "aio.size", "aio.subsystems.store.subsystem.batchSize",
                "aio.subsystems.store.config.sqlite.txTimeout", "aio.subsystems.store.config.postgres.txTimeout",
                "aio.subsystems.network.subsystem.workers", "system.completionBatchSize"):
        assert f"legacy key {key} has no equivalent" in caplog.text, key
    assert "unknown configuration key mystery ignored" in caplog.text
    # the environment still overrides the file
    assert load({}, env={"RESONATE_SERVER__PORT": "1"}, cwd=tmp_path, file="resonate.yml").server.port == 1


def test_legacy_yaml_detected_by_content(tmp_path: Path) -> None:
    (tmp_path / "server.conf").write_text("metrics:\n  port: 0\naio:\n  subsystems:\n    store:\n      config:\n"
                                          "        kind: sqlite\n")
    cfg = load({}, env={}, file=tmp_path / "server.conf")
    assert cfg.observability.metrics_port == 0 and cfg.storage.type == "sqlite"
    (tmp_path / "modern.conf").write_text("[server]\nport = 7\n")
    assert load({}, env={}, file=tmp_path / "modern.conf").server.port == 7
    (tmp_path / "bad.toml").write_text("metrics:\n  port: 0\n")  # .toml: never read as YAML
    with pytest.raises(ConfigError, match="cannot parse .*bad.toml"):
        load({}, env={}, file=tmp_path / "bad.toml")


def test_legacy_yaml_errors_name_the_legacy_key(tmp_path: Path) -> None:
    for text, msg in (("api:\n  subsystems:\n    http:\n      timeout: soon\n",
                       "invalid value for server.shutdown_timeout from legacy key api.subsystems.http.timeout"),
                      ("metrics:\n  port: nine\n",
                       r"invalid value for observability.metrics_port from .*legacy key metrics.port \(file\)"),
                      ("- a\n- b\n", "expected a mapping"),
                      ("a: [\n", "cannot parse")):
        (tmp_path / "r.yaml").write_text(text)
        with pytest.raises(ConfigError, match=msg):
            load({}, env={}, file=tmp_path / "r.yaml")


# ----------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("env, msg", [
    ({"RESONATE_SERVER__PORT": "abc"},
     r"invalid value for server.port from RESONATE_SERVER__PORT \(environment\): 'abc' is not an integer"),
    ({"RESONATE_SERVER__PORT": "70000"}, "server.port .*out of range"),
    ({"RESONATE_DEBUG": "yes"}, "invalid value for debug from RESONATE_DEBUG .*not a boolean"),
    ({"RESONATE_SERVER__CORS__ALLOW_ORIGINS": "[1]"}, "not a list of strings"),
    ({"RESONATE_STORAGE__TYPE": "oracle"},
     r"Unknown storage backend: 'oracle'. Valid options are 'sqlite', 'postgres', and 'mysql'"),
    ({"RESONATE_STORAGE__TYPE": "postgres"}, "storage.type=postgres requires RESONATE_STORAGE__POSTGRES__URL"),
    ({"RESONATE_STORAGE__TYPE": "mysql"}, "MySQL storage selected but no URL configured. Set --storage-mysql-url "
                                          "or RESONATE_STORAGE__MYSQL__URL"),
    ({"RESONATE_TRANSPORTS__HTTP_PUSH__CONCURRENCY": "0"},
     r"transports.http_push.concurrency must be at least 1 \(got 0\)"),
    ({"RESONATE_TRANSPORTS__GCPS__CONCURRENCY": "0"}, r"transports.gcps.concurrency must be at least 1 \(got 0\)"),
    ({"RESONATE_TRANSPORTS__HTTP_POLL__BUFFER_SIZE": "0"}, "http_poll.buffer_size must be at least 1"),
    ({"RESONATE_TRANSPORTS__HTTP_POLL__MAX_CONNECTIONS": "0"}, "http_poll.max_connections must be at least 1"),
    ({"RESONATE_TRANSPORTS__HTTP_POLL__MAX_CONNECTIONS_PER_TOKEN": "-1"},
     r"invalid value for transports.http_poll.max_connections_per_token from RESONATE_TRANSPORTS__HTTP_POLL__"
     r"MAX_CONNECTIONS_PER_TOKEN \(environment\): '-1' is out of range"),
    ({"RESONATE_AUTH__ISS": "https://issuer"}, r"auth: missing field publickey .*RESONATE_AUTH__ISS \(environment\)"),
    ({"RESONATE_AUTH__GOOGLE_AUDIENCE": "https://api"}, r"auth.google_service_accounts is required when "
     r"auth.google_audience is set .*RESONATE_AUTH__GOOGLE_AUDIENCE \(environment\)"),
    ({"RESONATE_AUTH__GOOGLE_SERVICE_ACCOUNTS": "a@p.iam.gserviceaccount.com"},
     r"auth: missing field publickey .*RESONATE_AUTH__GOOGLE_SERVICE_ACCOUNTS \(environment\)"),
    ({"RESONATE_AUTH__PUBLICKEY": " "}, "auth.publickey: expected a path to a PEM public key or 'none'"),
    ({"RESONATE_AUTH__PUBLICKEY": "none"}, r"auth.publickey='none' \(unsigned tokens.*refused unless debug is on"
                                           r".*RESONATE_AUTH__PUBLICKEY \(environment\)"),
    ({"RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__MODE": "basic"},
     "transports.http_push.auth.mode: expected 'none', 'bearer' or 'gcp', got 'basic'"),
    ({"RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__MODE": "bearer"}, "transports.http_push.auth.token is required"),
    ({"RESONATE_LOG_FORMAT": "xml"}, "log_format: expected 'text' or 'json'"),
    ({"RESONATE_PROMISES__MAX_LISTENERS": "0"}, r"promises.max_listeners must be at least 1 .*environment"),
])
def test_invalid_values_name_key_and_layer(env: dict[str, str], msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        load(env=env)


def test_unsigned_mode_needs_debug() -> None:
    assert load(env={"RESONATE_AUTH__PUBLICKEY": "none", "RESONATE_DEBUG": "true"}).auth is not None


def test_errors_name_the_file_line_and_the_flag(tmp_path: Path) -> None:
    (tmp_path / "resonate.toml").write_text('level = "info"\n\n[transports.http_poll]\nenabled = "maybe"\n')
    with pytest.raises(ConfigError, match=r"invalid value for transports.http_poll.enabled from "
                                          r"resonate.toml, line 4 \(file\): 'maybe' is not a boolean"):
        load({}, env={}, cwd=tmp_path)
    (tmp_path / "resonate.toml").write_text("[server\n")
    with pytest.raises(ConfigError, match=r"cannot parse resonate.toml: .*line 1"):
        load({}, env={}, cwd=tmp_path)
    (tmp_path / "resonate.toml").write_text("server = 1\n")
    with pytest.raises(ConfigError, match="server from resonate.toml, line 1 .*not a table"):
        load({}, env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"storage.type from --storage-type \(flag\)"):
        load({"storage.type": "x"}, env={}, sources={"storage.type": "--storage-type (flag)"})
    with pytest.raises(ConfigError, match="unknown configuration key 'server.nope'"):
        load({"server.nope": 1}, env={})


@pytest.mark.process  # runs the CLI in a subprocess
def test_cli_exits_non_zero_with_the_message(tmp_path: Path) -> None:
    r = run_cli("serve", "--server-port", "abc", cwd=tmp_path)
    assert r.returncode == 2, r
    assert "--server-port" in r.stderr and "invalid value for server.port: 'abc' is not an integer" in r.stderr
    r = run_cli("serve", "--transports-http-push-enabled", "maybe", cwd=tmp_path)
    assert r.returncode == 2 and "transports.http_push.enabled" in r.stderr
    r = run_cli("serve", cwd=tmp_path, env={"RESONATE_SERVER__PORT": "abc"})
    assert r.returncode == 1 and r.stderr.startswith("Fatal: Configuration error: invalid value for server.port "
                                                     "from RESONATE_SERVER__PORT (environment)"), r.stderr
    r = run_cli("serve", "--storage-type", "oracle", cwd=tmp_path)
    assert r.returncode == 1 and "Unknown storage backend: 'oracle'" in r.stderr and "--storage-type (flag)" in r.stderr
    (tmp_path / "resonate.toml").write_text("[server]\nport = -1\n")
    r = run_cli("dev", cwd=tmp_path)
    assert r.returncode == 1 and "server.port from resonate.toml, line 2 (file)" in r.stderr, r.stderr
    r = run_cli("serve", "--config", "nope.yml", cwd=tmp_path)
    assert r.returncode == 1 and "cannot read configuration file nope.yml" in r.stderr


@pytest.mark.process  # runs the CLI in a subprocess
def test_dev_keeps_memory_unless_told(tmp_path: Path) -> None:
    """dev: debug on; SQLite becomes the in-memory store unless --storage-sqlite-path is given;
    a Postgres type from the environment is kept."""
    cfg = json.loads(run_cli("dev", cwd=tmp_path, dump=True).stdout)
    assert cfg["storage"]["type"] == "memory" and cfg["debug"] is True
    cfg = json.loads(run_cli("dev", "--storage-sqlite-path", "x.db", cwd=tmp_path, dump=True).stdout)
    assert cfg["storage"]["type"] == "sqlite" and cfg["storage"]["sqlite"]["path"] == "x.db"
    r = run_cli("dev", cwd=tmp_path, dump=True, env={"RESONATE_STORAGE__TYPE": "postgres",
                                                     "RESONATE_STORAGE__POSTGRES__URL": "postgres://h/db"})
    assert json.loads(r.stdout)["storage"]["type"] == "postgres"
    assert json.loads(run_cli("serve", cwd=tmp_path, dump=True).stdout)["debug"] is False


# --------------------------------------------------------------------------------- cold start, secrets

@pytest.mark.process  # runs the CLI in a subprocess
def test_import_is_light_and_functions_read_no_file(tmp_path: Path) -> None:
    """shared.config imports neither tomllib nor yaml; load() from the environment reads no file
    (a broken resonate.toml in the working directory does not matter to the functions)."""
    (tmp_path / "resonate.toml").write_text("not toml at all [")
    code = ("import sys, shared.config as c; cfg = c.load(); "
            "assert 'tomllib' not in sys.modules and 'yaml' not in sys.modules, sorted(sys.modules); "
            "print(cfg.server.port)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "RESONATE_SERVER__PORT": "8123"})
    assert r.returncode == 0 and r.stdout.strip() == "8123", r.stderr


def test_secrets_never_need_a_command_line(tmp_path: Path) -> None:
    """Every secret-bearing key comes from the environment or the file, and repr masks it."""
    env = {"RESONATE_STORAGE__POSTGRES__URL": "postgres://u:s3cret@h/db",
           "RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__MODE": "bearer",
           "RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__TOKEN": "s3cret-token",
           "RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__ALLOW": '["https://workers.example.com"]'}
    cfg = load(env=env)
    assert cfg.storage.postgres.url == env["RESONATE_STORAGE__POSTGRES__URL"]
    assert cfg.transports.http_push.auth is not None and cfg.transports.http_push.auth.token == "s3cret-token"
    (tmp_path / "resonate.toml").write_text('[storage.mysql]\nurl = "mysql://u:s3cret@h/db"\n')
    cfg = load({}, env={}, cwd=tmp_path)
    assert cfg.storage.mysql.url == "mysql://u:s3cret@h/db"
    assert "s3cret" not in repr(cfg) and "s3cret" not in repr(load(env=env))


def test_config_is_frozen_and_comparable() -> None:
    a, b = load({}, env={}), load({}, env={})
    assert a == b and hash(a) == hash(b) and a != load({"server.port": 1}, env={})
    with pytest.raises(AttributeError):
        a.server.port = 2  # type: ignore[misc]
    assert isinstance(a, Config)
