"""The gRPC API's client side for the tests: modules generated in the test run from
shared/grpc/protos/ exactly as a user generates a client (protoc's flat modules on `sys.path`,
nothing of the server's package imported), stubs that send a bearer token, and a server process
with its gRPC listener on a free port."""
from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from tests.support.server import ServerProc, free_port, start_server

MODULES = ("promise", "schedule", "lock", "task")
_generated: dict[str, ModuleType] | None = None


def generated(tmp: Path) -> dict[str, ModuleType]:
    """`promise_pb2`, `promise_pb2_grpc`, … made by grpcio-tools from our .proto files (once per
    test process; `tmp` is where they go the first time)."""
    global _generated
    if _generated is None:
        from shared.grpc.build import PROTOS, generate

        generate(PROTOS, tmp, package=False)
        sys.path.insert(0, str(tmp))
        _generated = {f"{m}{s}": importlib.import_module(f"{m}{s}") for m in MODULES for s in ("_pb2", "_pb2_grpc")}
    return _generated


class Stub:
    """A generated stub whose calls carry `authorization: Bearer <token>` (unless token=None)."""

    def __init__(self, stub: Any, token: str | None) -> None:
        self._stub = stub
        self._token = token

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(req: Any, token: str | None = "default", **kw: Any) -> Any:
            tok = self._token if token == "default" else token
            md = [("authorization", f"Bearer {tok}")] if tok is not None else []
            return method(req, metadata=md, timeout=30, **kw)

        return call


@dataclass
class Client:
    pb: dict[str, ModuleType]
    channel: grpc.Channel
    token: str | None = None

    def __post_init__(self) -> None:
        g = self.pb
        self.promises = Stub(g["promise_pb2_grpc"].PromisesStub(self.channel), self.token)
        self.schedules = Stub(g["schedule_pb2_grpc"].SchedulesStub(self.channel), self.token)
        self.locks = Stub(g["lock_pb2_grpc"].LocksStub(self.channel), self.token)
        self.tasks = Stub(g["task_pb2_grpc"].TasksStub(self.channel), self.token)

    def __getattr__(self, module: str) -> ModuleType:  # .promise, .schedule, .lock, .task: the _pb2 modules
        try:
            return self.pb[f"{module}_pb2"]
        except KeyError:
            raise AttributeError(module) from None


def connect(port: int, pb: dict[str, ModuleType], token: str | None = None) -> Client:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    return Client(pb, channel, token)


def start_grpc_server(backend: str, workdir: Path, args: list[str] | None = None, **kw: Any) -> tuple[ServerProc, int]:
    """A server process (`start_server`) with its gRPC listener on a free port: (server, port)."""
    port = free_port()
    srv = start_server(backend, workdir, args=["--server-grpc-port", str(port), *(args or [])], **kw)
    return srv, port


def failure(call: Any, code: grpc.StatusCode) -> dict[str, Any]:
    """Run `call`, which must fail with `code`; the REST API's error object the status carries."""
    with pytest.raises(grpc.RpcError) as e:
        call()
    err = e.value
    assert err.code() == code, (err.code(), err.details())
    return json.loads(err.details())["error"]
