/**
 * What JSON keeps of a value, for the store's rule that it writes only what reads back
 * (docs/semantics.md §3).
 *
 * @internal
 */

/**
 * Where a value stops being JSON that reads back as itself, if it does: the path of the
 * first such place and why. JSON keeps null, booleans, strings, finite numbers (−0 reads
 * back as 0, which equals it), arrays and plain objects; it turns NaN and ±Infinity into
 * null, a Date (anything with `toJSON`) into what that returns, undefined in an array into
 * null, and drops functions and symbols; a bigint it cannot write at all.
 */
export const jsonProblem = (value: unknown, path = ""): { readonly path: string; readonly reason: string } | undefined => {
  switch (typeof value) {
    case "string":
    case "boolean":
      return undefined
    case "number":
      return Number.isFinite(value) ? undefined : { path, reason: `${String(value)} is not a JSON number (it would be stored as null)` }
    case "bigint":
      return { path, reason: "a bigint has no JSON form (encode it as a string)" }
    case "undefined":
      return { path, reason: "undefined has no JSON form here (it would be stored as null)" }
    case "function":
    case "symbol":
      return { path, reason: `a ${typeof value} has no JSON form` }
  }
  if (value === null) return undefined
  const v = value as Record<string, unknown>
  if (typeof v.toJSON === "function") {
    return { path, reason: value instanceof Date ? "a Date is stored as its ISO string: encode it as one (Schema.Date, Schema.DateTimeUtc)" : "an object with toJSON is stored as what toJSON returns" }
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = jsonProblem(value[i], `${path}[${i}]`)
      if (p !== undefined) return p
    }
    return undefined
  }
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return { path, reason: "only plain objects and arrays are stored as they are" }
  for (const key of Object.keys(v)) {
    const child = v[key]
    // an undefined field is left out, as an absent optional field is
    if (child === undefined) continue
    const p = jsonProblem(child, path === "" ? key : `${path}.${key}`)
    if (p !== undefined) return p
  }
  return undefined
}
