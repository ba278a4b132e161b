"""Python SDK (resonate-sdk 0.8.1) against the real server: real worker processes, real HTTP + SSE.

Server: SQLite backend, debug off, --tasks-retry-timeout 1000 (one module-scoped server);
`test_nested_steps_memory_backend` repeats scenario 1 on the in-memory backend.
Workers: tests/sdk/py/worker.py. Scenarios: tests/sdk/scenarios.py.
"""
from __future__ import annotations

import pytest

from tests.sdk import scenarios

pytestmark = pytest.mark.timeout(90)


def test_nested_steps(py_env):
    scenarios.nested_steps(py_env)


def test_nested_steps_memory_backend(py_env_memory):
    scenarios.nested_steps(py_env_memory)


def test_rpc_to_worker_in_another_group(py_env):
    scenarios.rpc_other_group(py_env)


def test_durable_sleep(py_env):
    scenarios.durable_sleep(py_env, ms=1500)


def test_await_promise_resolved_from_outside_raw_settle(py_env):
    scenarios.external_promise(py_env, via="raw")


def test_await_promise_resolved_from_outside_sdk(py_env):
    scenarios.external_promise(py_env, via="sdk")


def test_fan_out_fan_in_50_children(py_env):
    scenarios.fan_out_in(py_env, n=50)


def test_failure_without_retries_surfaces_and_rejects(py_env):
    scenarios.failure_no_retry(py_env)


def test_same_id_runs_once(py_env):
    scenarios.idempotent_run(py_env)


def test_recovery_after_worker_sigkill(py_env):
    scenarios.recovery_after_kill(py_env)


def test_cron_schedule_fires_then_deleted(py_env):
    scenarios.schedule_fires_then_deleted(py_env)


def test_promise_search_by_tags_with_paging(py_env):
    scenarios.search_paging(py_env)
