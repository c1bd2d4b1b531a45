import { describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Aggregate, Contract } from "effect-chronicle"
import { DeciderSpec } from "effect-chronicle/testing"

const Accounts = Contract.make("accounts", {
  Opened: { owner: Schema.String },
  Deposited: { amount: Schema.Int },
  Withdrawn: { amount: Schema.Int }
})

class Overdrawn extends Schema.TaggedError<Overdrawn>()("Overdrawn", { balance: Schema.Int, requested: Schema.Int }) {}
class NotOpen extends Schema.TaggedError<NotOpen>()("NotOpen", {}) {}

const Command = Schema.Union(
  Schema.TaggedStruct("Open", { owner: Schema.String }),
  Schema.TaggedStruct("Withdraw", { amount: Schema.Int.pipe(Schema.positive()) })
)

const Account = Aggregate.make({
  contract: Accounts,
  command: Command,
  initialState: { open: false, balance: 0 },
  evolve: (s, e) =>
    e._tag === "Opened" ? { ...s, open: true } : e._tag === "Deposited" ? { ...s, balance: s.balance + e.amount } : { ...s, balance: s.balance - e.amount },
  decide: (command, s) => {
    if (command._tag === "Open") return Effect.succeed([Accounts.make.Opened({ owner: command.owner })])
    if (!s.open) return Effect.fail(new NotOpen())
    if (command.amount > s.balance) return Effect.fail(new Overdrawn({ balance: s.balance, requested: command.amount }))
    return Effect.succeed([Accounts.make.Withdrawn({ amount: command.amount })])
  }
})

describe("DeciderSpec", () => {
  const spec = DeciderSpec.make(Account)

  it.effect("given a funded account, when withdrawing, then Withdrawn", () =>
    spec.given([Accounts.make.Opened({ owner: "ada" }), Accounts.make.Deposited({ amount: 10 })])
      .when({ _tag: "Withdraw", amount: 4 })
      .then([Accounts.make.Withdrawn({ amount: 4 })]))

  it.effect("given too little, when withdrawing more, then Overdrawn", () =>
    spec.given([Accounts.make.Opened({ owner: "ada" }), Accounts.make.Deposited({ amount: 3 })])
      .when({ _tag: "Withdraw", amount: 4 })
      .thenFails(new Overdrawn({ balance: 3, requested: 4 })))

  it.effect("given nothing, when withdrawing, then NotOpen", () =>
    spec.given([]).when({ _tag: "Withdraw", amount: 1 }).thenFails(new NotOpen()))
})
