/**
 * Reading one stream, shared by every backend: in pages of versions, forwards or
 * backwards, up to a limit; and following it (`read(stream, { live: true })`): catch
 * up from a version in pages, emit `CaughtUp`, then read again from the next version each
 * time the backend says the stream may have grown (or after a while, whatever it says).
 * Reads are by version, so the switch has no gap and no duplicate, and a notice that is
 * lost or spurious costs a wait or a read, never an event.
 *
 * @internal
 */
import { Chunk, Duration, Effect, Option, type Scope, Stream } from "effect"
import type { ReadError, RecordedEvent, StreamCaughtUp } from "../EventStore.js"

export interface StreamSource<R> {
  /** At most `count` events of the stream from version `from`, oldest first. */
  readonly page: (from: number, count: number) => Effect.Effect<ReadonlyArray<RecordedEvent>, ReadError, R>
  /**
   * Registers interest in the stream for the scope's lifetime: a latch the backend opens
   * when the stream may have grown. Registered before the first page is read, so that no
   * append between a read and the wait goes unnoticed.
   */
  readonly watch: Effect.Effect<Effect.Latch, ReadError, Scope.Scope | R>
  /** The longest wait without a notice before reading again. */
  readonly recheck: Duration.Duration
}

interface State {
  readonly next: number
  readonly live: boolean
  /** The last read ended the stream as it was then: wait for a notice before the next. */
  readonly wait: boolean
}

export const followStream = <R>(source: StreamSource<R>, from: number, pageSize: number): Stream.Stream<RecordedEvent | StreamCaughtUp, ReadError, R> =>
  Stream.unwrapScoped(Effect.map(source.watch, (latch) => {
    const wait = Effect.raceFirst(latch.await, Effect.sleep(source.recheck))
    // closed before the read: a notice that comes while it is under way opens it again
    const read = (next: number) => Effect.suspend(() => {
      latch.unsafeClose()
      return source.page(next, pageSize)
    })
    return Stream.paginateChunkEffect<State, RecordedEvent | StreamCaughtUp, ReadError, R>({ next: from, live: false, wait: false }, (s) => {
      if (!s.live) {
        return Effect.map(read(s.next), (events) => {
          const next = s.next + events.length
          if (events.length === pageSize) return [Chunk.unsafeFromArray<RecordedEvent | StreamCaughtUp>(events.slice()), Option.some({ next, live: false, wait: false })] as const
          const caughtUp: StreamCaughtUp = { _tag: "CaughtUp", version: next - 1 }
          return [Chunk.unsafeFromArray<RecordedEvent | StreamCaughtUp>([...events, caughtUp]), Option.some({ next, live: true, wait: true })] as const
        })
      }
      // a short page ended the stream as it was: what comes later is announced, so the
      // next read waits for that (one read per notice, not two)
      return Effect.zipRight(s.wait ? wait : Effect.void, read(s.next)).pipe(
        Effect.map((events) =>
          [
            Chunk.unsafeFromArray<RecordedEvent | StreamCaughtUp>(events.slice()),
            Option.some({ next: s.next + events.length, live: true, wait: events.length < pageSize })
          ] as const
        )
      )
    })
  }))

interface Paging {
  readonly from: number
  readonly remaining: number
}

/**
 * At most `limit` events of one stream from version `start`, in pages of `pageSize`:
 * `page(from, count)` gives at most `count` events from version `from` in the read's
 * direction (newest first backwards), contiguous in version. Ends at a short page, at
 * version 1 backwards, or at the limit.
 */
export const pagedStream = <R>(
  page: (from: number, count: number) => Effect.Effect<ReadonlyArray<RecordedEvent>, ReadError, R>,
  start: number,
  forward: boolean,
  limit: number,
  pageSize: number
): Stream.Stream<RecordedEvent, ReadError, R> =>
  Stream.paginateChunkEffect<Paging, RecordedEvent, ReadError, R>({ from: start, remaining: limit }, (st) => {
    const count = Math.min(pageSize, st.remaining)
    if (count === 0) return Effect.succeed([Chunk.empty<RecordedEvent>(), Option.none<Paging>()] as const)
    return Effect.map(page(st.from, count), (events) => {
      const got = events.length
      const last = events[got - 1]
      const next = got < count || last === undefined || (!forward && last.version <= 1)
        ? Option.none<Paging>()
        : Option.some<Paging>({ from: forward ? last.version + 1 : last.version - 1, remaining: st.remaining - got })
      return [Chunk.unsafeFromArray(events), next] as const
    })
  })
