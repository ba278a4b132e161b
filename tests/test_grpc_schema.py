"""The .proto files' schema against the older server's own (v0.6.0): every service, RPC, enum value
and field with its name, type, number and label, read from the descriptors of a client generated
in the test run from shared/grpc/protos/, must be exactly the table below (taken from the older
server's `internal/app/subsystems/api/grpc/api/*.proto` at v0.6.0), so a renumbered, renamed,
retyped, added or dropped field fails here before any client of those files notices. Also: the
build step's output, the server's stubs matching the .proto files, the message when the stubs are
missing, and no gRPC import on the Cloud Functions' path.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from shared.grpc import stubs
from shared.grpc.build import PROTOS, generate
from tests.support.grpc_client import MODULES, generated
from tests.support.server import ROOT

# file, package, kind, parent, name, type, number, label (tab-separated; the older server's files at
# v0.6.0; an enum value's empty label is left off the end of its line)
V060 = """\
file	package	kind	parent	name	type	number	label
promise.proto	promise	rpc	Promises	ReadPromise	ReadPromiseRequest->ReadPromiseResponse		unary
promise.proto	promise	rpc	Promises	SearchPromises	SearchPromisesRequest->SearchPromisesResponse		unary
promise.proto	promise	rpc	Promises	CreatePromise	CreatePromiseRequest->CreatePromiseResponse		unary
promise.proto	promise	rpc	Promises	CancelPromise	CancelPromiseRequest->CancelPromiseResponse		unary
promise.proto	promise	rpc	Promises	ResolvePromise	ResolvePromiseRequest->ResolvePromiseResponse		unary
promise.proto	promise	rpc	Promises	RejectPromise	RejectPromiseRequest->RejectPromiseResponse		unary
promise.proto	promise	enumvalue	State	PENDING		0
promise.proto	promise	enumvalue	State	RESOLVED		1
promise.proto	promise	enumvalue	State	REJECTED		2
promise.proto	promise	enumvalue	State	REJECTED_TIMEDOUT		3
promise.proto	promise	enumvalue	State	REJECTED_CANCELED		4
promise.proto	promise	enumvalue	SearchState	SEARCH_ALL		0
promise.proto	promise	enumvalue	SearchState	SEARCH_PENDING		1
promise.proto	promise	enumvalue	SearchState	SEARCH_RESOLVED		2
promise.proto	promise	enumvalue	SearchState	SEARCH_REJECTED		3
promise.proto	promise	field	Promise	id	string	1	singular (scalar, implicit presence)
promise.proto	promise	field	Promise	state	State	2	singular (enum, implicit presence)
promise.proto	promise	field	Promise	param	Value	3	singular (message, explicit presence)
promise.proto	promise	field	Promise	value	Value	4	singular (message, explicit presence)
promise.proto	promise	field	Promise	timeout	int64	5	singular (scalar, implicit presence)
promise.proto	promise	field	Promise	idempotencyKeyForCreate	string	6	singular (scalar, implicit presence)
promise.proto	promise	field	Promise	idempotencyKeyForComplete	string	7	singular (scalar, implicit presence)
promise.proto	promise	field	Promise	createdOn	int64	8	singular (scalar, implicit presence)
promise.proto	promise	field	Promise	completedOn	int64	9	singular (scalar, implicit presence)
promise.proto	promise	field	Promise	tags	map<string, string>	10	map
promise.proto	promise	field	Value	headers	map<string, string>	1	map
promise.proto	promise	field	Value	data	bytes	3	singular (scalar, implicit presence)
promise.proto	promise	field	ReadPromiseRequest	id	string	1	singular (scalar, implicit presence)
promise.proto	promise	field	ReadPromiseRequest	requestId	string	2	singular (scalar, implicit presence)
promise.proto	promise	field	ReadPromiseResponse	promise	Promise	2	singular (message, explicit presence)
promise.proto	promise	field	SearchPromisesRequest	id	string	1	singular (scalar, implicit presence)
promise.proto	promise	field	SearchPromisesRequest	state	SearchState	2	singular (enum, implicit presence)
promise.proto	promise	field	SearchPromisesRequest	tags	map<string, string>	3	map
promise.proto	promise	field	SearchPromisesRequest	limit	int32	4	singular (scalar, implicit presence)
promise.proto	promise	field	SearchPromisesRequest	cursor	string	5	singular (scalar, implicit presence)
promise.proto	promise	field	SearchPromisesRequest	requestId	string	6	singular (scalar, implicit presence)
promise.proto	promise	field	SearchPromisesResponse	cursor	string	2	singular (scalar, implicit presence)
promise.proto	promise	field	SearchPromisesResponse	promises	Promise	3	repeated
promise.proto	promise	field	CreatePromiseRequest	id	string	1	singular (scalar, implicit presence)
promise.proto	promise	field	CreatePromiseRequest	idempotencyKey	string	2	singular (scalar, implicit presence)
promise.proto	promise	field	CreatePromiseRequest	strict	bool	3	singular (scalar, implicit presence)
promise.proto	promise	field	CreatePromiseRequest	param	Value	4	singular (message, explicit presence)
promise.proto	promise	field	CreatePromiseRequest	timeout	int64	5	singular (scalar, implicit presence)
promise.proto	promise	field	CreatePromiseRequest	requestId	string	6	singular (scalar, implicit presence)
promise.proto	promise	field	CreatePromiseResponse	noop	bool	1	singular (scalar, implicit presence)
promise.proto	promise	field	CreatePromiseResponse	promise	Promise	2	singular (message, explicit presence)
promise.proto	promise	field	CancelPromiseRequest	id	string	1	singular (scalar, implicit presence)
promise.proto	promise	field	CancelPromiseRequest	idempotencyKey	string	2	singular (scalar, implicit presence)
promise.proto	promise	field	CancelPromiseRequest	strict	bool	3	singular (scalar, implicit presence)
promise.proto	promise	field	CancelPromiseRequest	value	Value	4	singular (message, explicit presence)
promise.proto	promise	field	CancelPromiseRequest	requestId	string	5	singular (scalar, implicit presence)
promise.proto	promise	field	CancelPromiseResponse	noop	bool	1	singular (scalar, implicit presence)
promise.proto	promise	field	CancelPromiseResponse	promise	Promise	2	singular (message, explicit presence)
promise.proto	promise	field	ResolvePromiseRequest	id	string	1	singular (scalar, implicit presence)
promise.proto	promise	field	ResolvePromiseRequest	idempotencyKey	string	2	singular (scalar, implicit presence)
promise.proto	promise	field	ResolvePromiseRequest	strict	bool	3	singular (scalar, implicit presence)
promise.proto	promise	field	ResolvePromiseRequest	value	Value	4	singular (message, explicit presence)
promise.proto	promise	field	ResolvePromiseRequest	requestId	string	5	singular (scalar, implicit presence)
promise.proto	promise	field	ResolvePromiseResponse	noop	bool	1	singular (scalar, implicit presence)
promise.proto	promise	field	ResolvePromiseResponse	promise	Promise	2	singular (message, explicit presence)
promise.proto	promise	field	RejectPromiseRequest	id	string	1	singular (scalar, implicit presence)
promise.proto	promise	field	RejectPromiseRequest	idempotencyKey	string	2	singular (scalar, implicit presence)
promise.proto	promise	field	RejectPromiseRequest	strict	bool	3	singular (scalar, implicit presence)
promise.proto	promise	field	RejectPromiseRequest	value	Value	4	singular (message, explicit presence)
promise.proto	promise	field	RejectPromiseRequest	requestId	string	5	singular (scalar, implicit presence)
promise.proto	promise	field	RejectPromiseResponse	noop	bool	1	singular (scalar, implicit presence)
promise.proto	promise	field	RejectPromiseResponse	promise	Promise	2	singular (message, explicit presence)
schedule.proto	schedule	rpc	Schedules	CreateSchedule	CreateScheduleRequest->CreatedScheduleResponse		unary
schedule.proto	schedule	rpc	Schedules	ReadSchedule	ReadScheduleRequest->ReadScheduleResponse		unary
schedule.proto	schedule	rpc	Schedules	SearchSchedules	SearchSchedulesRequest->SearchSchedulesResponse		unary
schedule.proto	schedule	rpc	Schedules	DeleteSchedule	DeleteScheduleRequest->DeleteScheduleResponse		unary
schedule.proto	schedule	field	PromiseValue	data	bytes	1	singular (scalar, implicit presence)
schedule.proto	schedule	field	PromiseValue	headers	map<string, string>	2	map
schedule.proto	schedule	field	Schedule	id	string	1	singular (scalar, implicit presence)
schedule.proto	schedule	field	Schedule	description	string	2	singular (scalar, implicit presence)
schedule.proto	schedule	field	Schedule	cron	string	3	singular (scalar, implicit presence)
schedule.proto	schedule	field	Schedule	tags	map<string, string>	4	map
schedule.proto	schedule	field	Schedule	promiseId	string	5	singular (scalar, implicit presence)
schedule.proto	schedule	field	Schedule	promiseTimeout	int64	6	singular (scalar, implicit presence)
schedule.proto	schedule	field	Schedule	promiseParam	PromiseValue	7	singular (message, explicit presence)
schedule.proto	schedule	field	Schedule	promiseTags	map<string, string>	8	map
schedule.proto	schedule	field	Schedule	idempotencyKey	string	9	singular (scalar, implicit presence)
schedule.proto	schedule	field	Schedule	lastRunTime	int64	10	singular (scalar, implicit presence)
schedule.proto	schedule	field	Schedule	nextRunTime	int64	11	singular (scalar, implicit presence)
schedule.proto	schedule	field	Schedule	createdOn	int64	12	singular (scalar, implicit presence)
schedule.proto	schedule	field	CreateScheduleRequest	id	string	1	singular (scalar, implicit presence)
schedule.proto	schedule	field	CreateScheduleRequest	description	string	2	singular (scalar, implicit presence)
schedule.proto	schedule	field	CreateScheduleRequest	cron	string	3	singular (scalar, implicit presence)
schedule.proto	schedule	field	CreateScheduleRequest	tags	map<string, string>	4	map
schedule.proto	schedule	field	CreateScheduleRequest	promiseId	string	5	singular (scalar, implicit presence)
schedule.proto	schedule	field	CreateScheduleRequest	promiseTimeout	int64	6	singular (scalar, implicit presence)
schedule.proto	schedule	field	CreateScheduleRequest	promiseParam	PromiseValue	7	singular (message, explicit presence)
schedule.proto	schedule	field	CreateScheduleRequest	promiseTags	map<string, string>	8	map
schedule.proto	schedule	field	CreateScheduleRequest	idempotencyKey	string	9	singular (scalar, implicit presence)
schedule.proto	schedule	field	CreateScheduleRequest	requestId	string	10	singular (scalar, implicit presence)
schedule.proto	schedule	field	CreatedScheduleResponse	noop	bool	1	singular (scalar, implicit presence)
schedule.proto	schedule	field	CreatedScheduleResponse	schedule	Schedule	2	singular (message, explicit presence)
schedule.proto	schedule	field	ReadScheduleRequest	id	string	1	singular (scalar, implicit presence)
schedule.proto	schedule	field	ReadScheduleRequest	requestId	string	2	singular (scalar, implicit presence)
schedule.proto	schedule	field	ReadScheduleResponse	schedule	Schedule	1	singular (message, explicit presence)
schedule.proto	schedule	field	SearchSchedulesRequest	id	string	1	singular (scalar, implicit presence)
schedule.proto	schedule	field	SearchSchedulesRequest	tags	map<string, string>	2	map
schedule.proto	schedule	field	SearchSchedulesRequest	limit	int32	3	singular (scalar, implicit presence)
schedule.proto	schedule	field	SearchSchedulesRequest	cursor	string	4	singular (scalar, implicit presence)
schedule.proto	schedule	field	SearchSchedulesRequest	requestId	string	5	singular (scalar, implicit presence)
schedule.proto	schedule	field	SearchSchedulesResponse	cursor	string	1	singular (scalar, implicit presence)
schedule.proto	schedule	field	SearchSchedulesResponse	schedules	Schedule	2	repeated
schedule.proto	schedule	field	DeleteScheduleRequest	id	string	1	singular (scalar, implicit presence)
schedule.proto	schedule	field	DeleteScheduleRequest	requestId	string	2	singular (scalar, implicit presence)
lock.proto	lock	rpc	Locks	AcquireLock	AcquireLockRequest->AcquireLockResponse		unary
lock.proto	lock	rpc	Locks	HeartbeatLocks	HeartbeatLocksRequest->HeartbeatLocksResponse		unary
lock.proto	lock	rpc	Locks	ReleaseLock	ReleaseLockRequest->ReleaseLockResponse		unary
lock.proto	lock	field	Lock	resource_id	string	1	singular (scalar, implicit presence)
lock.proto	lock	field	Lock	execution_id	string	2	singular (scalar, implicit presence)
lock.proto	lock	field	Lock	process_id	string	3	singular (scalar, implicit presence)
lock.proto	lock	field	Lock	expiry_in_milliseconds	int64	4	singular (scalar, implicit presence)
lock.proto	lock	field	Lock	expires_at	int64	5	singular (scalar, implicit presence)
lock.proto	lock	field	AcquireLockRequest	resource_id	string	1	singular (scalar, implicit presence)
lock.proto	lock	field	AcquireLockRequest	execution_id	string	2	singular (scalar, implicit presence)
lock.proto	lock	field	AcquireLockRequest	process_id	string	3	singular (scalar, implicit presence)
lock.proto	lock	field	AcquireLockRequest	expiry_in_milliseconds	int64	4	singular (scalar, implicit presence)
lock.proto	lock	field	AcquireLockRequest	request_id	string	5	singular (scalar, implicit presence)
lock.proto	lock	field	AcquireLockResponse	lock	Lock	1	singular (message, explicit presence)
lock.proto	lock	field	HeartbeatLocksRequest	process_id	string	1	singular (scalar, implicit presence)
lock.proto	lock	field	HeartbeatLocksRequest	request_id	string	2	singular (scalar, implicit presence)
lock.proto	lock	field	HeartbeatLocksResponse	locksAffected	int32	1	singular (scalar, implicit presence)
lock.proto	lock	field	ReleaseLockRequest	resource_id	string	1	singular (scalar, implicit presence)
lock.proto	lock	field	ReleaseLockRequest	execution_id	string	2	singular (scalar, implicit presence)
lock.proto	lock	field	ReleaseLockRequest	request_id	string	3	singular (scalar, implicit presence)
task.proto	task	rpc	Tasks	ClaimTask	ClaimTaskRequest->ClaimTaskResponse		unary
task.proto	task	rpc	Tasks	CompleteTask	CompleteTaskRequest->CompleteTaskResponse		unary
task.proto	task	enumvalue	TaskState	PENDING		0
task.proto	task	enumvalue	TaskState	RESOLVED		1
task.proto	task	enumvalue	TaskState	REJECTED		2
task.proto	task	enumvalue	TaskState	REJECTED_TIMEDOUT		3
task.proto	task	enumvalue	TaskState	REJECTED_CANCELED		4
task.proto	task	field	ClaimTaskRequest	requestId	string	1	singular (scalar, implicit presence)
task.proto	task	field	ClaimTaskRequest	task_id	string	2	singular (scalar, implicit presence)
task.proto	task	field	ClaimTaskRequest	counter	int32	3	singular (scalar, implicit presence)
task.proto	task	field	ClaimTaskRequest	process_id	string	4	singular (scalar, implicit presence)
task.proto	task	field	ClaimTaskRequest	execution_id	string	5	singular (scalar, implicit presence)
task.proto	task	field	ClaimTaskRequest	expiry_in_milliseconds	int64	6	singular (scalar, implicit presence)
task.proto	task	field	ClaimTaskResponse	promise	TaskPromise	1	singular (message, explicit presence)
task.proto	task	field	CompleteTaskRequest	requestId	string	1	singular (scalar, implicit presence)
task.proto	task	field	CompleteTaskRequest	task_id	string	2	singular (scalar, implicit presence)
task.proto	task	field	CompleteTaskRequest	counter	int32	3	singular (scalar, implicit presence)
task.proto	task	field	CompleteTaskRequest	execution_id	string	4	singular (scalar, implicit presence)
task.proto	task	field	CompleteTaskRequest	state	TaskState	5	singular (enum, implicit presence)
task.proto	task	field	CompleteTaskRequest	value	TaskValue	6	singular (message, explicit presence)
task.proto	task	field	TaskPromise	id	string	1	singular (scalar, implicit presence)
task.proto	task	field	TaskPromise	state	TaskState	2	singular (enum, implicit presence)
task.proto	task	field	TaskPromise	param	TaskValue	3	singular (message, explicit presence)
task.proto	task	field	TaskPromise	value	TaskValue	4	singular (message, explicit presence)
task.proto	task	field	TaskPromise	timeout	int64	5	singular (scalar, implicit presence)
task.proto	task	field	TaskPromise	idempotencyKeyForCreate	string	6	singular (scalar, implicit presence)
task.proto	task	field	TaskPromise	idempotencyKeyForComplete	string	7	singular (scalar, implicit presence)
task.proto	task	field	TaskPromise	createdOn	int64	8	singular (scalar, implicit presence)
task.proto	task	field	TaskPromise	completedOn	int64	9	singular (scalar, implicit presence)
task.proto	task	field	TaskPromise	tags	map<string, string>	10	map
task.proto	task	field	TaskValue	headers	map<string, string>	1	map
task.proto	task	field	TaskValue	data	bytes	3	singular (scalar, implicit presence)
"""

F = descriptor_pb2.FieldDescriptorProto
SCALARS = {F.TYPE_STRING: "string", F.TYPE_BYTES: "bytes", F.TYPE_BOOL: "bool", F.TYPE_INT32: "int32",
           F.TYPE_INT64: "int64", F.TYPE_UINT32: "uint32", F.TYPE_UINT64: "uint64", F.TYPE_DOUBLE: "double",
           F.TYPE_FLOAT: "float", F.TYPE_SINT32: "sint32", F.TYPE_SINT64: "sint64", F.TYPE_FIXED32: "fixed32",
           F.TYPE_FIXED64: "fixed64", F.TYPE_SFIXED32: "sfixed32", F.TYPE_SFIXED64: "sfixed64"}


def table() -> set[tuple[str, ...]]:
    lines = V060.splitlines()
    assert lines[0].split("\t") == ["file", "package", "kind", "parent", "name", "type", "number", "label"]
    rows = {tuple((line.split("\t") + [""])[:8]) for line in lines[1:]}  # an enum value's label is empty
    assert len(rows) == len(lines) - 1 == 161
    return rows


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    return generated(tmp_path_factory.mktemp("grpc-client"))


def _type(f: Any, nested: dict[str, Any]) -> tuple[str, str]:
    """(type, label) of a field as the table spells them."""
    short = f.type_name.rsplit(".", 1)[-1]
    if f.type == F.TYPE_MESSAGE and short in nested and nested[short].options.map_entry:
        key, value = nested[short].field
        return f"map<{SCALARS[key.type]}, {SCALARS[value.type]}>", "map"
    if f.label == F.LABEL_REPEATED:
        return (short if f.type in (F.TYPE_MESSAGE, F.TYPE_ENUM) else SCALARS[f.type]), "repeated"
    if f.type == F.TYPE_MESSAGE:
        return short, "singular (message, explicit presence)"
    presence = "explicit" if f.proto3_optional else "implicit"
    if f.type == F.TYPE_ENUM:
        return short, f"singular (enum, {presence} presence)"
    return SCALARS[f.type], f"singular (scalar, {presence} presence)"


def rows_of(fd: descriptor_pb2.FileDescriptorProto) -> tuple[set[tuple[str, ...]], set[str]]:
    """The table's rows for one file, and the names of its messages."""
    rows: set[tuple[str, ...]] = set()
    file, pkg = fd.name, fd.package
    for svc in fd.service:
        for m in svc.method:
            streaming = m.client_streaming or m.server_streaming
            io = f"{m.input_type.rsplit('.', 1)[-1]}->{m.output_type.rsplit('.', 1)[-1]}"
            rows.add((file, pkg, "rpc", svc.name, m.name, io, "", "streaming" if streaming else "unary"))
    for enum in fd.enum_type:
        for v in enum.value:
            rows.add((file, pkg, "enumvalue", enum.name, v.name, "", str(v.number), ""))
    for msg in fd.message_type:
        assert not msg.enum_type and not msg.oneof_decl, msg.name
        nested = {n.name: n for n in msg.nested_type}
        assert all(n.options.map_entry for n in nested.values()), msg.name  # maps only
        for f in msg.field:
            typ, label = _type(f, nested)
            rows.add((file, pkg, "field", msg.name, f.name, typ, str(f.number), label))
    return rows, {m.name for m in fd.message_type}


def test_the_proto_files_are_the_older_servers_schema(pb: dict[str, ModuleType]) -> None:
    rows: set[tuple[str, ...]] = set()
    messages: set[str] = set()
    for name in MODULES:
        fd = descriptor_pb2.FileDescriptorProto()
        pb[f"{name}_pb2"].DESCRIPTOR.CopyToProto(fd)
        assert (fd.name, fd.package, fd.syntax) == (f"{name}.proto", name, "proto3")
        assert not fd.dependency, "no imports"
        more, msgs = rows_of(fd)
        rows |= more
        messages |= msgs
    expected = table()
    assert sorted(rows - expected) == [], "in our .proto files, not in the older server's"
    assert sorted(expected - rows) == [], "in the older server's .proto files, not in ours"
    named = {r[3] for r in expected if r[2] == "field"} | {t for r in expected if r[2] == "rpc"
                                                           for t in r[5].split("->")}
    assert messages == named, "messages that no field or RPC of the table names"


def test_the_wire_names_a_client_calls(pb: dict[str, ModuleType]) -> None:
    """The method paths on the wire (`/package.Service/Method`), as v0.6.0's generated clients call them."""
    paths = {f"/{s.full_name}/{m.name}" for name in MODULES
             for s in pb[f"{name}_pb2"].DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert paths == {f"/{r[1]}.{r[3]}/{r[4]}" for r in table() if r[2] == "rpc"}
    assert "/schedule.Schedules/CreateSchedule" in paths and len(paths) == 15


def test_the_servers_stubs_are_built_from_these_files(pb: dict[str, ModuleType]) -> None:
    """shared/grpc/gen/ (`make grpc`) holds what the .proto files say: a stale build fails here."""
    loaded = stubs.load()
    for name in MODULES:
        assert getattr(loaded, name).DESCRIPTOR.serialized_pb == pb[f"{name}_pb2"].DESCRIPTOR.serialized_pb, name


def test_the_build_step_makes_a_package_with_relative_imports(tmp_path: Path) -> None:
    out = tmp_path / "stubs_pkg"
    made = {p.name for p in generate(PROTOS, out)}
    assert made == {"__init__.py"} | {f"{m}{s}" for m in MODULES for s in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")}
    for m in MODULES:
        text = (out / f"{m}_pb2_grpc.py").read_text()
        assert f"from . import {m}_pb2 as {m}__pb2" in text
        assert not re.search(r"^import \w+_pb2", text, re.M)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import stubs_pkg.task_pb2_grpc as t; "
            "print(t.TasksStub.__name__)")
    out_run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out_run.returncode == 0 and out_run.stdout.strip() == "TasksStub", out_run.stderr
    assert sorted(p.name for p in PROTOS.glob("*.proto")) == ["lock.proto", "promise.proto", "schedule.proto",
                                                              "task.proto"]


def test_missing_stubs_name_the_make_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stubs, "_stubs", None)
    monkeypatch.setitem(sys.modules, "shared.grpc.gen", None)  # as if never generated
    with pytest.raises(stubs.StubsMissing, match=r"make grpc"):
        stubs.load()


def test_the_install_targets_generate_the_stubs() -> None:
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(GRPC_STUBS\): \$\(wildcard shared/grpc/protos/\*\.proto\)", make, re.M)
    assert re.search(r"^\t\$\(PY\) -m shared\.grpc\.build$", make, re.M)
    for target in ("install", "install-test", "grpc"):
        line = re.search(rf"^{target}: (.*)$", make, re.M)
        assert line is not None and "$(GRPC_STUBS)" in line[1], target
    assert "/shared/grpc/gen/" in (ROOT / ".gitignore").read_text().splitlines()


def test_nothing_on_the_cloud_functions_path_imports_grpc() -> None:
    """A Cloud Function cannot serve gRPC: its cold start must not load grpcio or the stubs."""
    code = ("import sys, functions.main, shared.http, shared.runtime, shared.legacy.rest; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'grpc_health', 'grpc_reflection') "
            "or m.startswith('shared.grpc')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
