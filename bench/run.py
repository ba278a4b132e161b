"""`python -m bench`: every figure and its baseline measured in one run, then one table."""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import figures
from bench.rawsqlite import commits_per_second

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass
class Row:
    name: str
    value: str
    target: str
    baseline: str
    ratio: str
    result: str  # PASS, MISS or info


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def _ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f} ms"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--conns", type=int, default=32, help="keep-alive connections per load-generator process")
    p.add_argument("--procs", type=int, default=2, help="load-generator processes (a)")
    p.add_argument("--seconds", type=float, default=4.0, help="measurement window per throughput run (a)")
    p.add_argument("--rounds", type=int, default=2, help="alternating /health + create runs (a)")
    p.add_argument("--samples", type=int, default=1000, help="dispatch-latency samples (b)")
    p.add_argument("--get-samples", type=int, default=1000, help="promise.get round trips, baseline of (b)")
    p.add_argument("--fill-conns", type=int, default=128,
                   help="connections per process used to create the promises for (d) (not a measured figure)")
    p.add_argument("--timers", type=int, default=1000, help="promises timed out in (c)")
    p.add_argument("--promises", type=int, default=100_000, help="promises created before the RSS reading (d)")
    p.add_argument("--workdir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the workdir (server log, databases)")
    args = p.parse_args(argv)

    from tests.support.server import start_server  # the suite's launcher: same command line as users run

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="resonate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rows: list[Row] = []
    srv = None
    try:
        load0 = os.getloadavg()[0]
        log(f"workdir {workdir} ({os.cpu_count()} CPUs, load average {load0:.2f})")
        if load0 > 0.5 * (os.cpu_count() or 1):
            log("note: the machine is already busy; throughput and tail latencies will be noisy")
        raw = commits_per_second(workdir / "raw.db")
        log(f"raw SQLite single-row commits (WAL, synchronous=FULL): {raw:,.0f}/s")

        srv = start_server("sqlite", workdir / "server", debug=False)
        pid = srv.proc.pid
        time.sleep(0.5)
        rss0 = figures.rss_mb(pid)
        log(f"server pid {pid} on :{srv.port}, RSS at start {rss0:.1f} MB")
        created = 0

        # (a) throughput: the no-op route and promise.create, same client and concurrency, alternated
        # over `rounds` so that a change in the machine's load hits both alike
        conc = f"{args.procs}x{args.conns} connections"
        hs, cs = [], []
        for i in range(args.rounds):
            h = figures.load(srv.port, "health", args.procs, args.conns, args.seconds)
            log(f"GET /health round {i + 1}: {h['rate']:,.0f}/s ({conc}, p50 {h['p50_ms']:.2f} ms, "
                f"p99 {h['p99_ms']:.2f} ms, errors {h['errors']} {h['first_error']})")
            c = figures.load(srv.port, "create", args.procs, args.conns, args.seconds, prefix=f"tp{i}")
            created += c["created"]
            log(f"promise.create round {i + 1}: {c['rate']:,.0f}/s ({conc}, p50 {c['p50_ms']:.2f} ms, "
                f"p99 {c['p99_ms']:.2f} ms, errors {c['errors']} {c['first_error']})")
            hs.append(h)
            cs.append(c)
        health = {"rate": sum(h["ok"] for h in hs) / sum(h["seconds"] for h in hs),
                  "errors": sum(h["errors"] for h in hs)}
        create = {"rate": sum(c["ok"] for c in cs) / sum(c["seconds"] for c in cs),
                  "errors": sum(c["errors"] for c in cs)}
        r_health = create["rate"] / health["rate"]
        rows.append(Row("(a) promise.create throughput", _fmt_rate(create["rate"]), "ratio >= 0.50",
                        f"GET /health {_fmt_rate(health['rate'])}", f"{r_health:.2f}",
                        _verdict(r_health >= 0.5 and create["errors"] == 0)))
        rows.append(Row("(a) promise.create vs raw SQLite", _fmt_rate(create["rate"]), "-",
                        f"raw commits {_fmt_rate(raw)}", f"{create['rate'] / raw:.2f}", "info"))

        # (b) dispatch latency
        d = figures.dispatch_latency(srv.port, args.samples, args.get_samples)
        created += d["created"]
        log(f"dispatch: p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms, max {d['max_ms']:.2f} ms; "
            f"promise.get RTT p50 {d['get_p50_ms']:.2f} ms, p99 {d['get_p99_ms']:.2f} ms")
        rows.append(Row("(b) dispatch latency p50", _ms(d["p50_ms"]), "< 5 ms",
                        f"promise.get p50 {_ms(d['get_p50_ms'])}", f"{d['p50_ms'] / d['get_p50_ms']:.2f}",
                        _verdict(d["p50_ms"] < 5)))
        rows.append(Row("(b) dispatch latency p99", _ms(d["p99_ms"]), "< 25 ms",
                        f"promise.get p99 {_ms(d['get_p99_ms'])}", f"{d['p99_ms'] / d['get_p99_ms']:.2f}",
                        _verdict(d["p99_ms"] < 25)))

        # (c) timer lateness
        t = figures.timer_lateness(srv.port, args.timers)
        created += t["created"]
        log(f"timers: {t['received']}/{t['expected']} unblocks, lateness p50 {t['p50_ms']:.1f} ms, "
            f"p99 {t['p99_ms']:.1f} ms, min {t['min_ms']:.1f} ms, max {t['max_ms']:.1f} ms "
            f"(setup {t['setup_s']:.2f} s, {t['missed_registration']} timed out before registration); "
            f"p99 of the {t['during_setup']} that fell due while the creates were still running "
            f"{t['during_setup_p99_ms']:.1f} ms, of the rest {t['after_setup_p99_ms']:.1f} ms")
        complete = t["received"] == t["expected"] and t["expected"] > 0
        rows.append(Row("(c) timer lateness p50", _ms(t["p50_ms"]), "-", f"dispatch p50 {_ms(d['p50_ms'])}",
                        f"{t['p50_ms'] / d['p50_ms']:.2f}", "info"))
        rows.append(Row("(c) timer lateness p99", _ms(t["p99_ms"]), "< 50 ms", f"dispatch p50 {_ms(d['p50_ms'])}",
                        f"{t['p99_ms'] / d['p50_ms']:.2f}", _verdict(t["p99_ms"] < 50 and complete)))

        # (d) resident memory after N promises
        fill = max(0, args.promises - created)
        if fill:
            log(f"creating {fill:,} more promises (total {args.promises:,})")
            f = figures.load(srv.port, "create", args.procs, args.fill_conns, 0, warmup=0, prefix="fill",
                             max_requests=fill)
            created += f["created"]
            if f["errors"]:
                log(f"fill errors: {f['errors']} {f['first_error']}")
        time.sleep(1.0)
        rss = figures.rss_mb(pid)
        log(f"server RSS after {created:,} promises: {rss:.1f} MB")
        rows.append(Row(f"(d) server RSS after {created // 1000}k promises", f"{rss:.1f} MB", "< 150 MB",
                        f"RSS at start {rss0:.1f} MB", f"{rss / rss0:.2f}", _verdict(rss < 150)))
    except BaseException:
        args.keep = True  # leave the evidence
        if srv is not None:
            print("--- server log (tail) ---\n" + srv.logs()[-3000:], file=sys.stderr)
        raise
    finally:
        if srv is not None:
            srv.stop()
        if args.keep or args.workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"Resonate server benchmark (SQLite, {os.cpu_count()} CPUs, load average {load0:.2f} -> "
          f"{os.getloadavg()[0]:.2f}, {time.perf_counter() - t_start:.0f} s)")
    cols = ("figure", "value", "target", "baseline (same run)", "ratio", "result")
    widths = [max(len(c), *(len(getattr(r, f)) for r in rows)) for c, f in
              zip(cols, ("name", "value", "target", "baseline", "ratio", "result"))]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip((r.name, r.value, r.target, r.baseline, r.ratio, r.result),
                                                    widths)))
    return 0
