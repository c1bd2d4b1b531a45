/**
 * Reading the items of a list a caller gives (`appendMany`): each item is read once, so
 * a getter that throws is one bad item with its outcome in its place, not a defect.
 *
 * @internal
 */

/** Why an item could not be read. */
export class Unreadable {
  constructor(readonly reason: string) {}
}

/** Why `list` is not a list of appends, if it is not. */
export const notAList = (list: unknown): string | undefined => (Array.isArray(list) ? undefined : "expected an array of appends")

/** The item as `read` takes it, once; `shape` says what it must hold (for the message). */
export const readItem = <A>(item: unknown, shape: string, read: (item: object) => A): A | Unreadable => {
  try {
    if (typeof item !== "object" || item === null) return new Unreadable(`each append must be an object with ${shape}`)
    return read(item)
  } catch (cause) {
    return new Unreadable(`an append could not be read: ${cause instanceof Error ? cause.message : String(cause)}`)
  }
}
