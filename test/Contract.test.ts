import { describe, expect, expectTypeOf, it } from "@effect/vitest"
import { Either, ParseResult, Schema } from "effect"
import { Contract } from "effect-chronicle"

class Shipped extends Schema.TaggedClass<Shipped>()("Shipped", {
  carrier: Schema.String,
  trackingCode: Contract.personal(Schema.String)
}) {}

const Orders = Contract.make("orders", {
  Placed: { sku: Schema.String, quantity: Schema.Int, email: Contract.personal(Schema.String) },
  Cancelled: Schema.TaggedStruct("Cancelled", { reason: Schema.optional(Schema.String) }),
  Shipped,
  Priced: Contract.versioned({ amount: Schema.Number, currency: Schema.String }, {
    version: 3,
    upcasters: {
      1: Contract.upcast(Schema.Struct({ cents: Schema.Int }), (v1) => ({ amount: v1.cents / 100, currency: "EUR" })),
      2: Contract.upcast(Schema.Struct({ amount: Schema.Number }), (v2) => ({ amount: v2.amount, currency: "EUR" }))
    }
  })
})

describe("Contract", () => {
  it("gives a tagged union, constructors and the tags in order", () => {
    expect(Orders.name).toBe("orders")
    expect(Orders.tags).toEqual(["Placed", "Cancelled", "Shipped", "Priced"])
    expect(Orders.issues).toEqual([])
    const placed = Orders.make.Placed({ sku: "b", quantity: 1, email: "a@b.c" })
    expect(placed).toEqual({ _tag: "Placed", sku: "b", quantity: 1, email: "a@b.c" })
    const shipped = Orders.make.Shipped({ carrier: "ups", trackingCode: "1Z" })
    expect(shipped).toBeInstanceOf(Shipped)
    expect(Schema.is(Orders.schema)(placed)).toBe(true)
    expect(Schema.is(Orders.schema)(shipped)).toBe(true)
    expect(Schema.is(Orders.schema)({ _tag: "Placed", sku: 1 })).toBe(false)
  })

  it("types: Event is the tagged union; constructors take the fields", () => {
    type E = Contract.Event<typeof Orders>
    expectTypeOf<E["_tag"]>().toEqualTypeOf<"Placed" | "Cancelled" | "Shipped" | "Priced">()
    expectTypeOf<Contract.EventOf<typeof Orders, "Placed">>().toEqualTypeOf<{
      readonly _tag: "Placed"
      readonly sku: string
      readonly quantity: number
      readonly email: string
    }>()
    expectTypeOf<Contract.EventOf<typeof Orders, "Shipped">>().toEqualTypeOf<Shipped>()
    expectTypeOf(Orders.make.Priced).parameter(0).toEqualTypeOf<{ readonly amount: number; readonly currency: string }>()
    // @ts-expect-error a missing field
    Orders.make.Placed({ sku: "b", quantity: 1 })
  })

  it("records personal-data fields from the annotation", () => {
    expect(Orders.events.Placed.personalFields).toEqual(["email"])
    expect(Orders.events.Shipped.personalFields).toEqual(["trackingCode"])
    expect(Orders.events.Cancelled.personalFields).toEqual([])
    expect(Contract.isPersonal(Contract.personal(Schema.NonEmptyString))).toBe(true)
    expect(Contract.isPersonal(Schema.String)).toBe(false)
    expect(Contract.isPersonal(Schema.optional(Contract.personal(Schema.String)))).toBe(true)
    expect(Contract.isPersonal(Schema.NullOr(Contract.personal(Schema.String)))).toBe(true)
  })

  it("encodes without the tag and decodes with it", () => {
    const encoded = Contract.encodeEvent(Orders, Orders.make.Shipped({ carrier: "ups", trackingCode: "1Z" }))
    expect(encoded._tag).toBe("Encoded")
    if (encoded._tag === "Encoded") {
      expect(JSON.parse(JSON.stringify(encoded.data))).toEqual({ carrier: "ups", trackingCode: "1Z" })
      expect(encoded.version).toBe(1)
    }
    const decoded = Contract.decodeEvent(Orders, "Shipped", 1, { carrier: "ups", trackingCode: "1Z" })
    expect(decoded._tag === "Decoded" && decoded.event).toBeInstanceOf(Shipped)
    const invalid = Contract.encodeEvent(Orders, { _tag: "Placed", sku: "b", quantity: 1.5, email: "x" })
    expect(invalid._tag === "Invalid" && invalid.issues.map((i) => i.path)).toEqual(["quantity"])
    const unknown = Contract.encodeEvent(Orders, { _tag: "Refunded" } as never)
    expect(unknown._tag).toBe("UnknownType")
  })

  it("versions: new events are written at the current version; older stored versions are upcast", () => {
    const encoded = Contract.encodeEvent(Orders, Orders.make.Priced({ amount: 2.5, currency: "USD" }))
    expect(encoded._tag === "Encoded" && encoded.version).toBe(3)
    expect(Contract.decodeEvent(Orders, "Priced", 1, { cents: 250 })).toEqual({
      _tag: "Decoded",
      event: { _tag: "Priced", amount: 2.5, currency: "EUR" }
    })
    expect(Contract.decodeEvent(Orders, "Priced", 2, { amount: 7 })).toEqual({
      _tag: "Decoded",
      event: { _tag: "Priced", amount: 7, currency: "EUR" }
    })
    const bad = Contract.decodeEvent(Orders, "Priced", 1, { cents: "many" })
    expect(bad._tag).toBe("Invalid")
    const unknownVersion = Contract.decodeEvent(Orders, "Priced", 9, { amount: 1 })
    expect(unknownVersion._tag === "Invalid" && unknownVersion.message).toContain("version 9")
  })

  it("an upcaster is decode-only: its encode fails", () => {
    const target = Schema.Struct({ amount: Schema.Number })
    const migrate = Schema.transformOrFail(Schema.Struct({ cents: Schema.Int }), target, {
      strict: false,
      decode: (v) => ParseResult.succeed({ amount: v.cents / 100 }),
      encode: (_, __, ast) => ParseResult.fail(new ParseResult.Forbidden(ast, _, "decode-only"))
    })
    expect(Either.isLeft(Schema.encodeEither(migrate)({ amount: 1 }))).toBe(true)
    // the contract's own upcasters behave the same way
    const priced = Contract.decodeEvent(Orders, "Priced", 1, { cents: 100 })
    expect(priced._tag).toBe("Decoded")
  })

  it("rejects reserved event names, mismatched tags and bad names, in the types and at run time", () => {
    const reserved = Contract.make("things", {
      // @ts-expect-error a reserved name
      pipe: { a: Schema.String },
      ok: { a: Schema.String }
    })
    expect(reserved.issues.join()).toContain("reserved")
    for (const name of ["constructor", "toString", "_tag", "then"]) {
      const c = Contract.make("things", { [name]: { a: Schema.String } } as never)
      expect(c.issues.length, name).toBeGreaterThan(0)
    }
    const mismatch = Contract.make("things", {
      // @ts-expect-error the schema's tag differs from its key
      Created: Schema.TaggedStruct("Made", { a: Schema.String })
    })
    expect(mismatch.issues.join()).toContain("_tag")
    expect(Contract.make("not a category", { A: { a: Schema.String } }).issues.join()).toContain("[A-Za-z0-9_]+")
    expect(Contract.make("things", {}).issues.join()).toContain("at least one event")
    const badVersion = Contract.make("things", {
      A: Contract.versioned({ a: Schema.String }, { version: 2, upcasters: { 3: Contract.upcast(Schema.Struct({}), () => ({ a: "" })) } })
    })
    expect(badVersion.issues.join()).toContain("version 3")
  })
})
