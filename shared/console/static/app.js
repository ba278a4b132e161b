// The Resonate web console: plain ES module, no build step (docs/console.md).
// Every query and action is an envelope on POST /ui/api; live hints come from GET /ui/events.
// The token lives in this tab's sessionStorage only.

const VERSION = "2026-04-01";
const TOKEN_KEY = "resonate.token";
const $ = (sel, root = document) => root.querySelector(sel);

// ---- session -----------------------------------------------------------------------------

const session = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  authOn: null, // learned from the server: a request without a token answered 401
  claims: null,
};

function decodeClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part + "===".slice((part.length + 3) % 4)), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

function isAdmin() {
  const role = session.claims && session.claims.role;
  return typeof role === "string" && role.toLowerCase() === "admin";
}

/** Actions are offered when auth is off, or to a token of role admin (the server checks again). */
function canAct() {
  return session.authOn === false || isAdmin();
}

/** The id prefix a prefix token is confined to ("" when unrestricted). */
function scopePrefix() {
  if (!session.authOn || isAdmin() || !session.claims) return "";
  return typeof session.claims.prefix === "string" ? session.claims.prefix : "";
}

function showWho() {
  const who = $("#whoami");
  if (session.authOn === false) who.textContent = "no auth";
  else if (!session.token) who.textContent = "token needed";
  else if (isAdmin()) who.textContent = "admin";
  else if (session.claims && typeof session.claims.prefix === "string") who.textContent = `prefix ${session.claims.prefix}`;
  else who.textContent = "token";
}

function setToken(token) {
  session.token = token;
  session.claims = token ? decodeClaims(token) : null;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  showWho();
  live.restart();
}

// ---- the server ----------------------------------------------------------------------------

let corr = 0;

/** One console request: {status, data}; never throws for an HTTP answer. */
async function api(kind, data = {}) {
  const head = { corrId: `ui-${Date.now()}-${++corr}`, version: VERSION };
  if (session.token) head.auth = session.token;
  let resp;
  try {
    resp = await fetch("api", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ kind, head, data }),
    });
  } catch (e) {
    return { status: 0, data: `Network error: ${e.message}` };
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    return { status: resp.status, data: `Unexpected answer (${resp.status})` };
  }
  if (resp.status === 401 && !session.token) session.authOn = true;
  return { status: resp.status, data: body && "data" in body ? body.data : body };
}

/** The data of a 2xx answer, else null after showing why. */
async function query(kind, data) {
  const r = await api(kind, data);
  if (r.status >= 200 && r.status < 300) return r.data;
  fail(r);
  return null;
}

function fail(r) {
  let text = typeof r.data === "string" ? r.data : JSON.stringify(r.data);
  if (r.status === 401) text = `Unauthorized (401): ${text}. Enter a token above.`;
  else if (r.status === 403) text = `Forbidden (403): this token does not cover it.`;
  else text = `${r.status || "error"}: ${text}`;
  flash(text, "error");
}

let flashTimer = null;
function flash(text, cls = "ok") {
  const el = $("#flash");
  el.textContent = text;
  el.className = cls;
  el.hidden = false;
  clearTimeout(flashTimer);
  if (cls === "ok") flashTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

function clearFlash() {
  $("#flash").hidden = true;
}

// ---- formatting ----------------------------------------------------------------------------

const pad2 = (n) => String(n).padStart(2, "0");

function fmtTime(ms) {
  if (ms === undefined || ms === null) return "";
  if (ms >= 8.64e15) return "never";
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return String(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function fmtDuration(ms) {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** A promise's param or value as a reader wants it: its data decoded from base64 as JSON, else
 * UTF-8 text, else a hex dump; headers listed first. */
function decodeValue(v) {
  if (!v || typeof v !== "object") return "";
  const out = [];
  const headers = v.headers && typeof v.headers === "object" ? Object.entries(v.headers) : [];
  for (const [k, val] of headers) out.push(`${k}: ${val}`);
  if (headers.length) out.push("");
  if (typeof v.data !== "string" || v.data === "") return out.concat(["(no data)"]).join("\n");
  let bytes;
  try {
    bytes = Uint8Array.from(atob(v.data), (c) => c.charCodeAt(0));
  } catch {
    return out.concat([v.data]).join("\n"); // not base64: shown as stored
  }
  let text = null;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    text = null;
  }
  if (text === null) {
    const hex = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const row = Array.from(bytes.slice(i, i + 16), (b) => b.toString(16).padStart(2, "0")).join(" ");
      hex.push(`${i.toString(16).padStart(6, "0")}  ${row}`);
    }
    return out.concat(["(binary, hex)", ...hex]).join("\n");
  }
  try {
    return out.concat([JSON.stringify(JSON.parse(text), null, 2)]).join("\n");
  } catch {
    return out.concat([text]).join("\n");
  }
}

function encodeValue(text) {
  // the SDKs decode a value as base64 JSON: JSON stays JSON, other text becomes a JSON string
  let json;
  const trimmed = text.trim();
  if (trimmed === "") json = "null";
  else {
    try {
      JSON.parse(trimmed);
      json = trimmed;
    } catch {
      json = JSON.stringify(text);
    }
  }
  const bytes = new TextEncoder().encode(json);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return { headers: {}, data: btoa(bin) };
}

function confirmAction(text) {
  const dialog = $("#confirm-dialog");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// ---- routing -------------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?", 2);
  const parts = path.split("/");
  return { page: parts[0] || "promises", arg: parts.slice(1).join("/"), params: new URLSearchParams(qs || "") };
}

let current = null; // {page, refresh}

async function route() {
  const { page, arg, params } = parseHash();
  clearFlash();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page || (page === "promise" && a.dataset.page === "promises"));
  const main = $("#main");
  main.replaceChildren();
  const view = (PAGES[page] || PAGES.promises)(main, arg, params);
  current = view;
  await view.refresh();
}

// ---- pages ---------------------------------------------------------------------------------

function stateCell(state) {
  return el("td", { class: `state state-${state}`, text: state });
}

function pager(root, onPrev, onNext) {
  $("#prev-page", root).addEventListener("click", onPrev);
  $("#next-page", root).addEventListener("click", onNext);
}

function parseTags(text) {
  const tags = {};
  for (const part of text.split(",")) {
    const s = part.trim();
    if (!s) continue;
    const i = s.indexOf("=");
    if (i <= 0) throw new Error(`tag "${s}" is not k=v`);
    tags[s.slice(0, i).trim()] = s.slice(i + 1).trim();
  }
  return tags;
}

function toLocalInput(ms) {
  const d = new Date(Number(ms));
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function promisesPage(main, _arg, params) {
  main.append($("#tpl-promises").content.cloneNode(true));
  const form = $("#filters", main);
  const f = { prefix: $("#f-prefix", main), state: $("#f-state", main), tags: $("#f-tags", main),
    from: $("#f-from", main), to: $("#f-to", main), limit: $("#f-limit", main) };
  f.prefix.value = params.get("prefix") || "";
  f.state.value = params.get("state") || "";
  f.tags.value = params.get("tags") || "";
  if (params.get("from")) f.from.value = toLocalInput(params.get("from"));
  if (params.get("to")) f.to.value = toLocalInput(params.get("to"));
  f.limit.value = params.get("limit") || "50";
  let cursors = [null]; // cursors[i]: where page i starts
  let next = null;

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (f.prefix.value) q.set("prefix", f.prefix.value);
    if (f.state.value) q.set("state", f.state.value);
    if (f.tags.value.trim()) q.set("tags", f.tags.value.trim());
    if (f.from.value) q.set("from", String(new Date(f.from.value).getTime()));
    if (f.to.value) q.set("to", String(new Date(f.to.value).getTime()));
    if (f.limit.value && f.limit.value !== "50") q.set("limit", f.limit.value);
    const hash = `#/promises${q.toString() ? "?" + q : ""}`;
    if (location.hash === hash) { cursors = [null]; refresh(); } else location.hash = hash;
  });
  pager(main, () => { if (cursors.length > 1) { cursors.pop(); refresh(); } },
    () => { if (next) { cursors.push(next); refresh(); } });

  async function refresh() {
    const data = {};
    let prefix = params.get("prefix") || "";
    const scope = scopePrefix();
    if (scope && !prefix.startsWith(scope)) {
      prefix = scope; // a prefix token reads its own prefix only
      f.prefix.value = scope;
    }
    if (prefix) data.prefix = prefix;
    if (params.get("state")) data.state = params.get("state");
    if (params.get("tags")) {
      try { data.tags = parseTags(params.get("tags")); } catch (e) { flash(e.message, "error"); return; }
    }
    if (params.get("from")) data.createdAfter = Number(params.get("from"));
    if (params.get("to")) data.createdBefore = Number(params.get("to"));
    data.limit = Number(params.get("limit") || 50);
    const cursor = cursors[cursors.length - 1];
    if (cursor) data.cursor = cursor;
    const out = await query("console.promises", data);
    if (out === null) return;
    next = out.cursor || null;
    const rows = out.promises.map((p) => el("tr", { class: "promise-row", "data-id": p.id },
      el("td", {}, el("a", { class: "promise-link", href: `#/promise/${encodeURIComponent(p.id)}`, text: p.id })),
      stateCell(p.state),
      el("td", { text: p.func || "" }),
      el("td", { text: fmtTime(p.createdAt) }),
      el("td", { text: fmtTime(p.settledAt) }),
      el("td", { text: fmtTime(p.timeoutAt) })));
    $("#promise-table tbody", main).replaceChildren(...rows);
    $("#prev-page", main).disabled = cursors.length <= 1;
    $("#next-page", main).disabled = !next;
    $("#page-info", main).textContent = `page ${cursors.length} · ${rows.length} promise${rows.length === 1 ? "" : "s"}`;
  }
  return { refresh };
}

function graphTree(graph, selected, now) {
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const children = new Map();
  const tops = [];
  for (const n of graph.nodes) {
    const parent = n.parent && byId.has(n.parent) && n.parent !== n.id ? n.parent : null;
    if (parent === null) tops.push(n);
    else (children.get(parent) || children.set(parent, []).get(parent)).push(n);
  }
  const seen = new Set();
  const render = (n) => {
    seen.add(n.id);
    const end = n.settledAt !== undefined ? n.settledAt : now;
    const dur = Math.max(0, end - n.createdAt);
    const label = el("a", { class: "graph-label", href: `#/promise/${encodeURIComponent(n.id)}` },
      el("span", { class: "func", text: n.func || "promise" }), " ",
      el("span", { class: "node-id", text: n.id }), " ",
      el("span", { class: "muted", text: `${n.state} · ${fmtDuration(dur)}${n.settledAt === undefined ? " so far" : ""}` }));
    const kids = (children.get(n.id) || []).filter((k) => !seen.has(k.id));
    return el("li", { class: `graph-node state-${n.state}${n.id === selected ? " selected" : ""}`, "data-id": n.id },
      label, kids.length ? el("ul", {}, ...kids.map(render)) : null);
  };
  return el("ul", { class: "graph" }, ...tops.map(render));
}

function promisePage(main, arg) {
  const id = decodeURIComponent(arg);
  main.append($("#tpl-promise").content.cloneNode(true));
  let pending = false;

  for (const [btn, state, verb] of [["#act-resolve", "resolved", "Resolve"], ["#act-reject", "rejected", "Reject"],
    ["#act-cancel", "rejected_canceled", "Cancel"]]) {
    $(btn, main).addEventListener("click", async () => {
      if (!pending) return;
      const text = $("#act-value", main).value;
      if (!(await confirmAction(`${verb} promise ${id}?`))) return;
      const r = await api("promise.settle", { id, state, value: encodeValue(text) });
      if (r.status === 200) flash(`${id} is now ${r.data.promise ? r.data.promise.state : state}`, "ok");
      else fail(r);
      await refresh();
    });
  }

  async function refresh() {
    const out = await query("console.promise", { id });
    if (out === null) return;
    const p = out.promise;
    pending = p.state === "pending";
    $("#promise-id", main).textContent = p.id;
    const badge = $("#promise-state", main);
    badge.textContent = p.state;
    badge.className = `badge state-${p.state}`;
    $("#promise-param", main).textContent = decodeValue(p.param);
    $("#promise-value", main).textContent = pending ? "(pending)" : decodeValue(p.value);
    $("#promise-tags tbody", main).replaceChildren(...Object.entries(p.tags || {}).sort()
      .map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: v }))));
    const events = [[p.createdAt, "created"]];
    if (out.task) events.push([null, `task ${out.task.state} (version ${out.task.version})`]);
    if (p.settledAt !== undefined) events.push([p.settledAt, p.state]);
    else events.push([p.timeoutAt, "times out"]);
    $("#timeline", main).replaceChildren(...events.map(([t, what]) =>
      el("li", {}, el("span", { class: "muted", text: t === null ? "now" : fmtTime(t) }), " ", what)));
    const t = out.task;
    $("#task", main).replaceChildren(t === null ? el("p", { class: "muted", text: "no task" }) : el("dl", {},
      el("dt", { text: "state" }), el("dd", { class: `state-${t.state}`, text: t.state }),
      el("dt", { text: "version" }), el("dd", { text: String(t.version) }),
      t.pid ? el("dt", { text: "owner" }) : null, t.pid ? el("dd", { text: `${t.pid} (ttl ${fmtDuration(t.ttl)})` }) : null,
      t.leaseExpiresAt ? el("dt", { text: "lease until" }) : null,
      t.leaseExpiresAt ? el("dd", { text: fmtTime(t.leaseExpiresAt) }) : null,
      t.retryAt ? el("dt", { text: "retry at" }) : null, t.retryAt ? el("dd", { text: fmtTime(t.retryAt) }) : null));
    $("#actions", main).hidden = !(pending && canAct());
    const g = out.graph;
    $("#graph-info", main).textContent = `root ${g.root} · ${g.nodes.length} promise${g.nodes.length === 1 ? "" : "s"}${g.truncated ? " (first 1000)" : ""}`;
    $("#graph", main).replaceChildren(graphTree(g, p.id, Date.now()));
  }
  return { refresh };
}

function listPage(main, { title, kind, key, filters, columns, rowClass, rowActions }) {
  const form = el("form", { class: "filters" });
  const inputs = {};
  for (const [name, label, options] of filters) {
    const input = options ? el("select", { id: `f-${name}` }, ...options.map((o) => el("option", { value: o, text: o || "any" })))
      : el("input", { id: `f-${name}`, spellcheck: false });
    inputs[name] = input;
    form.append(el("label", {}, `${label} `, input));
  }
  form.append(el("button", { id: "f-apply", type: "submit", text: "Apply" }));
  const tbody = el("tbody");
  const table = el("table", { id: `${rowClass.split("-")[0]}-table` },
    el("thead", {}, el("tr", {}, ...columns.map(([h]) => el("th", { text: h })), rowActions ? el("th") : null)), tbody);
  const pagerDiv = el("div", { class: "pager" }, el("button", { id: "prev-page", type: "button", text: "‹ Previous" }),
    el("span", { id: "page-info" }), el("button", { id: "next-page", type: "button", text: "Next ›" }));
  main.append(el("h1", { text: title }), filters.length ? form : "", table, pagerDiv);
  let cursors = [null];
  let next = null;
  form.addEventListener("submit", (e) => { e.preventDefault(); cursors = [null]; refresh(); });
  pager(main, () => { if (cursors.length > 1) { cursors.pop(); refresh(); } },
    () => { if (next) { cursors.push(next); refresh(); } });

  async function refresh() {
    const data = { limit: 50 };
    for (const [name, , , convert] of filters) {
      if (inputs[name].value) data[name] = convert ? convert(inputs[name].value) : inputs[name].value;
    }
    const scope = scopePrefix();
    if ("prefix" in inputs && scope && !(data.prefix || "").startsWith(scope)) {
      data.prefix = scope;
      inputs.prefix.value = scope;
    }
    if (cursors[cursors.length - 1]) data.cursor = cursors[cursors.length - 1];
    const out = await query(kind, data);
    if (out === null) return;
    next = out.cursor || null;
    const rows = out[key].map((r) => el("tr", { class: rowClass, "data-id": String(r.id) },
      ...columns.map(([, render]) => { const v = render(r); return v instanceof Node ? v : el("td", { text: v }); }),
      rowActions && canAct() ? el("td", {}, ...rowActions(r, refresh)) : null));
    tbody.replaceChildren(...rows);
    $("#prev-page", main).disabled = cursors.length <= 1;
    $("#next-page", main).disabled = !next;
    $("#page-info", main).textContent = `page ${cursors.length} · ${rows.length} row${rows.length === 1 ? "" : "s"}`;
  }
  return { refresh, form };
}

function tasksPage(main) {
  return listPage(main, {
    title: "Tasks", kind: "console.tasks", key: "tasks", rowClass: "task-row",
    filters: [["prefix", "Id prefix"], ["state", "State", ["", "pending", "acquired", "suspended", "halted", "fulfilled"]]],
    columns: [
      ["Id", (t) => el("td", {}, el("a", { href: `#/promise/${encodeURIComponent(t.id)}`, text: t.id }))],
      ["State", (t) => stateCell(t.state)],
      ["Version", (t) => String(t.version)],
      ["Owner", (t) => t.pid || ""],
      ["Lease until", (t) => fmtTime(t.leaseExpiresAt)],
      ["Retry at", (t) => fmtTime(t.retryAt)],
    ],
  });
}

function schedulesPage(main) {
  return listPage(main, {
    title: "Schedules", kind: "console.schedules", key: "schedules", rowClass: "schedule-row",
    filters: [["prefix", "Id prefix"]],
    columns: [
      ["Id", (s) => s.id],
      ["Cron", (s) => s.cron],
      ["Promise id", (s) => s.promiseId],
      ["Next runs", (s) => s.nextRuns.map(fmtTime).join(", ")],
      ["Last run", (s) => fmtTime(s.lastRunAt)],
    ],
    rowActions: (s, refresh) => [el("button", { class: "delete-schedule danger", type: "button", text: "Delete",
      onclick: async () => {
        if (!(await confirmAction(`Delete schedule ${s.id}?`))) return;
        const r = await api("schedule.delete", { id: s.id });
        if (r.status === 200) flash(`Deleted schedule ${s.id}`, "ok"); else fail(r);
        await refresh();
      } })],
  });
}

function outboxPage(main) {
  const view = listPage(main, {
    title: "Outbox", kind: "outbox.search", key: "messages", rowClass: "message-row",
    filters: [["dead", "Show", ["", "dead"], (v) => v === "dead"]],
    columns: [
      ["Id", (m) => String(m.id)],
      ["Kind", (m) => m.kind],
      ["Address", (m) => m.address],
      ["Task / promise", (m) => m.taskId || m.promiseId || ""],
      ["Attempts", (m) => String(m.attempts)],
      ["State", (m) => el("td", { class: m.dead ? "state state-dead" : "state", text: m.dead ? "dead" : "queued" })],
    ],
    rowActions: (m, refresh) => m.dead ? [el("button", { class: "redrive", type: "button", text: "Re-drive",
      onclick: async () => {
        if (!(await confirmAction(`Re-drive message ${m.id}?`))) return;
        const r = await api("outbox.redrive", { ids: [m.id] });
        if (r.status === 200) flash(`Re-driven: ${r.data.redriven.length}, skipped: ${r.data.skipped.length}`, "ok");
        else fail(r);
        await refresh();
      } })] : [],
  });
  if (canAct()) {
    main.insertBefore(el("button", { id: "redrive-all", type: "button", class: "danger", text: "Re-drive all dead messages",
      onclick: async () => {
        if (!(await confirmAction("Re-drive every dead message?"))) return;
        const r = await api("outbox.redrive", { all: true });
        if (r.status === 200) flash(`Re-driven: ${r.data.redriven.length}`, "ok"); else fail(r);
        await view.refresh();
      } }), main.children[1]);
  }
  return view;
}

function workersPage(main) {
  const list = el("div", { id: "workers" });
  main.append(el("h1", { text: "Workers" }),
    el("p", { class: "muted", text: "Workers holding a live SSE stream (GET /poll/{group}/{id}) now, by group." }), list);
  async function refresh() {
    const out = await query("console.workers", {});
    if (out === null) return;
    if (!out.groups.length) {
      list.replaceChildren(el("p", { class: "muted", text: "No worker is connected." }));
      return;
    }
    list.replaceChildren(...out.groups.map((g) => el("section", { class: "worker-group", "data-group": g.group },
      el("h2", { text: `${g.group} (${g.workers.length})` }),
      el("ul", {}, ...g.workers.map((w) => el("li", { class: "worker", "data-id": w, text: w }))))));
  }
  return { refresh };
}

const PAGES = { promises: promisesPage, promise: promisePage, tasks: tasksPage, schedules: schedulesPage,
  workers: workersPage, outbox: outboxPage };

// ---- live updates --------------------------------------------------------------------------

const POLL_MS = 5000; // without the live stream: how often a page looks again

const live = {
  ctrl: null,
  timer: null,
  poll: null,
  pendingRefresh: null,
  start() {
    if (session.authOn && !session.token) return;
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    const headers = session.token ? { Authorization: `Bearer ${session.token}` } : {};
    fetch("events", { headers, signal: ctrl.signal, cache: "no-store" }).then(async (resp) => {
      if (resp.status === 401 || resp.status === 403) {
        // refused (a proxy in front may replace `Authorization`): look again every few seconds instead
        if (this.ctrl === ctrl) this.poll = setInterval(() => this.kick(), POLL_MS);
        $("#live").classList.add("polling");
        return;
      }
      if (!resp.ok || !resp.body) throw new Error(`live stream: ${resp.status}`);
      $("#live").classList.add("on");
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (/^event: (change|tick)$/m.test(frame)) this.kick();
        }
      }
      throw new Error("live stream ended");
    }).catch(() => {
      $("#live").classList.remove("on");
      if (this.ctrl === ctrl && !ctrl.signal.aborted) this.timer = setTimeout(() => this.start(), 2000);
    });
  },
  missed: false, // a hint came while the tab was hidden: refresh when it is shown again
  kick() {
    if (document.hidden) { this.missed = true; return; }
    if (this.pendingRefresh || !current) return;
    this.pendingRefresh = setTimeout(async () => {
      this.pendingRefresh = null;
      if (current && !$("#confirm-dialog").open) await current.refresh();
    }, 150);
  },
  restart() {
    if (this.ctrl) this.ctrl.abort();
    clearTimeout(this.timer);
    clearInterval(this.poll);
    $("#live").classList.remove("on", "polling");
    this.start();
  },
};

// ---- start ---------------------------------------------------------------------------------

async function boot() {
  session.claims = session.token ? decodeClaims(session.token) : null;
  if (session.token) session.authOn = true;
  else {
    const probe = await api("console.workers", {});
    session.authOn = probe.status === 401;
  }
  showWho();
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("#token-input").value.trim();
    $("#token-input").value = "";
    if (!t) return;
    setToken(t);
    route();
  });
  $("#token-clear").addEventListener("click", () => { setToken(""); route(); });
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && live.missed) { live.missed = false; live.kick(); }
  });
  live.start();
  await route();
}

boot();
