//! Data services on SQLite: an operator's queries run on connections of their own that cannot
//! write and can read the views alone, enforced by SQLite itself:
//!
//! - the file is opened read-only (`SQLITE_OPEN_READONLY`) and `PRAGMA query_only` is on;
//! - the views are `TEMP` views of each connection, which shadow the tables of the same name
//!   (`events`) and are the only names a query's SQL may read: an authorizer refuses, at prepare
//!   time, any read of a table not reached through one of them, and every pragma, attach,
//!   transaction control, write and function outside a list of pure ones;
//! - a progress handler cancels a statement past its time limit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tally_core::dataservices::{
    Bind, Cell, Column, DataServices, Query, RunError, Table, VIEWS, placeholders,
};
use tally_core::readmodel::PROJECTIONS;
use tally_core::{Error, ports};

use crate::Readers;
use crate::Sqlite;
use crate::writer::sql_error;

/// The views, as each data services connection defines them (temporary, so they shadow the tables
/// and change with the binary, never with a migration). Dates are `YYYY-MM-DD` text (`week` is the
/// Monday of the date's ISO week, so weekly figures group the same on every backend), instants
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` text (UTC), money integer cents. `docs/views.md` documents them.
const VIEW_SQL: &str = r#"
CREATE TEMP VIEW suppliers AS SELECT supplier_id, name FROM main.rm_suppliers;
CREATE TEMP VIEW stores AS SELECT store_id, name, timezone FROM main.rm_stores;
CREATE TEMP VIEW items AS SELECT item_id, name, supplier_id, unit_price_cents FROM main.rm_items;
CREATE TEMP VIEW inventory AS SELECT store_id, item_id, on_hand FROM main.rm_inventory;
CREATE TEMP VIEW store_daily_sales AS
    SELECT store_id, date, transactions, units_sold, gross_cents, returned_units, returned_cents,
           gross_cents - discount_cents - returned_cents AS net_cents,
           date(date, '-6 days', 'weekday 1') AS week,
           discount_cents
    FROM main.rm_store_daily;
CREATE TEMP VIEW supplier_daily AS
    SELECT supplier_id, date, deliveries, units_supplied, supply_cost_cents, units_sold, sales_cents
    FROM main.rm_supplier_daily;
CREATE TEMP VIEW item_daily_sales AS
    SELECT store_id, item_id, supplier_id, date, units_sold, gross_cents, returned_units,
           returned_cents, gross_cents - discount_cents - returned_cents AS net_cents,
           date(date, '-6 days', 'weekday 1') AS week,
           discount_cents
    FROM main.rm_item_daily
    WHERE units_sold <> 0 OR gross_cents <> 0 OR returned_units <> 0 OR returned_cents <> 0
       OR discount_cents <> 0;
CREATE TEMP VIEW supplier_item_daily AS
    SELECT supplier_id, item_id, store_id, date, units_supplied, supply_cost_cents, units_sold,
           gross_cents - discount_cents AS sales_cents
    FROM main.rm_item_daily;
CREATE TEMP VIEW item_daily_totals AS
    SELECT item_id, supplier_id, date, units_sold, gross_cents, returned_units, returned_cents,
           gross_cents - discount_cents - returned_cents AS net_cents,
           date(date, '-6 days', 'weekday 1') AS week, discount_cents, units_supplied,
           supply_cost_cents, gross_cents - discount_cents AS sales_cents
    FROM main.rm_item_totals;
CREATE TEMP VIEW till_daily_sales AS
    SELECT store_id, NULLIF(till_id, '') AS till_id, date, transactions, gross_cents, discount_cents
    FROM main.rm_till_daily
    WHERE transactions <> 0 OR gross_cents <> 0 OR discount_cents <> 0;
CREATE TEMP VIEW events AS
    SELECT position, stream_id, event_type AS type, schema_version,
           strftime('%Y-%m-%dT%H:%M:%S', occurred_at / 1000000000, 'unixepoch')
               || printf('.%06dZ', (occurred_at / 1000) % 1000000) AS occurred_at,
           strftime('%Y-%m-%dT%H:%M:%S', recorded_at / 1000000000, 'unixepoch')
               || printf('.%06dZ', (recorded_at / 1000) % 1000000) AS recorded_at,
           data
    FROM main.events;
"#;

/// Functions a query may call: SQLite's pure scalar, aggregate, window, date and JSON functions.
/// Anything else (`load_extension`, and whatever a future build adds) is refused at prepare time.
const FUNCTIONS: &[&str] = &[
    "abs",
    "avg",
    "cast",
    "char",
    "coalesce",
    "count",
    "cume_dist",
    "date",
    "datetime",
    "dense_rank",
    "first_value",
    "format",
    "glob",
    "group_concat",
    "hex",
    "ifnull",
    "iif",
    "instr",
    "julianday",
    "lag",
    "last_value",
    "lead",
    "length",
    "like",
    "lower",
    "ltrim",
    "max",
    "min",
    "nth_value",
    "ntile",
    "nullif",
    "percent_rank",
    "printf",
    "quote",
    "rank",
    "replace",
    "round",
    "row_number",
    "rtrim",
    "sign",
    "strftime",
    "string_agg",
    "substr",
    "substring",
    "sum",
    "time",
    "total",
    "trim",
    "typeof",
    "unicode",
    "unixepoch",
    "upper",
    "json",
    "json_array",
    "json_array_length",
    "json_extract",
    "json_group_array",
    "json_group_object",
    "json_object",
    "json_quote",
    "json_type",
    "json_valid",
    "concat",
    "concat_ws",
    "octet_length",
    "ceil",
    "ceiling",
    "floor",
    "mod",
    "power",
    "pow",
    "sqrt",
    "trunc",
    "exp",
    "ln",
    "log",
    "log10",
    "log2",
    "pi",
];

/// The tables behind the views. The views' own SQL reads them; so does a statement SQLite rewrites
/// (`count(*)` of a view reads its table, with no view named to the authorizer). A query's SQL may
/// not name them (nor a schema), so it reaches them through the views alone.
const BACKING: &[&str] = &[
    "rm_suppliers",
    "rm_stores",
    "rm_items",
    "rm_inventory",
    "rm_store_daily",
    "rm_supplier_daily",
    "rm_item_daily",
    "rm_item_totals",
    "rm_till_daily",
    "events",
];

/// Names a query's SQL may not use: the tables behind the views (but `events`, which is a view's
/// name too) and the schemas, by which a table could be named past the views.
fn named_past_the_views(sql: &str) -> Option<String> {
    placeholders::identifiers(sql).into_iter().find(|w| {
        (BACKING.contains(&w.as_str()) && w != "events")
            || ["main", "temp", "temporary"].contains(&w.as_str())
            || w.starts_with("sqlite_")
    })
}

/// The table-valued functions a query may read from (pure).
const TABLE_FUNCTIONS: &[&str] = &["json_each", "json_tree"];

/// A data services connection and the state its hooks read.
pub(crate) struct Guarded {
    conn: Connection,
    /// While false, the connection's own statements (the checkpoints) run unrestricted.
    user: Arc<AtomicBool>,
    /// What the authorizer last refused, to name it in the error.
    denied: Arc<std::sync::Mutex<Option<String>>>,
    /// When the running statement must stop: nanoseconds since `epoch` (0: no limit).
    deadline: Arc<AtomicU64>,
    epoch: Instant,
}

/// Most data services statements at once (each holds a blocking thread while it runs).
const MAX_DATA_READERS: usize = 4;

pub(crate) fn readers(path: PathBuf) -> Readers<Guarded> {
    Readers::with(path, MAX_DATA_READERS, open)
}

fn open(path: &Path) -> Result<Guarded, Error> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_error)?;
    conn.execute_batch("PRAGMA busy_timeout=5000; PRAGMA temp_store=MEMORY;")
        .map_err(sql_error)?;
    conn.execute_batch(VIEW_SQL).map_err(sql_error)?;
    conn.execute_batch("PRAGMA query_only=1;")
        .map_err(sql_error)?;
    let user = Arc::new(AtomicBool::new(false));
    let denied = Arc::new(std::sync::Mutex::new(None));
    let (gate, refused) = (user.clone(), denied.clone());
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        if !gate.load(Ordering::Relaxed) {
            return Authorization::Allow;
        }
        let answer = authorize(&ctx);
        if answer == Authorization::Deny
            && let Ok(mut slot) = refused.lock()
        {
            *slot = Some(what(&ctx.action));
        }
        answer
    }))
    .map_err(sql_error)?;
    let (deadline, epoch) = (Arc::new(AtomicU64::new(0)), Instant::now());
    let due = deadline.clone();
    conn.progress_handler(
        10_000,
        Some(move || {
            let at = due.load(Ordering::Relaxed);
            at != 0 && epoch.elapsed().as_nanos() as u64 > at
        }),
    )
    .map_err(sql_error)?;
    Ok(Guarded {
        conn,
        user,
        denied,
        deadline,
        epoch,
    })
}

/// What a query's SQL may do: read the views (and the tables behind them, through them), call
/// pure functions, read `json_each`/`json_tree`. Nothing else.
fn authorize(ctx: &AuthContext<'_>) -> Authorization {
    let through_view = ctx.accessor.is_some_and(|v| VIEWS.contains(&v));
    match ctx.action {
        AuthAction::Select | AuthAction::Recursive => Authorization::Allow,
        AuthAction::Read { table_name, .. } => {
            let allowed = match ctx.database_name {
                // No database: a common table expression or a subquery of the statement itself.
                None => true,
                Some("temp") => VIEWS.contains(&table_name),
                Some("main") => through_view || BACKING.contains(&table_name),
                Some(_) => false,
            };
            if allowed || TABLE_FUNCTIONS.contains(&table_name) {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }
        AuthAction::Function { function_name } => {
            let name = function_name.to_ascii_lowercase();
            if FUNCTIONS.contains(&name.as_str()) {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }
        _ => Authorization::Deny,
    }
}

/// What an action the authorizer refused was, in a few words.
fn what(action: &AuthAction<'_>) -> String {
    match action {
        AuthAction::Read { table_name, .. } => format!("reading {table_name}"),
        AuthAction::Function { function_name } => format!("the function {function_name}"),
        AuthAction::Pragma { pragma_name, .. } => format!("PRAGMA {pragma_name}"),
        AuthAction::Attach { .. } => "ATTACH".to_owned(),
        AuthAction::Insert { table_name } => format!("writing to {table_name}"),
        AuthAction::Update { table_name, .. } => format!("writing to {table_name}"),
        AuthAction::Delete { table_name } => format!("deleting from {table_name}"),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            "a transaction statement".to_owned()
        }
        other => format!("{other:?}"),
    }
}

impl Guarded {
    /// What the authorizer refused last, taken.
    fn refused(&self) -> Option<String> {
        self.denied.lock().ok().and_then(|mut d| d.take())
    }

    /// Runs `f` with the query's restrictions on and its time limit set.
    fn restricted<T>(&self, timeout: Option<Duration>, f: impl FnOnce(&Connection) -> T) -> T {
        let at = match timeout {
            Some(t) => ((self.epoch.elapsed() + t).as_nanos() as u64).max(1),
            None => 0,
        };
        self.deadline.store(at, Ordering::Relaxed);
        if let Ok(mut d) = self.denied.lock() {
            *d = None;
        }
        self.user.store(true, Ordering::Relaxed);
        let r = f(&self.conn);
        self.user.store(false, Ordering::Relaxed);
        self.deadline.store(0, Ordering::Relaxed);
        r
    }
}

/// The JSON type of a column SQLite declares (a view's column keeps its table's declared type;
/// an expression has none, and its type is read from the answer's first value).
fn declared(decl: Option<&str>) -> Option<&'static str> {
    let decl = decl?.to_ascii_uppercase();
    Some(if decl.contains("INT") {
        "integer"
    } else if decl.contains("CHAR") || decl.contains("TEXT") || decl.contains("CLOB") {
        "string"
    } else if decl.contains("REAL") || decl.contains("FLOA") || decl.contains("DOUB") {
        "number"
    } else if decl.contains("BOOL") {
        "boolean"
    } else {
        return None;
    })
}

fn columns(stmt: &rusqlite::Statement<'_>) -> Vec<Column> {
    stmt.columns()
        .map(|c| Column {
            name: c.name().to_owned(),
            ty: declared(c.decl_type()).unwrap_or("").to_owned(),
        })
        .collect()
}

/// The problem with a statement, as a sentence: SQLite's own words, named plainly (with what the
/// authorizer refused, when it did).
fn prepare_problem(e: &rusqlite::Error, refused: Option<String>) -> String {
    match e {
        rusqlite::Error::MultipleStatement => "more than one statement".to_owned(),
        rusqlite::Error::SqliteFailure(f, Some(m))
            if f.code == rusqlite::ErrorCode::AuthorizationForStatementDenied =>
        {
            let what = refused.unwrap_or_else(|| m.clone());
            format!(
                "not allowed: {what} (a query may read the views only: {})",
                VIEWS.join(", ")
            )
        }
        rusqlite::Error::SqliteFailure(_, Some(m)) => m.clone(),
        other => other.to_string(),
    }
}

fn past_the_views(name: &str) -> String {
    format!(
        "not allowed: {name} (a query may read the views only: {})",
        VIEWS.join(", ")
    )
}

fn describe(g: &Guarded, sql: &str) -> Result<Vec<Column>, String> {
    if let Some(name) = named_past_the_views(sql) {
        return Err(past_the_views(&name));
    }
    g.restricted(None, |conn| {
        let stmt = conn
            .prepare(sql)
            .map_err(|e| prepare_problem(&e, g.refused()))?;
        if !stmt.readonly() {
            return Err("the statement writes; a query may only read".to_owned());
        }
        Ok(columns(&stmt))
    })
}

fn cell(v: ValueRef<'_>) -> Cell {
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Integer(i),
        ValueRef::Real(r) => Cell::Real(r),
        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Cell::Text(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

fn kind(c: &Cell) -> &'static str {
    match c {
        Cell::Null => "",
        Cell::Integer(_) => "integer",
        Cell::Real(_) => "number",
        Cell::Text(_) => "string",
        Cell::Boolean(_) => "boolean",
    }
}

fn run(
    g: &Guarded,
    sql: &str,
    binds: &[Bind],
    limit: usize,
    timeout: Duration,
) -> Result<Table, RunError> {
    let sqlite = |e: rusqlite::Error| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            RunError::Timeout(timeout)
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            RunError::Storage(sql_error(e))
        }
        other => RunError::Refused(prepare_problem(&other, g.refused())),
    };
    if let Some(name) = named_past_the_views(sql) {
        return Err(RunError::Refused(past_the_views(&name)));
    }
    // One read transaction: the position read first is the snapshot the rows come from.
    g.conn.execute_batch("BEGIN").map_err(sqlite)?;
    let answer = (|| {
        let position = position(&g.conn).map_err(RunError::Storage)?;
        g.restricted(Some(timeout), |conn| {
            let mut stmt = conn.prepare_cached(sql).map_err(sqlite)?;
            let mut table = Table {
                columns: columns(&stmt),
                position,
                ..Table::default()
            };
            let params = binds.iter().map(|b| match b {
                Bind::Null => rusqlite::types::Value::Null,
                Bind::Integer(i) => rusqlite::types::Value::Integer(*i),
                Bind::Text(t) => rusqlite::types::Value::Text(t.clone()),
                // SQLite has no boolean: true and false are 1 and 0.
                Bind::Boolean(b) => rusqlite::types::Value::Integer(i64::from(*b)),
            });
            let mut rows = stmt
                .query(rusqlite::params_from_iter(params))
                .map_err(sqlite)?;
            let width = table.columns.len();
            while let Some(row) = rows.next().map_err(sqlite)? {
                if table.rows.len() == limit {
                    table.truncated = true;
                    break;
                }
                let mut cells = Vec::with_capacity(width);
                for i in 0..width {
                    cells.push(cell(row.get_ref(i).map_err(sqlite)?));
                }
                table.rows.push(cells);
            }
            for (i, c) in table.columns.iter_mut().enumerate() {
                if c.ty.is_empty() {
                    let first = table
                        .rows
                        .iter()
                        .map(|r| kind(&r[i]))
                        .find(|k| !k.is_empty());
                    c.ty = first.unwrap_or("").to_owned();
                }
            }
            Ok(table)
        })
    })();
    let _ = g.conn.execute_batch("COMMIT");
    answer
}

/// The read models' position: the least checkpoint of the projections the views read.
fn position(conn: &Connection) -> ports::Result<u64> {
    let all = crate::read::checkpoints(conn)?;
    Ok(PROJECTIONS
        .iter()
        .map(|p| all.get(*p).copied().unwrap_or(0))
        .min()
        .unwrap_or(0))
}

#[async_trait]
impl DataServices for Sqlite {
    async fn describe(&self, query: &Query) -> Result<Vec<Column>, String> {
        let sql = query.numbered(|n, _| format!("?{n}"));
        self.data
            .read(move |g| Ok(describe(g, &sql)))
            .await
            .map_err(|e| e.to_string())?
    }

    async fn run(&self, query: &Query, binds: Vec<Bind>, limit: usize) -> Result<Table, RunError> {
        let sql = query.numbered(|n, _| format!("?{n}"));
        let timeout = query.timeout;
        self.data
            .read(move |g| Ok(run(g, &sql, &binds, limit, timeout)))
            .await?
    }
}
