// One command for the whole example: start worker.mjs as a second process, call it, stop it.
//
//   RESONATE_URL=http://localhost:8001 node main.mjs
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { call } from "./caller.mjs";

const worker = spawn(process.execPath, [fileURLToPath(new URL("./worker.mjs", import.meta.url))], {
  stdio: ["ignore", "pipe", "inherit"],
});
const lines = createInterface({ input: worker.stdout });
const ready = new Promise((resolve, reject) => {
  lines.on("line", (line) => {
    console.log(line); // relay the worker's output
    if (line.includes(" ready ")) resolve();
  });
  worker.on("exit", (code) => reject(new Error(`the worker exited with status ${code} before it was ready`)));
});

let answer;
try {
  await ready;
  answer = await call("newcomer");
} finally {
  worker.kill("SIGTERM");
  await once(worker, "exit");
}
console.log(`done: ${answer}`);
