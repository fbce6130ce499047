//! The schema, versioned with `PRAGMA user_version`. Migrations only ever add.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    occurred_at    INTEGER NOT NULL,
    recorded_at    INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    command_id     BLOB    NOT NULL,
    correlation_id TEXT,
    principal      TEXT    NOT NULL
);
CREATE TABLE stream_index (
    stream_id TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (stream_id, version)
) WITHOUT ROWID;
CREATE TABLE commands (
    command_id  BLOB PRIMARY KEY,
    kind        TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    scope       TEXT,
    accepted_at INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    position    INTEGER,
    code        TEXT,
    message     TEXT
) WITHOUT ROWID;
CREATE TABLE idempotency (
    key_id       TEXT    NOT NULL,
    idem_key     TEXT    NOT NULL,
    request_hash BLOB    NOT NULL,
    command_id   BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (key_id, idem_key)
) WITHOUT ROWID;
CREATE TABLE queue (
    seq           INTEGER PRIMARY KEY,
    message_id    BLOB    NOT NULL UNIQUE,
    partition_key TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    deliveries    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE dead_letters (
    message_id    BLOB PRIMARY KEY,
    partition_key TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    reason        TEXT    NOT NULL,
    failed_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    projection TEXT PRIMARY KEY,
    position   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE rm_inventory (
    store_id TEXT    NOT NULL,
    item_id  TEXT    NOT NULL,
    on_hand  INTEGER NOT NULL,
    PRIMARY KEY (store_id, item_id)
) WITHOUT ROWID;
CREATE TABLE rm_store_daily (
    store_id       TEXT    NOT NULL,
    date           TEXT    NOT NULL,
    transactions   INTEGER NOT NULL,
    units_sold     INTEGER NOT NULL,
    gross_cents    INTEGER NOT NULL,
    returned_units INTEGER NOT NULL,
    returned_cents INTEGER NOT NULL,
    PRIMARY KEY (store_id, date)
) WITHOUT ROWID;
CREATE INDEX rm_store_daily_by_date ON rm_store_daily (date);
CREATE TABLE rm_supplier_daily (
    supplier_id       TEXT    NOT NULL,
    date              TEXT    NOT NULL,
    deliveries        INTEGER NOT NULL,
    units_supplied    INTEGER NOT NULL,
    supply_cost_cents INTEGER NOT NULL,
    units_sold        INTEGER NOT NULL,
    sales_cents       INTEGER NOT NULL,
    PRIMARY KEY (supplier_id, date)
) WITHOUT ROWID;
CREATE TABLE api_keys (
    key_id          TEXT PRIMARY KEY,
    secret_hash     BLOB    NOT NULL UNIQUE,
    role            TEXT    NOT NULL,
    scope           TEXT,
    rate_per_second INTEGER,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);
"#,
    r#"
-- Commands accepted for a broker queue whose publish is not confirmed yet (IntakeLedger).
CREATE TABLE outbox (
    message_id    BLOB PRIMARY KEY,
    partition_key TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX outbox_by_age ON outbox (created_at);
"#,
    r#"
-- Per-key usage, flushed by each gateway every few seconds (KeyStore::record_usage).
ALTER TABLE api_keys ADD COLUMN requests     INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN rejections   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
"#,
    r#"
-- Time travel (EventStore::position_at): the writer records each event at the later of its own
-- clock and its predecessor's recorded_at, so recorded_at never decreases along the log and the
-- events recorded by an instant are a prefix of it, found with one seek (the index holds the rowid).
CREATE INDEX events_by_recorded_at ON events (recorded_at);
"#,
    r#"
-- Item daily sales per (store, item, business date), with the item's supplier; item reports read
-- it by its key, item first, and top items scan it. Filled from the log by the projector like the
-- other read models (one index only: at W1 it has five times the rows of the others together).
CREATE TABLE rm_item_daily (
    store_id       TEXT    NOT NULL,
    item_id        TEXT    NOT NULL,
    date           TEXT    NOT NULL,
    supplier_id    TEXT    NOT NULL,
    units_sold     INTEGER NOT NULL,
    gross_cents    INTEGER NOT NULL,
    returned_units INTEGER NOT NULL,
    returned_cents INTEGER NOT NULL,
    PRIMARY KEY (item_id, store_id, date)
) WITHOUT ROWID;
"#,
    r#"
-- The journal: each store's moves per sealed interval of the log, in compact binary chunks
-- (tally_core::readmodel::journal), for time travel. Written once per chunk, never updated.
CREATE TABLE rm_journal (
    store_id       TEXT    NOT NULL,
    interval_start INTEGER NOT NULL,
    interval_end   INTEGER NOT NULL,
    head           BLOB    NOT NULL,
    moves          BLOB    NOT NULL
);
CREATE UNIQUE INDEX rm_journal_by_store ON rm_journal (store_id, interval_start);
"#,
    r#"
-- Data services: suppliers, stores and items as registered (the projection `reference`, filled
-- from the log on the first start of this version), and what was delivered per store, item and
-- business date beside what was sold (the view supplier_item_daily). Item daily sales are folded
-- again from the log (their rows lacked the deliveries): until the projector has caught up, their
-- queries wait or answer as of their checkpoint, like any read model's.
CREATE TABLE rm_suppliers (
    supplier_id TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE rm_stores (
    store_id TEXT NOT NULL PRIMARY KEY,
    name     TEXT NOT NULL,
    timezone TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE rm_items (
    item_id          TEXT    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL,
    supplier_id      TEXT    NOT NULL,
    unit_price_cents INTEGER NOT NULL
) WITHOUT ROWID;
ALTER TABLE rm_item_daily ADD COLUMN units_supplied    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rm_item_daily ADD COLUMN supply_cost_cents INTEGER NOT NULL DEFAULT 0;
DELETE FROM rm_item_daily;
DELETE FROM checkpoints WHERE projection = 'item_daily_sales';
"#,
    r#"
-- Discounts and tills (sales' schema version 2). The daily figures gain the discounts given; rows
-- written before hold 0, which is exact: no event before this version had a discount, so nothing
-- is folded again for them. Sales per till are a new read model, folded from the log on the first
-- start of this version (a sale without a till counts under till ''). The journal's chunks gained
-- each sold line's discount and cannot be read in their old form: they are emptied and folded
-- again from the log; until then time travel reads the stores' streams from the log (exact, slower).
ALTER TABLE rm_store_daily ADD COLUMN discount_cents INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rm_item_daily ADD COLUMN discount_cents INTEGER NOT NULL DEFAULT 0;
CREATE TABLE rm_till_daily (
    store_id       TEXT    NOT NULL,
    till_id        TEXT    NOT NULL,
    date           TEXT    NOT NULL,
    transactions   INTEGER NOT NULL,
    gross_cents    INTEGER NOT NULL,
    discount_cents INTEGER NOT NULL,
    PRIMARY KEY (store_id, till_id, date)
) WITHOUT ROWID;
DELETE FROM rm_journal;
DELETE FROM checkpoints WHERE projection = 'journal';
"#,
    r#"
-- Events a projection could not apply (poison events): `stopped` (the projection halts before the
-- event until an operator retries or skips it) or `parked` (it went on without the event, which
-- can be retried later or dismissed).
CREATE TABLE projection_faults (
    projection TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('stopped', 'parked')),
    reason     TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (projection, position)
) WITHOUT ROWID;
"#,
    r#"
-- Item daily sales keyed store first (a store's items and weeks are one range of the key; an
-- item's days in one store too), and beside them the item totals: the same figures per item and
-- business date over every store, which the cross-store questions read (an item's days, a
-- supplier's sell-through, every item's returns) in about a store count fewer rows. Both are the
-- projection item_daily_sales, written in its transactions; the totals start as the sums of the
-- rows already there. A rebuild of it in progress is cancelled (its shadow has the old key); the
-- serving version stays.
CREATE TABLE rm_item_daily_by_store (
    store_id          TEXT    NOT NULL,
    item_id           TEXT    NOT NULL,
    date              TEXT    NOT NULL,
    supplier_id       TEXT    NOT NULL,
    units_sold        INTEGER NOT NULL,
    gross_cents       INTEGER NOT NULL,
    returned_units    INTEGER NOT NULL,
    returned_cents    INTEGER NOT NULL,
    units_supplied    INTEGER NOT NULL DEFAULT 0,
    supply_cost_cents INTEGER NOT NULL DEFAULT 0,
    discount_cents    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, item_id, date)
) WITHOUT ROWID;
INSERT INTO rm_item_daily_by_store
    SELECT store_id, item_id, date, supplier_id, units_sold, gross_cents, returned_units,
           returned_cents, units_supplied, supply_cost_cents, discount_cents
    FROM rm_item_daily ORDER BY store_id, item_id, date;
DROP TABLE rm_item_daily;
ALTER TABLE rm_item_daily_by_store RENAME TO rm_item_daily;
CREATE TABLE rm_item_totals (
    item_id           TEXT    NOT NULL,
    date              TEXT    NOT NULL,
    supplier_id       TEXT    NOT NULL,
    units_sold        INTEGER NOT NULL,
    gross_cents       INTEGER NOT NULL,
    returned_units    INTEGER NOT NULL,
    returned_cents    INTEGER NOT NULL,
    units_supplied    INTEGER NOT NULL,
    supply_cost_cents INTEGER NOT NULL,
    discount_cents    INTEGER NOT NULL,
    PRIMARY KEY (item_id, date)
) WITHOUT ROWID;
INSERT INTO rm_item_totals
    SELECT item_id, date, min(supplier_id), sum(units_sold), sum(gross_cents), sum(returned_units),
           sum(returned_cents), sum(units_supplied), sum(supply_cost_cents), sum(discount_cents)
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

/// The intake's file, `intake.db`: what a command is before the processor decides it. Its writer commits
/// nothing else, so a request's 202 never waits behind an append or a read-model update. Before this
/// file existed these tables lived in `tally.db` (where they stay, emptied: see `Sqlite::open`).
const INTAKE_MIGRATIONS: &[&str] = &[r#"
CREATE TABLE queue (
    seq           INTEGER PRIMARY KEY,
    message_id    BLOB    NOT NULL UNIQUE,
    partition_key TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    deliveries    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE dead_letters (
    message_id    BLOB PRIMARY KEY,
    partition_key TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    reason        TEXT    NOT NULL,
    failed_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE idempotency (
    key_id       TEXT    NOT NULL,
    idem_key     TEXT    NOT NULL,
    request_hash BLOB    NOT NULL,
    command_id   BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (key_id, idem_key)
) WITHOUT ROWID;
-- Commands accepted for a broker queue whose publish is not confirmed yet (IntakeLedger).
CREATE TABLE outbox (
    message_id    BLOB PRIMARY KEY,
    partition_key TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX outbox_by_age ON outbox (created_at);
-- The accepted record of a command handed to a broker: once published, its message is out of reach.
-- (A command on this file's own queue needs none: its message is its record until it is decided.)
CREATE TABLE accepted (
    command_id  BLOB PRIMARY KEY,
    kind        TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    scope       TEXT,
    accepted_at INTEGER NOT NULL
) WITHOUT ROWID;
"#];

/// Brings the schema of `tally.db` up to date; safe to run on every start.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    run(conn, MIGRATIONS)
}

/// Brings the schema of `intake.db` up to date; safe to run on every start.
pub(crate) fn migrate_intake(conn: &mut Connection) -> rusqlite::Result<()> {
    run(conn, INTAKE_MIGRATIONS)
}

fn run(conn: &mut Connection, migrations: &[&str]) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in migrations.iter().enumerate().skip(current.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
