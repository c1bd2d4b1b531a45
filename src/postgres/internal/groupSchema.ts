/**
 * The consumer groups' tables and functions (schema version 2), beside the store's
 * (schema.ts). Every operation that moves an entry is ONE call of a function that first
 * locks the (group, partition) row and checks the caller's lease on the database's clock
 * (`owner`, `epoch`, `lease_until > clock_timestamp()`), so a read, claim, ack or
 * dead-letter by a member whose lease lapsed changes nothing: reads are fenced by
 * construction, whatever the process's own clock says.
 *
 * - `groups(name, category, partitions)`: the registry (a name reads one category).
 * - `group_partitions(grp, partition, …)`: per partition of a group, the lease (`owner`,
 *   `epoch`, `lease_until`), the `fence` every claim's first page moves on (a read sent
 *   before a claim, whose reply was given up on, takes nothing when it runs later), the
 *   last log position delivered (`delivered`), the checkpoint (`acked`: every position up
 *   to it is acknowledged), the last redelivery id given out (`redelivery_head`) and the
 *   dead-letter sequence (`dead_seq`). The log's pending entries are the positions in
 *   `(acked, delivered]` not in `acks`: reading and acknowledging in order writes one row.
 * - `group_members(grp, member, expires_at, in_flight)`: live members, expiring by the
 *   database's clock, with the in-flight counts they last reported (JSON).
 * - `acks(grp, partition, id)`: positions acknowledged out of order, above the checkpoint
 *   (taken back into it as soon as the positions before them are acknowledged).
 * - `deliveries(grp, partition, id, deliveries, started)`: delivery counts and handler
 *   starts of log entries delivered more than once (claimed by a new owner); every other
 *   pending entry was delivered once.
 * - `pending_redeliveries(grp, partition, id, entry_pos, deliveries, started)`: delivered
 *   and not acknowledged redeliveries.
 * - `redeliveries(grp, partition, id, entry_pos)`: replayed dead letters not yet
 *   delivered, read before the log.
 * - `dead_letters(grp, partition, seq, …)`: parked entries, with what went wrong (never
 *   the event's data, which stays in `events`).
 *
 * @internal
 */

/** The DDL and functions of the consumer groups, for `schema` (already quoted). */
export const groupTables = (s: string): ReadonlyArray<string> => [
  `CREATE TABLE IF NOT EXISTS ${s}.groups (
    name text PRIMARY KEY,
    category text NOT NULL,
    partitions int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
  )`,
  `CREATE TABLE IF NOT EXISTS ${s}.group_partitions (
    grp text NOT NULL REFERENCES ${s}.groups (name),
    partition int NOT NULL,
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    lease_until timestamptz,
    fence bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL,
    acked bigint NOT NULL,
    redelivery_head bigint NOT NULL DEFAULT 0,
    dead_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, partition)
  )`,
  `CREATE TABLE IF NOT EXISTS ${s}.group_members (
    grp text NOT NULL,
    member text NOT NULL,
    expires_at timestamptz NOT NULL,
    in_flight text NOT NULL DEFAULT '{}',
    PRIMARY KEY (grp, member)
  )`,
  `CREATE TABLE IF NOT EXISTS ${s}.acks (
    grp text NOT NULL,
    partition int NOT NULL,
    id bigint NOT NULL,
    PRIMARY KEY (grp, partition, id)
  )`,
  `CREATE TABLE IF NOT EXISTS ${s}.deliveries (
    grp text NOT NULL,
    partition int NOT NULL,
    id bigint NOT NULL,
    deliveries int NOT NULL DEFAULT 1,
    started int NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, partition, id)
  )`,
  `CREATE TABLE IF NOT EXISTS ${s}.pending_redeliveries (
    grp text NOT NULL,
    partition int NOT NULL,
    id bigint NOT NULL,
    entry_pos bigint NOT NULL,
    deliveries int NOT NULL,
    started int NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, partition, id)
  )`,
  `CREATE TABLE IF NOT EXISTS ${s}.redeliveries (
    grp text NOT NULL,
    partition int NOT NULL,
    id bigint NOT NULL,
    entry_pos bigint NOT NULL,
    PRIMARY KEY (grp, partition, id)
  )`,
  `CREATE TABLE IF NOT EXISTS ${s}.dead_letters (
    grp text NOT NULL,
    partition int NOT NULL,
    seq bigint NOT NULL,
    entry_pos bigint NOT NULL,
    event_id text NOT NULL,
    stream text NOT NULL,
    version bigint NOT NULL,
    type text NOT NULL,
    error_tag text NOT NULL,
    message text NOT NULL,
    attempts int NOT NULL,
    deliveries int NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (grp, partition, seq)
  )`,
  ensureGroupFunction(s),
  heartbeatFunction(s),
  ackLogFunction(s),
  readFunction(s),
  claimFunction(s),
  beginFunction(s),
  ackFunction(s),
  deadLetterFunction(s),
  replayFunction(s)
]

/** The last position of a partition (0 when empty): one probe of the events' primary key. */
const head = (s: string, category: string, partition: string) =>
  `coalesce((SELECT e.pos FROM ${s}.events e WHERE e.category = ${category} AND e.partition = ${partition} ORDER BY e.pos DESC LIMIT 1), 0)`

/**
 * Locks the (group, partition) row into `v_gp` and sets `v_status` to 'ok', 'nogroup' or
 * 'lost' (another owner or epoch, or the lease lapsed by the database's clock).
 */
const leaseCheck = (s: string) => `
  SELECT gp.* INTO v_gp FROM ${s}.group_partitions gp WHERE gp.grp = p_grp AND gp.partition = p_partition FOR UPDATE;
  IF NOT FOUND THEN
    v_status := 'nogroup';
  ELSIF v_gp.owner IS DISTINCT FROM p_owner OR v_gp.epoch <> p_epoch OR v_gp.lease_until IS NULL OR v_gp.lease_until <= clock_timestamp() THEN
    v_status := 'lost';
  ELSE
    v_status := 'ok';
  END IF;`

/**
 * `ensure_group(name, category, partitions, from_end)`: creates the group with a row per
 * partition (positioned at the start, or at each partition's head) unless it exists;
 * returns the group's category and partition count and whether it was created.
 */
const ensureGroupFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.ensure_group(p_name text, p_category text, p_partitions int, p_from_end boolean)
RETURNS TABLE (r_category text, r_partitions int, r_created boolean)
LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO ${s}.groups (name, category, partitions) VALUES (p_name, p_category, p_partitions) ON CONFLICT DO NOTHING;
  IF FOUND THEN
    INSERT INTO ${s}.group_partitions (grp, partition, delivered, acked)
      SELECT p_name, g, h, h FROM (
        SELECT g, CASE WHEN p_from_end THEN ${head(s, "p_category", "g")} ELSE 0 END AS h
        FROM generate_series(0, p_partitions - 1) AS g) x;
    RETURN QUERY SELECT p_category, p_partitions, true;
    RETURN;
  END IF;
  RETURN QUERY SELECT g.category, g.partitions, false FROM ${s}.groups g WHERE g.name = p_name;
END
$fn$`

/**
 * `heartbeat(grp, member, ttl_ms, in_flight)`: renews the member, drops expired members
 * (rows another heartbeat holds are left to it), and returns the live members
 * (`member` rows) and the owner of each leased partition (`owner` rows); one `nogroup`
 * row when the group does not exist.
 */
const heartbeatFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.heartbeat(p_grp text, p_member text, p_ttl_ms int, p_in_flight text)
RETURNS TABLE (r_kind text, r_name text, r_partition int)
LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM 1 FROM ${s}.groups g WHERE g.name = p_grp;
  IF NOT FOUND THEN
    RETURN QUERY SELECT 'nogroup'::text, NULL::text, NULL::int;
    RETURN;
  END IF;
  INSERT INTO ${s}.group_members AS m (grp, member, expires_at, in_flight)
    VALUES (p_grp, p_member, clock_timestamp() + p_ttl_ms * interval '1 millisecond', p_in_flight)
    ON CONFLICT (grp, member) DO UPDATE SET expires_at = EXCLUDED.expires_at, in_flight = EXCLUDED.in_flight;
  DELETE FROM ${s}.group_members m WHERE (m.grp, m.member) IN (
    SELECT x.grp, x.member FROM ${s}.group_members x
    WHERE x.grp = p_grp AND x.expires_at <= clock_timestamp() FOR UPDATE SKIP LOCKED);
  RETURN QUERY SELECT 'member'::text, m.member, NULL::int FROM ${s}.group_members m
    WHERE m.grp = p_grp AND m.expires_at > clock_timestamp() ORDER BY m.member;
  RETURN QUERY SELECT 'owner'::text, gp.owner, gp.partition FROM ${s}.group_partitions gp
    WHERE gp.grp = p_grp AND gp.lease_until > clock_timestamp();
END
$fn$`

/** The event columns every delivery row carries, from `events e`. */
const EVENT_COLUMNS = `e.stream_id, e.version, e.event_id::text, e.type, e.data, e.meta, (extract(epoch FROM e.recorded_at) * 1000)::double precision`

const DELIVERY_ROW = `(r_partition int, r_kind text, r_id bigint, r_deliveries int, r_pos bigint,
  r_stream text, r_version bigint, r_event_id text, r_type text, r_data text, r_meta text, r_recorded double precision,
  r_tail_log bigint, r_tail_redelivery bigint)`

/**
 * `read(grp, category, owner, partitions[], epochs[], fences[], tail_logs[], tail_redeliveries[], count)`:
 * the fenced read of one or more leased partitions of a group. Per partition, in order:
 * when tails are given and neither the log nor the redelivery list moved past them,
 * nothing (no row, no lock); otherwise the lease check (a `lost` or `nogroup` row), the
 * fence (a claim since the caller learnt it: a `fenced` row, nothing taken), then up to
 * `count` entries, redeliveries first (`redelivery` rows) then the log (`log` rows),
 * each pending from then on with one delivery, and a `tail` row when fewer than
 * `count` were there (where the log and the redeliveries end). The log's committed
 * positions are the gapless prefix 1..head, so the next positions are a range.
 */
const readFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.read(
  p_grp text, p_category text, p_owner text, p_partitions int[], p_epochs bigint[], p_fences bigint[],
  p_tail_logs bigint[], p_tail_redeliveries bigint[], p_count int
) RETURNS TABLE ${DELIVERY_ROW}
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  v_gp ${s}.group_partitions%ROWTYPE;
  v_status text;
  p_partition int;
  p_epoch bigint;
  v_head bigint;
  v_taken int;
  v_last bigint;
BEGIN
  FOR i IN 1 .. cardinality(p_partitions) LOOP
    p_partition := p_partitions[i];
    p_epoch := p_epochs[i];
    IF p_tail_logs[i] IS NOT NULL THEN
      SELECT gp.redelivery_head INTO v_last FROM ${s}.group_partitions gp WHERE gp.grp = p_grp AND gp.partition = p_partition;
      IF FOUND AND v_last <= p_tail_redeliveries[i] AND ${head(s, "p_category", "p_partition")} <= p_tail_logs[i] THEN
        CONTINUE;
      END IF;
    END IF;
    ${leaseCheck(s)}
    IF v_status <> 'ok' THEN
      RETURN QUERY SELECT p_partition, v_status, NULL::bigint, NULL::int, NULL::bigint, NULL::text, NULL::bigint, NULL::text,
        NULL::text, NULL::text, NULL::text, NULL::double precision, NULL::bigint, NULL::bigint;
      CONTINUE;
    END IF;
    IF p_fences[i] IS NOT NULL AND p_fences[i] <> v_gp.fence THEN
      RETURN QUERY SELECT p_partition, 'fenced'::text, NULL::bigint, NULL::int, NULL::bigint, NULL::text, NULL::bigint, NULL::text,
        NULL::text, NULL::text, NULL::text, NULL::double precision, NULL::bigint, NULL::bigint;
      CONTINUE;
    END IF;
    v_taken := 0;
    IF v_gp.redelivery_head > 0 THEN
      RETURN QUERY
        WITH taken AS (
          DELETE FROM ${s}.redeliveries rd WHERE rd.grp = p_grp AND rd.partition = p_partition AND rd.id IN (
            SELECT x.id FROM ${s}.redeliveries x WHERE x.grp = p_grp AND x.partition = p_partition ORDER BY x.id LIMIT p_count)
          RETURNING rd.id, rd.entry_pos
        ), put AS (
          INSERT INTO ${s}.pending_redeliveries (grp, partition, id, entry_pos, deliveries)
            SELECT p_grp, p_partition, t.id, t.entry_pos, 1 FROM taken t
        )
        SELECT p_partition, 'redelivery'::text, t.id, 1, t.entry_pos, ${EVENT_COLUMNS}, NULL::bigint, NULL::bigint
        FROM taken t JOIN ${s}.events e ON e.category = p_category AND e.partition = p_partition AND e.pos = t.entry_pos
        ORDER BY t.id;
      GET DIAGNOSTICS v_taken = ROW_COUNT;
    END IF;
    v_head := ${head(s, "p_category", "p_partition")};
    v_last := least(v_head, v_gp.delivered + (p_count - v_taken));
    IF v_last > v_gp.delivered THEN
      UPDATE ${s}.group_partitions gp SET delivered = v_last WHERE gp.grp = p_grp AND gp.partition = p_partition;
      RETURN QUERY
        SELECT p_partition, 'log'::text, e.pos, 1, e.pos, ${EVENT_COLUMNS}, NULL::bigint, NULL::bigint
        FROM ${s}.events e WHERE e.category = p_category AND e.partition = p_partition AND e.pos > v_gp.delivered AND e.pos <= v_last
        ORDER BY e.pos;
      v_taken := v_taken + (v_last - v_gp.delivered)::int;
    END IF;
    IF v_taken < p_count THEN
      RETURN QUERY SELECT p_partition, 'tail'::text, NULL::bigint, NULL::int, NULL::bigint, NULL::text, NULL::bigint, NULL::text,
        NULL::text, NULL::text, NULL::text, NULL::double precision, v_head, v_gp.redelivery_head;
    END IF;
  END LOOP;
END
$fn$`

/**
 * `claim(grp, category, partition, owner, epoch, source, from, count)`: moves one page of
 * the partition's pending list (one source, ids from `from`, oldest first) to `owner`,
 * counting the delivery. A claim's first page (the redeliveries from 0) moves the fence
 * on. Returns the entries (`log` or `redelivery` rows) and one `next` row: the id the
 * next page starts from (NULL when the source is taken whole) and the fence (in
 * `r_tail_log`); or one `lost` / `nogroup` row.
 */
const claimFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.claim(
  p_grp text, p_category text, p_partition int, p_owner text, p_epoch bigint, p_source smallint, p_from bigint, p_count int
) RETURNS TABLE ${DELIVERY_ROW}
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  v_gp ${s}.group_partitions%ROWTYPE;
  v_status text;
  v_ids bigint[];
  v_next bigint;
BEGIN
  ${leaseCheck(s)}
  IF v_status <> 'ok' THEN
    RETURN QUERY SELECT p_partition, v_status, NULL::bigint, NULL::int, NULL::bigint, NULL::text, NULL::bigint, NULL::text,
      NULL::text, NULL::text, NULL::text, NULL::double precision, NULL::bigint, NULL::bigint;
    RETURN;
  END IF;
  IF p_source = 1 AND p_from = 0 THEN
    UPDATE ${s}.group_partitions gp SET fence = fence + 1 WHERE gp.grp = p_grp AND gp.partition = p_partition RETURNING gp.fence INTO v_gp.fence;
  END IF;
  IF p_source = 1 THEN
    SELECT array_agg(x.id ORDER BY x.id) INTO v_ids FROM (
      SELECT pd.id FROM ${s}.pending_redeliveries pd WHERE pd.grp = p_grp AND pd.partition = p_partition AND pd.id >= p_from
      ORDER BY pd.id LIMIT p_count + 1) x;
  ELSE
    -- the log's pending entries: (acked, delivered] less those acknowledged out of order
    SELECT array_agg(x.g ORDER BY x.g) INTO v_ids FROM (
      SELECT g FROM generate_series(greatest(v_gp.acked + 1, p_from), v_gp.delivered) AS g
      WHERE NOT EXISTS (SELECT 1 FROM ${s}.acks a WHERE a.grp = p_grp AND a.partition = p_partition AND a.id = g)
      ORDER BY g LIMIT p_count + 1) x;
  END IF;
  v_ids := coalesce(v_ids, '{}');
  IF cardinality(v_ids) > p_count THEN
    v_next := v_ids[p_count + 1];
    v_ids := v_ids[1 : p_count];
  END IF;
  IF p_source = 1 THEN
    RETURN QUERY
      WITH moved AS (
        UPDATE ${s}.pending_redeliveries pd SET deliveries = pd.deliveries + 1
        WHERE pd.grp = p_grp AND pd.partition = p_partition AND pd.id = ANY (v_ids)
        RETURNING pd.id, pd.entry_pos, pd.deliveries
      )
      SELECT p_partition, 'redelivery'::text, m.id, m.deliveries, m.entry_pos, ${EVENT_COLUMNS}, NULL::bigint, NULL::bigint
      FROM moved m JOIN ${s}.events e ON e.category = p_category AND e.partition = p_partition AND e.pos = m.entry_pos
      ORDER BY m.id;
  ELSE
    RETURN QUERY
      WITH moved AS (
        INSERT INTO ${s}.deliveries AS d (grp, partition, id, deliveries)
          SELECT p_grp, p_partition, x, 2 FROM unnest(v_ids) AS x
          ON CONFLICT (grp, partition, id) DO UPDATE SET deliveries = d.deliveries + 1
        RETURNING d.id, d.deliveries
      )
      SELECT p_partition, 'log'::text, m.id, m.deliveries, m.id, ${EVENT_COLUMNS}, NULL::bigint, NULL::bigint
      FROM moved m JOIN ${s}.events e ON e.category = p_category AND e.partition = p_partition AND e.pos = m.id
      ORDER BY m.id;
  END IF;
  RETURN QUERY SELECT p_partition, 'next'::text, v_next, NULL::int, NULL::bigint, NULL::text, NULL::bigint, NULL::text,
    NULL::text, NULL::text, NULL::text, NULL::double precision, v_gp.fence, NULL::bigint;
END
$fn$`

/**
 * `begin(grp, partition, owner, epoch, source, id)`: counts a handler start of a pending
 * entry; returns the handler starts across its deliveries, this one included (the first
 * delivery counts as one), or -1 for a lost lease and -2 for a group that does not exist.
 */
const beginFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.begin(p_grp text, p_partition int, p_owner text, p_epoch bigint, p_source smallint, p_id bigint)
RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
  v_gp ${s}.group_partitions%ROWTYPE;
  v_status text;
  v_started int;
BEGIN
  ${leaseCheck(s)}
  IF v_status = 'nogroup' THEN RETURN -2; END IF;
  IF v_status = 'lost' THEN RETURN -1; END IF;
  IF p_source = 1 THEN
    UPDATE ${s}.pending_redeliveries pd SET started = pd.started + 1
      WHERE pd.grp = p_grp AND pd.partition = p_partition AND pd.id = p_id
      RETURNING pd.started INTO v_started;
  ELSE
    INSERT INTO ${s}.deliveries AS d (grp, partition, id, started) VALUES (p_grp, p_partition, p_id, 1)
      ON CONFLICT (grp, partition, id) DO UPDATE SET started = d.started + 1
      RETURNING d.started INTO v_started;
  END IF;
  RETURN coalesce(v_started, 1) + 1;
END
$fn$`

/**
 * `ack_log(grp, partition, acked, delivered, ids[])`, inside a call that holds the
 * (group, partition) row: acknowledges log positions. Those that continue the checkpoint
 * move it on (with any acknowledged out of order just past it); the others are recorded
 * in \`acks\` until it reaches them. Returns how many of the ids were pending.
 */
const ackLogFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.ack_log(p_grp text, p_partition int, p_acked bigint, p_delivered bigint, p_ids bigint[])
RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
  v_ids bigint[];
  v_prefix int;
  v_run bigint;
  v_more bigint;
  v_pending int;
BEGIN
  SELECT array_agg(DISTINCT x ORDER BY x) INTO v_ids FROM unnest(p_ids) AS x WHERE x > p_acked AND x <= p_delivered;
  IF v_ids IS NULL THEN RETURN 0; END IF;
  -- the sorted ids that continue the checkpoint: x = acked + i
  SELECT count(*) INTO v_prefix FROM unnest(v_ids) WITH ORDINALITY AS u(x, i) WHERE u.x = p_acked + u.i;
  v_run := p_acked + v_prefix;
  v_pending := v_prefix;
  IF v_prefix < cardinality(v_ids) THEN
    WITH put AS (
      INSERT INTO ${s}.acks (grp, partition, id) SELECT p_grp, p_partition, x FROM unnest(v_ids[v_prefix + 1 :]) AS x
      ON CONFLICT DO NOTHING RETURNING 1)
    SELECT v_pending + count(*) INTO v_pending FROM put;
  END IF;
  -- when the checkpoint moved, the positions acknowledged out of order that now continue
  -- it (one index probe each, as far as the run goes; none moved it otherwise: acked + 1
  -- is never in acks)
  IF v_prefix > 0 THEN
    WITH RECURSIVE run(id) AS (
      SELECT v_run
      UNION ALL
      SELECT run.id + 1 FROM run
      WHERE EXISTS (SELECT 1 FROM ${s}.acks a WHERE a.grp = p_grp AND a.partition = p_partition AND a.id = run.id + 1)
    )
    SELECT max(run.id) INTO v_more FROM run;
    v_run := greatest(v_run, coalesce(v_more, v_run));
    IF v_run > p_acked THEN
      DELETE FROM ${s}.acks a WHERE a.grp = p_grp AND a.partition = p_partition AND a.id <= v_run;
      DELETE FROM ${s}.deliveries d WHERE d.grp = p_grp AND d.partition = p_partition AND d.id > p_acked AND d.id <= v_run;
      UPDATE ${s}.group_partitions gp SET acked = v_run WHERE gp.grp = p_grp AND gp.partition = p_partition;
    END IF;
  END IF;
  RETURN v_pending;
END
$fn$`

/**
 * `ack(grps[], partitions[], owners[], epochs[], counts[], sources[], ids[])`: acknowledges
 * entries of one or more leased partitions (the i-th takes the next `counts[i]` of
 * `sources` and `ids`), each checked on its own; one status per partition, in order:
 * 'ok', 'lost' or 'nogroup'. Callers send the partitions sorted (rows are locked in that
 * order, as every other call locks them).
 */
const ackFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.ack(
  p_grps text[], p_partitions int[], p_owners text[], p_epochs bigint[], p_counts int[], p_sources smallint[], p_ids bigint[]
) RETURNS TABLE (r_status text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  v_gp ${s}.group_partitions%ROWTYPE;
  v_status text;
  p_grp text;
  p_partition int;
  p_owner text;
  p_epoch bigint;
  v_off int := 0;
  v_sources smallint[];
  v_ids bigint[];
BEGIN
  FOR i IN 1 .. cardinality(p_partitions) LOOP
    p_grp := p_grps[i];
    p_partition := p_partitions[i];
    p_owner := p_owners[i];
    p_epoch := p_epochs[i];
    v_sources := p_sources[v_off + 1 : v_off + p_counts[i]];
    v_ids := p_ids[v_off + 1 : v_off + p_counts[i]];
    v_off := v_off + p_counts[i];
    ${leaseCheck(s)}
    IF v_status = 'ok' THEN
      IF 1 = ANY (v_sources) THEN
        DELETE FROM ${s}.pending_redeliveries pd WHERE pd.grp = p_grp AND pd.partition = p_partition
          AND pd.id IN (SELECT x.id FROM unnest(v_sources, v_ids) AS x(source, id) WHERE x.source = 1);
      END IF;
      PERFORM ${s}.ack_log(p_grp, p_partition, v_gp.acked, v_gp.delivered,
        ARRAY(SELECT x.id FROM unnest(v_sources, v_ids) AS x(source, id) WHERE x.source = 0));
    END IF;
    r_status := v_status;
    RETURN NEXT;
  END LOOP;
END
$fn$`

/**
 * `dead_letter(grp, partition, owner, epoch, source, id, event_id, stream, version, type,
 * error_tag, message, attempts, deliveries)`: parks a pending entry and removes it from
 * the pending list, atomically; 'ok', 'lost' or 'nogroup'. An entry no longer pending
 * (parked or acknowledged already: a repeated call) is left as it is.
 */
const deadLetterFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.dead_letter(
  p_grp text, p_partition int, p_owner text, p_epoch bigint, p_source smallint, p_id bigint,
  p_event_id text, p_stream text, p_version bigint, p_type text, p_error_tag text, p_message text, p_attempts int, p_deliveries int
) RETURNS text
LANGUAGE plpgsql AS $fn$
DECLARE
  v_gp ${s}.group_partitions%ROWTYPE;
  v_status text;
  v_entry bigint;
BEGIN
  ${leaseCheck(s)}
  IF v_status <> 'ok' THEN RETURN v_status; END IF;
  IF p_source = 1 THEN
    DELETE FROM ${s}.pending_redeliveries pd WHERE pd.grp = p_grp AND pd.partition = p_partition AND pd.id = p_id
      RETURNING pd.entry_pos INTO v_entry;
    IF NOT FOUND THEN RETURN 'ok'; END IF;
  ELSE
    IF ${s}.ack_log(p_grp, p_partition, v_gp.acked, v_gp.delivered, ARRAY[p_id]) = 0 THEN RETURN 'ok'; END IF;
    v_entry := p_id;
  END IF;
  UPDATE ${s}.group_partitions gp SET dead_seq = dead_seq + 1 WHERE gp.grp = p_grp AND gp.partition = p_partition
    RETURNING gp.dead_seq INTO v_gp.dead_seq;
  INSERT INTO ${s}.dead_letters (grp, partition, seq, entry_pos, event_id, stream, version, type, error_tag, message, attempts, deliveries, at)
    VALUES (p_grp, p_partition, v_gp.dead_seq, v_entry, p_event_id, p_stream, p_version, p_type, p_error_tag, p_message, p_attempts, p_deliveries, clock_timestamp());
  RETURN 'ok';
END
$fn$`

/**
 * `replay(grp, partitions[], seqs[])`: moves dead letters (all when `partitions` is NULL,
 * else those (partition, seq) pairs) to their partition's redeliveries, oldest first per
 * partition; returns how many moved, or -1 when the group does not exist.
 */
const replayFunction = (s: string) => `
CREATE OR REPLACE FUNCTION ${s}.replay(p_grp text, p_partitions int[], p_seqs bigint[])
RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
  v_partition int;
  v_head bigint;
  v_n int;
  v_moved int := 0;
BEGIN
  PERFORM 1 FROM ${s}.groups g WHERE g.name = p_grp;
  IF NOT FOUND THEN RETURN -1; END IF;
  -- partition by partition, in order (the order every call locks group rows in), each
  -- moved as one set: its row locked once, its redelivery ids given in one step
  FOR v_partition IN
    SELECT DISTINCT dl.partition FROM ${s}.dead_letters dl
    WHERE dl.grp = p_grp AND (p_partitions IS NULL OR dl.partition = ANY (p_partitions))
    ORDER BY dl.partition
  LOOP
    SELECT gp.redelivery_head INTO v_head FROM ${s}.group_partitions gp
      WHERE gp.grp = p_grp AND gp.partition = v_partition FOR UPDATE;
    WITH moved AS (
      DELETE FROM ${s}.dead_letters dl
      WHERE dl.grp = p_grp AND dl.partition = v_partition
        AND (p_partitions IS NULL OR dl.seq IN (SELECT x.seq FROM unnest(p_partitions, p_seqs) AS x(partition, seq) WHERE x.partition = v_partition))
      RETURNING dl.seq, dl.entry_pos
    ), put AS (
      INSERT INTO ${s}.redeliveries (grp, partition, id, entry_pos)
        SELECT p_grp, v_partition, v_head + row_number() OVER (ORDER BY m.seq), m.entry_pos FROM moved m
      RETURNING 1
    )
    SELECT count(*) INTO v_n FROM put;
    IF v_n > 0 THEN
      UPDATE ${s}.group_partitions gp SET redelivery_head = v_head + v_n WHERE gp.grp = p_grp AND gp.partition = v_partition;
      v_moved := v_moved + v_n;
    END IF;
  END LOOP;
  RETURN v_moved;
END
$fn$`
