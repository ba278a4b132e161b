"""What traces cost a request (docs/operations.md#traces): `Service.rpc` in a loop on the memory
store, in a fresh process per run, with no endpoint, with an endpoint and `trace_sample_ratio` 0
(metrics only), 0.01 and 1. The tracer exports as a function does, at the end of each request
(a batch of 512 spans, or nothing), to a stand-in receiver in this process, so the child's CPU time
is the server's alone. Runs of the variants alternate, so a machine's drift hits them alike.
Not part of `make bench`: `python -m bench.tracing_cost [--requests N] [--runs R]`."""
from __future__ import annotations

import argparse
import http.server
import json
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

MODES = {"off": None, "metrics": "0", "ratio 0.01": "0.01", "ratio 1": "1"}
KINDS = ("promise.get", "promise.create")


def one(mode: str, kind: str, n: int, endpoint: str) -> float:
    """In the child: CPU µs per request."""
    import logging

    from shared.config import load
    from shared.runtime import Runtime

    logging.disable(logging.WARNING)
    env = {"RESONATE_STORAGE__TYPE": "memory", "RESONATE_TRANSPORTS__HTTP_POLL__ENABLED": "false"}
    ratio = MODES[mode]
    if ratio is not None:
        env.update({"RESONATE_OBSERVABILITY__OTLP_ENDPOINT": endpoint,
                    "RESONATE_OBSERVABILITY__OTLP_INTERVAL": "3600000",
                    "RESONATE_OBSERVABILITY__TRACE_SAMPLE_RATIO": ratio})
    rt = Runtime(load(env=env), background=False, metrics=False)
    far = int(time.time() * 1000) + 3_600_000

    def body(k: str, i: int, id: str) -> bytes:
        data: dict[str, Any] = {"id": id, "timeoutAt": far} if k == "promise.create" else {"id": id}
        return json.dumps({"kind": k, "head": {"corrId": f"c{i}", "version": "2026-04-01"}, "data": data}).encode()

    rt.service.rpc(body("promise.create", 0, "g"))
    bodies = [body(kind, i, f"p{i}" if kind == "promise.create" else "g") for i in range(n)]
    tracer = rt.tracer
    c0 = time.process_time()
    for b in bodies:
        rt.service.rpc(b)
        if tracer is not None:
            tracer.maybe_export()
    cpu = time.process_time() - c0
    rt.stop()
    return cpu / n * 1e6


def _receiver() -> str:
    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--one", nargs=4, metavar=("MODE", "KIND", "N", "ENDPOINT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        mode, kind, n, endpoint = args.one
        print(f"{one(mode, kind, int(n), endpoint):.3f}")
        return 0
    endpoint = _receiver()
    print(f"CPU µs per Service.rpc, memory store, {args.requests} requests a run; min and median of {args.runs}")
    for kind in KINDS:
        got: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                out = subprocess.run([sys.executable, "-m", "bench.tracing_cost", "--one", mode, kind,
                                      str(args.requests), endpoint], capture_output=True, text=True, check=True)
                got[mode].append(float(out.stdout.strip().splitlines()[-1]))
        for mode, values in got.items():
            print(f"{kind:15s} {mode:11s} min {min(values):7.2f}  median {statistics.median(values):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
