"""Runs one workflow of flows.py through resonate-sdk 0.6.7 against the server named by
RESONATE_HOST / RESONATE_PORT_STORE / RESONATE_PORT_MESSAGE_SOURCE. Prints JSON lines (the SDK's
own logs go to stderr): {"event": "started"} once the client runs, {"event": "begun"} once the
workflow's promise exists on the server (begin_run/get have returned), then the outcome:

    driver.py run <scenario> <promise id> <json list of args>  # resonate.run(...) of a workflow
    driver.py retry_top <promise id> <key> <fails>             # a registered plain function, retried
    driver.py get <promise id>                                 # a promise another process runs

    {"id": ..., "ok": true, "value": <result>}
    {"id": ..., "ok": false, "error_type": "FlowError", "error": "<message>"}
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from flows import FAST_RETRY, WORKFLOWS, flaky
from resonate import Resonate
from resonate.models.handle import Handle


def outcome(id: str, begin: Callable[[], Handle[Any]]) -> dict[str, Any]:
    try:
        handle = begin()  # the promise is created (or read) before this returns
        print(json.dumps({"event": "begun", "id": id}), flush=True)
        return {"id": id, "ok": True, "value": handle.result()}
    except Exception as e:  # the workflow's own error, decoded from the rejected promise
        return {"id": id, "ok": False, "error_type": type(e).__name__, "error": str(e)}


def main(argv: list[str]) -> None:
    r = Resonate.remote(group="default", ttl=int(os.environ.get("FLOWS_TTL", "10")))
    for name, fn in WORKFLOWS.items():
        r.register(fn, name=name)
    flaky_fn = r.register(flaky)
    r.start()
    print(json.dumps({"event": "started", "pid": os.getpid()}), flush=True)
    cmd = argv[0]
    if cmd == "run":
        scenario, id, args = argv[1], argv[2], json.loads(argv[3])
        res = outcome(id, lambda: r.begin_run(id, WORKFLOWS[scenario], *args))
    elif cmd == "retry_top":
        id, key, fails = argv[1], argv[2], int(argv[3])
        res = outcome(id, lambda: flaky_fn.options(retry_policy=FAST_RETRY).begin_run(id, key, fails))
    elif cmd == "get":
        id = argv[1]
        res = outcome(id, lambda: r.get(id))
    else:
        raise SystemExit(f"unknown command {cmd!r}")
    print(json.dumps(res), flush=True)
    r.stop()
    os._exit(0)  # the SSE thread may sit in a blocking read: do not wait for it


if __name__ == "__main__":
    main(sys.argv[1:])
