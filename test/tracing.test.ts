/**
 * Spans and trace context: with a tracer installed, appends and handlers get spans, the
 * appended events carry the W3C traceparent, and handlers continue the producer's trace.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Fiber, Layer, Schema, Stream, Tracer } from "effect"
import * as DefaultServices from "effect/DefaultServices"
import { Chronicle, Contract, EventStore, Producer, Subscriber } from "effect-chronicle"

const Orders = Contract.make("orders", { Placed: { n: Schema.Int }, Shipped: { n: Schema.Int } })

const recording = () => {
  const native = Context.get(DefaultServices.liveServices, Tracer.Tracer)
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const span = native.span(name, parent, context, links, startTime, kind, options)
      spans.push(span)
      return span
    },
    context: native.context
  })
  return { spans, layer: Layer.setTracer(tracer) }
}

describe("tracing", () => {
  it.live("appends and handlers are spans; events carry traceparent; the handler continues the trace", () => {
    const { layer, spans } = recording()
    return Effect.gen(function*() {
      let handledIn: Tracer.AnySpan | undefined
      const sub = yield* Effect.fork(Subscriber.run(Orders, {
        group: "traced",
        handlers: {
          Placed: () => Effect.flatMap(Effect.currentSpan, (span) => Effect.sync(() => (handledIn = span))),
          Shipped: () => Effect.void
        }
      }))
      const producer = yield* Producer.make(Orders)
      yield* producer.Placed({ n: 1 }, { entityId: "o1" }).pipe(Effect.withSpan("request"))
      yield* Subscriber.awaitIdle("traced")
      const request = spans.find((s) => s.name === "request")!
      const append = spans.find((s) => s.name === "EventStore.append")!
      expect(append.traceId).toBe(request.traceId)
      const typed = yield* EventStore.forContract(Orders)
      const stored = Chunk.toReadonlyArray(yield* Stream.runCollect(typed.read("o1")))[0]!
      expect(stored.traceparent).toBe(`00-${append.traceId}-${append.spanId}-01`)
      const handle = spans.find((s) => s.name === "Subscriber.handle")!
      expect(handle.traceId).toBe(request.traceId)
      expect(handledIn?.traceId).toBe(request.traceId)
      yield* Fiber.interrupt(sub)
    }).pipe(Effect.provide(Chronicle.layerMemory), Effect.provide(layer))
  })

  it.effect("without a tracer, no span is made and no traceparent is stored", () =>
    Effect.gen(function*() {
      const producer = yield* Producer.make(Orders)
      yield* producer.Placed({ n: 1 }, { entityId: "o2" })
      const typed = yield* EventStore.forContract(Orders)
      const stored = Chunk.toReadonlyArray(yield* Stream.runCollect(typed.read("o2")))[0]!
      expect(stored.traceparent).toBeUndefined()
    }).pipe(Effect.provide(Chronicle.layerMemory)))
})
