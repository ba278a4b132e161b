// Nested steps: a workflow whose steps run steps of their own, each recorded by the server.
//
//   RESONATE_URL=http://localhost:8001 node main.mjs
import { randomUUID } from "node:crypto";

import { Resonate } from "@resonatehq/sdk";

const URL = process.env.RESONATE_URL || "http://localhost:8001";
const PRICES = { apple: 120, bread: 250, cheese: 480 }; // in cents

function fetchPrice(ctx, item) {
  console.log(`  step fetchPrice(${JSON.stringify(item)})`);
  return PRICES[item];
}

function addTax(ctx, cents) {
  console.log(`  step addTax(${cents})`);
  return Math.floor((cents * 110) / 100);
}

// a step that runs two steps of its own (durable functions that call ctx.* are generators)
function* priceItem(ctx, item) {
  const cents = yield* ctx.run(fetchPrice, item);
  return yield* ctx.run(addTax, cents);
}

function* checkout(ctx, items) {
  let total = 0;
  for (const item of items) total += yield* ctx.run(priceItem, item);
  return total;
}

// quiet: the SDK's own log lines only from warnings up
const logger = {
  debug() {},
  info() {},
  warn: (fields, msg) => console.error("warn:", msg, JSON.stringify(fields)),
  error: (fields, msg) => console.error("error:", msg, JSON.stringify(fields)),
};

const resonate = new Resonate({ url: URL, group: "nested-steps-example-ts", logger });
resonate.register("checkout", checkout);

const id = `checkout-${randomUUID().slice(0, 8)}`; // a new id each run; the same id returns the stored result
console.log(`running ${id} on ${URL}`);
const total = await resonate.run(id, "checkout", ["apple", "bread", "cheese"]);
await resonate.stop();
console.log(`done: ${id} total = ${(total / 100).toFixed(2)}`);
