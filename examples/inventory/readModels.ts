/**
 * Inventory's read models, kept by one projection: a list (id, name, active) and the
 * details of each item (name, count, version). Updates are keyed on the event's version,
 * so an event applied twice (delivery is at least once) changes nothing the second time.
 */
import { Effect, Ref } from "effect"
import { Projection } from "effect-chronicle"
import { Inventory } from "./domain.js"

export interface ListItem {
  readonly id: string
  readonly name: string
  readonly active: boolean
}

export interface Details {
  readonly id: string
  readonly name: string
  readonly count: number
  readonly version: number
}

export interface ReadModels {
  readonly list: Map<string, ListItem>
  readonly details: Map<string, Details>
}

export const makeReadModels = Effect.map(
  Ref.make<ReadModels>({ list: new Map(), details: new Map() }),
  (ref) => {
    const update = (id: string, version: number, f: (d: Details) => Partial<Details>, l?: (i: ListItem) => Partial<ListItem>) =>
      Ref.update(ref, (m) => {
        const current = m.details.get(id)
        if (current === undefined || current.version >= version) return m
        m.details.set(id, { ...current, ...f(current), version })
        const item = m.list.get(id)
        if (item !== undefined && l !== undefined) m.list.set(id, { ...item, ...l(item) })
        return m
      })
    const projection = Projection.make({
      name: "inventory-read-models",
      contract: Inventory,
      handlers: {
        ItemCreated: (e, ctx) =>
          Ref.update(ref, (m) => {
            const id = ctx.envelope.entityId
            if (m.details.has(id)) return m
            m.details.set(id, { id, name: e.name, count: 0, version: ctx.envelope.version })
            m.list.set(id, { id, name: e.name, active: true })
            return m
          }),
        ItemsCheckedIn: (e, ctx) => update(ctx.envelope.entityId, ctx.envelope.version, (d) => ({ count: d.count + e.count })),
        ItemsRemoved: (e, ctx) => update(ctx.envelope.entityId, ctx.envelope.version, (d) => ({ count: d.count - e.count })),
        ItemRenamed: (e, ctx) => update(ctx.envelope.entityId, ctx.envelope.version, () => ({ name: e.name }), () => ({ name: e.name })),
        ItemDeactivated: (_, ctx) => update(ctx.envelope.entityId, ctx.envelope.version, () => ({}), () => ({ active: false }))
      },
      reset: Ref.set(ref, { list: new Map(), details: new Map() })
    })
    return { projection, read: Ref.get(ref) }
  }
)
