//! What data services must hold on PostgreSQL beyond the conformance suite: a query cannot leave
//! its role (the session user's roles stay out of reach), connections go back to the pool clean
//! whatever a query did, a connecting user that may not create the role is told what is missing
//! (and the rest of the backend works), and the role goes with its scratch schema.
//! Needs `--features postgres` and a server (see `support`).
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use std::time::Duration;

use tally_core::conformance::dataservices::query;
use tally_core::dataservices::{Cell, DataServices, Query, RunError};
use tally_store_postgres::{PgOptions, Postgres, query_role, views_schema};

async fn superuser() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&support::url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn a_query_cannot_leave_its_role() {
    let scratch = support::Scratch::new();
    let pg = scratch.open().await;
    let t = pg
        .run(&query("select current_user as who", &[]), vec![], 10)
        .await
        .unwrap();
    assert_eq!(t.rows, vec![vec![Cell::Text(query_role(&scratch.schema))]]);
    let schema = &scratch.schema;
    for sql in [
        // The session user may become any role it is a member of: a superuser any.
        "select set_config('role', 'postgres', true)".to_owned(),
        format!(
            "select set_config('role', 'postgres', true), \
             query_to_xml('select * from {schema}.api_keys', true, false, '')"
        ),
        "select $$'$$, set_config('role', 'postgres', true), $$'$$".to_owned(),
        "select U&\"\\0073et_config\"('role', 'postgres', true)".to_owned(),
        format!("select * from {schema}.api_keys"),
        format!("select * from {schema}.rm_inventory"),
        "select pg_read_file('/etc/passwd')".to_owned(),
        "select lo_import('/etc/passwd')".to_owned(),
        "select pg_advisory_lock(1)".to_owned(),
        "select * from inventory for update".to_owned(),
    ] {
        let q = Query::unchecked(&sql);
        assert!(pg.describe(&q).await.is_err(), "{sql} must be refused");
        assert!(
            matches!(pg.run(&q, vec![], 10).await, Err(RunError::Refused(_))),
            "{sql} must be refused at run time"
        );
    }
    // Not a query: refused at run time too (SET and DEALLOCATE would outlive the rollback).
    for sql in ["set role postgres", "deallocate all", "explain select 1"] {
        let q = Query::unchecked(sql);
        assert!(pg.describe(&q).await.is_err(), "{sql}");
        assert!(pg.run(&q, vec![], 10).await.is_err(), "{sql}");
    }
}

#[tokio::test]
async fn connections_go_back_to_the_pool_clean() {
    let scratch = support::Scratch::new();
    // The smallest pool: every call reuses the connections the failing ones used. Named, so that
    // the check at the end finds its connections among those of the tests running beside it.
    let name = scratch.schema.clone();
    let pg = scratch
        .open_with(|o| {
            o.pool_size = 2;
            let sep = if o.url.contains('?') { '&' } else { '?' };
            o.url = format!("{}{sep}application_name={name}", o.url);
        })
        .await;
    let backend = pg.backend();
    let mut slow = query(
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 1000000000) \
         select count(*) from n",
        &[],
    );
    slow.timeout = Duration::from_millis(100);
    for _ in 0..4 {
        assert!(matches!(
            pg.run(&slow, vec![], 10).await,
            Err(RunError::Timeout(_))
        ));
        assert!(
            pg.run(&Query::unchecked("select 1 / 0"), vec![], 10)
                .await
                .is_err()
        );
        assert!(
            pg.describe(&Query::unchecked("select * from nothing"))
                .await
                .is_err()
        );
        // The rest of the backend: no transaction, role, path or time limit left behind.
        backend.sink.checkpoints().await.unwrap();
        backend.read.checkpoints().await.unwrap();
    }
    let client = superuser().await;
    let held: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%' \
             AND application_name = $1",
            &[&scratch.schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "no connection left in a transaction");
}

/// The advisory lock the tests' logins take to change the database's grants one at a time.
const LOGINS_LOCK: i64 = 0x7A11_1061;

/// A login role of its own for one test, dropped (with what it owns) at the end.
struct Login {
    name: String,
}

impl Login {
    async fn new(schema: &str, createrole: bool) -> Self {
        let name = format!("{schema}_owner");
        let client = superuser().await;
        // Grants on the database update its one catalog row: two tests granting at once would fail
        // with "tuple concurrently updated", so the logins' grants and revokes take turns.
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({LOGINS_LOCK}); \
                 CREATE ROLE {name} LOGIN {}; GRANT CREATE ON DATABASE {} TO {name}; COMMIT",
                if createrole { "CREATEROLE" } else { "" },
                database(&client).await
            ))
            .await
            .unwrap();
        Self { name }
    }

    fn options(&self, scratch: &support::Scratch) -> PgOptions {
        let config: tokio_postgres::Config = support::url().parse().unwrap();
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let mut o = scratch.options();
        o.url = format!(
            "host={host} port={} dbname={} user={}",
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_dbname().unwrap_or("test"),
            self.name
        );
        o
    }
}

async fn database(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0)
}

impl Drop for Login {
    fn drop(&mut self) {
        let name = self.name.clone();
        support::clean_up(async move {
            let client = superuser().await;
            let db = database(&client).await;
            let _ = client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({LOGINS_LOCK}); \
                     DROP OWNED BY {name} CASCADE; REVOKE ALL ON DATABASE {db} FROM {name}; COMMIT"
                ))
                .await;
            let _ = client.batch_execute(&format!("DROP ROLE {name}")).await;
        });
    }
}

#[tokio::test]
async fn a_user_that_may_not_create_the_role_is_told_what_is_missing() {
    let scratch = support::Scratch::new();
    let login = Login::new(&scratch.schema, false).await;
    let pg = Postgres::connect(login.options(&scratch)).await.unwrap();
    let q = query("select count(*) from inventory", &[]);
    let problem = pg.describe(&q).await.unwrap_err();
    assert!(
        problem.contains(&query_role(&scratch.schema)) && problem.contains("CREATEROLE"),
        "{problem}"
    );
    assert!(matches!(
        pg.run(&q, vec![], 10).await,
        Err(RunError::Storage(_))
    ));
    // The rest of the backend works.
    pg.backend().read.checkpoints().await.unwrap();
    drop(pg);
    drop(scratch);
    drop(login);
}

#[tokio::test]
async fn a_user_with_createrole_makes_and_joins_the_role() {
    let scratch = support::Scratch::new();
    let login = Login::new(&scratch.schema, true).await;
    let pg = Postgres::connect(login.options(&scratch)).await.unwrap();
    let t = pg
        .run(&query("select count(*) from inventory", &[]), vec![], 10)
        .await
        .unwrap();
    assert_eq!(t.rows, vec![vec![Cell::Integer(0)]]);
    // The role it made logs in: the statements' session user is the role itself, which the
    // database lets become no other (no list of names needed for that).
    let role = query_role(&scratch.schema);
    let t = pg
        .run(
            &query(
                "select session_user::text as s, current_user::text as c",
                &[],
            ),
            vec![],
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        t.rows,
        vec![vec![Cell::Text(role.clone()), Cell::Text(role.clone())]]
    );
    let mut config: tokio_postgres::Config = login.options(&scratch).url.parse().unwrap();
    config.user(&role);
    let (as_role, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for escape in [
        format!("SET ROLE {}", login.name),
        "SET ROLE postgres".to_owned(),
        format!("SELECT set_config('role', '{}', false)", login.name),
        format!("SELECT count(*) FROM {}.api_keys", scratch.schema),
    ] {
        let e = as_role.batch_execute(&escape).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{escape}: {e}"
        );
    }
    drop(as_role);
    // Two more processes opening the same schema at once find the views and the role in place.
    let (a, b) = tokio::join!(
        Postgres::connect(login.options(&scratch)),
        Postgres::connect(login.options(&scratch))
    );
    for pg in [a.unwrap(), b.unwrap()] {
        pg.describe(&query("select * from events", &[]))
            .await
            .unwrap();
    }
    let schema = scratch.schema.clone();
    drop(pg);
    drop(scratch);
    drop(login);
    let client = superuser().await;
    let left: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = $1) \
             + (SELECT count(*) FROM pg_namespace WHERE nspname = $2)",
            &[&query_role(&schema), &views_schema(&schema)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "the role and the views' schema go with the scratch schema"
    );
}

#[tokio::test]
async fn a_role_made_beforehand_serves_a_user_that_may_not_create_roles() {
    let scratch = support::Scratch::new();
    let login = Login::new(&scratch.schema, false).await;
    let role = query_role(&scratch.schema);
    superuser()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} NOLOGIN; GRANT {role} TO {}",
            login.name
        ))
        .await
        .unwrap();
    let pg = Postgres::connect(login.options(&scratch)).await.unwrap();
    // The role may not log in and this user may not change that: statements run as this user
    // under SET LOCAL ROLE (and the names that would leave the role are refused before).
    let t = pg
        .run(
            &query(
                "select current_user::text as who, session_user::text as s",
                &[],
            ),
            vec![],
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        t.rows,
        vec![vec![Cell::Text(role), Cell::Text(login.name.clone())]]
    );
    drop(pg);
    drop(scratch);
    drop(login);
}

#[tokio::test]
async fn views_dropped_are_made_again_at_the_next_open() {
    let scratch = support::Scratch::new();
    let pg = scratch.open().await;
    let q = query("select * from events", &[]);
    pg.describe(&q).await.unwrap();
    superuser()
        .await
        .batch_execute(&format!(
            "DROP VIEW {}.events",
            views_schema(&scratch.schema)
        ))
        .await
        .unwrap();
    assert!(pg.describe(&q).await.is_err());
    let again = scratch.open().await;
    again.describe(&q).await.unwrap();
}
