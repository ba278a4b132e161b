"""TypeScript SDK (@resonatehq/sdk 0.11.5, Node 22) against the real server: real worker processes, real HTTP + SSE.

Server: SQLite backend, debug off, --tasks-retry-timeout 1000 (one module-scoped server);
`test_nested_steps_memory_backend` repeats scenario 1 on the in-memory backend.
Workers: tests/sdk/ts/worker.mjs (installed by tests/sdk/install_ts.sh; missing toolchain = FAIL). Scenarios: tests/sdk/scenarios.py.
"""
from __future__ import annotations

import pytest

from tests.sdk import scenarios

pytestmark = pytest.mark.timeout(90)


def test_nested_steps(ts_env):
    scenarios.nested_steps(ts_env)


def test_nested_steps_memory_backend(ts_env_memory):
    scenarios.nested_steps(ts_env_memory)


def test_rpc_to_worker_in_another_group(ts_env):
    scenarios.rpc_other_group(ts_env)


def test_durable_sleep(ts_env):
    scenarios.durable_sleep(ts_env, ms=1500)


def test_await_promise_resolved_from_outside_raw_settle(ts_env):
    scenarios.external_promise(ts_env, via="raw")


def test_await_promise_resolved_from_outside_sdk(ts_env):
    scenarios.external_promise(ts_env, via="sdk")


def test_fan_out_fan_in_50_children(ts_env):
    scenarios.fan_out_in(ts_env, n=50)


def test_failure_without_retries_surfaces_and_rejects(ts_env):
    scenarios.failure_no_retry(ts_env)


def test_same_id_runs_once(ts_env):
    scenarios.idempotent_run(ts_env)


def test_recovery_after_worker_sigkill(ts_env):
    scenarios.recovery_after_kill(ts_env)


def test_cron_schedule_fires_then_deleted(ts_env):
    scenarios.schedule_fires_then_deleted(ts_env)


def test_promise_search_by_tags_with_paging(ts_env):
    scenarios.search_paging(ts_env)
