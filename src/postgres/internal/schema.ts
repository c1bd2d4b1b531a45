/**
 * The store's schema in PostgreSQL: tables, indexes and the append function, created and
 * versioned by the layer (one row in `schema_version`).
 *
 * - `categories(category, partitions)`: the registry; a category's partition count is
 *   fixed when it is first written or followed.
 * - `partitions(category, partition)`: one row per partition, the lock every append to
 *   the partition takes (`FOR UPDATE`, held to commit). Positions are assigned under that
 *   lock (the next after the partition's last), so the committed rows of a partition are
 *   always a prefix `1..head`: a reader's cursor can never skip a row that commits later
 *   (a sequence, taken at INSERT and seen at COMMIT, would allow that).
 * - `streams(category, id, partition)`: the streams of each partition, written once per
 *   stream.
 *
 * No row is ever updated by an append: a partition's head and a stream's version are read
 * from the events' primary and unique indexes (the last entry of each), under the lock.
 * A counter row updated on every append would gather a version per append while any
 * session elsewhere holds an old snapshot (vacuum cannot remove them), and every lock and
 * every head poll would walk them. Measured (server time per append call, P = 1, one
 * session idle in a transaction, in blocks of 4,000 appends): 0.53, 0.79, 1.03, 1.30 ms
 * with a counter row updated per append; 0.35, 0.38, 0.42, 0.50 ms without (some growth
 * remains, not explained yet).
 * - `events(category, partition, pos, stream_id, version, event_id, type, data, meta,
 *   recorded_at)`: the log; `pos` is the position within the partition (entry id
 *   `pos-0`), `data` the event's JSON exactly as appended (text: cast it to jsonb to
 *   query it), `meta` the envelope's metadata JSON ("" when none). Unique
 *   `(category, stream_id, version)` and `(category, stream_id, event_id)` (the permanent
 *   idempotency map) back the append function's checks.
 *
 * Version 2 adds the services beside the event store:
 *
 * - `snapshots(category, stream_id, version, state_version, state)`: one snapshot per
 *   stream, `state` its JSON as text (NULL for a state JSON has no text for). A save is
 *   one upsert that keeps a snapshot at the same or a newer version.
 * - `projections(name, generation, cursor, reset_done, category, lease_member,
 *   lease_until, epoch)`: a projection's checkpoint and its lease, on the database's
 *   clock (`clock_timestamp()`): the token is `lease_member:epoch`, and `epoch` grows each
 *   time another lease begins. `save_checkpoint` checks lease and generation under the
 *   row's lock and writes in the same statement.
 * - `data_keys(subject, key_id, material)`: the key store of personal data, one 32-byte
 *   key per data subject.
 *
 * Each version's step is a list of its parts' DDL, so that parts added together stay
 * apart.
 *
 * @internal
 */

import { groupTables } from "./groupSchema.js"

/** The version of the schema this code creates and expects. */
export const schemaVersion = 2

/** A schema name the store accepts: a plain lower-case SQL identifier (no quoting surprises). */
export const isValidSchemaName = (name: unknown): name is string => typeof name === "string" && /^[a-z_][a-z0-9_]{0,62}$/.test(name)

/**
 * The head (last position, 0 when empty) of every partition of category `$1`, as
 * `[partition, head as text]` rows: one probe of the events' primary key per partition.
 */
export const headsQuery = (schema: string) =>
  `SELECT h.partition, coalesce((SELECT e.pos FROM "${schema}".events e WHERE e.category = h.category AND e.partition = h.partition ORDER BY e.pos DESC LIMIT 1), 0)::text
   FROM "${schema}".partitions h WHERE h.category = $1`

/** The key of the advisory lock that serialises schema creation across processes. */
export const migrationLockKey = (schema: string) => `effect-chronicle:${schema}`

/**
 * The statements that take a schema from `from` to `schemaVersion`, in order. Every
 * version's step is idempotent on its own tables (IF NOT EXISTS, CREATE OR REPLACE).
 */
export const migrations = (schema: string, from: number): ReadonlyArray<string> => {
  const s = `"${schema}"`
  const steps: Array<ReadonlyArray<string>> = [
    // version 1
    [
      `CREATE TABLE IF NOT EXISTS ${s}.categories (
        category text PRIMARY KEY,
        partitions int NOT NULL CHECK (partitions BETWEEN 1 AND 1024)
      )`,
      `CREATE TABLE IF NOT EXISTS ${s}.partitions (
        category text NOT NULL REFERENCES ${s}.categories (category),
        partition int NOT NULL,
        PRIMARY KEY (category, partition)
      )`,
      `CREATE TABLE IF NOT EXISTS ${s}.streams (
        category text NOT NULL,
        id text NOT NULL,
        partition int NOT NULL,
        PRIMARY KEY (category, id)
      )`,
      `CREATE TABLE IF NOT EXISTS ${s}.events (
        category text NOT NULL,
        partition int NOT NULL,
        pos bigint NOT NULL,
        stream_id text NOT NULL,
        version bigint NOT NULL,
        event_id uuid NOT NULL,
        type text NOT NULL,
        data text NOT NULL,
        meta text NOT NULL,
        recorded_at timestamptz NOT NULL,
        PRIMARY KEY (category, partition, pos),
        UNIQUE (category, stream_id, version),
        UNIQUE (category, stream_id, event_id)
      )`,
      registerFunction(s),
      appendFunction(s)
    ],
    // version 2: consumer groups (groupSchema.ts), snapshots, projections, personal-data
    // keys; and the append function as this version writes it (a version 1 schema keeps
    // its tables and gets the new function)
    [
      appendFunction(s),
      ...groupTables(s),
      ...snapshotTables(s),
      ...projectionTables(s),
      ...keyTables(s)
    ]
  ]
  return steps.slice(from).flat()
}

/** Snapshots (version 2): one per stream, never written over one at the same or a newer version. */
const snapshotTables = (s: string): ReadonlyArray<string> => [
  `CREATE TABLE IF NOT EXISTS ${s}.snapshots (
    category text NOT NULL,
    stream_id text NOT NULL,
    version bigint NOT NULL,
    state_version bigint NOT NULL,
    state text,
    PRIMARY KEY (category, stream_id)
  )`
]

/**
 * Projections (version 2): checkpoint and lease in one row per projection, and
 * `save_checkpoint(name, token, generation, cursor, reset_done, category)`, which locks
 * the row, checks the lease (held by `token`, not expired on the database's clock), then
 * the generation, and only then writes: 'ok', 'lease' or 'generation'.
 */
const projectionTables = (s: string): ReadonlyArray<string> => [
  `CREATE TABLE IF NOT EXISTS ${s}.projections (
    name text PRIMARY KEY,
    generation bigint NOT NULL DEFAULT 0,
    cursor text[],
    reset_done bigint NOT NULL DEFAULT 0,
    category text,
    lease_member text,
    lease_until timestamptz,
    epoch bigint NOT NULL DEFAULT 0
  )`,
  `CREATE OR REPLACE FUNCTION ${s}.save_checkpoint(
  p_name text, p_token text, p_generation bigint, p_cursor text[], p_reset_done bigint, p_category text
) RETURNS text
LANGUAGE plpgsql AS $fn$
DECLARE
  v_member text;
  v_epoch bigint;
  v_until timestamptz;
  v_generation bigint;
BEGIN
  SELECT p.lease_member, p.epoch, p.lease_until, p.generation INTO v_member, v_epoch, v_until, v_generation
    FROM ${s}.projections p WHERE p.name = p_name FOR UPDATE;
  IF NOT FOUND OR v_member IS NULL OR v_until IS NULL OR v_member || ':' || v_epoch <> p_token OR v_until <= clock_timestamp() THEN
    RETURN 'lease';
  END IF;
  IF v_generation <> p_generation THEN
    RETURN 'generation';
  END IF;
  UPDATE ${s}.projections p SET cursor = p_cursor, reset_done = p_reset_done, category = p_category WHERE p.name = p_name;
  RETURN 'ok';
END
$fn$`
]

/** The key store of personal data (version 2): one key per data subject, made once. */
const keyTables = (s: string): ReadonlyArray<string> => [
  `CREATE TABLE IF NOT EXISTS ${s}.data_keys (
    subject text PRIMARY KEY,
    key_id text NOT NULL,
    material bytea NOT NULL CHECK (octet_length(material) = 32)
  )`
]

/**
 * `register(category, partitions)`: records a category's partition count (and its
 * partition rows) if none is, and returns the recorded count. Separate statements, so
 * that the last one sees a row a concurrent first writer committed meanwhile.
 */
const registerFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.register(p_category text, p_partitions int) RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
  v_recorded int;
BEGIN
  SELECT c.partitions INTO v_recorded FROM ${s}.categories c WHERE c.category = p_category;
  IF FOUND THEN
    RETURN v_recorded;
  END IF;
  INSERT INTO ${s}.categories (category, partitions) VALUES (p_category, p_partitions) ON CONFLICT DO NOTHING;
  SELECT c.partitions INTO v_recorded FROM ${s}.categories c WHERE c.category = p_category;
  INSERT INTO ${s}.partitions (category, partition)
    SELECT p_category, g FROM generate_series(0, v_recorded - 1) AS g
    ON CONFLICT DO NOTHING;
  RETURN v_recorded;
END
$fn$`

/**
 * `append(category, partitions, partition, streams[], expected[], counts[], ids[],
 * types[], data[], meta[], lock_timeout_ms)`: appends one or more batches to ONE partition, in one
 * statement. It checks the recorded partition count, then locks the partition row
 * (FOR UPDATE, held to commit), then for each batch, in order and on its own, runs every
 * check before its first write:
 *  1. the batch's ids in the stream's id map: an exact replay (every id at consecutive
 *     versions from the first's, with the same types) returns the original versions
 *     and positions (`replay`), a partial one fails (`mismatch`, or `known` when the
 *     first id is new but a later one is not);
 *  2. the expected version (-1 any, -2 exists, else exact) against the stream's (`wev`);
 *  3. inserts the events at head + 1 … head + n (`ok`), head being the partition's
 *     last position, read under the lock.
 * One row per batch, in order: status, first
 * version (for `wev` the actual version, for `partitions` the recorded count), the
 * 0-based index and stored version and type of the id at fault, and the positions.
 *
 * It runs only at READ COMMITTED (each of its statements then sees what the lock's previous
 * holder committed); at another isolation level it fails (SQLSTATE 0A000) before any write.
 *
 * `expected` -1 is "any", -2 "exists", any other value the exact version. With
 * `lock_timeout_ms` above 0, waiting longer than that for the partition's lock fails the
 * call (SQLSTATE 55P03) with nothing written.
 *
 * When every batch of the call is for a stream of its own and none of their ids is known
 * (concurrent appends to different streams, the common case), ONE statement checks and
 * writes them all; otherwise they go one at a time as above (several statements each,
 * each batch seeing the earlier ones' writes). Both answer alike. Every lookup is a probe
 * of a unique index, kept so whatever the planner thinks of the tables' sizes (a join of
 * the ids with the events could become a hash of all the stream's ids: the per-batch
 * lookup cost grew with the stream's length, ~0.4 ms per call at 1,000 events, ~2 ms at
 * 4,000). Plans are generic: the planner would re-plan the one-statement path on every
 * call, which costs more than running it. Measured (server time, one connection, calls
 * in sequence): 125 single-event batches per call, 54–59 µs per batch one at a time,
 * 14 µs in one statement; a lone batch, on a stream of 1,000–2,000 events, 0.34 ms and
 * 0.11 ms.
 */
const appendFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.append(
  p_category text, p_partitions int, p_partition int,
  p_streams text[], p_expected bigint[], p_counts int[],
  p_ids uuid[], p_types text[], p_data text[], p_meta text[], p_lock_timeout_ms int DEFAULT 0
) RETURNS TABLE (r_status text, r_first bigint, r_index int, r_version bigint, r_type text, r_positions bigint[])
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
  v_recorded int;
  v_head bigint;
  v_now timestamptz;
  v_off int := 0;
  v_n int;
  v_stream text;
  v_current bigint;
  v_expected bigint;
  v_versions bigint[];
  v_types text[];
  v_positions bigint[];
  v_bad int;
BEGIN
  -- each statement below must see what the lock's previous holder committed: a snapshot
  -- taken once for the transaction would not (and would write at a position taken)
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'effect-chronicle: appends need the READ COMMITTED isolation level; this transaction runs at %', current_setting('transaction_isolation')
      USING ERRCODE = '0A000';
  END IF;
  IF p_lock_timeout_ms > 0 THEN
    -- for this transaction only: the caller's single statement
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
  END IF;
  SELECT c.partitions INTO v_recorded FROM ${s}.categories c WHERE c.category = p_category;
  IF NOT FOUND THEN
    v_recorded := ${s}.register(p_category, p_partitions);
  END IF;
  IF v_recorded <> p_partitions THEN
    RETURN QUERY SELECT 'partitions'::text, v_recorded::bigint, NULL::int, NULL::bigint, NULL::text, NULL::bigint[]
      FROM generate_series(1, cardinality(p_streams));
    RETURN;
  END IF;
  PERFORM 1 FROM ${s}.partitions h WHERE h.category = p_category AND h.partition = p_partition FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'effect-chronicle: category % has no row for partition %', p_category, p_partition;
  END IF;
  -- a new statement, so a new snapshot: it sees what the lock's previous holder committed
  SELECT e.pos INTO v_head FROM ${s}.events e WHERE e.category = p_category AND e.partition = p_partition ORDER BY e.pos DESC LIMIT 1;
  v_head := coalesce(v_head, 0);
  -- taken under the lock: commit times never go back within a partition
  v_now := clock_timestamp();
  -- the common case in one statement: every batch for a stream of its own and none of its
  -- ids known, so that no batch's checks depend on another's writes. It writes nothing and
  -- returns no row otherwise, and the loop below (several statements per batch) answers.
  -- The lookups are subqueries in the select list, so that each stays one index probe
  -- whatever the planner thinks of the tables' sizes.
  RETURN QUERY
    WITH b AS (
      SELECT t.i, t.stream, t.expected, t.n, (sum(t.n) OVER (ORDER BY t.i) - t.n)::int AS off
      FROM unnest(p_streams, p_expected, p_counts) WITH ORDINALITY AS t(stream, expected, n, i)
    ), c AS (
      SELECT b.*,
        coalesce((SELECT e.version FROM ${s}.events e WHERE e.category = p_category AND e.stream_id = b.stream ORDER BY e.version DESC LIMIT 1), 0) AS cur,
        (SELECT bool_or(EXISTS (SELECT 1 FROM ${s}.events e WHERE e.category = p_category AND e.stream_id = b.stream AND e.event_id = x.id))
         FROM unnest(p_ids[b.off + 1 : b.off + b.n]) AS x(id)) AS known
      FROM b
    ), fast AS (
      SELECT NOT bool_or(c.known) AND count(DISTINCT c.stream) = count(*) AS yes FROM c
    ), placed AS (
      SELECT g.*, v_head + sum(CASE WHEN g.good THEN g.n ELSE 0 END) OVER (ORDER BY g.i) - g.n AS start
      FROM (SELECT c.*, (c.expected = -1 OR (c.expected = -2 AND c.cur > 0) OR c.expected = c.cur) AS good FROM c) AS g
    ), written AS (
      INSERT INTO ${s}.events (category, partition, pos, stream_id, version, event_id, type, data, meta, recorded_at)
        SELECT p_category, p_partition, p.start + k, p.stream, p.cur + k, p_ids[p.off + k], p_types[p.off + k], p_data[p.off + k], p_meta[p.off + k], v_now
        FROM placed p, generate_series(1, p.n) AS k WHERE p.good AND (SELECT yes FROM fast)
    ), registered AS (
      INSERT INTO ${s}.streams (category, id, partition)
        SELECT p_category, p.stream, p_partition FROM placed p WHERE p.good AND p.cur = 0 AND (SELECT yes FROM fast)
        ON CONFLICT DO NOTHING
    )
    SELECT CASE WHEN p.good THEN 'ok' ELSE 'wev' END, CASE WHEN p.good THEN p.cur + 1 ELSE p.cur END, NULL::int, NULL::bigint, NULL::text,
      CASE WHEN p.good THEN ARRAY(SELECT generate_series(p.start + 1, p.start + p.n)) END
    FROM placed p WHERE (SELECT yes FROM fast) ORDER BY p.i;
  IF FOUND THEN
    RETURN;
  END IF;
  FOR b IN 1 .. cardinality(p_streams) LOOP
    v_n := p_counts[b];
    v_stream := p_streams[b];
    r_status := NULL; r_first := NULL; r_index := NULL; r_version := NULL; r_type := NULL; r_positions := NULL;
    SELECT array_agg(e.version ORDER BY x.i), array_agg(e.type ORDER BY x.i), array_agg(e.pos ORDER BY x.i)
      INTO v_versions, v_types, v_positions
      FROM unnest(p_ids[v_off + 1 : v_off + v_n]) WITH ORDINALITY AS x(id, i)
      -- a probe per id (LIMIT keeps the subquery from becoming a join, which the planner
      -- may make a hash of all the stream's ids: a cost growing with the stream)
      LEFT JOIN LATERAL (SELECT e.version, e.type, e.pos FROM ${s}.events e
                         WHERE e.category = p_category AND e.stream_id = v_stream AND e.event_id = x.id LIMIT 1) AS e ON true;
    IF v_versions[1] IS NOT NULL THEN
      -- the first id is known: an exact replay, or nothing
      v_bad := NULL;
      FOR i IN 1 .. v_n LOOP
        IF v_versions[i] IS NULL OR v_versions[i] <> v_versions[1] + i - 1 OR v_types[i] <> p_types[v_off + i] THEN
          v_bad := i;
          EXIT;
        END IF;
      END LOOP;
      IF v_bad IS NULL THEN
        r_status := 'replay'; r_first := v_versions[1]; r_positions := v_positions;
      ELSE
        r_status := 'mismatch'; r_first := v_versions[1]; r_index := v_bad - 1;
        r_version := v_versions[v_bad]; r_type := v_types[v_bad];
      END IF;
    ELSE
      v_bad := NULL;
      FOR i IN 2 .. v_n LOOP
        IF v_versions[i] IS NOT NULL THEN
          v_bad := i;
          EXIT;
        END IF;
      END LOOP;
      IF v_bad IS NOT NULL THEN
        r_status := 'known'; r_index := v_bad - 1; r_version := v_versions[v_bad]; r_type := v_types[v_bad];
      ELSE
        -- earlier batches of this call included: the same transaction sees its own writes
        SELECT e.version INTO v_current FROM ${s}.events e WHERE e.category = p_category AND e.stream_id = v_stream ORDER BY e.version DESC LIMIT 1;
        v_current := coalesce(v_current, 0);
        v_expected := p_expected[b];
        IF NOT (v_expected = -1 OR (v_expected = -2 AND v_current > 0) OR v_expected = v_current) THEN
          r_status := 'wev'; r_first := v_current;
        ELSE
          INSERT INTO ${s}.events (category, partition, pos, stream_id, version, event_id, type, data, meta, recorded_at)
            SELECT p_category, p_partition, v_head + x.i, v_stream, v_current + x.i, x.id, x.t, x.d, x.m, v_now
            FROM unnest(p_ids[v_off + 1 : v_off + v_n], p_types[v_off + 1 : v_off + v_n],
                        p_data[v_off + 1 : v_off + v_n], p_meta[v_off + 1 : v_off + v_n]) WITH ORDINALITY AS x(id, t, d, m, i);
          IF v_current = 0 THEN
            INSERT INTO ${s}.streams (category, id, partition) VALUES (p_category, v_stream, p_partition) ON CONFLICT DO NOTHING;
          END IF;
          r_status := 'ok'; r_first := v_current + 1;
          r_positions := ARRAY(SELECT generate_series(v_head + 1, v_head + v_n));
          v_head := v_head + v_n;
        END IF;
      END IF;
    END IF;
    v_off := v_off + v_n;
    RETURN NEXT;
  END LOOP;
END
$fn$`
