// The caller: asks group `workers` to run `greet` (it does not have the function itself).
//
//   RESONATE_URL=http://localhost:8001 node caller.mjs      # with worker.mjs running elsewhere
import { randomUUID } from "node:crypto";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { Resonate } from "@resonatehq/sdk";

import { quietLogger, within } from "./connected.mjs";

const URL = process.env.RESONATE_URL || "http://localhost:8001";

export async function call(name) {
  const { logger, connected } = quietLogger("caller");
  const resonate = new Resonate({ url: URL, group: "callers", logger });
  await within(connected, 30, "SSE connection"); // the result comes back on it
  const id = `greet-${randomUUID().slice(0, 8)}`;
  console.log(`caller: rpc ${id} -> greet(${JSON.stringify(name)}) on group workers`);
  // by name, routed to any process of group `workers`
  const answer = await resonate.rpc(id, "greet", name, resonate.options({ target: "workers" }));
  await resonate.stop();
  return answer;
}

if (fileURLToPath(import.meta.url) === resolve(process.argv[1])) { // run directly, not imported by main.mjs
  console.log(`done: ${await call("newcomer")}`);
}
