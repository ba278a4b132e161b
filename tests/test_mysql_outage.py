"""A MySQL-backed server through a database outage: /ready says so, and it recovers (the pool
survives the database going away: every pooled connection broke, new ones are dialed)."""
from __future__ import annotations

import time

import pytest
import requests

from tests.support.mysql import give_back, my_server, take_database  # noqa: F401 (fixtures)
from tests.support.pg import TcpProxy
from tests.support.server import start_server

pytestmark = [pytest.mark.process, pytest.mark.mysql]


def _until(pred, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_ready_reports_outage_and_server_recovers_after_database_returns(tmp_path, my_server):
    url = take_database()
    proxy = TcpProxy(("127.0.0.1", 3306))
    srv = start_server("mysql", tmp_path, debug=False, my_url=proxy.url(url))
    try:
        assert srv.rpc("promise.create", {"id": "before", "timeoutAt": 2**53})[0] == 200
        assert requests.get(srv.url + "/ready", timeout=5).status_code == 200
        proxy.down()
        _until(lambda: requests.get(srv.url + "/ready", timeout=15).status_code == 503)
        assert requests.get(srv.url + "/health", timeout=5).status_code == 200  # alive, not ready
        r = srv.post({"kind": "promise.get", "head": {"corrId": "c", "version": "2026-04-01"},
                      "data": {"id": "before"}})
        assert r.status_code >= 500 and isinstance(r.json()["data"], str)  # an envelope, not a dropped connection
        proxy.up()
        _until(lambda: requests.get(srv.url + "/ready", timeout=15).status_code == 200)
        status, data = srv.rpc("promise.get", {"id": "before"})
        assert status == 200 and data["promise"]["id"] == "before"
        assert srv.rpc("promise.create", {"id": "after", "timeoutAt": 2**53})[0] == 200
    finally:
        srv.stop(drop=False)
        proxy.down()
        give_back(url)
