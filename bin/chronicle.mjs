#!/usr/bin/env node
// The chronicle command: the built CLI (dist/bin/chronicle.js), run with plain node. It
// needs the optional peers @effect/cli, @effect/platform and @effect/platform-node, and
// ioredis; without them it says so in one line.
const needed = ["@effect/cli", "@effect/platform", "@effect/platform-node", "ioredis"]
const missing = []
for (const name of needed) {
  try {
    await import(name)
  } catch {
    missing.push(name)
  }
}
if (missing.length > 0) {
  console.error(`chronicle: needs ${missing.join(", ")} beside effect-chronicle: npm install ${missing.join(" ")}`)
  process.exit(1)
}
await import("../dist/bin/chronicle.js")
