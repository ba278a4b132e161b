"""Headless Chromium for the web console's tests (tests/test_console_browser.py) and its bench
figure (bench/console.py), driven by Playwright's sync API.

The browser is Debian's `chromium` package (`/usr/bin/chromium`, or `RESONATE_TEST_CHROMIUM`):
Playwright never downloads one here. A missing browser FAILS the tests (`require_chromium`):
`.ci/run` installs it. On a test's failure, tests/conftest.py calls `screenshot_on_failure`,
which saves a full-page screenshot of every page the test opened (`$RESONATE_TEST_ARTIFACTS`,
else the test's tmp_path) and adds its path, the page's URL and its console errors to the report.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

CHROMIUM_ENV = "RESONATE_TEST_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# root in a container has no user namespaces for the sandbox; /dev/shm is small in containers
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
ARTIFACTS_ENV = "RESONATE_TEST_ARTIFACTS"
TOKEN_KEY = "resonate.token"  # the console keeps the token in the tab's sessionStorage under this key


def chromium_path() -> str | None:
    """The Chromium binary to drive (`RESONATE_TEST_CHROMIUM`, else Debian's, else `chromium` on
    PATH), or None when it is not installed."""
    path = os.environ.get(CHROMIUM_ENV) or (DEFAULT_CHROMIUM if Path(DEFAULT_CHROMIUM).exists()
                                            else shutil.which("chromium") or DEFAULT_CHROMIUM)
    return path if Path(path).is_file() and os.access(path, os.X_OK) else None


def missing_chromium_message() -> str:
    path = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    return (f"Chromium not found at {path}: the web console's browser tests need Debian's chromium package "
            f"(apt-get install -y chromium; .ci/run installs it) or {CHROMIUM_ENV}=<path to a chromium binary>. "
            "Playwright's own browser downloads are not used.")


def require_chromium() -> str:
    """The binary, or the test fails (never skips) naming what to install."""
    path = chromium_path()
    if path is None:
        import pytest

        pytest.fail(missing_chromium_message(), pytrace=False)
    return path


def launch(pw: Any, path: str | None = None) -> Any:
    """A headless Chromium (Playwright `Browser`) from Debian's binary."""
    path = path or chromium_path()
    if path is None:
        raise RuntimeError(missing_chromium_message())
    return pw.chromium.launch(executable_path=path, headless=True, args=LAUNCH_ARGS)


def watch(page: Any) -> list[str]:
    """Collect the page's console errors and uncaught exceptions (for failure reports)."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(f"console.{m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: seen.append(f"uncaught: {e}"))
    return seen


def _slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-150:]


def screenshot_on_failure(item: Any, rep: Any) -> None:
    """For a failed setup or call of a test that opened pages (`item._browser_pages`, a list of
    (name, page, console errors)): a full-page PNG of each, its path and the page's state in
    the report's sections."""
    pages = getattr(item, "_browser_pages", None)
    if not pages or not rep.failed:
        return
    folder = os.environ.get(ARTIFACTS_ENV)
    base = Path(folder) if folder else Path(getattr(item, "_browser_tmp", None) or ".")
    base.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, page, errors in pages:
        path = base / f"{_slug(item.nodeid)}-{rep.when}-{name}.png"
        try:
            if page.is_closed():
                lines.append(f"{name}: page already closed, no screenshot")
                continue
            page.screenshot(path=str(path), full_page=True, timeout=15_000)
            lines.append(f"{name}: screenshot saved to {path}")
            lines.append(f"  url {page.url}")
        except Exception as e:  # the browser may be the thing that failed
            lines.append(f"{name}: screenshot failed ({type(e).__name__}: {e})")
        lines += [f"  {e}" for e in errors[-20:]]
    text = "\n".join(lines)
    rep.sections.append(("browser screenshots", text))
    print(f"\n[browser] {text}")  # also in the captured output of the run
