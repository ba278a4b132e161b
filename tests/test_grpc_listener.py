"""The gRPC listener (docs/grpc.md#the-listener): health checking and reflection answer; `resonate
serve` logs its three listeners as the older server did; a port already taken (by another server:
grpc's SO_REUSEPORT is off) or stubs never generated stop the startup with one clear line; SIGTERM
stops it; `server.grpc_port` from flags, the environment and the older server's YAML key.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from shared.config import load
from shared.config_values import ConfigError
from tests.support.grpc_client import start_grpc_server
from tests.support.server import ROOT, free_port, start_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.process
SERVICES = ["lock.Locks", "promise.Promises", "schedule.Schedules", "task.Tasks"]


def _serve(args: list[str], cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m local …` to its end (a startup that must fail)."""
    cmd = [sys.executable, "-m", "local", *args, "--server-port", str(free_port()), "--observability-metrics-port",
           "0", "--legacy-poll-port", "0"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_health_and_reflection(tmp_path: Path) -> None:
    srv, port = start_grpc_server("memory", tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for name in ["", *SERVICES]:
                reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
            with pytest.raises(grpc.RpcError) as e:
                health.Check(health_pb2.HealthCheckRequest(service="nope.Nope"), timeout=10)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
            # reflection: the services, and their schema without any .proto file at hand
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=10)
            listed = sorted(s.name for s in answer.list_services_response.service)
            assert listed == sorted([*SERVICES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"])
            pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
            tasks = pool.FindServiceByName("task.Tasks")
            assert [m.name for m in tasks.methods] == ["ClaimTask", "CompleteTask"]
            complete = pool.FindMessageTypeByName("task.CompleteTaskRequest")
            assert [(f.name, f.number) for f in complete.fields] == [
                ("requestId", 1), ("task_id", 2), ("counter", 3), ("execution_id", 4), ("state", 5), ("value", 6)]
            create = pool.FindServiceByName("schedule.Schedules").methods_by_name["CreateSchedule"]
            assert create.output_type.name == "CreatedScheduleResponse"
    finally:
        srv.stop()


def test_serve_logs_three_listeners_and_a_taken_grpc_port_stops_another(tmp_path: Path) -> None:
    metrics, grpc_port = free_port(), free_port()
    srv = start_server("sqlite", tmp_path, args=["--observability-metrics-port", str(metrics),
                                                 "--server-grpc-port", str(grpc_port)])
    try:
        assert wait_until(lambda: "Ready url=" in srv.logs(), 30)  # /health answers before the banner
        log = srv.logs()
        assert f"Server listening bind=0.0.0.0 port={srv.port} " in log, log
        assert f"gRPC server listening bind=0.0.0.0 port={grpc_port}\n" in log, log
        assert f"Metrics server listening port={metrics} bind=0.0.0.0" in log, log
        # another server on the same gRPC port: a clear startup failure (never a silently shared port)
        out = _serve(["dev", "--server-grpc-port", str(grpc_port)])
        assert out.returncode == 1, out
        assert f"Fatal: Failed to bind to 0.0.0.0:{grpc_port} (server.grpc_port)" in out.stderr, out.stderr
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:  # the first one still answers
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # SIGTERM: the gRPC listener stops with the rest, within the shutdown budget
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=30) == 0
        assert "gRPC server stopped" in srv.logs() and "Resonate Server stopped" in srv.logs()
    finally:
        srv.stop()
    again = start_server("memory", tmp_path / "again", args=["--server-grpc-port", str(grpc_port)])
    again.stop()  # the port was given back


def test_no_grpc_listener_with_port_zero(tmp_path: Path) -> None:
    srv = start_server("memory", tmp_path)  # the harness passes --server-grpc-port 0
    try:
        assert wait_until(lambda: "Ready url=" in srv.logs(), 30)
        assert "Server listening" in srv.logs() and "gRPC" not in srv.logs()
    finally:
        srv.stop()


def test_stubs_never_generated_stop_the_startup_naming_the_make_target(tmp_path: Path) -> None:
    """A checkout where the build step never ran (no shared/grpc/gen/)."""
    for pkg in ("shared", "local", "functions"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("gen", "__pycache__"))
    assert not (tmp_path / "shared/grpc/gen").exists()
    out = _serve(["dev", "--server-grpc-port", str(free_port())], cwd=tmp_path)
    assert out.returncode == 1, out
    assert "Fatal: Cannot start the gRPC server" in out.stderr and "`make grpc`" in out.stderr, out.stderr
    # without the gRPC listener the same checkout serves
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "local", "dev", "--server-port", str(port), "--server-grpc-port",
                             "0", "--observability-metrics-port", "0", "--legacy-poll-port", "0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import requests

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return proc.poll() is not None

        assert wait_until(up, 30) and proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_grpc_port_from_flags_environment_and_the_older_servers_yaml(tmp_path: Path) -> None:
    assert load({}, env={}).server.grpc_port == 50051
    assert load({}, env={"RESONATE_SERVER__GRPC_PORT": "6000"}).server.grpc_port == 6000
    assert load({"server.grpc_port": 0}, env={"RESONATE_SERVER__GRPC_PORT": "6000"}).server.grpc_port == 0
    with pytest.raises(ConfigError, match="server.grpc_port"):
        load({}, env={"RESONATE_SERVER__GRPC_PORT": "70000"})
    (tmp_path / "resonate.yml").write_text("api:\n  subsystems:\n    grpc:\n      addr: 0.0.0.0:6001\n")
    assert load({}, env={}, cwd=tmp_path, file="resonate.yml").server.grpc_port == 6001
    (tmp_path / "bad.yml").write_text("api:\n  subsystems:\n    grpc:\n      addr: nowhere\n")
    with pytest.raises(ConfigError, match="api.subsystems.grpc.addr"):
        load({}, env={}, cwd=tmp_path, file="bad.yml")
