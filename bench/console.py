"""(j) The web console's first page with 10,000 promises: headless Chromium (Debian's package,
through Playwright, tests/support/browser.py) loads `/ui/#/promises` from a SQLite server holding
N promises, each time in a fresh browser context (nothing cached), and the page itself records
when the first `tr.promise-row` was inserted and the frame after it (`performance.now()`, from
the navigation's start) and its first contentful paint; the baseline is the list query the page
sends, `console.promises` (limit 50) on `POST /ui/api`, and the protocol's `promise.search`
(limit 50) on `POST /`, as sequential round trips over one keep-alive connection in the same run."""
from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import figures
from bench.http import Conn, envelope
from shared.records import Promise
from shared.storage.base import Tx
from shared.storage.sqlite import SqliteStore

# runs in the page before its own scripts: the moment the first row is in the DOM, and the next frame
FIRST_ROW_PROBE = """
(() => {
  const seen = () => {
    if (window.__firstRow !== undefined || !document.querySelector('tr.promise-row')) return false;
    window.__firstRow = performance.now();
    requestAnimationFrame(() => { window.__firstRowFrame = performance.now(); });
    return true;
  };
  new MutationObserver((_, obs) => { if (seen()) obs.disconnect(); })
    .observe(document, {childList: true, subtree: true});
})();
"""
READ_TIMES = """() => {
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  return {firstRow: window.__firstRow, firstRowFrame: window.__firstRowFrame,
          fcp: fcp ? fcp.startTime : null, domContentLoaded: nav ? nav.domContentLoadedEventEnd : null,
          rows: document.querySelectorAll('tr.promise-row').length};
}"""


def unavailable() -> str | None:
    """Why (j) cannot run here, or None."""
    from tests.support.browser import chromium_path, missing_chromium_message

    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (the test extra: `make install-test`)"
    return missing_chromium_message() if chromium_path() is None else None


def _insert(tx: Tx, batch: list[Promise]) -> None:
    for p in batch:
        tx.insert_promise(p)


def fill(db: Path, n: int) -> None:
    """N promises as workflows leave them: roots naming their function (the SDKs' JSON param),
    three in four resolved, the rest pending; created over the last day."""
    store = SqliteStore(str(db))
    now = figures.now_ms()
    far = now + 30 * figures.DAY_MS
    try:
        for lo in range(0, n, 5_000):
            batch = []
            for i in range(lo, min(n, lo + 5_000)):
                created = now - figures.DAY_MS + i * (figures.DAY_MS // max(1, n))
                param = {"headers": {}, "data": base64.b64encode(json.dumps(
                    {"func": f"workflow_{i % 7}", "args": [i], "kwargs": {}}).encode()).decode()}
                if i % 4:
                    value = {"headers": {}, "data": base64.b64encode(json.dumps({"n": i}).encode()).decode()}
                    batch.append(Promise(f"order-{i:06}", "resolved", param, value, {}, far, created, created + 500))
                else:
                    batch.append(Promise(f"order-{i:06}", "pending", param, {}, {}, far, created))
            store.write(functools.partial(_insert, batch=batch))
    finally:
        store.close()


def _raw(path: bytes, body: bytes) -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _round_trips(port: int, samples: int, warmup: int) -> dict[str, list[float]]:
    """Sequential round trips, the two queries alternating on one keep-alive connection."""
    reqs = {"console.promises": _raw(b"/ui/api", envelope("console.promises", {"limit": 50})),
            "promise.search": _raw(b"/", envelope("promise.search", {"limit": 50}))}
    out: dict[str, list[float]] = {k: [] for k in reqs}
    conn = await Conn.open(figures.HOST, port)
    try:
        for i in range(warmup + samples):
            for kind, raw in reqs.items():
                t0 = time.perf_counter()
                status, body = await conn.request(raw)
                t1 = time.perf_counter()
                if status != 200:
                    raise RuntimeError(f"{kind} answered {status}: {body[:300]!r}")
                if kind == "console.promises" and len(json.loads(body)["data"]["promises"]) != 50:
                    raise RuntimeError(f"console.promises gave fewer than 50 rows: {body[:300]!r}")
                if i >= warmup:
                    out[kind].append((t1 - t0) * 1000)
    finally:
        conn.close()
    return out


def _page_loads(url: str, loads: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    from tests.support.browser import launch

    out = []
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            for i in range(loads + 1):  # the first load is untimed: the browser's own start-up
                ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                try:
                    ctx.add_init_script(FIRST_ROW_PROBE)
                    page = ctx.new_page()
                    t0 = time.perf_counter()
                    page.goto(url)
                    page.locator("tr.promise-row").first.wait_for(state="visible", timeout=60_000)
                    wall = (time.perf_counter() - t0) * 1000
                    page.wait_for_function("window.__firstRowFrame !== undefined", timeout=60_000)
                    t = page.evaluate(READ_TIMES)
                finally:
                    ctx.close()
                if t["rows"] != 50:
                    raise RuntimeError(f"the page shows {t['rows']} rows, expected the first 50")
                if i:
                    out.append({**t, "wall": wall})
                else:
                    log(f"(j) untimed first load: first row {t['firstRowFrame']:.0f} ms, wall {wall:.0f} ms")
        finally:
            browser.close()
    return out


def measure(workdir: Path, n: int, loads: int, samples: int, log: Callable[[str], None]) -> dict[str, Any]:
    """{loads: [per load: firstRow, firstRowFrame, fcp, domContentLoaded, wall (ms)], rtt: {kind: [ms]}}."""
    from tests.support.server import start_server

    db = workdir / "console.db"
    log(f"(j) writing {n:,} promises")
    fill(db, n)
    srv = start_server("sqlite", workdir / "console", debug=False, db=db)
    try:
        rtt = asyncio.run(_round_trips(srv.port, samples, 20))
        runs = _page_loads(f"{srv.url}/ui/#/promises", loads, log)
        rtt2 = asyncio.run(_round_trips(srv.port, samples, 5))  # after as well as before the loads
    finally:
        srv.stop(drop=False)
    return {"loads": runs, "rtt": {k: rtt[k] + rtt2[k] for k in rtt}}
