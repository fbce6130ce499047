//! Data services: the views have their documented names and columns, hold what the read models
//! hold (checked against an independent fold of a random history), and the runner reads them alone:
//! writes, other tables, several statements and side effects are refused by the database, a long
//! statement is cancelled, parameters are bound and never spliced.

use std::collections::HashMap;
use std::time::Duration;

use jiff::civil::Date;

use super::history::{Books, ITEMS, Rng, STORES, SUPPLIERS, seed};
use crate::Backend;
use crate::dataservices::{
    Bind, Cell, DataServices, Origin, ParamSpec, Query, QuerySpec, RunError, Table, VIEWS,
    view_instant,
};
use crate::model::RecordedEvent;
use crate::projector::Projector;
use crate::signals::Signals;

/// Each view's columns, in order, as `docs/views.md` documents them.
pub const COLUMNS: [(&str, &[&str]); 11] = [
    ("suppliers", &["supplier_id", "name"]),
    ("stores", &["store_id", "name", "timezone"]),
    (
        "items",
        &["item_id", "name", "supplier_id", "unit_price_cents"],
    ),
    ("inventory", &["store_id", "item_id", "on_hand"]),
    (
        "store_daily_sales",
        &[
            "store_id",
            "date",
            "transactions",
            "units_sold",
            "gross_cents",
            "returned_units",
            "returned_cents",
            "net_cents",
            "week",
            "discount_cents",
        ],
    ),
    (
        "supplier_daily",
        &[
            "supplier_id",
            "date",
            "deliveries",
            "units_supplied",
            "supply_cost_cents",
            "units_sold",
            "sales_cents",
        ],
    ),
    (
        "item_daily_sales",
        &[
            "store_id",
            "item_id",
            "supplier_id",
            "date",
            "units_sold",
            "gross_cents",
            "returned_units",
            "returned_cents",
            "net_cents",
            "week",
            "discount_cents",
        ],
    ),
    (
        "supplier_item_daily",
        &[
            "supplier_id",
            "item_id",
            "store_id",
            "date",
            "units_supplied",
            "supply_cost_cents",
            "units_sold",
            "sales_cents",
        ],
    ),
    (
        "item_daily_totals",
        &[
            "item_id",
            "supplier_id",
            "date",
            "units_sold",
            "gross_cents",
            "returned_units",
            "returned_cents",
            "net_cents",
            "week",
            "discount_cents",
            "units_supplied",
            "supply_cost_cents",
            "sales_cents",
        ],
    ),
    (
        "till_daily_sales",
        &[
            "store_id",
            "till_id",
            "date",
            "transactions",
            "gross_cents",
            "discount_cents",
        ],
    ),
    (
        "events",
        &[
            "position",
            "stream_id",
            "type",
            "schema_version",
            "occurred_at",
            "recorded_at",
            "data",
        ],
    ),
];

/// A query of `sql` with parameters `(name, type)`, checked for shape.
pub fn query(sql: &str, params: &[(&str, &str)]) -> Query {
    Query::new(QuerySpec {
        name: "conformance".to_owned(),
        description: String::new(),
        sql: sql.to_owned(),
        params: params
            .iter()
            .map(|(n, t)| ParamSpec {
                name: (*n).to_owned(),
                ty: (*t).to_owned(),
                required: Some(true),
                default: None,
            })
            .collect(),
        roles: vec!["admin".to_owned()],
        scope_param: None,
        timeout: Some(Duration::from_secs(30)),
        origin: Origin {
            file: "conformance".to_owned(),
            line: 1,
        },
    })
    .unwrap()
}

/// Prepares and runs `sql` with `binds`.
pub async fn rows(data: &dyn DataServices, sql: &str, binds: &[(&str, &str, Bind)]) -> Table {
    let params: Vec<(&str, &str)> = binds.iter().map(|(n, t, _)| (*n, *t)).collect();
    let q = query(sql, &params);
    data.describe(&q)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let values = binds.iter().map(|(_, _, b)| b.clone()).collect();
    data.run(&q, values, 100_000)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn int(c: &Cell) -> i64 {
    match c {
        Cell::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn text(c: &Cell) -> String {
    match c {
        Cell::Text(t) => t.clone(),
        other => panic!("not text: {other:?}"),
    }
}

fn date(c: &Cell) -> Date {
    text(c).parse().unwrap()
}

pub async fn views_have_their_columns(b: &Backend) {
    assert_eq!(COLUMNS.map(|(v, _)| v), VIEWS, "every view is documented");
    for (view, columns) in COLUMNS {
        let q = query(&format!("select * from {view}"), &[]);
        let got = b
            .data
            .describe(&q)
            .await
            .unwrap_or_else(|e| panic!("{view}: {e}"));
        let names: Vec<&str> = got.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, columns, "the columns of {view}");
    }
}

fn nonzero<K: Eq + std::hash::Hash, const N: usize>(
    m: HashMap<K, [i64; N]>,
) -> HashMap<K, [i64; N]> {
    m.into_iter().filter(|(_, v)| *v != [0; N]).collect()
}

pub async fn views_hold_the_read_models(b: &Backend) {
    let log = seed(b, &mut Rng::new(18), 400).await;
    let mut projector =
        Projector::new(b.events.clone(), b.sink.clone(), Signals::default()).with_batch_size(97);
    projector.catch_up().await.unwrap();
    let books = Books::of(&log, |_, _| true);
    views_hold(b, &log, &books).await;
}

/// Every view holds what `books` (a fold of `log`) says, and the log.
pub async fn views_hold(b: &Backend, log: &[RecordedEvent], books: &Books) {
    let d = &*b.data;

    let stock: HashMap<(String, String), [i64; 1]> = rows(d, "select * from inventory", &[])
        .await
        .rows
        .iter()
        .map(|r| ((text(&r[0]), text(&r[1])), [int(&r[2])]))
        .collect();
    let want: HashMap<_, _> = books.stock.iter().map(|(k, v)| (k.clone(), [*v])).collect();
    assert_eq!(nonzero(stock), nonzero(want), "inventory");

    let t = rows(d, "select * from store_daily_sales", &[]).await;
    let days: HashMap<(String, Date), [i64; 6]> = t
        .rows
        .iter()
        .map(|r| {
            assert_eq!(
                int(&r[7]),
                int(&r[4]) - int(&r[9]) - int(&r[6]),
                "net = gross - discounts - returned"
            );
            let (day, week) = (date(&r[1]), date(&r[8]));
            assert_eq!(week.weekday(), jiff::civil::Weekday::Monday, "{week}");
            assert!(
                week <= day && day < week + jiff::Span::new().days(7),
                "{day} in {week}"
            );
            let f = [
                int(&r[2]),
                int(&r[3]),
                int(&r[4]),
                int(&r[5]),
                int(&r[6]),
                int(&r[9]),
            ];
            ((text(&r[0]), date(&r[1])), f)
        })
        .collect();
    assert_eq!(
        nonzero(days),
        nonzero(books.store_days.clone()),
        "store days"
    );

    let t = rows(d, "select * from supplier_daily", &[]).await;
    let days: HashMap<(String, Date), [i64; 5]> = t
        .rows
        .iter()
        .map(|r| {
            let f = [int(&r[2]), int(&r[3]), int(&r[4]), int(&r[5]), int(&r[6])];
            ((text(&r[0]), date(&r[1])), f)
        })
        .collect();
    assert_eq!(
        nonzero(days),
        nonzero(books.supplier_days.clone()),
        "supplier days"
    );

    let t = rows(d, "select * from item_daily_sales", &[]).await;
    let items: HashMap<(String, String, Date), [i64; 5]> = t
        .rows
        .iter()
        .map(|r| {
            assert_eq!(int(&r[8]), int(&r[5]) - int(&r[10]) - int(&r[7]), "net");
            let f = [int(&r[4]), int(&r[5]), int(&r[6]), int(&r[7]), int(&r[10])];
            ((text(&r[0]), text(&r[1]), date(&r[3])), f)
        })
        .collect();
    assert_eq!(
        nonzero(items),
        nonzero(books.item_days.clone()),
        "item days"
    );

    // Per supplier and date, the items' deliveries and sales add up to the supplier's report
    // (less its count of deliveries).
    let t = rows(
        d,
        "select supplier_id, date, sum(units_supplied), sum(supply_cost_cents), sum(units_sold), \
         sum(sales_cents) from supplier_item_daily group by supplier_id, date",
        &[],
    )
    .await;
    let sums: HashMap<(String, Date), [i64; 4]> = t
        .rows
        .iter()
        .map(|r| {
            let f = [int(&r[2]), int(&r[3]), int(&r[4]), int(&r[5])];
            ((text(&r[0]), date(&r[1])), f)
        })
        .collect();
    let want: HashMap<(String, Date), [i64; 4]> = books
        .supplier_days
        .iter()
        .map(|(k, f)| (k.clone(), [f[1], f[2], f[3], f[4]]))
        .collect();
    assert_eq!(nonzero(sums), nonzero(want), "supplier item days");

    // The totals per item and date are item daily sales and the supplier items summed over the
    // stores, with the same week.
    let t = rows(
        d,
        "select item_id, supplier_id, date, units_sold, gross_cents, returned_units, returned_cents, \
         net_cents, week, discount_cents, units_supplied, supply_cost_cents, sales_cents \
         from item_daily_totals",
        &[],
    )
    .await;
    let mut totals: HashMap<(String, Date), [i64; 5]> = HashMap::new();
    let mut supplied: HashMap<(String, Date), [i64; 2]> = HashMap::new();
    for r in &t.rows {
        assert_eq!(int(&r[7]), int(&r[4]) - int(&r[9]) - int(&r[6]), "net");
        assert_eq!(
            int(&r[12]),
            int(&r[4]) - int(&r[9]),
            "sales = gross - discounts"
        );
        let (day, week) = (date(&r[2]), date(&r[8]));
        assert_eq!(week.weekday(), jiff::civil::Weekday::Monday, "{week}");
        assert!(week <= day && day < week + jiff::Span::new().days(7));
        let key = (text(&r[0]), day);
        totals.insert(
            key.clone(),
            [int(&r[3]), int(&r[4]), int(&r[5]), int(&r[6]), int(&r[9])],
        );
        supplied.insert(key, [int(&r[10]), int(&r[11])]);
    }
    let mut want: HashMap<(String, Date), [i64; 5]> = HashMap::new();
    for ((_, item, day), f) in &books.item_days {
        let w = want.entry((item.clone(), *day)).or_default();
        for (a, b) in w.iter_mut().zip(f) {
            *a += b;
        }
    }
    assert_eq!(nonzero(totals), nonzero(want), "item totals");
    let t = rows(
        d,
        "select item_id, date, sum(units_supplied), sum(supply_cost_cents) from supplier_item_daily \
         group by item_id, date",
        &[],
    )
    .await;
    let want: HashMap<(String, Date), [i64; 2]> = t
        .rows
        .iter()
        .map(|r| ((text(&r[0]), date(&r[1])), [int(&r[2]), int(&r[3])]))
        .collect();
    assert_eq!(nonzero(supplied), nonzero(want), "item totals' deliveries");

    let counts = rows(
        d,
        "select (select count(*) from suppliers), (select count(*) from stores), \
         (select count(*) from items), (select count(*) from events), (select max(position) from events)",
        &[],
    )
    .await;
    let c: Vec<i64> = counts.rows[0].iter().map(int).collect();
    assert_eq!(
        c,
        [
            SUPPLIERS.len() as i64,
            STORES.len() as i64,
            ITEMS as i64,
            log.len() as i64,
            log.len() as i64
        ]
    );
    assert_eq!(
        counts.position,
        log.len() as u64,
        "the read models' position"
    );

    // Instants are UTC text with microseconds; a typed parameter selects by them.
    let first = &log[0];
    let at = rows(
        d,
        "select position, type, recorded_at, occurred_at from events where recorded_at <= :at order by position",
        &[("at", "timestamp", Bind::Text(view_instant(first.recorded_at)))],
    )
    .await;
    assert!(!at.rows.is_empty());
    assert_eq!(int(&at.rows[0][0]), 1);
    assert_eq!(text(&at.rows[0][1]), first.event_type);
    assert_eq!(text(&at.rows[0][2]), view_instant(first.recorded_at));
    assert_eq!(text(&at.rows[0][3]), view_instant(first.occurred_at));
    let store = STORES[0].0;
    let one = rows(
        d,
        "select count(*) from inventory where store_id = :store and on_hand >= :least",
        &[
            ("store", "id", Bind::Text(store.to_owned())),
            ("least", "integer", Bind::Integer(i64::MIN)),
        ],
    )
    .await;
    let want = books.stock.keys().filter(|(s, _)| s == store).count() as i64;
    assert_eq!(int(&one.rows[0][0]), want);
}

/// What every backend refuses to prepare for a query, whatever its parser makes of it.
pub const REFUSED: &[&str] = &[
    "insert into inventory values ('s', 'i', 1)",
    "update inventory set on_hand = 0",
    "delete from inventory",
    "drop table events",
    "create table x (a int)",
    "attach database 'x.db' as x",
    "pragma query_only = 0",
    "copy inventory to '/tmp/tally-inventory.csv'",
    "select 1 into temp stolen",
    "select 1; select 2",
    "select * from api_keys",
    "select * from checkpoints",
    "select * from rm_inventory",
    "select * from queue",
    "select * from idempotency",
    "with gone as (delete from rm_inventory returning *) select * from gone",
    "select load_extension('/tmp/x')",
    "select lo_import('/etc/passwd')",
    "select pg_read_file('/etc/passwd')",
    "select * from no_such_view",
    "select no_such_column from inventory",
];

pub async fn refuses_what_is_not_a_read_of_the_views(b: &Backend) {
    for sql in REFUSED {
        let q = Query::unchecked(sql);
        assert!(
            b.data.describe(&q).await.is_err(),
            "{sql} must be refused at prepare time"
        );
    }
    // A writing statement refused at run time as well, should it get there.
    let q = Query::unchecked("delete from inventory");
    assert!(b.data.run(&q, vec![], 10).await.is_err());
    let t = rows(&*b.data, "select count(*) from inventory", &[]).await;
    assert_eq!(t.rows, vec![vec![Cell::Integer(0)]], "nothing written");
}

pub async fn binds_values_and_limits_rows(b: &Backend) {
    for hostile in [
        "' OR 1=1 --",
        "1; drop table events",
        "x'); delete from inventory; --",
    ] {
        let t = rows(
            &*b.data,
            "select :s as s",
            &[("s", "string", Bind::Text(hostile.to_owned()))],
        )
        .await;
        assert_eq!(t.rows, vec![vec![Cell::Text(hostile.to_owned())]]);
    }
    let big = "é".repeat(2000);
    let t = rows(
        &*b.data,
        "select length(:s)",
        &[("s", "string", Bind::Text(big))],
    )
    .await;
    assert_eq!(t.rows, vec![vec![Cell::Integer(2000)]]);
    let q = query(
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 50) select i from n",
        &[],
    );
    b.data.describe(&q).await.unwrap();
    let t = b.data.run(&q, vec![], 20).await.unwrap();
    assert_eq!(t.rows.len(), 20);
    assert!(t.truncated);
    assert_eq!(t.columns[0].name, "i");
    assert_eq!(t.columns[0].ty, "integer");
    let t = b.data.run(&q, vec![], 50).await.unwrap();
    assert_eq!((t.rows.len(), t.truncated), (50, false));
    let t = rows(
        &*b.data,
        "select :flag as flag, :n as n",
        &[
            ("flag", "boolean", Bind::Boolean(true)),
            ("n", "integer", Bind::Integer(-7)),
        ],
    )
    .await;
    assert_eq!(t.rows[0][1], Cell::Integer(-7));
    assert!(matches!(
        t.rows[0][0],
        Cell::Boolean(true) | Cell::Integer(1)
    ));
}

pub async fn cancels_a_query_past_its_time_limit(b: &Backend) {
    let mut q = query(
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 1000000000) \
         select count(*) from n",
        &[],
    );
    q.timeout = Duration::from_millis(300);
    b.data.describe(&q).await.unwrap();
    let started = std::time::Instant::now();
    match b.data.run(&q, vec![], 10).await {
        Err(RunError::Timeout(t)) => assert_eq!(t, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "cancelled, not run to its end"
    );
    // The connection serves the next query.
    let t = rows(&*b.data, "select 1 as one", &[]).await;
    assert_eq!(t.rows, vec![vec![Cell::Integer(1)]]);
}
