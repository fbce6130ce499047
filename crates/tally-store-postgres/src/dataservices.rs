//! Data services on PostgreSQL: an operator's queries run as a role that can read the views and
//! nothing else, enforced by PostgreSQL itself:
//!
//! - the views live in a schema of their own, `<schema>_views`, replaced when a backend opens (they
//!   change with the binary, never with the data). A view runs with its owner's rights, so the role
//!   `<schema>_query` needs nothing on the tables: USAGE on the views' schema and SELECT on the
//!   views are all it has, nothing on `<schema>`;
//! - every statement runs in a READ ONLY transaction of its own, `SET LOCAL ROLE` to that role,
//!   with the views' schema alone on its `search_path`, and is rolled back, so whatever settings
//!   it changed go with it; `statement_timeout` cancels it past its time limit;
//! - `describe` also executes the statement inside `LIMIT 0`: privileges are checked when the
//!   executor starts, not at prepare, and a writing `WITH` is refused only below the top level.
//!
//! `SET ROLE` is checked against the *session* user, so under `SET LOCAL ROLE` a query's
//! `set_config('role', ...)` would become any role the connecting user may become (a superuser:
//! any), and a function that runs SQL of its own after it (`query_to_xml`) would read as that role.
//! So data services log in as the query role itself when they can (`PgOptions::query_url`, or the
//! role on the same server without a password): the session user is then the role, which may
//! become no other, and the database alone keeps a query to the views. Such a statement reads the
//! read models' position on a connection of the backend's own, in a repeatable-read transaction
//! whose snapshot it imports (`SET TRANSACTION SNAPSHOT`), so the rows and the position are one
//! snapshot still. Where the role cannot log in, statements run as the connecting user under
//! `SET LOCAL ROLE`, and the names in [`FORBIDDEN`] (refused before the database sees the
//! statement) are what closes that way; they are refused in both modes (`set_config` would also
//! lift the time limit).

use std::time::Duration;

use async_trait::async_trait;
use futures_util::{TryStreamExt, pin_mut};
use postgres_types::{IsNull, ToSql, Type, to_sql_checked};
use tally_core::dataservices::{
    Bind, Cell, Column, DataServices, ParamType, Query, RunError, Table, VIEWS,
};
use tally_core::ports::Error;
use tally_core::readmodel::PROJECTIONS;
use tokio::sync::{OnceCell, Semaphore};
use tokio_postgres::error::{DbError, SqlState};
use tokio_postgres::{SimpleQueryMessage, Statement, Transaction};

use crate::{Postgres, pg_error};

mod cells;
mod session;
mod views;
use cells::{Kind, Raw};
pub(crate) use session::login_config;
use session::repeatable_read;
pub use views::{query_role, views_schema};

/// What a query's text may not contain anywhere, strings and comments included (so that no quoting
/// hides one), lowercased: the function that changes the session's settings (`set_config`, by
/// which a query would leave its role, see the module's comment), those that run SQL of their own
/// (the `*_to_xml` family, `ts_stat`, `ts_rewrite`, `dblink`), the advisory locks (a session's
/// outlive the rollback), WAL messages written outside the transaction (`pg_logical_emit_message`),
/// and `U&"..."` identifiers, whose escapes could spell any of these.
pub(crate) const FORBIDDEN: &[&str] = &[
    "set_config",
    "_to_xml",
    "ts_stat",
    "ts_rewrite",
    "dblink",
    "advisory",
    "pg_logical",
    "u&\"",
];

fn forbidden(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    FORBIDDEN.iter().find(|w| lower.contains(*w)).map(|w| {
        format!(
            "not allowed: {w} (a query may not change settings, run SQL of its own or take locks; \
             it reads the views: {})",
            VIEWS.join(", ")
        )
    })
}

/// Most data services statements at once: each holds a pooled connection while it runs (up to its
/// time limit), and the rest of the backend shares the pool.
pub(crate) const MAX_DATA_QUERIES: usize = 4;

/// The data services' share of a backend: whether the views and the role are in place (tried at
/// open, tried again by the next call until they are), and the permits of its statements.
pub(crate) struct DataState {
    ready: OnceCell<()>,
    /// Whether statements run on connections logged in as the query role (decided once, at the
    /// first statement after the views are ready).
    login: OnceCell<bool>,
    permits: Semaphore,
}

impl DataState {
    pub(crate) fn new(pool_size: usize) -> Self {
        Self {
            ready: OnceCell::new(),
            login: OnceCell::new(),
            permits: Semaphore::new(MAX_DATA_QUERIES.min((pool_size / 2).max(1))),
        }
    }
}

/// A placeholder's value, of the type its cast gave it (`NULL` of any).
enum Value<'a> {
    Null,
    Integer(i64),
    Text(&'a str),
    Boolean(bool),
}

impl std::fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("data services parameter")
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => i.to_sql_checked(ty, out),
            Value::Text(t) => t.to_sql_checked(ty, out),
            Value::Boolean(b) => b.to_sql_checked(ty, out),
        }
    }

    // Each value checks the type itself (`to_sql_checked` above); a null is one of any.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The statement with `$n::type` placeholders (the declared types, so that PostgreSQL need not
/// guess them), without the trailing `;` an operator may write (it could not sit inside `LIMIT 0`).
fn statement(query: &Query) -> String {
    let sql = query.numbered(|n, p| {
        let cast = match p.ty {
            ParamType::Id | ParamType::String | ParamType::Date | ParamType::Timestamp => "text",
            ParamType::Integer => "bigint",
            ParamType::Boolean => "boolean",
        };
        format!("${n}::{cast}")
    });
    sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace())
        .to_owned()
}

/// The database's refusal as a sentence: its message, detail and hint, and for a name past the
/// views what may be read.
fn said(db: &DbError) -> String {
    let mut s = db.message().to_owned();
    if let Some(d) = db.detail() {
        s = format!("{s}: {d}");
    }
    if let Some(h) = db.hint() {
        s = format!("{s} ({h})");
    }
    if [
        SqlState::INSUFFICIENT_PRIVILEGE,
        SqlState::UNDEFINED_TABLE,
        SqlState::INVALID_SCHEMA_NAME,
    ]
    .contains(db.code())
    {
        s = format!(
            "{s} (a query may read the views only: {})",
            VIEWS.join(", ")
        );
    }
    s
}

/// Why a statement of the query's failed: its time limit, the service's health (the connection,
/// the server's resources or shutdown), or else the statement itself.
fn failed(e: &tokio_postgres::Error, timeout: Duration) -> RunError {
    let Some(db) = e.as_db_error() else {
        let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
        return if e.is_closed() || io {
            RunError::Storage(Error::Unavailable(format!("a data services query: {e}")))
        } else {
            RunError::Refused(e.to_string())
        };
    };
    let code = db.code().code();
    if db.code() == &SqlState::QUERY_CANCELED {
        RunError::Timeout(timeout)
    } else if ["08", "40", "53", "57", "58", "F0", "XX"]
        .iter()
        .any(|class| code.starts_with(class))
    {
        RunError::Storage(Error::Unavailable(format!(
            "a data services query: {} ({code})",
            db.message()
        )))
    } else {
        RunError::Refused(said(db))
    }
}

fn problem(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), said)
}

/// The columns of a prepared statement, with their JSON types and how to read their cells; a type
/// with no JSON form here is refused, naming the column and the cast that gives it one.
fn columns(stmt: &Statement) -> Result<(Vec<Column>, Vec<Kind>), String> {
    let mut columns = Vec::with_capacity(stmt.columns().len());
    let mut kinds = Vec::with_capacity(stmt.columns().len());
    for c in stmt.columns() {
        let Some(kind) = Kind::of(c.type_()) else {
            return Err(format!(
                "column {name}: its type {ty} has no JSON form; cast it, e.g. {name}::text",
                name = c.name(),
                ty = c.type_().name()
            ));
        };
        columns.push(Column {
            name: c.name().to_owned(),
            ty: kind.json().to_owned(),
        });
        kinds.push(kind);
    }
    Ok((columns, kinds))
}

/// A statement that prepares alone but not as a subquery: not a query.
const NOT_A_READ: &str = "not a read: a query is one SELECT, WITH ... SELECT or VALUES statement";

/// Prepares the statement, then executes it inside `LIMIT 0` with null parameters: what PostgreSQL
/// refuses only when the executor starts (privileges) or below the top level (a writing `WITH`,
/// any statement but a query) is refused here too, without reading a row.
async fn check(tx: &Transaction<'_>, sql: &str) -> Result<Vec<Column>, String> {
    let stmt = tx.prepare(sql).await.map_err(|e| problem(&e))?;
    let (columns, _) = columns(&stmt)?;
    let nulls: Vec<Value<'_>> = stmt.params().iter().map(|_| Value::Null).collect();
    let params: Vec<&(dyn ToSql + Sync)> = nulls.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let wrapped = format!("SELECT * FROM (\n{sql}\n) AS q LIMIT 0");
    if let Err(e) = tx.query(wrapped.as_str(), &params).await {
        return Err(match e.code() {
            Some(&SqlState::SYNTAX_ERROR) => NOT_A_READ.to_owned(),
            _ => problem(&e),
        });
    }
    Ok(columns)
}

/// The read models' position in the answer of `SELECT projection, position FROM checkpoints`: the
/// least checkpoint of the projections the views read (0 for one not started).
fn position(messages: &[SimpleQueryMessage]) -> Result<u64, Error> {
    let mut found = std::collections::HashMap::new();
    for m in messages {
        if let SimpleQueryMessage::Row(r) = m {
            let at = r
                .get(1)
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::Corrupt(format!("checkpoint {:?}: {:?}", r.get(0), r.get(1)))
                })?;
            found.insert(r.get(0).unwrap_or_default().to_owned(), at);
        }
    }
    Ok(PROJECTIONS
        .iter()
        .map(|p| found.get(*p).copied().unwrap_or(0))
        .min()
        .unwrap_or(0))
}

/// Runs the statement through a portal: at most `limit` rows and one more to tell whether there
/// were more, so that the server computes no further than that. It runs as a subquery, which only
/// a query can be (the statement checked may not be the one run: `SET`, `PREPARE` or `DEALLOCATE`
/// would not be rolled back with the rest); its rows keep their order, a subquery that sorts being
/// scanned as it is.
async fn fetch(
    tx: &Transaction<'_>,
    sql: &str,
    binds: &[Bind],
    limit: usize,
    timeout: Duration,
) -> Result<Table, RunError> {
    let stmt = tx
        .prepare(&format!("SELECT * FROM (\n{sql}\n) AS q"))
        .await
        .map_err(|e| match e.code() {
            Some(&SqlState::SYNTAX_ERROR) => RunError::Refused(NOT_A_READ.to_owned()),
            _ => failed(&e, timeout),
        })?;
    let (columns, kinds) = columns(&stmt).map_err(RunError::Refused)?;
    let values: Vec<Value<'_>> = binds
        .iter()
        .map(|b| match b {
            Bind::Null => Value::Null,
            Bind::Integer(i) => Value::Integer(*i),
            Bind::Text(t) => Value::Text(t),
            Bind::Boolean(b) => Value::Boolean(*b),
        })
        .collect();
    let params: Vec<&(dyn ToSql + Sync)> =
        values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let portal = tx
        .bind(&stmt, &params)
        .await
        .map_err(|e| failed(&e, timeout))?;
    let most = i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX);
    let rows = tx
        .query_portal_raw(&portal, most)
        .await
        .map_err(|e| failed(&e, timeout))?;
    pin_mut!(rows);
    let mut table = Table {
        columns,
        ..Table::default()
    };
    while let Some(row) = rows.try_next().await.map_err(|e| failed(&e, timeout))? {
        if table.rows.len() >= limit {
            table.truncated = true;
            break;
        }
        let mut cells = Vec::with_capacity(kinds.len());
        for (i, kind) in kinds.iter().enumerate() {
            let raw: Option<Raw<'_>> = row
                .try_get(i)
                .map_err(|e| RunError::Refused(e.to_string()))?;
            cells.push(match raw {
                None => Cell::Null,
                Some(raw) => kind.cell(raw.0).map_err(RunError::Refused)?,
            });
        }
        table.rows.push(cells);
    }
    // A numeric column whose answer holds whole numbers only (PostgreSQL's `sum` of a bigint) is
    // an integer column, as SQLite answers it.
    for (i, (c, kind)) in table.columns.iter_mut().zip(&kinds).enumerate() {
        if matches!(kind, Kind::Numeric)
            && table
                .rows
                .iter()
                .all(|r| matches!(r[i], Cell::Integer(_) | Cell::Null))
        {
            c.ty = "integer".to_owned();
        }
    }
    Ok(table)
}

#[async_trait]
impl DataServices for Postgres {
    async fn describe(&self, query: &Query) -> Result<Vec<Column>, String> {
        let sql = statement(query);
        if let Some(refusal) = forbidden(&sql) {
            return Err(refusal);
        }
        self.data_ready().await?;
        let login = self.logs_in().await.map_err(|e| e.to_string())?;
        let mut lent = self.lend(login).await.map_err(|e| e.to_string())?;
        let unavailable = |what: &str, e| pg_error(what, e).to_string();
        let answer = {
            let tx = lent
                .get()
                .map_err(|e| e.to_string())?
                .build_transaction()
                .read_only(true)
                .start()
                .await
                .map_err(|e| unavailable("starting a data services check", e))?;
            tx.batch_execute(&self.restrictions(query.timeout, login))
                .await
                .map_err(|e| unavailable("restricting a data services check", e))?;
            let answer = check(&tx, &sql).await;
            tx.rollback()
                .await
                .map_err(|e| unavailable("ending a data services check", e))?;
            answer
        };
        lent.release().await;
        answer
    }

    async fn run(&self, query: &Query, binds: Vec<Bind>, limit: usize) -> Result<Table, RunError> {
        let sql = statement(query);
        if let Some(refusal) = forbidden(&sql) {
            return Err(RunError::Refused(refusal));
        }
        self.data_ready()
            .await
            .map_err(|e| RunError::Storage(Error::Unavailable(e)))?;
        if self.logs_in().await? {
            return self.run_logged_in(query, &sql, &binds, limit).await;
        }
        let mut lent = self.lend(false).await?;
        let answer = {
            // Repeatable read: the position read first is the snapshot the rows come from.
            let tx = repeatable_read(lent.get()?).await?;
            let settings = tx
                .simple_query(&format!(
                    "SELECT projection, position FROM {}.checkpoints; {}",
                    self.options.schema,
                    self.restrictions(query.timeout, false)
                ))
                .await
                .map_err(|e| pg_error("starting a data services query", e))?;
            let answer = match position(&settings) {
                Ok(position) => fetch(&tx, &sql, &binds, limit, query.timeout)
                    .await
                    .map(|table| Table { position, ..table }),
                Err(e) => Err(RunError::Storage(e)),
            };
            tx.rollback()
                .await
                .map_err(|e| pg_error("ending a data services query", e))?;
            answer
        };
        lent.release().await;
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_are_found_whatever_their_case_or_quoting() {
        assert!(forbidden("select 1 from inventory").is_none());
        for sql in [
            "select set_config('role', 'postgres', true)",
            "select PG_CATALOG.\"SET_CONFIG\"('role', 'x', true)",
            "select Query_To_Xml('select 1', true, false, '')",
            "select $$'$$, set_config('a', 'b', true), $$'$$",
            "select U&\"\\0073et_config\"('role', 'x', true)",
            "select pg_advisory_lock(1)",
            "select ts_stat('select 1')",
        ] {
            assert!(forbidden(sql).is_some(), "{sql}");
        }
    }
}
