// The worker: joins group `workers` and runs `greet` whenever the server sends it one.
//
//   RESONATE_URL=http://localhost:8001 node worker.mjs      # Ctrl-C stops it
import { randomUUID } from "node:crypto";

import { Resonate } from "@resonatehq/sdk";

import { quietLogger, within } from "./connected.mjs";

const URL = process.env.RESONATE_URL || "http://localhost:8001";
const PID = `worker-${randomUUID().slice(0, 6)}`;

function greet(ctx, name) {
  console.log(`worker ${PID}: greet(${JSON.stringify(name)})`);
  return `Hello, ${name}! (from ${PID} in group workers)`;
}

const { logger, connected } = quietLogger(PID);
const resonate = new Resonate({ url: URL, group: "workers", pid: PID, logger });
resonate.register("greet", greet);
await within(connected, 30, "SSE connection");
console.log(`worker ${PID} ready in group workers on ${URL}`);

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    await resonate.stop();
    console.log(`worker ${PID} stopped`);
    process.exit(0);
  });
}
