/**
 * Given / when / then for deciders: given past events, when a command arrives, then these
 * events (or this error). Runs the aggregate's own `evolve` and `decide`, with no store.
 *
 * @example
 * ```ts
 * it.effect("a created item can be checked in", () =>
 *   DeciderSpec.make(InventoryItem)
 *     .given([Inventory.make.Created({ name: "lamp" })])
 *     .when({ _tag: "CheckIn", count: 3 })
 *     .then([Inventory.make.CheckedIn({ count: 3 })]))
 * ```
 *
 * @since 0.1.0
 */
import { expect } from "@effect/vitest"
import { Effect, Either, Schema } from "effect"
import type { Aggregate } from "../Aggregate.js"
import type * as Contract from "../Contract.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface When<A, E, R> {
  /** Asserts that the command produces exactly these events, in this order. */
  readonly then: (events: ReadonlyArray<A>) => Effect.Effect<void, never, R>
  /** Asserts that the command fails with this error (compared by value), writing nothing. */
  readonly thenFails: (error: E) => Effect.Effect<void, never, R>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Given<A, CmdI, E, R> {
  readonly when: (command: CmdI) => When<A, E, R>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Spec<A, CmdI, E, R> {
  readonly given: (events: ReadonlyArray<A>) => Given<A, CmdI, E, R>
}

/**
 * A specification for an aggregate's decider.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <C extends Contract.Any, S, SI, Cmd, CmdI, E, R>(
  aggregate: Aggregate<C, S, SI, Cmd, CmdI, E, R>
): Spec<Contract.Event<C>, CmdI, E, R> => ({
  given: (past) => ({
    when: (command) => {
      const outcome = Effect.gen(function*() {
        const state = past.reduce(aggregate.evolve, aggregate.initialState)
        const decoded = Schema.decodeUnknownEither(aggregate.command)(command)
        if (Either.isLeft(decoded)) {
          return yield* Effect.dieMessage(`the command does not decode: ${decoded.left.message}`)
        }
        return yield* Effect.either(aggregate.decide(decoded.right, state))
      })
      return {
        then: (events) =>
          Effect.map(outcome, (result) => {
            expect(Either.isRight(result) ? result.right : { failed: result.left }).toEqual(events)
          }),
        thenFails: (error) =>
          Effect.map(outcome, (result) => {
            expect(Either.isLeft(result) ? result.left : { succeeded: result.right }).toEqual(error)
          })
      }
    }
  })
})
