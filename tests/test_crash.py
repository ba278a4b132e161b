"""A crash at any instant loses no acknowledged write: SIGKILL the server (SQLite, MySQL) under load."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.support import marks
from tests.support.server import VERSION, start_server

pytestmark = pytest.mark.process

FAR = 2**53


def _writer(url: str, name: str, acked: list[str], stop: threading.Event) -> None:
    s = requests.Session()
    n = 0
    while not stop.is_set():
        pid = f"{name}-{n}"
        n += 1
        body = {"kind": "promise.create", "head": {"corrId": pid, "version": VERSION},
                "data": {"id": pid, "timeoutAt": FAR, "param": {"data": "eA=="},
                         "tags": {"resonate:target": "poll://any@nobody"}}}
        try:
            r = s.post(url + "/", json=body, timeout=5)
        except requests.RequestException:
            return  # the server died mid-request: this write was never acknowledged
        if r.status_code == 200:
            acked.append(pid)
            if n % 2 == 0:  # settle every other one: a second acknowledged change per promise
                body = {"kind": "promise.settle", "head": {"corrId": pid, "version": VERSION},
                        "data": {"id": pid, "state": "resolved", "value": {"data": "eQ=="}}}
                try:
                    r = s.post(url + "/", json=body, timeout=5)
                except requests.RequestException:
                    return
                if r.status_code == 200:
                    acked.append(pid + "!settled")


@pytest.mark.parametrize("backend", [marks.param("sqlite"), marks.param("mysql")])
def test_sigkill_under_concurrent_writes_loses_nothing_acknowledged(backend, tmp_path):
    db = tmp_path / "crash.db"
    my_url = None
    if backend == "mysql":
        from tests.support.mysql import take_database

        my_url = take_database()
    try:
        _crash_rounds(backend, tmp_path, db, my_url)
    finally:
        if my_url is not None:
            from tests.support.mysql import give_back

            give_back(my_url)


def _crash_rounds(backend: str, tmp_path, db, my_url: str | None) -> None:
    for round_ in range(3):
        srv = start_server(backend, tmp_path, debug=False, db=db, my_url=my_url)
        acked: list[str] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_writer, args=(srv.url, f"r{round_}w{i}", acked, stop))
                   for i in range(16)]
        for t in threads:
            t.start()
        deadline = time.time() + 30  # a busy machine gets going slowly: kill once the load runs
        while len(acked) < 120 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2 + 0.37 * round_)  # kill at a different instant each round
        srv.proc.kill()
        srv.proc.wait()
        stop.set()
        for t in threads:
            t.join(10)
        assert len(acked) > 100, "the load never got going"

        srv = start_server(backend, tmp_path, debug=False, db=db, my_url=my_url)
        try:
            settled = {a[:-len("!settled")] for a in acked if a.endswith("!settled")}
            for pid in (a for a in acked if not a.endswith("!settled")):
                status, data = srv.rpc("promise.get", {"id": pid})
                assert status == 200, f"acknowledged create of {pid} lost after SIGKILL"
                p = data["promise"]
                if pid in settled:
                    assert p["state"] == "resolved" and p["value"] == {"data": "eQ=="}, p
                status, data = srv.rpc("task.get", {"id": pid})
                assert status == 200 and data["task"]["state"] in ("pending", "fulfilled"), data
        finally:
            srv.stop(drop=False)
