//! The schema, versioned in `tally_migrations`. Migrations only ever add. Each runs in its own
//! transaction under a transaction-level advisory lock scoped to the schema, so two processes starting
//! at once (or `tally migrate` beside a running server) apply each migration exactly once: the second
//! waits, then finds it applied.

use tally_core::ports::Error;

use crate::pg_error;

/// Each migration, in order; version n is `MIGRATIONS[n - 1]`.
pub const MIGRATIONS: &[&str] = &[
    r#"
-- The log's head: one row, locked first by every append and held until its commit, so appends are
-- serialized and positions are handed out densely, in commit order.
CREATE TABLE log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint  NOT NULL
);
INSERT INTO log_head (position) VALUES (0);

CREATE TABLE events (
    position       bigint      PRIMARY KEY,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL,
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL,
    data           text        NOT NULL,
    command_id     uuid        NOT NULL,
    correlation_id text,
    principal      text        NOT NULL
);
-- Every (stream, version) an event holds; an event in several streams has a row in each.
CREATE TABLE stream_index (
    stream_id text   NOT NULL,
    version   bigint NOT NULL,
    position  bigint NOT NULL,
    PRIMARY KEY (stream_id, version)
);

-- Commands as accepted by the intake, and their outcomes as committed with their events.
CREATE TABLE commands (
    command_id  uuid        PRIMARY KEY,
    kind        text        NOT NULL,
    key_id      text        NOT NULL,
    role        text        NOT NULL,
    scope       text,
    accepted_at timestamptz NOT NULL
);
CREATE TABLE outcomes (
    command_id uuid        PRIMARY KEY,
    decided_at timestamptz NOT NULL,
    position   bigint,
    code       text,
    message    text
);
CREATE TABLE idempotency (
    key_id       text        NOT NULL,
    idem_key     text        NOT NULL,
    request_hash bytea       NOT NULL,
    command_id   uuid        NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);

-- The command queue. A partition is worked by one consumer at a time: the one whose lease on its
-- row is current. `delivered_upto` is the last message handed to that consumer.
CREATE TABLE queue (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    uuid        NOT NULL UNIQUE,
    partition_key text        NOT NULL,
    payload       bytea       NOT NULL,
    deliveries    integer     NOT NULL DEFAULT 0,
    available_at  timestamptz NOT NULL DEFAULT now(),
    enqueued_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_by_partition ON queue (partition_key, seq);
CREATE TABLE queue_partitions (
    partition_key  text PRIMARY KEY,
    lease_until    timestamptz,
    leased_by      uuid,
    delivered_upto bigint
);
CREATE TABLE dead_letters (
    message_id    uuid        PRIMARY KEY,
    partition_key text        NOT NULL,
    payload       bytea       NOT NULL,
    reason        text        NOT NULL,
    failed_at     timestamptz NOT NULL
);

CREATE TABLE checkpoints (
    projection text   PRIMARY KEY,
    position   bigint NOT NULL
);
CREATE TABLE rm_inventory (
    store_id text   NOT NULL,
    item_id  text   NOT NULL,
    on_hand  bigint NOT NULL,
    PRIMARY KEY (store_id, item_id)
);
CREATE TABLE rm_store_daily (
    store_id       text   NOT NULL,
    date           date   NOT NULL,
    transactions   bigint NOT NULL,
    units_sold     bigint NOT NULL,
    gross_cents    bigint NOT NULL,
    returned_units bigint NOT NULL,
    returned_cents bigint NOT NULL,
    PRIMARY KEY (store_id, date)
);
CREATE INDEX rm_store_daily_by_date ON rm_store_daily (date);
CREATE TABLE rm_supplier_daily (
    supplier_id       text   NOT NULL,
    date              date   NOT NULL,
    deliveries        bigint NOT NULL,
    units_supplied    bigint NOT NULL,
    supply_cost_cents bigint NOT NULL,
    units_sold        bigint NOT NULL,
    sales_cents       bigint NOT NULL,
    PRIMARY KEY (supplier_id, date)
);

CREATE TABLE api_keys (
    key_id          text        PRIMARY KEY,
    secret_hash     bytea       NOT NULL UNIQUE,
    role            text        NOT NULL,
    scope           text,
    rate_per_second bigint,
    created_at      timestamptz NOT NULL,
    revoked_at      timestamptz
);
"#,
    r#"
-- Commands accepted for a broker queue whose publish is not confirmed yet (IntakeLedger).
CREATE TABLE outbox (
    message_id    uuid        PRIMARY KEY,
    partition_key text        NOT NULL,
    payload       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_by_age ON outbox (created_at);
"#,
    r#"
-- Per-key usage, flushed by each gateway every few seconds (KeyStore::record_usage).
ALTER TABLE api_keys
    ADD COLUMN requests     bigint      NOT NULL DEFAULT 0,
    ADD COLUMN rejections   bigint      NOT NULL DEFAULT 0,
    ADD COLUMN last_used_at timestamptz;
"#,
    r#"
-- Time travel (EventStore::position_at): an append records each event at the later of its own clock
-- and its predecessor's recorded_at, which the head row keeps, read and moved under its lock. So
-- recorded_at never decreases along the log, whatever the clocks of the appending processes, and the
-- events recorded by an instant are a prefix of the log, found with one seek on the index.
ALTER TABLE log_head ADD COLUMN recorded_at timestamptz;
UPDATE log_head SET recorded_at = (SELECT max(recorded_at) FROM events);
CREATE INDEX events_by_recorded_at ON events (recorded_at, position);
"#,
    r#"
-- Item daily sales per (store, item, business date), with the item's supplier; item reports read
-- it by its key, item first, and top items scan it. Filled from the log by the projector like the
-- other read models (one index only: at W1 it has five times the rows of the others together).
CREATE TABLE rm_item_daily (
    store_id       text   NOT NULL,
    item_id        text   NOT NULL,
    date           date   NOT NULL,
    supplier_id    text   NOT NULL,
    units_sold     bigint NOT NULL,
    gross_cents    bigint NOT NULL,
    returned_units bigint NOT NULL,
    returned_cents bigint NOT NULL,
    PRIMARY KEY (item_id, store_id, date)
);
"#,
    r#"
-- The journal: each store's moves per sealed interval of the log, in compact binary chunks
-- (tally_core::readmodel::journal), for time travel. Written once per chunk, never updated.
CREATE TABLE rm_journal (
    store_id       text   NOT NULL,
    interval_start bigint NOT NULL,
    interval_end   bigint NOT NULL,
    head           bytea  NOT NULL,
    moves          bytea  NOT NULL,
    PRIMARY KEY (store_id, interval_start)
);
-- Postcard's varints hardly compress: the moves are kept out of line, uncompressed.
ALTER TABLE rm_journal ALTER COLUMN moves SET STORAGE EXTERNAL;
"#,
    r#"
-- Data services: suppliers, stores and items as registered (the projection `reference`, filled
-- from the log on the first start of this version), and what was delivered per store, item and
-- business date beside what was sold (the view supplier_item_daily). Item daily sales are folded
-- again from the log (their rows lacked the deliveries; the projector does it by itself on start,
-- from the missing checkpoint): until it has caught up, their queries answer as of their
-- checkpoint, like any read model's. The views themselves are not here: they change with the
-- binary, not with the data, and are replaced when a backend opens (`dataservices`). They depend
-- on these tables: a later migration that changes a column a view reads drops that view first
-- (the next open makes it again).
CREATE TABLE rm_suppliers (
    supplier_id text PRIMARY KEY,
    name        text NOT NULL
);
CREATE TABLE rm_stores (
    store_id text PRIMARY KEY,
    name     text NOT NULL,
    timezone text NOT NULL
);
CREATE TABLE rm_items (
    item_id          text   PRIMARY KEY,
    name             text   NOT NULL,
    supplier_id      text   NOT NULL,
    unit_price_cents bigint NOT NULL
);
ALTER TABLE rm_item_daily
    ADD COLUMN units_supplied    bigint NOT NULL DEFAULT 0,
    ADD COLUMN supply_cost_cents bigint NOT NULL DEFAULT 0;
DELETE FROM rm_item_daily;
DELETE FROM checkpoints WHERE projection = 'item_daily_sales';
"#,
    r#"
-- Discounts and tills (sales' schema version 2). Store and item daily figures gain the discounts
-- given; rows written before hold 0, which is exact: no event before this version had a discount,
-- so no read model is folded again for them (the views only gain columns: they need no drop).
ALTER TABLE rm_store_daily ADD COLUMN discount_cents bigint NOT NULL DEFAULT 0;
ALTER TABLE rm_item_daily ADD COLUMN discount_cents bigint NOT NULL DEFAULT 0;
-- Sales per store, till and business date (the projection `till_daily_sales`); a sale rung up
-- without a till counts under till ''. It starts empty with no checkpoint, so the projector folds
-- it from the log on the first start of this version.
CREATE TABLE rm_till_daily (
    store_id       text   NOT NULL,
    till_id        text   NOT NULL,
    date           date   NOT NULL,
    transactions   bigint NOT NULL,
    gross_cents    bigint NOT NULL,
    discount_cents bigint NOT NULL,
    PRIMARY KEY (store_id, till_id, date)
);
-- The journal's chunks gained each sold line's discount, and chunks in the old form cannot be
-- decoded: they are emptied, and the missing checkpoint has the projector fold the journal again
-- from the log (until it has caught up, time travel reads the stores' streams from the log).
DELETE FROM rm_journal;
DELETE FROM checkpoints WHERE projection = 'journal';
"#,
    r#"
-- Events a projection could not apply (poison events): `stopped` (the projection halts before the
-- event until an operator retries or skips it) or `parked` (it went on without the event, which
-- can be retried later or dismissed).
CREATE TABLE projection_faults (
    projection TEXT        NOT NULL,
    position   BIGINT      NOT NULL,
    state      TEXT        NOT NULL CHECK (state IN ('stopped', 'parked')),
    reason     TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (projection, position)
);
"#,
    r#"
-- Item daily sales keyed store first (a store's items and weeks are one range of the key; an
-- item's days in one store too), and beside them the item totals: the same figures per item and
-- business date over every store, which the cross-store questions read (an item's days, a
-- supplier's sell-through, every item's returns) in about a store count fewer rows. Both are the
-- projection item_daily_sales, written in its transactions; the totals start as the sums of the
-- rows already there. The totals' date is `YYYY-MM-DD` text, the form the views show, so that a
-- view's date range is a range of the key (a date column would be compared through to_char, row
-- by row). A rebuild of item daily sales in progress is cancelled (its shadow has the old key);
-- the serving version stays.
ALTER TABLE rm_item_daily DROP CONSTRAINT rm_item_daily_pkey,
    ADD PRIMARY KEY (store_id, item_id, date);
CREATE TABLE rm_item_totals (
    item_id           text   NOT NULL,
    date              text   NOT NULL,
    supplier_id       text   NOT NULL,
    units_sold        bigint NOT NULL,
    gross_cents       bigint NOT NULL,
    returned_units    bigint NOT NULL,
    returned_cents    bigint NOT NULL,
    units_supplied    bigint NOT NULL,
    supply_cost_cents bigint NOT NULL,
    discount_cents    bigint NOT NULL,
    PRIMARY KEY (item_id, date)
);
INSERT INTO rm_item_totals
    SELECT item_id, to_char(date, 'YYYY-MM-DD'), min(supplier_id), sum(units_sold), sum(gross_cents),
           sum(returned_units), sum(returned_cents), sum(units_supplied), sum(supply_cost_cents),
           sum(discount_cents)
    FROM rm_item_daily GROUP BY item_id, date;
DROP TABLE IF EXISTS rm_item_daily_rebuild;
DELETE FROM checkpoints WHERE projection = 'rebuild:item_daily_sales';
"#,
    r#"
-- The journal's heads carry each store's whole stock and stream version at their interval's end
-- (time travel reads one head for a store's stock, not every interval's): chunks in the old form
-- cannot be decoded, so they are emptied, and the missing checkpoint has the projector fold the
-- journal again from the log (until it has caught up, time travel reads the stores' streams).
DELETE FROM rm_journal;
DELETE FROM checkpoints WHERE projection = 'journal';
"#,
];

/// What a migration run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version found.
    pub from: usize,
    /// The schema version now.
    pub to: usize,
}

/// A schema name tally accepts: it is spliced into SQL, so only `[a-z0-9_]`, not starting with a digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Applies the missing migrations, each in its own transaction under the schema's migration lock.
pub(crate) async fn migrate(
    client: &mut tokio_postgres::Client,
    schema: &str,
) -> Result<Migrated, Error> {
    let lock_key = format!("{schema}:migrate");
    // The schema and the bookkeeping table, created under the same lock: two processes creating them
    // at once would otherwise race on the catalog.
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg_error("starting the migration", e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&lock_key],
    )
    .await
    .map_err(|e| pg_error("taking the migration lock", e))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.tally_migrations (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )"
    ))
    .await
    .map_err(|e| pg_error("creating the schema", e))?;
    tx.commit()
        .await
        .map_err(|e| pg_error("creating the schema", e))?;
    let mut from = None;
    let mut to = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = (i + 1) as i32;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting a migration", e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&lock_key],
        )
        .await
        .map_err(|e| pg_error("taking the migration lock", e))?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM tally_migrations WHERE version = $1",
                &[&version],
            )
            .await
            .map_err(|e| pg_error("reading tally_migrations", e))?
            .is_some();
        if done {
            to = i + 1;
            tx.rollback()
                .await
                .map_err(|e| pg_error("ending a migration check", e))?;
            continue;
        }
        from.get_or_insert(i);
        tx.batch_execute(sql)
            .await
            .map_err(|e| pg_error(&format!("applying migration {version}"), e))?;
        tx.execute(
            "INSERT INTO tally_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|e| pg_error("recording a migration", e))?;
        tx.commit()
            .await
            .map_err(|e| pg_error(&format!("committing migration {version}"), e))?;
        to = i + 1;
    }
    Ok(Migrated {
        from: from.unwrap_or(to),
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_name("tally"));
        assert!(valid_name("t_0192_abc"));
        assert!(!valid_name(""));
        assert!(!valid_name("Tally"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name("a;drop table x"));
        assert!(!valid_name(&"a".repeat(64)));
    }
}
