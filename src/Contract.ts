/**
 * Contracts: a named set of events, each described by an Effect Schema.
 *
 * A contract is the category its events are written to (`Contract.make("shipments", …)`
 * writes to streams `shipments-<id>`), the tagged union of its events, a constructor per
 * event, which fields hold personal data, and how older stored versions of an event are
 * read today (decode-only upcasters).
 *
 * @since 0.1.0
 */
import { Either, ParseResult, Schema, SchemaAST } from "effect"
import { type Pipeable, pipeArguments } from "effect/Pipeable"

/**
 * @since 0.1.0
 * @category symbols
 */
export const TypeId: unique symbol = Symbol.for("effect-chronicle/Contract")

/**
 * @since 0.1.0
 * @category symbols
 */
export type TypeId = typeof TypeId

/**
 * Event names that would clash with members of the objects built from a contract
 * (producers, handler records, constructors): rejected in the types and at run time.
 *
 * @since 0.1.0
 * @category models
 */
export const reservedNames = [
  "pipe",
  "_tag",
  "constructor",
  "toString",
  "toJSON",
  "valueOf",
  "hasOwnProperty",
  "isPrototypeOf",
  "__proto__",
  "prototype",
  "then"
] as const

/**
 * @since 0.1.0
 * @category models
 */
export type ReservedName = (typeof reservedNames)[number]

/**
 * The annotation that marks a field as personal data.
 *
 * @since 0.1.0
 * @category annotations
 */
export const PersonalDataId: unique symbol = Symbol.for("effect-chronicle/Contract/PersonalData")

/**
 * The annotation that carries a personal field's "forgotten" value.
 *
 * @since 0.2.0
 * @category annotations
 */
export const ForgottenId: unique symbol = Symbol.for("effect-chronicle/Contract/Forgotten")

/**
 * The annotation that marks the field naming an event's data subject.
 *
 * @since 0.2.0
 * @category annotations
 */
export const SubjectId: unique symbol = Symbol.for("effect-chronicle/Contract/Subject")

/**
 * Marks a field's schema as personal data (GDPR). The mark is a Schema annotation: the
 * contract records which fields carry it (`definition.personalFields`). Written through
 * a contract, a personal field is encrypted before it leaves the process, under its data
 * subject's own key (the stream's entity id, or the field marked {@link subject});
 * `PersonalData.forget(subject)` destroys the key, and from then on the field reads as
 * `forgotten` (a value of the field's type). Without `forgotten`, reading a forgotten
 * field fails with `PersonalDataError`: give one wherever events must still decode.
 *
 * @example
 * ```ts
 * const Customers = Contract.make("customers", {
 *   Registered: { email: Contract.personal(Schema.String, { forgotten: "(forgotten)" }), plan: Schema.String }
 * })
 * Customers.events.Registered.personalFields // ["email"]
 * ```
 *
 * @since 0.1.0
 * @category annotations
 */
export const personal = <S extends Schema.Schema.Any>(
  schema: S,
  options?: { readonly forgotten?: Schema.Schema.Type<S> | undefined }
): S =>
  schema.annotations(
    options?.forgotten !== undefined ? { [PersonalDataId]: true, [ForgottenId]: { value: options.forgotten } } : { [PersonalDataId]: true }
  ) as S

/**
 * Marks the field that names an event's data subject (a customer id, say): its personal
 * fields are then encrypted under that subject's key instead of the stream's entity id.
 * The field itself stays in clear; its encoded value must be a non-empty string.
 *
 * @example
 * ```ts
 * const Orders = Contract.make("orders", {
 *   Placed: { customerId: Contract.subject(Schema.String), address: Contract.personal(Schema.String, { forgotten: "" }) }
 * })
 * ```
 *
 * @since 0.2.0
 * @category annotations
 */
export const subject = <S extends Schema.Schema.Any>(schema: S): S => schema.annotations({ [SubjectId]: true }) as S

/**
 * Whether a schema carries the personal-data mark.
 *
 * @since 0.1.0
 * @category annotations
 */
export const isPersonal = (schema: unknown): boolean =>
  hasPersonalMark((schema as { readonly ast?: unknown } | null)?.ast)

interface AnyAst {
  readonly _tag: string
  readonly annotations?: Record<symbol, unknown>
  readonly type?: AnyAst
  readonly from?: AnyAst
  readonly to?: AnyAst
  readonly types?: ReadonlyArray<AnyAst>
}

/** An annotation on a field's schema (or on its property signature's type). */
const annotationOf = (field: unknown, id: symbol): unknown => {
  const ast = (field as { readonly ast?: AnyAst } | null | undefined)?.ast
  if (ast === undefined) return undefined
  if (ast.annotations?.[id] !== undefined) return ast.annotations[id]
  if (ast._tag === "PropertySignatureDeclaration") return ast.type?.annotations?.[id]
  if (ast._tag === "PropertySignatureTransformation") return ast.from?.type?.annotations?.[id] ?? ast.to?.type?.annotations?.[id]
  return undefined
}

const hasAnnotation = (field: unknown, id: symbol): boolean => annotationOf(field, id) !== undefined

/**
 * The encoded "forgotten" value of a personal field, if the contract gives one.
 *
 * @internal
 */
export const forgottenOf = (def: EventDefinition<string, Schema.Schema.Any>, field: string): { readonly value: unknown } | undefined => {
  const m = internalOf(def).forgotten
  return m.has(field) ? { value: m.get(field) } : undefined
}

/** Whether a personal mark sits inside a field's structure (a struct, array, record or tuple), not on the field. */
const hasNestedPersonalMark = (node: unknown, depth = 0): boolean => {
  const ast = node as (AnyAst & {
    readonly propertySignatures?: ReadonlyArray<{ readonly type: AnyAst }>
    readonly indexSignatures?: ReadonlyArray<{ readonly type: AnyAst }>
    readonly elements?: ReadonlyArray<{ readonly type: AnyAst }>
    readonly rest?: ReadonlyArray<{ readonly type: AnyAst }>
    readonly typeParameters?: ReadonlyArray<AnyAst>
  }) | undefined
  if (ast === undefined || ast === null || depth > 32) return false
  const inner: Array<unknown> = []
  switch (ast._tag) {
    case "TypeLiteral":
      for (const ps of ast.propertySignatures ?? []) inner.push(ps.type)
      for (const is of ast.indexSignatures ?? []) inner.push(is.type)
      break
    case "TupleType":
      for (const e of ast.elements ?? []) inner.push(e.type)
      for (const r of ast.rest ?? []) inner.push(r.type)
      break
    case "Declaration":
      inner.push(...(ast.typeParameters ?? []))
      break
    default:
      break
  }
  if (inner.some((child) => hasPersonalMark(child) || hasNestedPersonalMark(child, depth + 1))) return true
  switch (ast._tag) {
    case "Refinement":
      return hasNestedPersonalMark(ast.from, depth + 1)
    case "Transformation":
      return hasNestedPersonalMark(ast.from, depth + 1) || hasNestedPersonalMark(ast.to, depth + 1)
    case "Union":
      return (ast.types ?? []).some((t) => hasNestedPersonalMark(t, depth + 1))
    default:
      return false
  }
}

const hasPersonalMark = (node: unknown): boolean => {
  const ast = node as AnyAst | undefined
  if (ast === undefined || ast === null) return false
  if (ast.annotations?.[PersonalDataId] === true) return true
  switch (ast._tag) {
    case "PropertySignatureDeclaration":
      return hasPersonalMark(ast.type)
    case "PropertySignatureTransformation":
      return hasPersonalMark(ast.from?.type) || hasPersonalMark(ast.to?.type)
    case "Refinement":
      return hasPersonalMark(ast.from)
    case "Transformation":
      return hasPersonalMark(ast.from) || hasPersonalMark(ast.to)
    case "Union":
      return (ast.types ?? []).some(hasPersonalMark)
    default:
      return false
  }
}

/**
 * A decode-only upcaster from a stored older version of an event to today's fields.
 *
 * @since 0.1.0
 * @category models
 */
export interface Upcaster<out Fields> {
  readonly _tag: "Upcaster"
  readonly from: Schema.Schema<any, any, never>
  readonly decode: (stored: never) => Fields
}

/**
 * Describes how an older stored version of an event is read today: `from` is the schema
 * the old data was written with, `decode` turns it into today's fields. The upcaster is
 * decode-only: writing always uses the current version.
 *
 * @example
 * ```ts
 * const Orders = Contract.make("orders", {
 *   Placed: Contract.versioned({ sku: Schema.String, quantity: Schema.Int }, {
 *     version: 2,
 *     upcasters: { 1: Contract.upcast(Schema.Struct({ sku: Schema.String }), (v1) => ({ ...v1, quantity: 1 })) }
 *   })
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const upcast = <V, VI, Fields>(from: Schema.Schema<V, VI, never>, decode: (stored: V) => Fields): Upcaster<Fields> => ({
  _tag: "Upcaster",
  from,
  decode: decode as (stored: never) => Fields
})

/**
 * An event schema with a version above 1 and the upcasters of its older versions.
 *
 * @since 0.1.0
 * @category models
 */
export interface Versioned<I> {
  readonly _tag: "Versioned"
  readonly input: I
  readonly version: number
  readonly upcasters: Readonly<Record<number, Upcaster<unknown>>>
}

/**
 * The fields of an event input without its tag: what a constructor and an upcaster give.
 *
 * @since 0.1.0
 * @category models
 */
export type FieldsOfInput<I> = I extends Schema.Schema<infer A, any, any> ? Omit<A, "_tag">
  : I extends Schema.Struct.Fields ? Schema.Struct.Type<I>
  : never

/**
 * Gives an event a version and the upcasters that read its older stored versions.
 * Stored events record the version they were written with; reading one at an older
 * version decodes it with that version's `from` schema, then `decode`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const versioned = <const I extends EventInput>(
  input: I,
  options: {
    readonly version: number
    readonly upcasters: { readonly [version: number]: Upcaster<FieldsOfInput<I>> }
  }
): Versioned<I> => ({ _tag: "Versioned", input, version: options.version, upcasters: options.upcasters })

/**
 * What a contract accepts for one event: a record of field schemas, a
 * `Schema.TaggedStruct`, a `Schema.TaggedClass`, or one of those wrapped in
 * {@link versioned}.
 *
 * @since 0.1.0
 * @category models
 */
export type EventInput = Schema.Struct.Fields | Schema.Schema<any, any, never> | Versioned<any>

/**
 * The schema an event input stands for.
 *
 * @since 0.1.0
 * @category models
 */
export type SchemaOf<K extends string, I> = I extends Versioned<infer J> ? SchemaOf<K, J>
  : I extends Schema.Schema<any, any, never> ? I
  : I extends Schema.Struct.Fields ? Schema.TaggedStruct<K, I>
  : never

/**
 * One event of a contract.
 *
 * @since 0.1.0
 * @category models
 */
export interface EventDefinition<Tag extends string, S extends Schema.Schema.Any> {
  readonly tag: Tag
  /** The event's current schema; its type carries `_tag: Tag`. */
  readonly schema: S
  /** The version new events of this type are written with (1 unless {@link versioned}). */
  readonly version: number
  /** Fields marked with {@link personal}. */
  readonly personalFields: ReadonlyArray<string>
  /** The field marked {@link subject}, whose value names the data subject (else the entity id). */
  readonly subjectField: string | undefined
  /** Builds an event from its fields (no validation: appends validate). */
  readonly make: (fields: Omit<Schema.Schema.Type<S>, "_tag">) => Schema.Schema.Type<S>
}

/**
 * A named set of events.
 *
 * @since 0.1.0
 * @category models
 */
export interface Contract<Name extends string, Defs extends { readonly [K in keyof Defs]: EventDefinition<K & string, any> }>
  extends Pipeable
{
  readonly [TypeId]: TypeId
  /** The contract's name, which is also the category its streams belong to. */
  readonly name: Name
  /** Each event's definition, by tag. */
  readonly events: Defs
  /** The event tags, in declaration order. */
  readonly tags: ReadonlyArray<keyof Defs & string>
  /** The tagged union of the events' current schemas. */
  readonly schema: Schema.Schema<EventOfDefs<Defs>, EncodedOfDefs<Defs>>
  /** A constructor per event: `Shipments.make.OrderPlaced({ ... })`. */
  readonly make: { readonly [K in keyof Defs]: Defs[K]["make"] }
  /** Problems found in the definition at run time (empty when valid). Operations over an invalid contract fail with `InvalidContract`. */
  readonly issues: ReadonlyArray<string>
}

/**
 * Any contract.
 *
 * @since 0.1.0
 * @category models
 */
export interface Any extends Contract<string, any> {}

type EventOfDefs<Defs> = { [K in keyof Defs]: Defs[K] extends EventDefinition<any, infer S> ? Schema.Schema.Type<S> : never }[keyof Defs]
type EncodedOfDefs<Defs> = { [K in keyof Defs]: Defs[K] extends EventDefinition<any, infer S> ? Schema.Schema.Encoded<S> : never }[keyof Defs]

/**
 * The tagged union of a contract's events.
 *
 * @since 0.1.0
 * @category type-level
 */
export type Event<C> = C extends Contract<any, infer Defs> ? EventOfDefs<Defs> : never

/**
 * The tags of a contract's events.
 *
 * @since 0.1.0
 * @category type-level
 */
export type Tag<C> = C extends Contract<any, infer Defs> ? keyof Defs & string : never

/**
 * One event type of a contract, by tag.
 *
 * @since 0.1.0
 * @category type-level
 */
export type EventOf<C, T extends string> = Extract<Event<C>, { readonly _tag: T }>

/**
 * The fields of one event type (everything but `_tag`).
 *
 * @since 0.1.0
 * @category type-level
 */
export type FieldsOf<C, T extends string> = Omit<EventOf<C, T>, "_tag">

/**
 * The name of a contract.
 *
 * @since 0.1.0
 * @category type-level
 */
export type Name<C> = C extends Contract<infer N, any> ? N : never

type Definitions<E> = { readonly [K in keyof E & string]: EventDefinition<K, SchemaOf<K, E[K]>> }

type CheckInput<K, I> = I extends Versioned<infer J> ? CheckInput<K, J> extends never ? never : I
  : I extends Schema.Schema<infer A, any, infer R> ? ([R] extends [never] ? (A extends { readonly _tag: K } ? I : never) : never)
  : I

type ValidEvents<E> = { readonly [K in keyof E]: K extends ReservedName ? never : CheckInput<K, E[K]> }

const CATEGORY = /^[A-Za-z0-9_]+$/

const proto: Pipeable = {
  pipe() {
    return pipeArguments(this, arguments)
  }
}

/**
 * Defines a contract: a name (the category) and its events. Each event is a record of
 * field schemas, a `Schema.TaggedStruct` or a `Schema.TaggedClass` whose tag is the
 * event's name, optionally wrapped in {@link versioned}.
 *
 * Invalid definitions (a reserved event name, a tag that differs from its key, a name
 * that is not a category) are compile errors where the types can see them; at run time
 * they are listed in `issues`, and every operation over the contract fails with
 * `InvalidContract`.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Contract } from "effect-chronicle"
 *
 * const Shipments = Contract.make("shipments", {
 *   OrderPlaced: { orderId: Schema.String, product: Schema.String, quantity: Schema.Int },
 *   Packing: { orderId: Schema.String, email: Contract.personal(Schema.String) }
 * })
 * type ShipmentEvent = Contract.Event<typeof Shipments>
 * const placed = Shipments.make.OrderPlaced({ orderId: "o-1", product: "book", quantity: 1 })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const Name extends string, const E extends { readonly [K: string]: EventInput }>(
  name: Name,
  events: E & ValidEvents<E>
): Contract<Name, Definitions<E>> => {
  const issues: Array<string> = []
  if (typeof name !== "string" || !CATEGORY.test(name)) {
    issues.push(`contract name ${JSON.stringify(name)} must match [A-Za-z0-9_]+ (it is the category of its streams)`)
  }
  const source = events as unknown as Record<string, EventInput>
  const prototype = Object.getPrototypeOf(source)
  if (prototype !== Object.prototype && prototype !== null) {
    issues.push("events must be a plain object (was __proto__ used as an event name?)")
  }
  const defs: Record<string, EventDefinition<string, Schema.Schema<any, any, never>>> = {}
  const makers: Record<string, (fields: any) => any> = {}
  const tags = Object.keys(source)
  if (tags.length === 0) issues.push("a contract needs at least one event")
  for (const tag of tags) {
    if ((reservedNames as ReadonlyArray<string>).includes(tag)) {
      issues.push(`event name ${JSON.stringify(tag)} is reserved (${reservedNames.join(", ")})`)
      continue
    }
    if (tag.length === 0 || tag.length > 256) {
      issues.push(`event name ${JSON.stringify(tag)} must have 1 to 256 characters`)
      continue
    }
    const def = makeDefinition(tag, source[tag]!, issues)
    defs[tag] = def
    makers[tag] = def.make
  }
  const schemas = Object.values(defs).map((d) => d.schema)
  const schema = schemas.length === 0 ? Schema.Never : Schema.Union(...schemas)
  const contract = Object.create(proto)
  Object.assign(contract, {
    [TypeId]: TypeId,
    name,
    events: defs,
    tags: Object.keys(defs),
    schema,
    make: makers,
    issues
  })
  return contract
}

const makeDefinition = (tag: string, input: EventInput, issues: Array<string>) => {
  let version = 1
  let upcasters: Readonly<Record<number, Upcaster<unknown>>> = {}
  let raw: unknown = input
  if (isVersioned(input)) {
    version = input.version
    upcasters = input.upcasters
    raw = input.input
    if (!Number.isSafeInteger(version) || version < 1) {
      issues.push(`event ${tag}: version must be an integer ≥ 1, got ${String(version)}`)
      version = 1
    }
    for (const key of Object.keys(upcasters)) {
      const v = Number(key)
      if (!Number.isSafeInteger(v) || v < 1 || v >= version) {
        issues.push(`event ${tag}: an upcaster for version ${key} must be for a version from 1 to ${version - 1}`)
      }
    }
  }
  let schema: Schema.Schema<any, any, never>
  let fields: Schema.Struct.Fields
  if (Schema.isSchema(raw)) {
    schema = raw as Schema.Schema<any, any, never>
    fields = ((raw as { fields?: Schema.Struct.Fields }).fields) ?? {}
    const tagOfSchema = literalTagOf(schema.ast)
    if (tagOfSchema !== tag) {
      issues.push(`event ${tag}: its schema's _tag is ${JSON.stringify(tagOfSchema)}, it must be ${JSON.stringify(tag)}`)
    }
  } else if (typeof raw === "object" && raw !== null) {
    fields = raw as Schema.Struct.Fields
    if ("_tag" in fields) issues.push(`event ${tag}: a field record must not declare _tag (the event name is its tag)`)
    schema = Schema.TaggedStruct(tag, fields) as unknown as Schema.Schema<any, any, never>
  } else {
    issues.push(`event ${tag}: expected a record of field schemas, a TaggedStruct or a TaggedClass`)
    fields = {}
    schema = Schema.TaggedStruct(tag, {}) as unknown as Schema.Schema<any, any, never>
  }
  // a Schema.Class's AST is a transformation from its fields to a declaration of instances
  const isClass = Schema.isSchema(raw) && SchemaAST.isTransformation(raw.ast) && SchemaAST.isDeclaration(raw.ast.to)
  const make = isClass
    ? (f: object) => new (raw as new(f: object, disableValidation: boolean) => object)(f, true)
    : (f: object) => ({ ...f, _tag: tag })
  const personalFields = Object.keys(fields).filter((k) => k !== "_tag" && isPersonal(fields[k]!))
  for (const k of Object.keys(fields)) {
    const f = fields[k] as { readonly ast?: AnyAst } | undefined
    const ast = f?.ast?._tag === "PropertySignatureDeclaration" ? f.ast.type : f?.ast
    if (k !== "_tag" && hasNestedPersonalMark(ast)) {
      issues.push(`event ${tag}: field ${k}: Contract.personal inside a struct, array, record or tuple is not encrypted; mark the whole field`)
    }
  }
  const subjects = Object.keys(fields).filter((k) => k !== "_tag" && hasAnnotation(fields[k], SubjectId))
  if (subjects.length > 1) issues.push(`event ${tag}: only one field may be the subject (${subjects.join(", ")})`)
  const subjectField = subjects[0]
  if (subjectField !== undefined && personalFields.includes(subjectField)) {
    issues.push(`event ${tag}: the subject field ${subjectField} cannot be personal (it names whose key encrypts the rest)`)
  }
  // each personal field's forgotten value, encoded once: what a forgotten field is read as
  const forgotten = new Map<string, unknown>()
  for (const field of personalFields) {
    const given = annotationOf(fields[field], ForgottenId) as { readonly value: unknown } | undefined
    if (given === undefined) continue
    const encoded = Schema.encodeUnknownEither(fields[field] as Schema.Schema<any, any, never>)(given.value)
    if (Either.isLeft(encoded)) issues.push(`event ${tag}: field ${field}: its forgotten value is not a value of the field`)
    else forgotten.set(field, encoded.right)
  }
  const decoders = new Map<number, (u: unknown) => Either.Either<unknown, ParseResult.ParseError>>()
  decoders.set(version, Schema.decodeUnknownEither(schema, { onExcessProperty: "ignore" }))
  for (const [key, up] of Object.entries(upcasters)) {
    const target = Schema.typeSchema(schema)
    const migrate = Schema.transformOrFail(up.from, target, {
      strict: false,
      decode: (stored) => ParseResult.succeed(make((up.decode as (s: unknown) => object)(stored))),
      encode: (_, __, ast) => ParseResult.fail(new ParseResult.Forbidden(ast, _, `event ${tag}: upcasters are decode-only; events are always written at version ${version}`))
    })
    decoders.set(Number(key), Schema.decodeUnknownEither(migrate, { onExcessProperty: "ignore" }))
  }
  const encode = Schema.encodeEither(schema as Schema.Schema<any, any, never>)
  const def: EventDefinition<string, Schema.Schema<any, any, never>> & Internal = {
    tag,
    schema,
    version,
    personalFields,
    subjectField,
    make: make as (fields: unknown) => unknown,
    [InternalId]: { decoders, encode, forgotten }
  }
  return def
}

const isVersioned = (u: unknown): u is Versioned<EventInput> =>
  typeof u === "object" && u !== null && (u as { _tag?: unknown })._tag === "Versioned" && "input" in u

const literalTagOf = (ast: SchemaAST.AST): unknown => {
  const target = SchemaAST.isTransformation(ast) ? ast.to : ast
  const typeLiteral = SchemaAST.isDeclaration(target) && target.typeParameters[0] ? target.typeParameters[0] : target
  const tl = SchemaAST.isTransformation(typeLiteral) ? typeLiteral.to : typeLiteral
  if (!SchemaAST.isTypeLiteral(tl)) return undefined
  const ps = tl.propertySignatures.find((p) => p.name === "_tag")
  return ps && SchemaAST.isLiteral(ps.type) ? ps.type.literal : undefined
}

// ---------------------------------------------------------------------------
// Internal: encode and decode against a contract (used by the typed store API)
// ---------------------------------------------------------------------------

const InternalId: unique symbol = Symbol.for("effect-chronicle/Contract/internal")

interface Internal {
  readonly [InternalId]: {
    readonly decoders: ReadonlyMap<number, (u: unknown) => Either.Either<unknown, ParseResult.ParseError>>
    readonly encode: (a: unknown) => Either.Either<unknown, ParseResult.ParseError>
    /** Per personal field with a forgotten value, that value encoded. */
    readonly forgotten: ReadonlyMap<string, unknown>
  }
}

const internalOf = (def: unknown): Internal[typeof InternalId] => (def as Internal)[InternalId]

/**
 * Whether `u` is a contract.
 *
 * @since 0.1.0
 * @category guards
 */
export const isContract = (u: unknown): u is Any => typeof u === "object" && u !== null && TypeId in u

/**
 * A field path and message from a schema failure, for error messages.
 *
 * @since 0.1.0
 * @category models
 */
export interface Issue {
  readonly path: string
  readonly message: string
}

/**
 * The paths of a decoding failure's issues, without their messages (which may quote a
 * value).
 *
 * @internal
 */
export const pathsOf = (error: ParseResult.ParseError): ReadonlyArray<string> => issuesOf(error).map((i) => i.path).filter((p) => p !== "")

const issuesOf = (error: ParseResult.ParseError): ReadonlyArray<Issue> =>
  ParseResult.ArrayFormatter.formatErrorSync(error).map((i) => ({
    path: i.path.map((p) => String(p)).join("."),
    message: i.message
  }))

/**
 * The outcome of encoding one event for the store.
 *
 * @since 0.1.0
 * @category models
 */
export type Encoded =
  | { readonly _tag: "Encoded"; readonly type: string; readonly version: number; readonly data: Record<string, unknown> }
  | { readonly _tag: "Invalid"; readonly type: string; readonly issues: ReadonlyArray<Issue> }
  | { readonly _tag: "UnknownType"; readonly type: string }

/**
 * Encodes an event of the contract to the fields that are stored (`_tag` removed: the
 * store keeps the type beside the data), validating it against its schema.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeEvent = <C extends Any>(contract: C, event: Event<C>): Encoded => {
  const type = (event as { _tag?: unknown } | null)?._tag
  if (typeof type !== "string" || !Object.prototype.hasOwnProperty.call(contract.events, type)) {
    return { _tag: "UnknownType", type: String(type) }
  }
  const def = contract.events[type]!
  const result = internalOf(def).encode(event)
  if (Either.isLeft(result)) return { _tag: "Invalid", type, issues: issuesOf(result.left) }
  // The encoded object is the parser's own fresh output: its tag is blanked rather than
  // copied out (JSON leaves undefined fields out, and the store keeps the type apart).
  const data = result.right as Record<string, unknown>
  data._tag = undefined
  return { _tag: "Encoded", type, version: def.version, data }
}

/**
 * The outcome of decoding one stored event.
 *
 * @since 0.1.0
 * @category models
 */
export type Decoded<A> =
  | { readonly _tag: "Decoded"; readonly event: A }
  /** `message` says what failed and may quote the stored values; `paths` names the fields only. */
  | { readonly _tag: "Invalid"; readonly message: string; readonly paths: ReadonlyArray<string> }
  | { readonly _tag: "UnknownType" }

/**
 * The decoder of stored fields of `type` written at `version` (the fields with their tag),
 * or undefined when the contract has none: for hot paths that decode in place.
 *
 * @internal
 */
export const decoderOf = (contract: Any, type: string, version: number): ((u: unknown) => Either.Either<unknown, ParseResult.ParseError>) | undefined =>
  Object.prototype.hasOwnProperty.call(contract.events, type) ? internalOf(contract.events[type]).decoders.get(version) : undefined

/**
 * Decodes stored fields of `type` written at `version` to today's event, through the
 * upcaster of that version when it is older.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeEvent = <C extends Any>(contract: C, type: string, version: number, data: unknown): Decoded<Event<C>> => {
  if (!Object.prototype.hasOwnProperty.call(contract.events, type)) return { _tag: "UnknownType" }
  const decoder = internalOf(contract.events[type]).decoders.get(version)
  if (decoder === undefined) {
    return { _tag: "Invalid", message: `event ${type} has no reader for stored version ${version} (current version ${contract.events[type]!.version})`, paths: [] }
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    return { _tag: "Invalid", message: `event ${type}: stored data is not an object`, paths: [] }
  }
  const result = decoder({ ...(data as object), _tag: type })
  if (Either.isLeft(result)) {
    const issues = issuesOf(result.left)
    return {
      _tag: "Invalid",
      message: issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; "),
      paths: issues.map((i) => i.path)
    }
  }
  return { _tag: "Decoded", event: result.right as Event<C> }
}
