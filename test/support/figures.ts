/**
 * A test's figures, printed whatever the test's outcome: one JSON line on stdout, past
 * vitest's console capture (logs of passing tests are not shown).
 */
export const figures = (value: object): void => {
  process.stdout.write(`${JSON.stringify(value)}\n`)
}
