"""A resonate-sdk 0.6.7 worker in its own process and group (flows.REMOTE_GROUP): the only
process that registers the remote_* functions of flows.py, so the driver reaches them by RPC
through the server. Prints one JSON line once started, then serves until it is terminated."""
from __future__ import annotations

import json
import os
import threading

from flows import REMOTE, REMOTE_GROUP
from resonate import Resonate


def main() -> None:
    r = Resonate.remote(group=REMOTE_GROUP, ttl=int(os.environ.get("FLOWS_TTL", "10")))
    for name, fn in REMOTE.items():
        r.register(fn, name=name)
    r.start()
    print(json.dumps({"event": "started", "pid": os.getpid(), "group": REMOTE_GROUP}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
