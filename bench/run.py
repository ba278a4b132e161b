"""`python -m bench`: every figure and its baseline measured in one run, then one table."""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench import cluster, coldstart, figures, sdkbench
from bench import console as console_bench
from bench import pg as pgdb
from bench import retention as retention_bench
from bench.cloudtimers import cloud_timer_lateness
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


def cold_start_rows(pg_url: str, dbs: ExitStack, workdir: Path, reps: int) -> list[Row]:
    """(f): every functions-framework target of functions/main.py against the migrated database
    `pg_url`; then `api` on databases without the schema (its first request migrates) and
    without the project's bytecode."""
    pyc = workdir / "pycache"
    names = coldstart.targets()
    try:
        coldstart.cold_start_once(names[0], pg_url, pyc)  # untimed: fills the bytecode cache
    except Exception as e:  # the measured runs will report it
        log(f"cold start warm-up: {e}")
    log(f"cold starts of {', '.join(names)}: flask test client on functions_framework.create_app, a fresh "
        f"interpreter each, median of {reps} (interleaved), schema migrated and bytecode cached beforehand")
    cases = [coldstart.Case(t, t, [pg_url] * reps, pyc) for t in names]
    if "api" in names:
        empty = [pgdb.new_database(dbs, log) for _ in range(reps)]  # one per rep: the first request migrates it
        cases += [coldstart.Case("api, no schema yet", "api", empty, pyc),
                  coldstart.Case("api, no project .pyc", "api", [pg_url] * reps,
                                 coldstart.without_project_pyc(pyc, workdir / "pycache-cold"), write_pyc=False)]
    results, interp = coldstart.run_cases(cases, reps, pyc)
    log(f"python -c pass (interpreter start, baseline of (f)): {interp:.1f} ms")
    rows: list[Row] = []
    base = f"python -c pass {interp:.0f} ms"
    api = results.get("api")
    for c in cases:
        r = results[c.label]
        if isinstance(r, str):
            log(f"cold start {c.label} failed: {r.strip().splitlines()[-1]}")
            rows.append(Row(f"(f) cold start: {c.label}", "error", "< 300 ms" if c.label in names else "-", base,
                            "-", "MISS"))
            continue
        ok = 200 <= r["status"] < 300
        log(f"cold start {c.label}: import {r['import_ms']:.1f} ms (functions_framework {r['framework_ms']:.1f}), "
            f"first request {r['first_ms']:.1f} ms (status {r['status']}), total {r['total_ms']:.1f} ms, "
            f"spawn to response {r['spawn_ms']:.1f} ms; totals {', '.join(f'{x:.0f}' for x in r['totals_ms'])} ms"
            + ("" if ok else f"; answered {r['body'][:200]!r}"))
        value = f"{r['import_ms']:.0f} + {r['first_ms']:.0f} = {r['total_ms']:.0f} ms"
        if c.label in names:
            rows.append(Row(f"(f) cold start: {c.label}", value, "< 300 ms", base, f"{r['total_ms'] / interp:.1f}",
                            _verdict(r["total_ms"] < 300 and ok)))
        elif isinstance(api, dict):
            rows.append(Row(f"(f) cold start: {c.label}", value, "-", f"api {api['total_ms']:.0f} ms",
                            f"{r['total_ms'] / api['total_ms']:.2f}", "info" if ok else "MISS"))
    return rows


def sdk_rows(m: dict, log: Callable[[str], None]) -> list[Row]:
    """(h)'s rows from `sdkbench.measure`: p50 against the floor of the same run, p99 and
    workflows/s against the SDK's in-process mode, requests and commits per workflow, the
    server's share of each request's client-observed time."""
    res, commit = m["res"], m["commit_ms"]
    rtt = figures.pct(m["health"], 50)
    local = res["in-process"]
    lp50, lp99, lrate = figures.pct(local["lat"], 50), figures.pct(local["lat"], 99), _mean(local["rates"])
    nreq = res["SQLite"].get("per_workflow", 10.0)
    floor = lp50 + nreq * (commit + rtt)
    log(f"(h) floor: in-process p50 {lp50:.2f} ms + {nreq:.0f} x (fsync'd commit {commit:.3f} ms + no-op round trip "
        f"{rtt:.3f} ms, aiohttp) = {floor:.1f} ms; target SQLite p50 <= {1.25 * floor:.1f} ms")
    rows = [Row("(h) SDK workflow p50: in-process", _ms(lp50), "-", "-", "-", "info")]
    for b, e in res.items():
        if b == "in-process":
            continue
        if "error" in e:
            rows.append(Row(f"(h) SDK workflow p50: {b}", "error", "-", f"floor {floor:.1f} ms", "-", "MISS"))
            continue
        p50, p99, rate = figures.pct(e["lat"], 50), figures.pct(e["lat"], 99), _mean(e["rates"])
        target = b == "SQLite"
        verdict = _verdict(p50 <= 1.25 * floor) if target else "info"
        rows.append(Row(f"(h) SDK workflow p50: {b}", _ms(p50), "ratio <= 1.25" if target else "-",
                        f"floor {floor:.1f} ms", f"{p50 / floor:.2f}", verdict))
        rows.append(Row(f"(h) SDK workflow p99: {b}", _ms(p99), "-", f"in-process p99 {_ms(lp99)}",
                        f"{p99 / lp99:.2f}", "info"))
        rows.append(Row(f"(h) SDK workflows/s, {m['conc']} at once: {b}", _fmt_rate(rate), "-",
                        f"in-process {_fmt_rate(lrate)}", f"{rate / lrate:.2f}", "info"))
        kinds = ", ".join(f"{k} {v / len(e['lat']) * m['rounds']:.0f}" for k, v in sorted(e["requests"].items()))
        durable = (f"; {e['fsyncs']:.1f} fsyncs" if "fsyncs" in e else
                   f"; {e['xacts']:.1f} transactions (read-only ones too)" if "xacts" in e else "")
        log(f"(h) {b}: {e.get('per_workflow', float('nan')):.1f} requests per workflow ({kinds}){durable}")
        if e["srv"] and e["rtt"]:
            srv, cli = _mean(e["srv"]), _mean(e["rtt"])
            rows.append(Row(f"(h) server share of a request: {b}", f"{srv:.2f} ms", "-",
                            f"client-observed {cli:.2f} ms", f"{srv / cli:.2f}", "info"))
    return rows


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def print_table(rows: list[Row], title: str) -> None:
    print()
    print(title)
    cols = ("figure", "value", "target", "baseline (same run)", "ratio", "result")
    widths = [max(len(c), *(len(getattr(r, f)) for r in rows)) for c, f in
              zip(cols, ("name", "value", "target", "baseline", "ratio", "result"), strict=True)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip((r.name, r.value, r.target, r.baseline, r.ratio, r.result),
                                                    widths, strict=True)))


def run_sdk(args: argparse.Namespace, workdir: Path, dbs: ExitStack, with_pg: bool) -> list[Row]:
    """(h) on SQLite, and on Postgres and the cloud simulation when `with_pg` (fresh databases)."""
    why = sdkbench.unavailable()
    if why is not None:
        log(f"(h) skipped: {why}")
        return []
    pg_url = sim_url = None
    if with_pg:
        pg_url = pgdb.new_database(dbs, log)
        sim_url = pgdb.new_database(dbs, log)
        pgdb.migrate(sim_url)
    m = sdkbench.measure(workdir, pg_url, sim_url, args.sdk_rounds, args.sdk_seq, args.sdk_conc, log)
    m["conc"], m["rounds"] = args.sdk_conc, args.sdk_rounds
    return sdk_rows(m, log)


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
    p.add_argument("--cold-reps", type=int, default=5, help="cold starts per function, median reported (f)")
    p.add_argument("--cloud-timers", type=int, default=300, help="promises timed out in the cloud simulation (g)")
    p.add_argument("--cloud-timer-span", type=int, default=30, help="latest deadline in seconds for (g) (< 60)")
    p.add_argument("--no-postgres", action="store_true", help="skip the Postgres figures (e), (f), (g) and (h)'s")
    p.add_argument("--sdk-rounds", type=int, default=3, help="rounds of (h), the backends taking turns in each")
    p.add_argument("--sdk-seq", type=int, default=100, help="sequential SDK workflows per backend and round (h)")
    p.add_argument("--sdk-conc", type=int, default=200, help="SDK workflows started at once (h)")
    p.add_argument("--no-sdk", action="store_true", help="skip (h) (the SDK workflow)")
    p.add_argument("--only", choices=["h", "i", "j"],
                   help="run only this figure (h: about a minute and a half; i: about half a minute; j: about 20 s)")
    p.add_argument("--purge", type=int, default=100_000, help="finished promises retention deletes during (i)")
    p.add_argument("--no-mysql", action="store_true", help="skip the MySQL part of (e)")
    p.add_argument("--console-promises", type=int, default=10_000, help="promises in the server of (j)")
    p.add_argument("--console-loads", type=int, default=10, help="page loads, a fresh browser context each (j)")
    p.add_argument("--console-samples", type=int, default=200, help="round trips of each list query, baseline of (j)")
    p.add_argument("--no-console", action="store_true", help="skip (j) (the web console in headless Chromium)")
    p.add_argument("--cross-samples", type=int, default=200, help="dispatches between two processes (e)")
    args = p.parse_args(argv)
    if args.only == "h":
        return main_sdk_only(args)
    if args.only == "i":
        return main_retention_only(args)
    if args.only == "j":
        return main_console_only(args)

    from tests.support.server import start_server  # the suite's launcher: same command line as users run

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="resonate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rows: list[Row] = []
    cold_rows: list[Row] = []
    srv = pg_srv = my_srv = None
    dbs = ExitStack()  # the run's Postgres databases, dropped at the end whatever happens
    try:
        load0 = os.getloadavg()[0]
        log(f"workdir {workdir} ({os.cpu_count()} CPUs, load average {load0:.2f})")
        if load0 > 0.5 * (os.cpu_count() or 1):
            log("note: the machine is already busy; throughput and tail latencies will be noisy")
        raw = commits_per_second(workdir / "raw.db")
        log(f"raw SQLite single-row commits (WAL, synchronous=FULL): {raw:,.0f}/s")

        pg_url = None
        if args.no_postgres:
            log("--no-postgres: skipping (e), (f) and (g)")
        elif not pgdb.available():
            log("no Postgres reachable (RESONATE_TEST_PG_URL): skipping (e), (f) and (g)")
        else:
            pg_url = pgdb.new_database(dbs, log)
            pgdb.migrate(pg_url)
            log(f"{pgdb.settings()}; database {pg_url.rsplit('/', 1)[1]} (fresh, migrated)")
            # (f) first, while nothing else runs on the machine
            cold_rows = cold_start_rows(pg_url, dbs, workdir, args.cold_reps)

        my_url = None  # (e) on MySQL too, when a server answers
        if not args.no_mysql and cluster.mysql_available():
            my_url = cluster.mysql_database(dbs)
            log(f"{cluster.mysql_settings()}; database {my_url.rsplit('/', 1)[1]} (fresh, migrated)")
        elif not args.no_mysql:
            log("no MySQL reachable (RESONATE_TEST_MYSQL_URL): skipping MySQL in (e)")

        srv = start_server("sqlite", workdir / "server", debug=False)
        pid = srv.proc.pid
        time.sleep(0.5)
        rss0 = figures.rss_mb(pid)
        log(f"server pid {pid} on :{srv.port}, RSS at start {rss0:.1f} MB")
        created = 0
        if pg_url is not None:  # (e): the same command line on Postgres, measured alternately with (a)
            pg_srv = start_server("postgres", workdir / "pg", debug=False, pg_url=pg_url)
            log(f"Postgres server pid {pg_srv.proc.pid} on :{pg_srv.port}")
        if my_url is not None:
            my_srv = start_server("mysql", workdir / "my", debug=False, my_url=my_url)
            log(f"MySQL server pid {my_srv.proc.pid} on :{my_srv.port}")

        # (a) throughput: the no-op route and promise.create, same client and concurrency, alternated
        # over `rounds` so that a change in the machine's load hits both alike
        conc = f"{args.procs}x{args.conns} connections"
        hs, cs, ps, ms = [], [], [], []
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
            if pg_srv is not None:
                c = figures.load(pg_srv.port, "create", args.procs, args.conns, args.seconds, prefix=f"pg{i}")
                log(f"promise.create on Postgres round {i + 1}: {c['rate']:,.0f}/s ({conc}, p50 {c['p50_ms']:.2f} ms, "
                    f"p99 {c['p99_ms']:.2f} ms, errors {c['errors']} {c['first_error']})")
                ps.append(c)
            if my_srv is not None:
                c = figures.load(my_srv.port, "create", args.procs, args.conns, args.seconds, prefix=f"my{i}")
                log(f"promise.create on MySQL round {i + 1}: {c['rate']:,.0f}/s ({conc}, p50 {c['p50_ms']:.2f} ms, "
                    f"p99 {c['p99_ms']:.2f} ms, errors {c['errors']} {c['first_error']})")
                ms.append(c)
        for s in (pg_srv, my_srv):
            if s is not None:
                s.stop(drop=False)
        pg_srv = my_srv = None
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
        pg_row = None
        if ps:
            pg_rate = sum(c["ok"] for c in ps) / sum(c["seconds"] for c in ps)
            pg_errors = sum(c["errors"] for c in ps)
            log(f"promise.create: Postgres {pg_rate:,.0f}/s, SQLite {create['rate']:,.0f}/s "
                f"(ratio {pg_rate / create['rate']:.2f}, Postgres errors {pg_errors})")
            pg_row = Row("(e) promise.create on Postgres", _fmt_rate(pg_rate), "-",
                         f"SQLite {_fmt_rate(create['rate'])}", f"{pg_rate / create['rate']:.2f}",
                         "info" if pg_errors == 0 else "MISS")
        e_rows = [pg_row] if pg_row else []
        if ms:
            my_rate = sum(c["ok"] for c in ms) / sum(c["seconds"] for c in ms)
            my_errors = sum(c["errors"] for c in ms)
            log(f"promise.create: MySQL {my_rate:,.0f}/s, SQLite {create['rate']:,.0f}/s "
                f"(ratio {my_rate / create['rate']:.2f}, MySQL errors {my_errors})")
            e_rows.append(Row("(e) promise.create on MySQL", _fmt_rate(my_rate), "-",
                              f"SQLite {_fmt_rate(create['rate'])}", f"{my_rate / create['rate']:.2f}",
                              "info" if my_errors == 0 else "MISS"))
        if my_url is not None:  # (e) dispatch between two processes on one database: MySQL's poller vs NOTIFY
            x_my = cluster.cross_process_dispatch("mysql", cluster.mysql_database(dbs), workdir, args.cross_samples)
            log(f"dispatch between two processes on MySQL: p50 {x_my['p50_ms']:.2f} ms, "
                f"p99 {x_my['p99_ms']:.2f} ms, max {x_my['max_ms']:.2f} ms")
            x_pg = None
            if pg_url is not None:
                x_url = pgdb.new_database(dbs, log)
                pgdb.migrate(x_url)
                x_pg = cluster.cross_process_dispatch("postgres", x_url, workdir, args.cross_samples)
                log(f"dispatch between two processes on Postgres: p50 {x_pg['p50_ms']:.2f} ms, "
                    f"p99 {x_pg['p99_ms']:.2f} ms, max {x_pg['max_ms']:.2f} ms")
            for p_ in ("p50", "p99"):
                base = x_pg[f"{p_}_ms"] if x_pg else float("nan")
                e_rows.append(Row(f"(e) MySQL dispatch A->B {p_}", _ms(x_my[f"{p_}_ms"]), "-",
                                  f"Postgres {_ms(base)}", f"{x_my[f'{p_}_ms'] / base:.2f}", "info"))

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
        rows += retention_rows(args, workdir)
        if not args.no_console:
            rows += console_rows(args, workdir)
        rows += e_rows + cold_rows

        # (g) timer lateness in the cloud simulation: the sweeper function is the only timer
        if pg_url is not None:
            g_url = pgdb.new_database(dbs, log)
            pgdb.migrate(g_url)
            g = cloud_timer_lateness(g_url, args.cloud_timers, 500, args.cloud_timer_span * 1000)
            log(f"cloud-sim timers (sweeper ticked every 60 s, {g['ticks']} tick(s), woken by the api instances): "
                f"{g['received']}/{g['expected']} unblocks, deadlines 0.5-{args.cloud_timer_span} s ahead, lateness "
                f"p50 {g['p50_ms']:.1f} ms, p99 {g['p99_ms']:.1f} ms, max {g['max_ms']:.1f} ms")
            done = g["received"] == g["expected"] and g["expected"] > 0
            rows.append(Row("(g) cloud-sim timer lateness p99", _ms(g["p99_ms"]), "< 1000 ms",
                            f"local (c) p99 {_ms(t['p99_ms'])}", f"{g['p99_ms'] / t['p99_ms']:.2f}",
                            _verdict(g["p99_ms"] < 1000 and done)))
        if not args.no_sdk:  # (h) last: its servers start after the others stopped
            for s in (srv, pg_srv):
                if s is not None:
                    s.stop(drop=False)
            srv = pg_srv = None
            rows += run_sdk(args, workdir, dbs, pg_url is not None)
    except BaseException:
        args.keep = True  # leave the evidence
        for s in (srv, pg_srv, my_srv):
            if s is not None:
                print(f"--- {s.backend} server log (tail) ---\n" + s.logs()[-3000:], file=sys.stderr)
        raise
    finally:
        for s in (srv, pg_srv, my_srv):
            if s is not None:
                s.stop(drop=False)
        dbs.close()
        if args.keep or args.workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    stores = "SQLite; Postgres for (e), (f), (g), (h)" if cold_rows else "SQLite"
    if any(r.name.startswith("(e)") and "MySQL" in r.name for r in rows):
        stores += "; MySQL for (e)"
    print_table(rows, f"Resonate server benchmark ({stores}, {os.cpu_count()} CPUs, load average {load0:.2f} -> "
                      f"{os.getloadavg()[0]:.2f}, {time.perf_counter() - t_start:.0f} s)")
    return 0


def retention_rows(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """(i): request p99 while the retention loop purges `--purge` finished promises, against the
    same load with retention off."""
    m = retention_bench.measure(workdir, args.purge, args.procs, args.conns, args.seconds, log)
    off, on = m["off"], m["purging"]
    spanned = "the whole window" if on["left_at_end"] else "part of the window only"
    return [Row(f"(i) promise.create p99 while purging {args.purge // 1000}k", _ms(on["p99_ms"]), "-",
                f"retention off {_ms(off['p99_ms'])}", f"{on['p99_ms'] / off['p99_ms']:.2f}",
                "info" if on["errors"] == 0 else "MISS"),
            Row("(i) promise.create rate while purging", _fmt_rate(on["rate"]), "-",
                f"retention off {_fmt_rate(off['rate'])}", f"{on['rate'] / off['rate']:.2f}",
                f"info: purged {on['purged']:,}, over {spanned}")]


def console_rows(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """(j): the console's promise list in headless Chromium with `--console-promises` promises,
    against the list query's own HTTP round trip."""
    why = console_bench.unavailable()
    if why is not None:
        log(f"(j) skipped: {why}")
        return []
    m = console_bench.measure(workdir, args.console_promises, args.console_loads, args.console_samples, log)
    loads, rtt = m["loads"], m["rtt"]
    row_ms = [x["firstRowFrame"] for x in loads]
    fcp = [x["fcp"] for x in loads if x["fcp"] is not None]
    wall = [x["wall"] for x in loads]
    ui_rtt, search_rtt = figures.pct(rtt["console.promises"], 50), figures.pct(rtt["promise.search"], 50)
    log(f"(j) {len(loads)} loads of /ui/#/promises ({args.console_promises:,} promises), ms from navigation start: "
        f"first row visible {', '.join(f'{x:.0f}' for x in row_ms)}; first contentful paint "
        f"{', '.join(f'{x:.0f}' for x in fcp)}; DOMContentLoaded p50 "
        f"{figures.pct([x['domContentLoaded'] for x in loads], 50):.0f}; goto to row visible (Playwright) p50 "
        f"{figures.pct(wall, 50):.0f}")
    log(f"(j) round trips, limit 50: console.promises p50 {ui_rtt:.2f} ms, p99 "
        f"{figures.pct(rtt['console.promises'], 99):.2f} ms; promise.search p50 {search_rtt:.2f} ms, p99 "
        f"{figures.pct(rtt['promise.search'], 99):.2f} ms")
    base = f"console.promises p50 {_ms(ui_rtt)}"
    p50, worst = figures.pct(row_ms, 50), max(row_ms)
    n = f"{args.console_promises // 1000}k"
    return [Row(f"(j) console first row visible, {n} promises, p50", _ms(p50), "< 1000 ms", base,
                f"{p50 / ui_rtt:.0f}", _verdict(p50 < 1000)),
            Row(f"(j) console first row visible, {n} promises, worst of {len(loads)}", _ms(worst), "-", base,
                f"{worst / ui_rtt:.0f}", "info"),
            Row(f"(j) console first contentful paint, {n} promises, p50", _ms(figures.pct(fcp, 50)), "-", base,
                f"{figures.pct(fcp, 50) / ui_rtt:.0f}", "info"),
            Row("(j) console.promises round trip, limit 50, p50", _ms(ui_rtt), "-",
                f"promise.search p50 {_ms(search_rtt)}", f"{ui_rtt / search_rtt:.2f}", "info")]


def _single_figure(args: argparse.Namespace, rows_of: Callable[[argparse.Namespace, Path], list[Row]],
                   what: str) -> int:
    """`--only` of a figure measured against one SQLite server of its own: its rows, one table."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="resonate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    try:
        rows = rows_of(args, workdir)
    except BaseException:
        args.keep = True
        raise
    finally:
        if args.keep or args.workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, f"Resonate {what} benchmark ({os.cpu_count()} CPUs, load average {load0:.2f} -> "
                      f"{os.getloadavg()[0]:.2f}, {time.perf_counter() - t_start:.0f} s)")
    return 0


def main_console_only(args: argparse.Namespace) -> int:
    """`--only j`: the console figure alone."""
    return _single_figure(args, console_rows, "console (SQLite, headless Chromium)")


def main_retention_only(args: argparse.Namespace) -> int:
    """`--only i`: the retention figure alone."""
    return _single_figure(args, retention_rows, "retention (SQLite)")


def main_sdk_only(args: argparse.Namespace) -> int:
    """`--only h`: the SDK workflow figure alone."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="resonate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    log(f"workdir {workdir} ({os.cpu_count()} CPUs, load average {load0:.2f})")
    with_pg = not args.no_postgres and pgdb.available()
    if not with_pg:
        log("(h) on SQLite only (--no-postgres, or no Postgres reachable)")
    dbs = ExitStack()
    try:
        rows = run_sdk(args, workdir, dbs, with_pg)
    except BaseException:
        args.keep = True
        raise
    finally:
        dbs.close()
        if args.keep or args.workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    stores = "SQLite, Postgres, cloud simulation" if with_pg else "SQLite"
    print_table(rows, f"Resonate SDK workflow benchmark ({stores}, "
                      f"{os.cpu_count()} CPUs, load average {load0:.2f} -> {os.getloadavg()[0]:.2f}, "
                      f"{time.perf_counter() - t_start:.0f} s)")
    return 0
