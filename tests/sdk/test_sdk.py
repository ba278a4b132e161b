"""Both official SDKs against the real server: real worker processes, real HTTP + SSE.

`lang`: `py` (resonate-sdk 0.8.1, workers in tests/sdk/py/worker.py) and `ts` (@resonatehq/sdk
0.11.5 on Node 22, tests/sdk/ts/worker.mjs, installed by tests/sdk/install_ts.sh; a missing
toolchain is a FAIL). Servers (`main_server`, one per module and backend): SQLite and the cloud
simulation over Postgres (one base URL served by the api function), debug off, --tasks-retry-timeout 1000; `test_nested_steps_memory_backend`
repeats the first scenario on the in-memory backend. Scenarios: tests/sdk/scenarios.py.
Test ids read `[sqlite-py-nested_steps]`.
"""
from __future__ import annotations

import pytest

from tests.sdk import scenarios

pytestmark = pytest.mark.timeout(90)

SCENARIOS = {
    "nested_steps": scenarios.nested_steps,
    "rpc_to_worker_in_another_group": scenarios.rpc_other_group,
    "durable_sleep": lambda h: scenarios.durable_sleep(h, ms=1500),
    "await_promise_resolved_from_outside_raw_settle": lambda h: scenarios.external_promise(h, via="raw"),
    "await_promise_resolved_from_outside_sdk": lambda h: scenarios.external_promise(h, via="sdk"),
    "fan_out_fan_in_50_children": lambda h: scenarios.fan_out_in(h, n=50),
    "failure_without_retries_surfaces_and_rejects": scenarios.failure_no_retry,
    "same_id_runs_once": scenarios.idempotent_run,
    "recovery_after_worker_sigkill": scenarios.recovery_after_kill,
    "cron_schedule_fires_then_deleted": scenarios.schedule_fires_then_deleted,
    "promise_search_by_tags_with_paging": scenarios.search_paging,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario(sdk_env, scenario):
    SCENARIOS[scenario](sdk_env)


def test_nested_steps_memory_backend(sdk_env_memory):
    scenarios.nested_steps(sdk_env_memory)
