"""Python SDK (resonate-sdk 0.8.1): the scenario suite with inbound auth on.

Every worker and client holds a token, prefix-restricted where the SDK's ids allow it (see
tests/sdk/auth_suite.py for which and why); processes without a valid token change nothing.
Server: `auth_server` (SQLite, Ed25519 key, --tasks-retry-timeout 1000, one per module).
"""
from __future__ import annotations

import pytest

from tests.sdk import auth_suite

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("case", list(auth_suite.CASES))
def test_scenario_with_tokens(py_env_auth, case):
    auth_suite.run_case(py_env_auth, case)


@pytest.mark.parametrize("how", ["no_token", "wrong_key", "expired", "wrong_prefix", "foreign_group"])
def test_processes_without_a_valid_token_change_nothing(py_env_auth, how):
    auth_suite.refused(py_env_auth, how)


def test_a_schedule_firing_outside_the_prefix_is_refused(py_env_auth):
    auth_suite.schedule_template_outside_the_prefix(py_env_auth)
