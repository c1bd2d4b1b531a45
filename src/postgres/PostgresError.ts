/**
 * The errors of building the PostgreSQL store (the store's operations fail with the
 * errors of `EventStore`, as on every backend).
 *
 * @since 0.3.0
 */
import { Schema } from "effect"

/**
 * An option the PostgreSQL store cannot work with (a schema name that is not a plain
 * identifier, a polling interval that is not a duration, …).
 *
 * @since 0.3.0
 * @category errors
 */
export class ConfigurationError extends Schema.TaggedError<ConfigurationError>()("ConfigurationError", {
  option: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `${this.option}: ${this.reason}`
  }
}

/**
 * The store's schema in the database was made by a newer version of effect-chronicle
 * than this one: this process refuses to use it rather than write what the newer one
 * would not expect.
 *
 * @since 0.3.0
 * @category errors
 */
export class SchemaVersionMismatch extends Schema.TaggedError<SchemaVersionMismatch>()("SchemaVersionMismatch", {
  schema: Schema.String,
  recorded: Schema.Int,
  supported: Schema.Int
}) {
  override get message() {
    return `schema ${this.schema} is at version ${this.recorded}; this version of effect-chronicle supports up to version ${this.supported}: upgrade effect-chronicle`
  }
}
