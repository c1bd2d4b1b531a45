/**
 * Inventory: Learning.EventStore's sample application done the Effect way. An inventory
 * item is created, stocked, drawn from, renamed and deactivated; each command is decided
 * against the item's state, rebuilt from its events (with snapshots every 50 events).
 */
import { Effect, Schema } from "effect"
import { Aggregate, Contract } from "effect-chronicle"

export const Inventory = Contract.make("inventory", {
  ItemCreated: { name: Schema.NonEmptyString },
  ItemsCheckedIn: { count: Schema.Int.pipe(Schema.positive()) },
  ItemsRemoved: { count: Schema.Int.pipe(Schema.positive()) },
  ItemRenamed: { name: Schema.NonEmptyString },
  ItemDeactivated: {}
})
export type InventoryEvent = Contract.Event<typeof Inventory>

export const Command = Schema.Union(
  Schema.TaggedStruct("Create", { name: Schema.NonEmptyString }),
  Schema.TaggedStruct("CheckIn", { count: Schema.Int.pipe(Schema.positive()) }),
  Schema.TaggedStruct("Remove", { count: Schema.Int.pipe(Schema.positive()) }),
  Schema.TaggedStruct("Rename", { name: Schema.NonEmptyString }),
  Schema.TaggedStruct("Deactivate", {})
)
export type Command = typeof Command.Type

export class ItemAlreadyExists extends Schema.TaggedError<ItemAlreadyExists>()("ItemAlreadyExists", {}) {}
export class ItemNotFound extends Schema.TaggedError<ItemNotFound>()("ItemNotFound", {}) {}
export class ItemDeactivated extends Schema.TaggedError<ItemDeactivated>()("ItemDeactivated", {}) {}
export class NotEnoughStock extends Schema.TaggedError<NotEnoughStock>()("NotEnoughStock", { inStock: Schema.Int, requested: Schema.Int }) {}
export class SameName extends Schema.TaggedError<SameName>()("SameName", {}) {}

export const ItemState = Schema.Struct({
  exists: Schema.Boolean,
  active: Schema.Boolean,
  name: Schema.String,
  count: Schema.Int
})
export type ItemState = typeof ItemState.Type

const evolve = (s: ItemState, e: InventoryEvent): ItemState => {
  switch (e._tag) {
    case "ItemCreated":
      return { exists: true, active: true, name: e.name, count: 0 }
    case "ItemsCheckedIn":
      return { ...s, count: s.count + e.count }
    case "ItemsRemoved":
      return { ...s, count: s.count - e.count }
    case "ItemRenamed":
      return { ...s, name: e.name }
    case "ItemDeactivated":
      return { ...s, active: false }
  }
}

const decide = (command: Command, s: ItemState) =>
  Effect.gen(function*() {
    if (command._tag === "Create") {
      if (s.exists) return yield* new ItemAlreadyExists()
      return [Inventory.make.ItemCreated({ name: command.name })]
    }
    if (!s.exists) return yield* new ItemNotFound()
    if (!s.active) return yield* new ItemDeactivated()
    switch (command._tag) {
      case "CheckIn":
        return [Inventory.make.ItemsCheckedIn({ count: command.count })]
      case "Remove":
        if (command.count > s.count) return yield* new NotEnoughStock({ inStock: s.count, requested: command.count })
        return [Inventory.make.ItemsRemoved({ count: command.count })]
      case "Rename":
        if (command.name === s.name) return yield* new SameName()
        return [Inventory.make.ItemRenamed({ name: command.name })]
      case "Deactivate":
        return [Inventory.make.ItemDeactivated({})]
    }
  })

export const InventoryItem = Aggregate.make({
  contract: Inventory,
  command: Command,
  initialState: { exists: false, active: false, name: "", count: 0 } as ItemState,
  evolve,
  decide,
  snapshotEvery: 50,
  stateSchema: ItemState
})
