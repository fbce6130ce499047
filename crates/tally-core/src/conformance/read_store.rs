//! [`ProjectionSink`](crate::ProjectionSink) and [`ReadModels`](crate::ReadModels) checks:
//! checkpoints move with their rows, deltas add up, and queries answer with the position of the
//! projection they read.

use std::collections::HashMap;

use jiff::civil::{Date, date};

use crate::readmodel::{
    DayFigures, Delta, INVENTORY, ITEM_DAILY, ItemDailyDelta, ItemDay, PROJECTIONS,
    ProjectionUpdate, STORE_DAILY, SUPPLIER_DAILY, Supplied, SupplierDay,
};
use crate::rows::DateRange;
use crate::rows::{TopItem, TopItemsQuery};
use crate::{Backend, Error};
use tally_domain::values::{ItemId, StoreId, SupplierId};

fn update(projection: &str, from: u64, to: u64, delta: Delta) -> ProjectionUpdate {
    ProjectionUpdate {
        projection: projection.to_owned(),
        from,
        to,
        delta,
    }
}

fn stock(rows: &[(&str, &str, i64)]) -> Delta {
    Delta::Inventory(
        rows.iter()
            .map(|(s, i, n)| ((s.to_string(), i.to_string()), *n))
            .collect(),
    )
}

fn sales(units: i64, gross: i64) -> DayFigures {
    DayFigures {
        transactions: units.signum(),
        units_sold: units,
        gross_cents: gross,
        ..DayFigures::default()
    }
}

fn store_days(rows: &[(&str, Date, DayFigures)]) -> Delta {
    Delta::StoreDaily(
        rows.iter()
            .map(|(s, d, f)| ((s.to_string(), *d), *f))
            .collect(),
    )
}

fn supplied(units: i64, cost: i64) -> SupplierDay {
    SupplierDay {
        deliveries: units.signum(),
        units_supplied: units,
        supply_cost_cents: cost,
        ..SupplierDay::default()
    }
}

fn supplier_days(rows: &[(&str, Date, SupplierDay)]) -> Delta {
    Delta::SupplierDaily(
        rows.iter()
            .map(|(s, d, f)| ((s.to_string(), *d), *f))
            .collect(),
    )
}

type Answer<T> = Result<(u64, T), Error>;

fn store(raw: &str) -> StoreId {
    StoreId::parse(raw).unwrap()
}

async fn inventory(b: &Backend, s: &str) -> Answer<Vec<(String, i64)>> {
    let a = b.read.inventory(&store(s)).await?;
    let rows = a
        .rows
        .into_iter()
        .map(|r| (r.item_id.to_string(), r.on_hand));
    Ok((a.position, rows.collect()))
}

async fn inventory_item(b: &Backend, s: &str, i: &str) -> Answer<i64> {
    let a = b
        .read
        .inventory_item(&store(s), &ItemId::parse(i).unwrap())
        .await?;
    Ok((a.position, a.rows))
}

async fn store_daily(
    b: &Backend,
    s: &str,
    from: Option<Date>,
    to: Option<Date>,
) -> Answer<Vec<(Date, DayFigures)>> {
    let a = b
        .read
        .store_daily(&store(s), DateRange::new(from, to))
        .await?;
    Ok((
        a.position,
        a.rows.into_iter().map(|d| (d.date, d.figures)).collect(),
    ))
}

async fn daily_sales(b: &Backend, d: Date) -> Answer<Vec<(String, DayFigures)>> {
    let a = b.read.daily_sales(d).await?;
    let rows = a
        .rows
        .into_iter()
        .map(|r| (r.store_id.to_string(), r.figures));
    Ok((a.position, rows.collect()))
}

async fn supplier_daily(
    b: &Backend,
    s: &str,
    from: Option<Date>,
    to: Option<Date>,
) -> Answer<Vec<(Date, SupplierDay)>> {
    let id = SupplierId::parse(s).unwrap();
    let a = b.read.supplier_daily(&id, DateRange::new(from, to)).await?;
    Ok((
        a.position,
        a.rows.into_iter().map(|d| (d.date, d.figures)).collect(),
    ))
}

async fn checkpoint(b: &Backend, projection: &str) -> u64 {
    let all = b.read.checkpoints().await.expect("checkpoints");
    all.get(projection).copied().unwrap_or(0)
}

fn owned(rows: &[(&str, i64)]) -> Vec<(String, i64)> {
    rows.iter().map(|(i, n)| (i.to_string(), *n)).collect()
}

pub async fn starts_empty(b: &Backend) {
    let all = b.read.checkpoints().await.expect("checkpoints");
    assert!(all.values().all(|p| *p == 0), "fresh checkpoints: {all:?}");
    assert_eq!(inventory(b, "s1").await, Ok((0, Vec::new())));
    assert_eq!(inventory_item(b, "s1", "i1").await, Ok((0, 0)));
    let d = date(2026, 3, 14);
    assert_eq!(store_daily(b, "s1", None, None).await, Ok((0, Vec::new())));
    assert_eq!(daily_sales(b, d).await, Ok((0, Vec::new())));
    assert_eq!(
        supplier_daily(b, "p1", None, None).await,
        Ok((0, Vec::new()))
    );
}

pub async fn apply_moves_checkpoint_and_adds_deltas(b: &Backend) {
    let first = stock(&[("s1", "i2", 10), ("s1", "i1", 3), ("s2", "i1", 7)]);
    b.sink
        .apply(vec![update(INVENTORY, 0, 5, first)])
        .await
        .expect("apply");
    assert_eq!(checkpoint(b, INVENTORY).await, 5);
    assert_eq!(
        checkpoint(b, STORE_DAILY).await,
        0,
        "other checkpoints stay"
    );
    let want = owned(&[("i1", 3), ("i2", 10)]);
    assert_eq!(inventory(b, "s1").await, Ok((5, want)), "sorted by item");

    let second = stock(&[("s1", "i1", -1), ("s2", "i3", 4)]);
    b.sink
        .apply(vec![update(INVENTORY, 5, 9, second)])
        .await
        .expect("apply");
    assert_eq!(checkpoint(b, INVENTORY).await, 9);
    assert_eq!(inventory_item(b, "s1", "i1").await, Ok((9, 2)));
    assert_eq!(inventory_item(b, "s1", "i2").await, Ok((9, 10)));
    assert_eq!(inventory_item(b, "s9", "i9").await, Ok((9, 0)));
    let want = owned(&[("i1", 7), ("i3", 4)]);
    assert_eq!(inventory(b, "s2").await, Ok((9, want)));
}

pub async fn apply_moves_several_projections_at_once(b: &Backend) {
    let d = date(2026, 3, 14);
    let updates = vec![
        update(INVENTORY, 0, 5, stock(&[("s1", "i1", 2)])),
        update(STORE_DAILY, 0, 7, store_days(&[("s1", d, sales(2, 500))])),
        update(
            SUPPLIER_DAILY,
            0,
            4,
            supplier_days(&[("p1", d, supplied(9, 90))]),
        ),
    ];
    b.sink.apply(updates).await.expect("apply");
    let all = b.read.checkpoints().await.expect("checkpoints");
    let want: HashMap<String, u64> = [(INVENTORY, 5), (STORE_DAILY, 7), (SUPPLIER_DAILY, 4)]
        .into_iter()
        .map(|(p, n)| (p.to_owned(), n))
        .collect();
    let moved: HashMap<String, u64> = all
        .into_iter()
        .filter(|(p, _)| PROJECTIONS.contains(&p.as_str()))
        .collect();
    assert_eq!(moved, want);
    // Each query answers with its own projection's checkpoint.
    assert_eq!(inventory(b, "s1").await, Ok((5, owned(&[("i1", 2)]))));
    assert_eq!(inventory_item(b, "s1", "i1").await, Ok((5, 2)));
    assert_eq!(
        store_daily(b, "s1", None, None).await,
        Ok((7, vec![(d, sales(2, 500))]))
    );
    let daily = vec![("s1".to_owned(), sales(2, 500))];
    assert_eq!(daily_sales(b, d).await, Ok((7, daily)));
    let supplier = vec![(d, supplied(9, 90))];
    assert_eq!(supplier_daily(b, "p1", None, None).await, Ok((4, supplier)));
}

pub async fn stale_from_writes_nothing(b: &Backend) {
    let first = stock(&[("s1", "i1", 3)]);
    b.sink
        .apply(vec![update(INVENTORY, 0, 5, first)])
        .await
        .expect("apply");
    let d = date(2026, 3, 14);
    for stale in [3, 6] {
        let updates = vec![
            update(STORE_DAILY, 0, 7, store_days(&[("s1", d, sales(1, 100))])),
            update(INVENTORY, stale, 8, stock(&[("s1", "i1", 100)])),
        ];
        let got = b.sink.apply(updates).await;
        let want = Error::CheckpointMoved {
            projection: INVENTORY.to_owned(),
            expected: stale,
        };
        assert_eq!(got, Err(want));
        assert_eq!(checkpoint(b, INVENTORY).await, 5);
        assert_eq!(
            checkpoint(b, STORE_DAILY).await,
            0,
            "the valid update went nowhere"
        );
        assert_eq!(inventory_item(b, "s1", "i1").await, Ok((5, 3)));
        assert_eq!(store_daily(b, "s1", None, None).await, Ok((0, Vec::new())));
    }
}

pub async fn reset_empties_one_projection(b: &Backend) {
    let d = date(2026, 3, 14);
    let updates = vec![
        update(INVENTORY, 0, 5, stock(&[("s1", "i1", 2)])),
        update(STORE_DAILY, 0, 5, store_days(&[("s1", d, sales(2, 500))])),
    ];
    b.sink.apply(updates).await.expect("apply");
    b.sink.reset(INVENTORY).await.expect("reset");
    assert_eq!(checkpoint(b, INVENTORY).await, 0);
    assert_eq!(inventory(b, "s1").await, Ok((0, Vec::new())));
    assert_eq!(inventory_item(b, "s1", "i1").await, Ok((0, 0)));
    assert_eq!(
        checkpoint(b, STORE_DAILY).await,
        5,
        "other projections keep theirs"
    );
    assert_eq!(
        store_daily(b, "s1", None, None).await,
        Ok((5, vec![(d, sales(2, 500))]))
    );

    // A rebuild starts from 0 and does not add to the old rows.
    let rebuilt = stock(&[("s1", "i1", 1)]);
    b.sink
        .apply(vec![update(INVENTORY, 0, 3, rebuilt)])
        .await
        .expect("apply");
    assert_eq!(inventory(b, "s1").await, Ok((3, owned(&[("i1", 1)]))));
}

pub async fn store_daily_filters_dates_and_skips_empty_days(b: &Backend) {
    let [d1, d2, d3, d4, d5] = [10, 11, 12, 13, 14].map(|d| date(2026, 3, d));
    let first = store_days(&[
        ("s1", d1, sales(1, 100)),
        ("s1", d2, sales(2, 200)),
        ("s1", d4, sales(4, 400)),
        ("s1", d5, DayFigures::default()),
        ("s2", d2, sales(5, 550)),
    ]);
    b.sink
        .apply(vec![update(STORE_DAILY, 0, 6, first)])
        .await
        .expect("apply");
    let returned = DayFigures {
        returned_units: 1,
        returned_cents: 100,
        ..DayFigures::default()
    };
    // d2 adds up, d4 is voided back to nothing, d3 has only a return.
    let second = store_days(&[
        ("s1", d2, sales(3, 300)),
        ("s1", d4, sales(-4, -400)),
        ("s1", d3, returned),
    ]);
    b.sink
        .apply(vec![update(STORE_DAILY, 6, 9, second)])
        .await
        .expect("apply");

    let mut day2 = sales(2, 200);
    day2.add(&sales(3, 300));
    let (p1, p2, p3) = ((d1, sales(1, 100)), (d2, day2), (d3, returned));
    let days = |from, to| store_daily(b, "s1", from, to);
    assert_eq!(days(None, None).await, Ok((9, vec![p1, p2, p3])));
    assert_eq!(days(Some(d2), Some(d3)).await, Ok((9, vec![p2, p3])));
    assert_eq!(days(Some(d2), None).await, Ok((9, vec![p2, p3])));
    assert_eq!(days(None, Some(d1)).await, Ok((9, vec![p1])));
    assert_eq!(days(Some(d4), Some(d5)).await, Ok((9, Vec::new())));
    assert_eq!(store_daily(b, "s9", None, None).await, Ok((9, Vec::new())));

    let (pos, mut stores) = daily_sales(b, d2).await.expect("daily_sales");
    stores.sort_by(|a, b| a.0.cmp(&b.0));
    let want = vec![("s1".to_owned(), day2), ("s2".to_owned(), sales(5, 550))];
    assert_eq!((pos, stores), (9, want));
    assert_eq!(
        daily_sales(b, d3).await,
        Ok((9, vec![("s1".to_owned(), returned)]))
    );
    assert_eq!(
        daily_sales(b, d4).await,
        Ok((9, Vec::new())),
        "a voided day is no activity"
    );
    assert_eq!(daily_sales(b, d5).await, Ok((9, Vec::new())));
}

pub async fn supplier_daily_filters_dates_and_skips_empty_days(b: &Backend) {
    let [d1, d2, d3, d4] = [10, 11, 12, 13].map(|d| date(2026, 3, d));
    let first = supplier_days(&[
        ("p1", d1, supplied(10, 1000)),
        ("p1", d2, supplied(4, 400)),
        ("p1", d3, supplied(0, 0)),
        ("p2", d1, supplied(1, 10)),
    ]);
    b.sink
        .apply(vec![update(SUPPLIER_DAILY, 0, 3, first)])
        .await
        .expect("apply");
    let sold = SupplierDay {
        units_sold: 2,
        sales_cents: 300,
        ..SupplierDay::default()
    };
    let second = supplier_days(&[
        ("p1", d1, sold),
        ("p1", d2, supplied(-4, -400)),
        ("p1", d4, sold),
    ]);
    b.sink
        .apply(vec![update(SUPPLIER_DAILY, 3, 8, second)])
        .await
        .expect("apply");

    let mut day1 = supplied(10, 1000);
    day1.add(&sold);
    let days = |from, to| supplier_daily(b, "p1", from, to);
    assert_eq!(
        days(None, None).await,
        Ok((8, vec![(d1, day1), (d4, sold)]))
    );
    assert_eq!(days(Some(d1), Some(d1)).await, Ok((8, vec![(d1, day1)])));
    assert_eq!(days(Some(d2), None).await, Ok((8, vec![(d4, sold)])));
    assert_eq!(days(None, Some(d3)).await, Ok((8, vec![(d1, day1)])));
    assert_eq!(days(Some(d2), Some(d3)).await, Ok((8, Vec::new())));
    let p2 = supplier_daily(b, "p2", None, None).await;
    assert_eq!(p2, Ok((8, vec![(d1, supplied(1, 10))])));
}

fn item_rows(rows: &[(&str, &str, Date, i64, i64)], suppliers: &[(&str, &str)]) -> Delta {
    Delta::ItemDaily(ItemDailyDelta {
        rows: rows
            .iter()
            .map(|(s, i, d, units, gross)| {
                let f = ItemDay {
                    units_sold: *units,
                    gross_cents: *gross,
                    ..ItemDay::default()
                };
                ((s.to_string(), i.to_string(), *d), f)
            })
            .collect(),
        suppliers: suppliers
            .iter()
            .map(|(i, p)| (i.to_string(), p.to_string()))
            .collect(),
        // A delivery on a day without sales: in the row, never in the item reports.
        supplied: [(
            ("s1".to_owned(), "i1".to_owned(), date(2026, 3, 12)),
            Supplied {
                units: 40,
                cost_cents: 800,
            },
        )]
        .into_iter()
        .collect(),
    })
}

pub async fn item_daily_top_items_and_low_stock(b: &Backend) {
    let [d1, d2, d3] = [10, 11, 12].map(|d| date(2026, 3, d));
    let suppliers = [("i1", "p1"), ("i2", "p2"), ("i3", "p1")];
    let first = item_rows(
        &[
            ("s1", "i1", d1, 3, 300),
            ("s2", "i1", d1, 2, 200),
            ("s1", "i2", d1, 5, 250),
            ("s1", "i3", d2, 5, 900),
            ("s2", "i2", d3, 1, 50),
        ],
        &suppliers,
    );
    let returned = Delta::ItemDaily(ItemDailyDelta {
        rows: [(
            ("s1".to_owned(), "i1".to_owned(), d2),
            ItemDay {
                returned_units: 1,
                returned_cents: 100,
                ..ItemDay::default()
            },
        )]
        .into_iter()
        .collect(),
        suppliers: [("i1".to_owned(), "p1".to_owned())].into_iter().collect(),
        supplied: HashMap::new(),
    });
    b.sink
        .apply(vec![
            update(ITEM_DAILY, 0, 4, first),
            update(
                INVENTORY,
                0,
                4,
                stock(&[("s1", "i1", 7), ("s1", "i2", 2), ("s1", "i3", 0)]),
            ),
        ])
        .await
        .expect("apply");
    b.sink
        .apply(vec![update(ITEM_DAILY, 4, 6, returned)])
        .await
        .expect("apply");

    let i1 = ItemId::parse("i1").unwrap();
    let all = b
        .read
        .item_daily(&i1, None, DateRange::default())
        .await
        .unwrap();
    assert_eq!(all.position, 6);
    assert_eq!(all.rows.supplier_id, Some(SupplierId::parse("p1").unwrap()));
    let days: Vec<_> = all.rows.days.iter().map(|d| (d.date, d.figures)).collect();
    let day1 = ItemDay {
        units_sold: 5,
        gross_cents: 500,
        ..ItemDay::default()
    };
    let day2 = ItemDay {
        returned_units: 1,
        returned_cents: 100,
        ..ItemDay::default()
    };
    assert_eq!(days, vec![(d1, day1), (d2, day2)], "summed over the stores");
    let s2 = b
        .read
        .item_daily(&i1, Some(&store("s2")), DateRange::day(d1))
        .await
        .unwrap();
    let days: Vec<_> = s2
        .rows
        .days
        .iter()
        .map(|d| (d.date, d.figures.units_sold))
        .collect();
    assert_eq!(days, vec![(d1, 2)], "one store, one day");
    let never = ItemId::parse("i9").unwrap();
    let none = b
        .read
        .item_daily(&never, None, DateRange::default())
        .await
        .unwrap();
    assert_eq!((none.rows.supplier_id, none.rows.days.len()), (None, 0));

    let top = |range, s: Option<&str>, supplier: Option<&str>, limit| TopItemsQuery {
        range,
        store: s.map(store),
        supplier: supplier.map(|p| SupplierId::parse(p).unwrap()),
        limit,
    };
    let ranked = |a: crate::rows::Positioned<Vec<TopItem>>| -> Vec<(String, i64, i64)> {
        a.rows
            .into_iter()
            .map(|t| (t.item_id.to_string(), t.units_sold, t.net_cents))
            .collect()
    };
    let every = b
        .read
        .top_items(&top(DateRange::default(), None, None, 10))
        .await
        .unwrap();
    assert_eq!(every.position, 6);
    // i2 and i3 tie on 5 units... i2 has 6 over both stores; i1 has 5 units, net 400.
    let want = vec![
        ("i2".to_owned(), 6, 300),
        ("i1".to_owned(), 5, 400),
        ("i3".to_owned(), 5, 900),
    ];
    assert_eq!(ranked(every), want, "by units, then item id");
    let s1 = b
        .read
        .top_items(&top(DateRange::default(), Some("s1"), None, 2))
        .await
        .unwrap();
    let want = vec![("i2".to_owned(), 5, 250), ("i3".to_owned(), 5, 900)];
    assert_eq!(ranked(s1), want, "one store, limited");
    let p1 = b
        .read
        .top_items(&top(DateRange::day(d1), None, Some("p1"), 10))
        .await
        .unwrap();
    assert_eq!(
        ranked(p1),
        vec![("i1".to_owned(), 5, 500)],
        "a supplier's, one day"
    );

    let low = b.read.low_stock(&store("s1"), 2).await.unwrap();
    let rows: Vec<_> = low
        .rows
        .iter()
        .map(|r| (r.item_id.to_string(), r.on_hand))
        .collect();
    assert_eq!(low.position, 4);
    assert_eq!(
        rows,
        vec![("i3".to_owned(), 0), ("i2".to_owned(), 2)],
        "by on hand"
    );
    b.sink.reset(ITEM_DAILY).await.expect("reset");
    let gone = b
        .read
        .item_daily(&i1, None, DateRange::default())
        .await
        .unwrap();
    assert_eq!((gone.position, gone.rows.days.len()), (0, 0));
}

/// After a restart the journal (sealed only every interval) is behind the read models, so the
/// projector's batches start before their checkpoints: those batches must leave the read models
/// where they are, and the projector must go on without a checkpoint error.
pub async fn projector_resumes_behind_its_journal(b: &Backend) {
    use crate::projector::Projector;
    let log = super::history::seed(b, &mut super::history::Rng::new(7), 150).await;
    let head = log.len() as u64;
    Projector::new(b.events.clone(), b.sink.clone(), crate::Signals::default())
        .catch_up()
        .await
        .unwrap();
    let before = b.read.checkpoints().await.unwrap();
    assert_eq!(before[INVENTORY], head);
    assert!(
        before
            .get(crate::readmodel::journal::JOURNAL)
            .copied()
            .unwrap_or(0)
            < head
    );
    // A new process: batches of 20 from the journal's checkpoint.
    let mut restarted = Projector::new(b.events.clone(), b.sink.clone(), crate::Signals::default())
        .with_batch_size(20);
    let mut steps = 0;
    while restarted
        .step()
        .await
        .expect("a step behind the read models")
        > 0
    {
        steps += 1;
        assert!(steps < 1000, "the projector goes on");
    }
    let after = b.read.checkpoints().await.unwrap();
    for p in crate::readmodel::LIVE {
        assert_eq!(after[p], head, "{p} stays at the head");
    }
}

/// The registry as lists: each by id (byte order), with the position of the reference projection.
pub async fn catalog_lists_the_registry_by_id(b: &Backend) {
    use crate::readmodel::{REFERENCE, Registered};
    let empty = b.read.catalog().await.unwrap();
    assert_eq!(empty.position, 0);
    assert_eq!(empty.rows, crate::rows::Catalog::default());
    let regs = vec![
        Registered::Supplier {
            supplier_id: "sup-b".into(),
            name: "Beta, Ltd".into(),
        },
        Registered::Supplier {
            supplier_id: "sup-a".into(),
            name: "Alpha".into(),
        },
        Registered::Store {
            store_id: "s-2".into(),
            name: "Harbour".into(),
            timezone: "Pacific/Auckland".into(),
        },
        Registered::Store {
            store_id: "S-1".into(),
            name: "Main St".into(),
            timezone: "America/New_York".into(),
        },
        Registered::Item {
            item_id: "i-2".into(),
            name: "pear".into(),
            supplier_id: "sup-b".into(),
            unit_price_cents: 400,
        },
        Registered::Item {
            item_id: "i-1".into(),
            name: "apple".into(),
            supplier_id: "sup-a".into(),
            unit_price_cents: 250,
        },
    ];
    b.sink
        .apply(vec![update(REFERENCE, 0, 6, Delta::Reference(regs))])
        .await
        .unwrap();
    let c = b.read.catalog().await.unwrap();
    assert_eq!(c.position, 6);
    let stores: Vec<(&str, &str, &str)> = c
        .rows
        .stores
        .iter()
        .map(|s| (s.store_id.as_str(), s.name.as_str(), s.timezone.as_str()))
        .collect();
    assert_eq!(
        stores,
        [
            ("S-1", "Main St", "America/New_York"),
            ("s-2", "Harbour", "Pacific/Auckland")
        ]
    );
    let suppliers: Vec<(&str, &str)> = c
        .rows
        .suppliers
        .iter()
        .map(|s| (s.supplier_id.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(suppliers, [("sup-a", "Alpha"), ("sup-b", "Beta, Ltd")]);
    let items: Vec<(&str, &str, &str, i64)> = c
        .rows
        .items
        .iter()
        .map(|i| {
            (
                i.item_id.as_str(),
                i.name.as_str(),
                i.supplier_id.as_str(),
                i.unit_price_cents,
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            ("i-1", "apple", "sup-a", 250),
            ("i-2", "pear", "sup-b", 400)
        ]
    );
}
