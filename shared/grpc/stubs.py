"""The generated message and service modules (`gen/`, made at build time by `make grpc`), loaded
once; a checkout that never ran the build step gets one error naming the step, not an
ImportError from deep inside the server."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

MAKE_TARGET = "make grpc"
SERVICES = ("promise.Promises", "schedule.Schedules", "lock.Locks", "task.Tasks")


class StubsMissing(RuntimeError):
    """The generated modules are not there (or were made for other grpcio/protobuf versions)."""


@dataclass(frozen=True, slots=True)
class Stubs:
    promise: ModuleType
    promise_grpc: ModuleType
    schedule: ModuleType
    schedule_grpc: ModuleType
    lock: ModuleType
    lock_grpc: ModuleType
    task: ModuleType
    task_grpc: ModuleType


_stubs: Stubs | None = None


def load() -> Stubs:
    """The generated modules; StubsMissing says which make target generates them."""
    global _stubs
    if _stubs is None:
        try:
            from shared.grpc.gen import (
                lock_pb2,
                lock_pb2_grpc,
                promise_pb2,
                promise_pb2_grpc,
                schedule_pb2,
                schedule_pb2_grpc,
                task_pb2,
                task_pb2_grpc,
            )
        except ImportError as e:
            raise StubsMissing(f"the gRPC stubs are not generated (shared/grpc/gen/: {e}); run `{MAKE_TARGET}` "
                               "(or `python -m shared.grpc.build`), or set server.grpc_port = 0") from None
        except Exception as e:  # e.g. protobuf's gencode/runtime version check
            raise StubsMissing(f"the gRPC stubs in shared/grpc/gen/ do not load ({type(e).__name__}: {e}); "
                               f"run `{MAKE_TARGET}` again") from None
        _stubs = Stubs(promise_pb2, promise_pb2_grpc, schedule_pb2, schedule_pb2_grpc, lock_pb2, lock_pb2_grpc,
                       task_pb2, task_pb2_grpc)
    return _stubs
