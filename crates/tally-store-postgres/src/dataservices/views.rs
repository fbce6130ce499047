//! The views and the role of data services: created when a backend opens, brought up to date
//! when the binary's views differ from those in the database, granted again every time.

use tally_core::dataservices::VIEWS;
use tokio_postgres::error::{DbError, SqlState};

use crate::{Postgres, pg_error};

/// The schema holding the views of the backend's schema `schema`.
pub fn views_schema(schema: &str) -> String {
    format!("{schema}_views")
}

/// The role data services' statements run as (roles are the cluster's: one per schema).
pub fn query_role(schema: &str) -> String {
    format!("{schema}_query")
}

/// The views, in `{v}` (the views' schema) over the tables of `{s}`. The same names, columns and
/// forms as on SQLite: dates `YYYY-MM-DD` text (`date::text` under the ISO date style, which every
/// data services statement sets; `week` the Monday of the date's ISO week, counted in whole weeks
/// from 0001-01-01, a Monday, with integer arithmetic; the item totals keep
/// their dates as text already), instants `YYYY-MM-DDTHH:MM:SS.ffffffZ` text (UTC),
/// money and counts bigint. `docs/views.md` documents them. `CREATE OR REPLACE VIEW` keeps a
/// view's columns and may only add some at its end: a column a view gains goes last.
const VIEW_SQL: &str = r#"
CREATE OR REPLACE VIEW {v}.suppliers AS SELECT supplier_id, name FROM {s}.rm_suppliers;
CREATE OR REPLACE VIEW {v}.stores AS SELECT store_id, name, timezone FROM {s}.rm_stores;
CREATE OR REPLACE VIEW {v}.items AS
    SELECT item_id, name, supplier_id, unit_price_cents FROM {s}.rm_items;
CREATE OR REPLACE VIEW {v}.inventory AS SELECT store_id, item_id, on_hand FROM {s}.rm_inventory;
CREATE OR REPLACE VIEW {v}.store_daily_sales AS
    SELECT store_id, date::text AS date, transactions, units_sold,
           gross_cents, returned_units, returned_cents,
           gross_cents - discount_cents - returned_cents AS net_cents,
           (date - ((date - DATE '0001-01-01') % 7))::text AS week, discount_cents
    FROM {s}.rm_store_daily;
CREATE OR REPLACE VIEW {v}.supplier_daily AS
    SELECT supplier_id, date::text AS date, deliveries, units_supplied,
           supply_cost_cents, units_sold, sales_cents
    FROM {s}.rm_supplier_daily;
CREATE OR REPLACE VIEW {v}.item_daily_sales AS
    SELECT store_id, item_id, supplier_id, date::text AS date,
           units_sold, gross_cents, returned_units, returned_cents,
           gross_cents - discount_cents - returned_cents AS net_cents,
           (date - ((date - DATE '0001-01-01') % 7))::text AS week, discount_cents
    FROM {s}.rm_item_daily
    WHERE units_sold <> 0 OR gross_cents <> 0 OR returned_units <> 0 OR returned_cents <> 0
       OR discount_cents <> 0;
CREATE OR REPLACE VIEW {v}.supplier_item_daily AS
    SELECT supplier_id, item_id, store_id, date::text AS date,
           units_supplied, supply_cost_cents, units_sold, gross_cents - discount_cents AS sales_cents
    FROM {s}.rm_item_daily;
CREATE OR REPLACE VIEW {v}.item_daily_totals AS
    SELECT item_id, supplier_id, date, units_sold, gross_cents, returned_units, returned_cents,
           gross_cents - discount_cents - returned_cents AS net_cents,
           (date::date - ((date::date - DATE '0001-01-01') % 7))::text AS week, discount_cents,
           units_supplied, supply_cost_cents, gross_cents - discount_cents AS sales_cents
    FROM {s}.rm_item_totals;
CREATE OR REPLACE VIEW {v}.till_daily_sales AS
    SELECT store_id, NULLIF(till_id, '') AS till_id, date::text AS date,
           transactions, gross_cents, discount_cents
    FROM {s}.rm_till_daily
    WHERE transactions <> 0 OR gross_cents <> 0 OR discount_cents <> 0;
CREATE OR REPLACE VIEW {v}.events AS
    SELECT position, stream_id, event_type AS type, schema_version,
           to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at,
           to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at,
           data
    FROM {s}.events;
"#;

/// FNV-1a: the views' version, kept as the comment of their schema, so that a backend opening
/// replaces them only when its binary's differ (replacing takes each view's exclusive lock, which
/// waits for the statements reading it).
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Postgres {
    /// The views and the role, created or brought up to date once per backend.
    pub(crate) async fn data_ready(&self) -> Result<(), String> {
        self.data
            .ready
            .get_or_try_init(|| self.prepare_views())
            .await
            .map(|_| ())
    }

    async fn prepare_views(&self) -> Result<(), String> {
        let schema = &self.options.schema;
        let (views, role) = (views_schema(schema), query_role(schema));
        // PostgreSQL would cut a longer name to 63 bytes, maybe onto the schema's own.
        if views.len() > 63 {
            return Err(format!(
                "data services need the schema {views}, longer than PostgreSQL's 63 bytes: \
                 use a schema name of at most 57 characters"
            ));
        }
        let unavailable = |what: &str, e| pg_error(what, e).to_string();
        let mut client = self.client().await.map_err(|e| e.to_string())?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| unavailable("preparing the views", e))?;
        // Processes opening the same schema take turns (catalog rows updated by two at once fail);
        // a view busy past the lock timeout leaves data services to try again on their next call.
        tx.execute(
            "SELECT set_config('lock_timeout', '5s', true), pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("{schema}:views")],
        )
        .await
        .map_err(|e| unavailable("taking the views' lock", e))?;
        let sql = VIEW_SQL.replace("{v}", &views).replace("{s}", schema);
        let version = format!("tally views {:016x}", fingerprint(&sql));
        // The version, and whether every view is there (dropping the tables' schema drops them,
        // not the views' schema and its comment).
        let found = tx
            .query_opt(
                "SELECT obj_description(n.oid, 'pg_namespace'), \
                 (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind = 'v' \
                  AND c.relname::text = ANY($2::text[])) \
                 FROM pg_namespace n WHERE n.nspname = $1",
                &[&views, &VIEWS.as_slice()],
            )
            .await
            .map_err(|e| unavailable("reading the views' version", e))?
            .map(|r| (r.get::<_, Option<String>>(0), r.get::<_, i64>(1)));
        if found.is_none() {
            tx.batch_execute(&format!("CREATE SCHEMA {views}"))
                .await
                .map_err(|e| unavailable("creating the views' schema", e))?;
        }
        let current = found.is_some_and(|(v, n)| {
            v.as_deref() == Some(version.as_str()) && usize::try_from(n) == Ok(VIEWS.len())
        });
        if !current {
            tx.batch_execute(&format!("{sql}\nCOMMENT ON SCHEMA {views} IS '{version}'"))
                .await
                .map_err(|e| unavailable("creating the views", e))?;
        }
        // The role may log in (data services connect as it where `pg_hba.conf` lets it, so that
        // the session user itself is restricted); one made before that is given the login when
        // the connecting user may, else it stays as it is and statements use `SET LOCAL ROLE`.
        // Another database of the cluster may create the same role at the same moment, past the
        // advisory lock (which is the database's): its creation is then someone else's. The
        // connecting user is granted it unless it may become it already (a superuser, or a member
        // a DBA made of it, who may not grant it): the raised exception undoes the trial SET.
        let made = tx
            .batch_execute(&format!(
                "DO $$ BEGIN
                     IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                         BEGIN
                             CREATE ROLE {role} LOGIN;
                         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                         END;
                     ELSIF NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = '{role}') THEN
                         BEGIN
                             ALTER ROLE {role} LOGIN;
                         EXCEPTION WHEN insufficient_privilege THEN NULL;
                         END;
                     END IF;
                     BEGIN
                         SET LOCAL ROLE {role};
                         RAISE EXCEPTION 'may become it' USING ERRCODE = 'TLY01';
                     EXCEPTION
                         WHEN SQLSTATE 'TLY01' THEN NULL;
                         WHEN insufficient_privilege THEN GRANT {role} TO CURRENT_USER;
                     END;
                 END $$"
            ))
            .await;
        if let Err(e) = made {
            let user = self.pg_config.get_user().unwrap_or("the connecting user");
            return Err(match e.code() {
                Some(&SqlState::INSUFFICIENT_PRIVILEGE) => format!(
                    "data services need the role {role}, which {user} may not create or be \
                     granted ({}): give {user} CREATEROLE, or create it beforehand with \
                     CREATE ROLE {role} LOGIN; GRANT {role} TO {user};",
                    e.as_db_error()
                        .map_or("permission denied", DbError::message)
                ),
                _ => unavailable("creating the data services' role", e),
            });
        }
        // Granted again at every open: the views' grants, and none on the tables' schema whoever
        // gave one.
        tx.batch_execute(&format!(
            "REVOKE ALL ON SCHEMA {schema} FROM {role};
             GRANT USAGE ON SCHEMA {views} TO {role};
             GRANT SELECT ON ALL TABLES IN SCHEMA {views} TO {role}"
        ))
        .await
        .map_err(|e| unavailable("granting the views", e))?;
        tx.commit()
            .await
            .map_err(|e| unavailable("committing the views", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_views_version_changes_with_their_text() {
        assert_eq!(fingerprint(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }

    #[test]
    fn the_views_are_those_documented() {
        let sql = VIEW_SQL.replace("{v}", "t_views").replace("{s}", "t");
        for view in tally_core::dataservices::VIEWS {
            assert!(sql.contains(&format!("VIEW t_views.{view} AS")), "{view}");
        }
    }
}
