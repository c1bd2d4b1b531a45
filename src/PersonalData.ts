/**
 * Personal data that can be forgotten (crypto-shredding). Fields marked
 * `Contract.personal` are encrypted before they leave the process, with AES-256-GCM (a
 * fresh 96-bit IV per value, the event id and the field name as associated data), under
 * one data key per data subject: the stream's entity id, or the field marked
 * `Contract.subject`. The keys live in a {@link KeyStore}: in memory, in Redis under a
 * prefix of their own (so an ACL can fence them from the event data), in a PostgreSQL
 * table of their own, or anything that implements the service (a KMS). {@link forget} destroys a subject's key: the log keeps
 * every event, but the subject's personal fields can no longer be read by anyone; they
 * read as the contract's `forgotten` value.
 *
 * What forgetting does not do: it cannot reach a copy of the key made elsewhere (a
 * backup or a replica of the key store taken before, a process that read the key within
 * the key store's cache time); keep keys out of the event data's backups.
 *
 * @since 0.2.0
 */
import { Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import { randomBytes, randomUUID } from "node:crypto"

/**
 * The key store could not answer (the server away, a permission missing).
 *
 * @since 0.2.0
 * @category errors
 */
export class KeyStoreError extends Schema.TaggedError<KeyStoreError>()("KeyStoreError", {
  operation: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `key store ${this.operation}: ${this.reason}`
  }
}

/**
 * A personal field that cannot be written or read: no key store, a ciphertext that
 * fails authentication (tampered, or under another key), or a forgotten field whose
 * contract gives no `forgotten` value. Never carries the field's value.
 *
 * @since 0.2.0
 * @category errors
 */
export class PersonalDataError extends Schema.TaggedError<PersonalDataError>()("PersonalDataError", {
  stream: Schema.String,
  field: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `${this.stream}, field ${this.field}: ${this.reason}`
  }
}

/**
 * A subject's data key: its id (stored beside every value it encrypts) and 32 bytes.
 *
 * @since 0.2.0
 * @category models
 */
export interface DataKey {
  readonly id: string
  readonly material: Redacted.Redacted<Uint8Array>
}

/**
 * @since 0.2.0
 */
export declare namespace KeyStore {
  /**
   * @since 0.2.0
   * @category models
   */
  export interface Service {
    /** The subject's key, made (and stored) when it has none. */
    readonly getOrCreate: (subject: string) => Effect.Effect<DataKey, KeyStoreError>
    /** The subject's key, if it has one (none once forgotten). */
    readonly get: (subject: string) => Effect.Effect<Option.Option<DataKey>, KeyStoreError>
    /** Destroys the subject's key. A later write for the subject makes a new one. */
    readonly forget: (subject: string) => Effect.Effect<void, KeyStoreError>
  }
}

/**
 * @since 0.2.0
 * @category tags
 */
export class KeyStore extends Context.Tag("effect-chronicle/KeyStore")<KeyStore, KeyStore.Service>() {}

/**
 * A new random data key.
 *
 * @since 0.2.0
 * @category constructors
 */
export const newKey = (): DataKey => ({ id: randomUUID(), material: Redacted.make(new Uint8Array(randomBytes(32))) })

/**
 * A key store in this process's memory: what tests and the in-memory backend use.
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeMemory = (): KeyStore.Service => {
  const keys = new Map<string, DataKey>()
  return KeyStore.of({
    getOrCreate: (subject) =>
      Effect.sync(() => {
        const known = keys.get(subject)
        if (known !== undefined) return known
        const made = newKey()
        keys.set(subject, made)
        return made
      }),
    get: (subject) => Effect.sync(() => Option.fromNullable(keys.get(subject))),
    forget: (subject) => Effect.sync(() => void keys.delete(subject))
  })
}

/**
 * The in-memory key store as a Layer.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerMemory: Layer.Layer<KeyStore> = Layer.sync(KeyStore, makeMemory)

/**
 * Forgets a data subject: destroys its key, so that its personal fields, wherever they
 * are stored, can no longer be read (they read as the contract's `forgotten` value).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Chronicle, PersonalData } from "effect-chronicle"
 *
 * Effect.runPromise(PersonalData.forget("customer-42").pipe(Effect.provide(Chronicle.layerMemory)))
 * ```
 *
 * @since 0.2.0
 * @category operations
 */
export const forget = (subject: string): Effect.Effect<void, KeyStoreError, KeyStore> =>
  Effect.flatMap(KeyStore, (keys) => keys.forget(subject))
