"""The web console (`/ui`, docs/console.md) in a real browser: headless Chromium (Debian's
package, tests/support/browser.py) driven by Playwright against real server processes.

* An SDK workflow (resonate-sdk 0.8.1: two steps, then a promise resolved from outside) shows
  in the promise list and as a call graph; an operator resolves its pending promise from the
  page, the workflow finishes, and a page left open on the root turns resolved by itself (the
  live stream, no reload).
* Filters (prefix, state, tags, creation time) and paging over promises created through `POST /`,
  the list following changes live; deleting a schedule from its page; re-driving dead outbox
  messages from the outbox page.
* Auth on: an admin token sees every prefix and gets the actions; a prefix token sees its prefix
  only, gets no actions, and its own `promise.settle` on `POST /ui/api` answers 403 and changes
  nothing, and the outbox is refused to it; without a token the page asks for one.

Every wait is Playwright's auto-waiting `expect` with a generous timeout: no sleeps, no timing
assertions. A missing Chromium fails these tests (`.ci/run` installs it). A failed test leaves a
full-page screenshot of each page it opened (its path is in the report; `$RESONATE_TEST_ARTIFACTS`
chooses the directory).
"""
from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.sdk.harness import Harness, wait_until
from tests.support.browser import TOKEN_KEY, launch, require_chromium, watch
from tests.support.capture import Capture
from tests.support.envelope import envelope
from tests.support.server import ServerProc, start_server
from tests.support.tokens import KeyPair, claims
from tests.support.wait import FLOOR
from tests.support.wait import wait_until as wait_for

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("browser")]

# every expect(): a loaded 2-core machine runs the server, an SDK process and Chromium at once
WAIT_MS = int(max(45.0, FLOOR) * 1000)
FAR = 2**53
SERVER_ARGS = ["--tasks-retry-timeout", "1000", "--ui-live-interval", "1000"]
# `console_server`: no periodic tick within a test, so every live update the SDK workflow's and
# the list's pages show comes from a `change` hint, sent when this server commits (the server's
# shutdown ends the live streams itself: tests/test_shutdown.py)
NO_TICK_ARGS = [*SERVER_ARGS[:2], "--ui-live-interval", "3600000"]
expect.set_options(timeout=WAIT_MS)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = require_chromium()  # fails (never skips) without Chromium
    with sync_playwright() as pw:
        b = launch(pw, path)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def pages(request: pytest.FixtureRequest, browser: Any, tmp_path: Path) -> Iterator[Callable[..., Page]]:
    """`pages(name, context=None)`: a new page (in a fresh browser context unless one is given),
    registered for the failure screenshots."""
    contexts: list[Any] = []
    request.node._browser_pages = []
    request.node._browser_tmp = tmp_path / "screenshots"

    def new(name: str = "page", context: Any = None) -> Page:
        if context is None:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        request.node._browser_pages.append((name, page, watch(page)))
        return page

    yield new
    for c in contexts:
        c.close()


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """The local server on SQLite as users start it (debug off), auth off."""
    srv = start_server("sqlite", tmp_path_factory.mktemp("console"), debug=False, args=NO_TICK_ARGS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def auth_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """The same with inbound auth on (an Ed25519 public key); `.key` mints tokens, `.token` is admin."""
    key = KeyPair("ed25519")
    work = tmp_path_factory.mktemp("console-auth")
    srv = start_server("sqlite", work, debug=False, args=SERVER_ARGS, env={"RESONATE_AUTH__PUBLICKEY": key.write(work)})
    srv.token = key.sign(claims(3600, role="admin"))
    srv.key = key  # type: ignore[attr-defined]
    yield srv
    srv.stop()


# ------------------------------------------------------------------------------ helpers


def ui(srv: ServerProc, route: str) -> str:
    return f"{srv.url}/ui/#{route}"


def promise_route(id: str) -> str:
    return "/promise/" + quote(id, safe="")


def state_class(state: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\s)state-{re.escape(state)}(\s|$)")


def row(page: Page, id: str) -> Any:
    return page.locator(f'#promise-table tbody tr.promise-row[data-id="{id}"]')


def rows(page: Page) -> Any:
    return page.locator("#promise-table tbody tr.promise-row")


def expect_rows(page: Page, ids: list[str]) -> None:
    """The promise table shows exactly these rows, in this order (waits for it)."""
    expect(rows(page)).to_have_count(len(ids))
    for i, id in enumerate(ids):
        expect(rows(page).nth(i)).to_have_attribute("data-id", id)


def expect_state(page: Page, id: str, state: str) -> None:
    expect(row(page, id).locator("td.state")).to_have_class(state_class(state))


def node(page: Page, id: str) -> Any:
    return page.locator(f'#graph .graph-node[data-id="{id}"]')


def create(srv: ServerProc, id: str, tags: dict[str, str] | None = None) -> None:
    status, data = srv.rpc("promise.create", {"id": id, "timeoutAt": FAR, "tags": tags or {}})
    assert status == 200, (status, data)


def settle(srv: ServerProc, id: str, state: str) -> None:
    status, data = srv.rpc("promise.settle", {"id": id, "state": state})
    assert status == 200 and data["promise"]["state"] == state, (status, data)


def get_state(srv: ServerProc, id: str) -> str:
    status, data = srv.rpc("promise.get", {"id": id})
    assert status == 200, (status, data)
    return data["promise"]["state"]


def confirm(page: Page, button: str, yes: bool = True) -> None:
    """Click an action button, then answer its confirmation dialog."""
    page.locator(button).click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    page.locator("#confirm-yes" if yes else "#confirm-no").click()
    expect(dialog).to_be_hidden()


def mark_document(page: Page) -> None:
    """Tag the loaded document: `same_document` is True while no reload happened since."""
    page.evaluate("window.__resonateTestMark = 'kept'")


def same_document(page: Page) -> bool:
    return page.evaluate("window.__resonateTestMark === 'kept'")


def local_input(ms: int) -> str:
    """A `datetime-local` input's value for a moment (the browser and the tests share the timezone)."""
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%dT%H:%M")


def save_token(page: Page, token: str) -> None:
    page.locator("#token-input").fill(token)
    page.locator("#token-save").click()


def ui_api(page: Page, kind: str, data: dict[str, Any], token: str | None) -> dict[str, Any]:
    """`POST /ui/api` from the page itself (its origin, its CSP): {status, body}."""
    head: dict[str, Any] = {} if token is None else {"auth": token}
    env = envelope(kind, data, **head)
    return page.evaluate("""async (env) => {
        const r = await fetch('/ui/api', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                          body: JSON.stringify(env)});
        return {status: r.status, body: await r.json()};
    }""", env)


# ------------------------------------------------------------------------------ (a) an SDK workflow


def test_sdk_workflow_in_the_console_and_approved_from_it(console_server: ServerProc, pages: Callable[..., Page],
                                                          tmp_path: Path) -> None:
    srv = console_server
    h = Harness("py", srv, tmp_path / "sdk")
    try:
        _sdk_workflow(srv, h, pages)
    except BaseException:
        for title, text in h.all_logs():  # in the failure's captured output
            print(f"--- {title} ---\n{text[-8000:]}")
        raise
    finally:
        h.stop_all()


def _sdk_workflow(srv: ServerProc, h: Harness, pages: Callable[..., Page]) -> None:
    tag = h.uid
    root, group = f"approval-{tag}", f"g-{tag}"
    client = h.client("c1", group, [{"op": "run", "id": root, "func": "approval", "args": [3, tag], "timeout": 300}])
    idfile = h.data / f"approval-{tag}.id"
    wait_until(lambda: idfile.exists() and idfile.read_text(), 90, "the workflow to create its approval promise")
    gate = idfile.read_text()
    lineage = [p["id"] for p in h.search_all({"resonate:origin": root})]
    steps = sorted(set(lineage) - {root, gate})
    assert root in lineage and gate in lineage and len(steps) == 2, lineage

    # the promise list, filtered by the workflow's prefix: its root and its gate pending, its steps resolved
    page = pages("operator")
    page.goto(ui(srv, f"/promises?prefix={quote(root)}"))
    expect(page.locator("#whoami")).to_have_text(re.compile("no auth", re.I))
    expect(page.locator("#live")).to_have_class(re.compile(r"(^|\s)on(\s|$)"))
    expect(page.locator("#f-prefix")).to_have_value(root)
    expect_rows(page, sorted(lineage))
    expect_state(page, root, "pending")
    expect_state(page, gate, "pending")
    for s in steps:
        expect_state(page, s, "resolved")

    # the root's page: the call graph, nested by resonate:parent, coloured by state
    row(page, root).locator("a.promise-link").click()
    expect(page).to_have_url(re.compile(re.escape("#" + promise_route(root)) + "$"))
    expect(page.locator("#promise-id")).to_have_text(root)
    expect(page.locator("#promise-state")).to_have_text(re.compile("pending"))
    expect(page.locator("#promise-param")).to_contain_text("approval")  # the SDK's {"func": "approval", ...}
    expect(node(page, root)).to_have_class(state_class("pending"))
    expect(node(page, gate)).to_have_class(state_class("pending"))
    for s in steps:
        expect(node(page, s)).to_have_class(state_class("resolved"))
        expect(page.locator(f'#graph .graph-node[data-id="{root}"] .graph-node[data-id="{s}"]')).to_have_count(1)
    expect(page.locator(f'#graph .graph-node[data-id="{root}"] .graph-node[data-id="{gate}"]')).to_have_count(1)
    expect(page.locator("#task")).to_contain_text(re.compile("suspended|acquired|pending", re.I))

    # a second tab stays on the root's page: it must turn resolved by itself
    watcher = pages("root-watcher", context=page.context)
    watcher.goto(ui(srv, promise_route(root)))
    expect(watcher.locator("#promise-state")).to_have_text(re.compile("pending"))
    expect(watcher.locator("#live")).to_have_class(re.compile(r"(^|\s)on(\s|$)"))
    mark_document(watcher)

    # the connected SDK process shows among the workers of its group
    page.goto(ui(srv, "/workers"))
    expect(page.locator(f'.worker-group[data-group="{group}"] .worker').first).to_be_visible()

    # the gate's page: declining the confirmation changes nothing; confirming resolves it
    page.goto(ui(srv, promise_route(gate)))
    expect(page.locator("#promise-id")).to_have_text(gate)
    expect(page.locator("#actions")).to_be_visible()
    decision = {"approved": True, "by": "operator", "note": f"ticket {tag}"}
    page.locator("#act-value").fill(json.dumps(decision))
    confirm(page, "#act-resolve", yes=False)
    assert get_state(srv, gate) == "pending"
    confirm(page, "#act-resolve")
    expect(page.locator("#flash")).to_have_class(re.compile(r"(^|\s)ok(\s|$)"))
    expect(page.locator("#promise-state")).to_have_text(re.compile("resolved"))
    expect(page.locator("#promise-value")).to_contain_text("approved")
    expect(page.locator("#actions")).to_be_hidden()  # a settled promise offers no actions

    # the waiting workflow finishes with the operator's value
    [res] = client.result(timeout=180)
    assert res.get("ok") is True, res
    assert res["value"] == {"steps": [6, 7], "decision": decision, "promise": gate}, res

    # the open tab followed the live stream: root resolved, without a reload
    expect(watcher.locator("#promise-state")).to_have_text(re.compile("resolved"))
    expect(node(watcher, root)).to_have_class(state_class("resolved"))
    expect(node(watcher, gate)).to_have_class(state_class("resolved"))
    assert same_document(watcher), "the root's page reloaded instead of updating in place"

    # the root's task is listed, and is done
    page.goto(ui(srv, "/tasks"))
    expect(page.locator(f'tr.task-row[data-id="{root}"]')).to_contain_text("fulfilled")


# ------------------------------------------------------------------------------ (b) filters and paging


def test_filters_paging_and_live_list(console_server: ServerProc, pages: Callable[..., Page]) -> None:
    srv = console_server
    pfx = f"flt-{uuid.uuid4().hex[:8]}/"
    ids = [f"{pfx}p{i}" for i in range(7)]
    for i, id in enumerate(ids):
        create(srv, id, {"team": "blue"} if i < 3 else {"team": "red"})
    create(srv, f"other-{pfx}p0")  # outside the prefix
    settle(srv, ids[1], "resolved")
    settle(srv, ids[3], "resolved")
    settle(srv, ids[5], "rejected")
    pending = [ids[0], ids[2], ids[4], ids[6]]

    page = pages("filters")
    page.goto(ui(srv, f"/promises?prefix={quote(pfx)}"))
    expect_rows(page, ids)
    expect_state(page, ids[5], "rejected")
    mark_document(page)

    # state from the form: the hash query follows
    page.locator("#f-state").select_option("pending")
    page.locator("#f-apply").click()
    expect(page).to_have_url(re.compile(r"state=pending"))
    expect_rows(page, pending)
    for id in pending:
        expect_state(page, id, "pending")
    page.locator("#f-state").select_option("settled")
    page.locator("#f-apply").click()
    expect_rows(page, [ids[1], ids[3], ids[5]])
    page.locator("#f-state").select_option("resolved")
    page.locator("#f-apply").click()
    expect_rows(page, [ids[1], ids[3]])

    # tags, with the state still set
    page.locator("#f-tags").fill("team=blue")
    page.locator("#f-apply").click()
    expect_rows(page, [ids[1]])
    page.locator("#f-state").select_option("")
    page.locator("#f-apply").click()
    expect_rows(page, ids[:3])

    # creation time: nothing was created after tomorrow, everything before it
    page.locator("#f-tags").fill("")
    tomorrow = local_input(int(datetime.datetime.now().timestamp() * 1000) + 86_400_000)
    page.locator("#f-from").fill(tomorrow)
    page.locator("#f-apply").click()
    expect(rows(page)).to_have_count(0)
    page.locator("#f-from").fill("")
    page.locator("#f-to").fill(tomorrow)
    page.locator("#f-apply").click()
    expect_rows(page, ids)

    # the list re-queries by itself when something changes
    settle(srv, ids[0], "rejected_canceled")
    expect_state(page, ids[0], "rejected_canceled")
    create(srv, f"{pfx}p7")
    expect(row(page, f"{pfx}p7")).to_be_visible()
    assert same_document(page), "the list reloaded instead of updating in place"

    # a filter in the hash query fills the form; limit 2 pages through all eight, both ways
    page.goto(ui(srv, f"/promises?prefix={quote(pfx)}&limit=2"))
    expect(page.locator("#f-prefix")).to_have_value(pfx)
    expect(page.locator("#f-limit")).to_have_value("2")
    everything = [*ids, f"{pfx}p7"]
    chunks = [everything[i:i + 2] for i in range(0, len(everything), 2)]
    expect_rows(page, chunks[0])
    expect(page.locator("#prev-page")).to_be_disabled()
    for chunk in chunks[1:]:
        expect(page.locator("#next-page")).to_be_enabled()
        page.locator("#next-page").click()
        expect_rows(page, chunk)
        expect(page.locator("#page-info")).not_to_be_empty()
    expect(page.locator("#next-page")).to_be_disabled()
    for chunk in reversed(chunks[:-1]):
        expect(page.locator("#prev-page")).to_be_enabled()
        page.locator("#prev-page").click()
        expect_rows(page, chunk)
    expect(page.locator("#prev-page")).to_be_disabled()

    # the state filter from the hash query alone
    page.goto(ui(srv, f"/promises?prefix={quote(pfx)}&state=rejected"))
    expect(page.locator("#f-state")).to_have_value("rejected")
    expect_rows(page, [ids[5]])


def test_delete_a_schedule(console_server: ServerProc, pages: Callable[..., Page]) -> None:
    srv = console_server
    sid = f"sched-{uuid.uuid4().hex[:8]}"
    status, data = srv.rpc("schedule.create", {"id": sid, "cron": "0 0 1 1 *", "promiseId": sid + ".{{.timestamp}}",
                                               "promiseTimeout": 60_000,
                                               "promiseTags": {"resonate:target": "poll://any@nobody"}})
    assert status == 200, (status, data)
    page = pages("schedules")
    page.goto(ui(srv, "/schedules"))
    schedule = page.locator(f'tr.schedule-row[data-id="{sid}"]')
    expect(schedule).to_be_visible()
    confirm(page, f'tr.schedule-row[data-id="{sid}"] button.delete-schedule', yes=False)
    assert srv.rpc("schedule.get", {"id": sid})[0] == 200
    confirm(page, f'tr.schedule-row[data-id="{sid}"] button.delete-schedule')
    expect(schedule).to_have_count(0)
    assert srv.rpc("schedule.get", {"id": sid})[0] == 404


@pytest.fixture
def dead_letters(tmp_path: Path) -> Iterator[tuple[ServerProc, Capture]]:
    """A server whose pushes give up after two attempts, and a push target answering 500."""
    target = Capture(status=500).start()
    srv = start_server("sqlite", tmp_path / "server", debug=False, args=SERVER_ARGS,
                       env={"RESONATE_TRANSPORTS__HTTP_PUSH__MAX_ATTEMPTS": "2"})
    yield srv, target
    srv.stop()
    target.stop()


def test_redrive_dead_messages(pages: Callable[..., Page], dead_letters: tuple[ServerProc, Capture]) -> None:
    """Dead outbox rows show with a re-drive button; once the target answers 200, the outbox page
    re-drives one row, then all of them, and the rows go."""
    srv, target = dead_letters
    for name in ("a", "b"):
        create(srv, f"dl-{name}", {"resonate:target": target.url(f"/{name}")})
    page = pages("outbox")
    page.goto(ui(srv, "/outbox"))
    msg = {name: page.locator("tr.message-row").filter(has_text=f"dl-{name}") for name in ("a", "b")}
    for name in ("a", "b"):  # the page follows the retries until both rows are dead
        expect(msg[name].locator("button.redrive")).to_be_visible()
    expect(page.locator("#redrive-all")).to_be_visible()
    target.status = 200
    confirm(page, 'tr.message-row:has-text("dl-a") button.redrive')
    expect(page.locator("#flash")).to_have_class(re.compile(r"(^|\s)ok(\s|$)"))
    expect(msg["a"]).to_have_count(0)
    # two attempts before, one re-driven (a task nobody claims is sent again later: at least 3)
    assert wait_for(lambda: [r.path for r in target.requests].count("/a") >= 3, 30), srv.logs()
    expect(msg["b"].locator("button.redrive")).to_be_visible()
    confirm(page, "#redrive-all")
    expect(msg["b"]).to_have_count(0)
    assert wait_for(lambda: [r.path for r in target.requests].count("/b") >= 3, 30), srv.logs()


# ------------------------------------------------------------------------------ (c) auth on


def test_tokens_scope_what_the_console_shows_and_does(auth_console: ServerProc, pages: Callable[..., Page]) -> None:
    srv = auth_console
    key: KeyPair = srv.key  # type: ignore[attr-defined]
    admin = srv.token
    tenant = key.sign(claims(3600, role="worker", prefix="tenantA/", groups=["tenantA-*"], sub="A"))
    assert admin is not None
    run = uuid.uuid4().hex[:8]
    a1, a2, b1 = f"tenantA/{run}-1", f"tenantA/{run}-2", f"tenantB/{run}-1"
    for id in (a1, a2, b1):
        create(srv, id)

    # no token: the page asks for one
    page = pages("auth")
    page.goto(ui(srv, "/promises"))
    expect(page.locator("#token-input")).to_be_visible()
    expect(page.locator("body")).to_contain_text(re.compile(r"401|Unauthorized|token", re.I))
    expect(page.locator("#flash")).to_have_class(re.compile(r"(^|\s)error(\s|$)"))
    expect(page.locator("#flash")).to_contain_text(re.compile(r"401|Unauthorized", re.I))
    expect(rows(page)).to_have_count(0)

    # an admin token: every prefix, and the actions
    save_token(page, admin)
    expect(page.locator("#whoami")).to_have_text(re.compile(r"^\s*admin\s*$"))
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == admin
    assert admin not in json.dumps(page.evaluate("Object.assign({}, localStorage)")), "token kept in localStorage"
    page.goto(ui(srv, f"/promises?prefix={quote('tenant')}"))
    for id in (a1, a2, b1):
        expect(row(page, id)).to_be_visible()
    page.goto(ui(srv, promise_route(a2)))
    expect(page.locator("#promise-id")).to_have_text(a2)
    expect(page.locator("#act-resolve")).to_be_visible()
    expect(page.locator("#act-reject")).to_be_visible()
    confirm(page, "#act-cancel")
    expect(page.locator("#promise-state")).to_have_text(re.compile("rejected_canceled"))
    assert get_state(srv, a2) == "rejected_canceled"

    # a prefix token: its prefix only (even with an empty prefix filter), no actions, no way around them
    page.locator("#token-clear").click()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    save_token(page, tenant)
    expect(page.locator("#whoami")).to_have_text(re.compile(r"prefix\s+tenantA/"))
    page.goto(ui(srv, "/promises"))
    expect(page.locator("#f-prefix")).to_have_value(re.compile(r"^(|tenantA/)$"))
    expect(row(page, a1)).to_be_visible()
    expect(row(page, a2)).to_be_visible()
    expect(rows(page).filter(has_not_text="tenantA/")).to_have_count(0)
    expect(page.locator('tr.promise-row[data-id^="tenantB/"]')).to_have_count(0)
    page.goto(ui(srv, promise_route(a1)))
    expect(page.locator("#promise-id")).to_have_text(a1)
    expect(page.locator("#promise-state")).to_have_text(re.compile("pending"))
    expect(page.locator("#actions")).to_be_hidden()
    expect(page.locator("#act-resolve")).to_be_hidden()
    refused = ui_api(page, "promise.settle", {"id": a1, "state": "resolved"}, tenant)
    assert refused["status"] == 403 and refused["body"]["data"] == "Forbidden", refused
    assert get_state(srv, a1) == "pending"
    # the outbox is the operators': refused, and no re-drive offered
    page.goto(ui(srv, "/outbox"))
    expect(page.locator("#flash")).to_contain_text("Forbidden")
    expect(page.locator("#redrive-all")).to_have_count(0)
    # another tenant's promise is not shown
    page.goto(ui(srv, promise_route(b1)))
    expect(page.locator("#flash")).to_have_class(re.compile(r"(^|\s)error(\s|$)"))
    expect(page.locator("#flash")).to_contain_text(re.compile(r"Forbidden|403"))
    expect(page.locator("#promise-id")).not_to_have_text(b1)


def test_a_refused_live_stream_falls_back_to_looking_again(console_server: ServerProc,
                                                            pages: Callable[..., Page]) -> None:
    """A proxy in front may replace `Authorization` and the live stream is refused: the page
    says so (amber dot) and still shows new promises, looking again every few seconds."""
    srv = console_server
    pfx = f"fallback-{uuid.uuid4().hex[:8]}/"
    create(srv, f"{pfx}a")
    page = pages("fallback")
    page.route("**/ui/events", lambda route: route.fulfill(status=401, body="Unauthorized"))
    page.goto(ui(srv, f"/promises?prefix={quote(pfx)}"))
    expect_rows(page, [f"{pfx}a"])
    expect(page.locator("#live")).to_have_class(re.compile(r"(^|\s)polling(\s|$)"))
    mark_document(page)
    create(srv, f"{pfx}b")
    expect_rows(page, [f"{pfx}a", f"{pfx}b"])
    assert same_document(page)
