"""One cold start, in a fresh interpreter: `python -m bench.coldchild '<json spec>'` (run by bench.coldstart).

Loads a functions-framework target exactly as the runtime does
(`functions_framework.create_app(target=..., source=...)`), then sends its first request with
flask's test client on that app (the same WSGI app the runtime serves under gunicorn; the environ
gets gunicorn's `wsgi.input_terminated`, which the functions' inner app relies on: without it the
framework's after-request body drain finds the input already consumed and answers 500) and
prints one JSON line:
{"import_ms", "framework_ms", "first_ms", "status", "body", "done_wall"}. Imports nothing else
before the clock starts, so the figures are the function's own.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

GUNICORN_ENVIRON = {"wsgi.input_terminated": True}  # gunicorn/http/wsgi.py sets it on every request


def first_request(client: Any, spec: dict[str, Any]) -> tuple[int, bytes, float]:
    """Send the spec's request; returns (status, body, perf_counter when it was answered).

    For SSE that is when the first `: connected` bytes arrived; closing the stream afterwards
    (the server's disconnect handling) is not part of the figure."""
    if spec["method"] == "GET":
        resp = client.get(spec["path"], buffered=False, environ_overrides=GUNICORN_ENVIRON)
        got = b""
        if resp.status_code == 200:
            for chunk in resp.response:
                got += chunk if isinstance(chunk, bytes) else chunk.encode()
                if b": connected" in got:
                    break
        t = time.perf_counter()
        resp.close()
        return resp.status_code, got, t
    body = spec.get("body", "").encode()
    resp = client.post(spec["path"], data=body, headers={"Content-Type": "application/json"} if body else {},
                       environ_overrides=GUNICORN_ENVIRON)
    return resp.status_code, resp.get_data(), time.perf_counter()


def main() -> None:
    spec = json.loads(sys.argv[1])
    t0 = time.perf_counter()
    import functions_framework

    t1 = time.perf_counter()
    app = functions_framework.create_app(target=spec["target"], source=spec["source"])
    t2 = time.perf_counter()
    status, body, t3 = first_request(app.test_client(), spec)
    done_wall = time.time() - (time.perf_counter() - t3)
    print(json.dumps({"import_ms": (t2 - t0) * 1000, "framework_ms": (t1 - t0) * 1000, "first_ms": (t3 - t2) * 1000,
                      "status": status, "body": body[:300].decode(errors="replace"), "done_wall": done_wall}),
          flush=True)
    os._exit(0)  # background threads (delivery, pool) must not delay the exit


if __name__ == "__main__":
    main()
