/**
 * For test child processes: end once the process that started them is gone, so that a
 * test runner that dies (or a failing test that forgets them) leaves nothing running.
 */
export const endWithParent = (): void => {
  const parent = process.ppid
  setInterval(() => {
    if (process.ppid !== parent) process.exit(3)
  }, 500).unref()
}
