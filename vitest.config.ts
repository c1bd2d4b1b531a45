import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const source = (path: string) => fileURLToPath(new URL(path, import.meta.url))

export default defineConfig({
  resolve: {
    // tests import the package by name: from its sources, not from dist/
    alias: [
      { find: /^effect-chronicle\/redis$/, replacement: source("./src/redis/index.ts") },
      { find: /^effect-chronicle\/postgres$/, replacement: source("./src/postgres/index.ts") },
      { find: /^effect-chronicle\/testing$/, replacement: source("./src/testing/index.ts") },
      { find: /^effect-chronicle\/testing\/DeliveryChecker$/, replacement: source("./src/testing/DeliveryChecker.ts") },
      { find: /^effect-chronicle$/, replacement: source("./src/index.ts") }
    ]
  },
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    // Redis tests compare the server's command counters before and after an operation;
    // running files one at a time keeps those counts to the file being run.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // logs of passing tests are dropped; a failing test shows its own, at most a screenful
    silent: "passed-only",
    reporters: ["default"]
  }
})
