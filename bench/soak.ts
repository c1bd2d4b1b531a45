/**
 * The consumer fault scenario (test/support/scenario.ts) for as long as asked:
 * `npm run soak -- --seconds 120`, on PostgreSQL with `--backend postgres` (a server of
 * its own; PostgreSQL 15's binaries needed). Prints progress on stderr and one JSON line
 * at the end; exits 1 unless `verified`.
 */
import { runScenario } from "../test/support/scenario.js"
import { arg, backend } from "./support.js"

runScenario({
  backend: backend(),
  seconds: arg("seconds", 120),
  faults: !process.argv.includes("--no-faults"),
  seed: process.argv.includes("--seed") ? arg("seed", 1) : undefined,
  log: (line) => console.error(line)
}).then(
  (report) => {
    console.log(JSON.stringify(report))
    process.exit(report.verified ? 0 : 1)
  },
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
