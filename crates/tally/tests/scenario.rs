//! A retail scenario across three time zones, checked figure by figure against an independent model
//! of API.md's rules: stock per (store, item), store daily sales and supplier daily reports by local
//! business date, the event feed, one stream, CSV, and idempotency.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use common::{App, expect_problem, json_of, spawn_app};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::StatusCode;
use serde_json::{Value, json};

type Outcome = Result<(), &'static str>;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SalesDay {
    transactions: i64,
    units_sold: i64,
    gross_cents: i64,
    returned_units: i64,
    returned_cents: i64,
}

impl SalesDay {
    fn figures(&self) -> Value {
        json!({
            "transactions": self.transactions,
            "units_sold": self.units_sold,
            "gross_cents": self.gross_cents,
            "returned_units": self.returned_units,
            "returned_cents": self.returned_cents,
            "net_cents": self.gross_cents - self.returned_cents,
            // No sale of this scenario is discounted (see discounts.rs for those).
            "discount_cents": 0,
        })
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SupplierDay {
    deliveries: i64,
    units_supplied: i64,
    supply_cost_cents: i64,
    units_sold: i64,
    sales_cents: i64,
}

#[derive(Debug)]
struct SaleFact {
    store: String,
    date: String,
    /// (item, quantity, unit price)
    lines: Vec<(String, i64, i64)>,
    returned: HashMap<String, i64>,
    voided: bool,
}

#[derive(Debug)]
struct ReturnFact {
    store: String,
    date: String,
    units: i64,
    cents: i64,
}

#[derive(Debug)]
struct DeliveryFact {
    supplier: String,
    date: String,
    units: i64,
    cost: i64,
}

/// The expected state, computed from the commands alone with API.md's rules.
#[derive(Default)]
struct Model {
    suppliers: HashSet<String>,
    stores: HashMap<String, TimeZone>,
    /// item -> its supplier
    items: HashMap<String, String>,
    stock: BTreeMap<(String, String), i64>,
    sales: BTreeMap<String, SaleFact>,
    returns: Vec<ReturnFact>,
    return_ids: HashSet<String>,
    deliveries: Vec<DeliveryFact>,
    delivery_ids: HashSet<String>,
    adjustment_ids: HashSet<String>,
}

impl Model {
    fn local_date(&self, store: &str, at: &str) -> String {
        let ts: Timestamp = at.parse().expect("an RFC 3339 time");
        ts.to_zoned_datetime(self.stores[store].clone())
            .date()
            .to_string()
    }

    fn on_hand(&self, store: &str, item: &str) -> i64 {
        self.stock
            .get(&(store.to_owned(), item.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn add_stock(&mut self, store: &str, item: &str, delta: i64) {
        *self
            .stock
            .entry((store.to_owned(), item.to_owned()))
            .or_default() += delta;
    }

    fn supplier(&mut self, id: &str) -> Outcome {
        if !self.suppliers.insert(id.to_owned()) {
            return Err("duplicate_id");
        }
        Ok(())
    }

    fn store(&mut self, id: &str, tz: &str) -> Outcome {
        if self.stores.contains_key(id) {
            return Err("duplicate_id");
        }
        self.stores
            .insert(id.to_owned(), TimeZone::get(tz).expect("a known zone"));
        Ok(())
    }

    fn item(&mut self, id: &str, supplier: &str) -> Outcome {
        if self.items.contains_key(id) {
            return Err("duplicate_id");
        }
        if !self.suppliers.contains(supplier) {
            return Err("unknown_supplier");
        }
        self.items.insert(id.to_owned(), supplier.to_owned());
        Ok(())
    }

    fn delivery(
        &mut self,
        id: &str,
        supplier: &str,
        store: &str,
        at: &str,
        lines: &[(&str, i64, i64)],
    ) -> Outcome {
        if self.delivery_ids.contains(id) {
            return Err("duplicate_id");
        }
        if !self.suppliers.contains(supplier) {
            return Err("unknown_supplier");
        }
        if !self.stores.contains_key(store) {
            return Err("unknown_store");
        }
        for (item, _, _) in lines {
            match self.items.get(*item) {
                None => return Err("unknown_item"),
                Some(s) if s != supplier => return Err("item_not_from_supplier"),
                Some(_) => {}
            }
        }
        self.delivery_ids.insert(id.to_owned());
        for (item, qty, _) in lines {
            self.add_stock(store, item, *qty);
        }
        self.deliveries.push(DeliveryFact {
            supplier: supplier.to_owned(),
            date: self.local_date(store, at),
            units: lines.iter().map(|l| l.1).sum(),
            cost: lines.iter().map(|l| l.1 * l.2).sum(),
        });
        Ok(())
    }

    fn sale(&mut self, id: &str, store: &str, at: &str, lines: &[(&str, i64, i64)]) -> Outcome {
        if self.sales.contains_key(id) {
            return Err("duplicate_id");
        }
        if !self.stores.contains_key(store) {
            return Err("unknown_store");
        }
        if lines.iter().any(|l| !self.items.contains_key(l.0)) {
            return Err("unknown_item");
        }
        if lines.iter().any(|l| self.on_hand(store, l.0) < l.1) {
            return Err("insufficient_stock");
        }
        for (item, qty, _) in lines {
            self.add_stock(store, item, -qty);
        }
        let fact = SaleFact {
            store: store.to_owned(),
            date: self.local_date(store, at),
            lines: lines
                .iter()
                .map(|(i, q, p)| ((*i).to_owned(), *q, *p))
                .collect(),
            returned: HashMap::new(),
            voided: false,
        };
        self.sales.insert(id.to_owned(), fact);
        Ok(())
    }

    fn void(&mut self, sale_id: &str) -> Outcome {
        let Some(sale) = self.sales.get(sale_id) else {
            return Err("unknown_sale");
        };
        if sale.voided {
            return Err("sale_voided");
        }
        if !sale.returned.is_empty() {
            return Err("sale_has_returns");
        }
        let (store, lines) = (sale.store.clone(), sale.lines.clone());
        for (item, qty, _) in &lines {
            self.add_stock(&store, item, *qty);
        }
        self.sales.get_mut(sale_id).unwrap().voided = true;
        Ok(())
    }

    fn ret(
        &mut self,
        id: &str,
        sale_id: &str,
        store: &str,
        at: &str,
        lines: &[(&str, i64)],
    ) -> Outcome {
        if self.return_ids.contains(id) {
            return Err("duplicate_id");
        }
        let Some(sale) = self.sales.get(sale_id) else {
            return Err("unknown_sale");
        };
        if sale.voided {
            return Err("sale_voided");
        }
        let mut cents = 0;
        for (item, qty) in lines {
            let Some(line) = sale.lines.iter().find(|l| l.0 == *item) else {
                return Err("return_exceeds_sale");
            };
            let before = sale.returned.get(*item).copied().unwrap_or(0);
            if before + qty > line.1 {
                return Err("return_exceeds_sale");
            }
            cents += qty * line.2;
        }
        self.return_ids.insert(id.to_owned());
        let sale = self.sales.get_mut(sale_id).unwrap();
        for (item, qty) in lines {
            *sale.returned.entry((*item).to_owned()).or_default() += qty;
        }
        for (item, qty) in lines {
            self.add_stock(store, item, *qty);
        }
        self.returns.push(ReturnFact {
            store: store.to_owned(),
            date: self.local_date(store, at),
            units: lines.iter().map(|l| l.1).sum(),
            cents,
        });
        Ok(())
    }

    fn adjustment(&mut self, id: &str, store: &str, item: &str, delta: i64) -> Outcome {
        if self.adjustment_ids.contains(id) {
            return Err("duplicate_id");
        }
        if !self.stores.contains_key(store) {
            return Err("unknown_store");
        }
        if !self.items.contains_key(item) {
            return Err("unknown_item");
        }
        if self.on_hand(store, item) + delta < 0 {
            return Err("insufficient_stock");
        }
        self.adjustment_ids.insert(id.to_owned());
        self.add_stock(store, item, delta);
        Ok(())
    }

    fn store_days(&self, store: &str) -> BTreeMap<String, SalesDay> {
        let mut days: BTreeMap<String, SalesDay> = BTreeMap::new();
        for sale in self.sales.values() {
            if sale.store != store || sale.voided {
                continue;
            }
            let day = days.entry(sale.date.clone()).or_default();
            day.transactions += 1;
            for (_, qty, price) in &sale.lines {
                day.units_sold += qty;
                day.gross_cents += qty * price;
            }
        }
        for r in self.returns.iter().filter(|r| r.store == store) {
            let day = days.entry(r.date.clone()).or_default();
            day.returned_units += r.units;
            day.returned_cents += r.cents;
        }
        days
    }

    fn supplier_days(&self, supplier: &str) -> BTreeMap<String, SupplierDay> {
        let mut days: BTreeMap<String, SupplierDay> = BTreeMap::new();
        for d in self.deliveries.iter().filter(|d| d.supplier == supplier) {
            let day = days.entry(d.date.clone()).or_default();
            day.deliveries += 1;
            day.units_supplied += d.units;
            day.supply_cost_cents += d.cost;
        }
        for sale in self.sales.values().filter(|s| !s.voided) {
            for (item, qty, price) in &sale.lines {
                if self.items[item] == supplier {
                    let day = days.entry(sale.date.clone()).or_default();
                    day.units_sold += qty;
                    day.sales_cents += qty * price;
                }
            }
        }
        days
    }

    fn all_dates(&self) -> BTreeSet<String> {
        let mut dates = BTreeSet::new();
        for store in self.stores.keys() {
            dates.extend(self.store_days(store).into_keys());
        }
        dates
    }
}

/// Posts commands one at a time, waits for each outcome and checks it against the model.
struct Driver {
    app: App,
    model: Model,
    last_position: u64,
    /// (command id, position) of every processed command.
    processed: Vec<(String, u64)>,
    /// command ids of every rejected command.
    rejected: Vec<String>,
    /// sale position -> the occurred_at it was sent with.
    sale_times: HashMap<u64, String>,
}

impl Driver {
    async fn send(&mut self, path: &str, body: Value, expected: Outcome) -> Option<u64> {
        let id = self.app.submit(path, &body).await;
        let outcome = self.app.wait(&id).await;
        match expected {
            Ok(()) => {
                assert_eq!(outcome["status"], "processed", "{path} {body}: {outcome}");
                assert!(outcome.get("rejection").is_none(), "{outcome}");
                let position = outcome["position"].as_u64().unwrap();
                assert!(
                    position > self.last_position,
                    "positions grow: {position} after {}",
                    self.last_position
                );
                self.last_position = position;
                self.processed.push((id, position));
                Some(position)
            }
            Err(code) => {
                assert_eq!(outcome["status"], "rejected", "{path} {body}: {outcome}");
                assert_eq!(
                    outcome["rejection"]["code"], code,
                    "{path} {body}: {outcome}"
                );
                assert!(outcome["rejection"]["message"].is_string(), "{outcome}");
                assert!(outcome.get("position").is_none(), "{outcome}");
                self.rejected.push(id);
                None
            }
        }
    }

    async fn supplier(&mut self, id: &str, name: &str) {
        let expected = self.model.supplier(id);
        let body = json!({"supplier_id": id, "name": name});
        self.send("/v1/suppliers", body, expected).await;
    }

    async fn store(&mut self, id: &str, tz: &str) {
        let expected = self.model.store(id, tz);
        let body = json!({"store_id": id, "name": format!("Store {id}"), "timezone": tz});
        self.send("/v1/stores", body, expected).await;
    }

    async fn item(&mut self, id: &str, supplier: &str, price: i64) {
        let expected = self.model.item(id, supplier);
        let body = json!({"item_id": id, "name": format!("Item {id}"), "supplier_id": supplier,
                          "unit_price_cents": price});
        self.send("/v1/items", body, expected).await;
    }

    async fn delivery(
        &mut self,
        id: &str,
        supplier: &str,
        store: &str,
        at: &str,
        lines: &[(&str, i64, i64)],
    ) {
        let expected = self.model.delivery(id, supplier, store, at, lines);
        let lines: Vec<Value> = lines
            .iter()
            .map(|(i, q, c)| json!({"item_id": i, "quantity": q, "unit_cost_cents": c}))
            .collect();
        let body = json!({"delivery_id": id, "supplier_id": supplier, "store_id": store,
                          "occurred_at": at, "lines": lines});
        self.send("/v1/deliveries", body, expected).await;
    }

    async fn sale(&mut self, id: &str, store: &str, at: &str, lines: &[(&str, i64, i64)]) {
        let expected = self.model.sale(id, store, at, lines);
        let json_lines: Vec<Value> = lines
            .iter()
            .map(|(i, q, p)| json!({"item_id": i, "quantity": q, "unit_price_cents": p}))
            .collect();
        let body =
            json!({"sale_id": id, "store_id": store, "occurred_at": at, "lines": json_lines});
        if let Some(position) = self.send("/v1/sales", body, expected).await {
            self.sale_times.insert(position, at.to_owned());
        }
    }

    async fn void(&mut self, sale_id: &str, reason: &str) {
        let expected = self.model.void(sale_id);
        let body = json!({"reason": reason});
        self.send(&format!("/v1/sales/{sale_id}/void"), body, expected)
            .await;
    }

    async fn ret(&mut self, id: &str, sale_id: &str, store: &str, at: &str, lines: &[(&str, i64)]) {
        let expected = self.model.ret(id, sale_id, store, at, lines);
        let lines: Vec<Value> = lines
            .iter()
            .map(|(i, q)| json!({"item_id": i, "quantity": q}))
            .collect();
        let body = json!({"return_id": id, "sale_id": sale_id, "store_id": store,
                          "occurred_at": at, "lines": lines});
        self.send("/v1/returns", body, expected).await;
    }

    async fn adjust(&mut self, id: &str, store: &str, item: &str, delta: i64, reason: &str) {
        let expected = self.model.adjustment(id, store, item, delta);
        let body = json!({"adjustment_id": id, "store_id": store, "item_id": item,
                          "delta": delta, "reason": reason});
        self.send("/v1/stock-adjustments", body, expected).await;
    }

    /// GET with the admin key and `min_position` = the last processed position.
    async fn read(&self, path: &str) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}min_position={}", self.last_position);
        let body = self.app.get_ok(&path, &self.app.admin).await;
        let position = body["position"].as_u64();
        assert!(
            position.is_some_and(|p| p >= self.last_position),
            "GET {path}: position present and at least {}: {body}",
            self.last_position
        );
        body
    }
}

const LA: &str = "America/Los_Angeles";
const BERLIN: &str = "Europe/Berlin";
const TOKYO: &str = "Asia/Tokyo";

async fn reference_data(d: &mut Driver) {
    d.supplier("acme", "Acme Goods").await;
    d.supplier("bolt", "Bolt & Co").await;
    d.supplier("acme", "Acme again").await; // duplicate_id
    d.store("la", LA).await;
    d.store("ber", BERLIN).await;
    d.store("tyo", TOKYO).await;
    d.store("la", TOKYO).await; // duplicate_id
    d.item("a1", "acme", 250).await;
    d.item("a2", "acme", 1299).await;
    d.item("b1", "bolt", 500).await;
    d.item("b2", "bolt", 75).await;
    d.item("a1", "bolt", 1).await; // duplicate_id
    d.item("x9", "nosup", 1).await; // unknown_supplier
}

async fn deliveries(d: &mut Driver) {
    // LA 2026-03-09 23:30 local, 2026-03-10 in UTC.
    d.delivery(
        "d1",
        "acme",
        "la",
        "2026-03-10T06:30:00Z",
        &[("a1", 20, 100), ("a2", 5, 800)],
    )
    .await;
    d.delivery(
        "d2",
        "bolt",
        "la",
        "2026-03-10T09:00:00-07:00",
        &[("b1", 10, 300), ("b2", 50, 40)],
    )
    .await;
    // Berlin 2026-03-11 00:15 local, 2026-03-10 in UTC.
    d.delivery(
        "d3",
        "acme",
        "ber",
        "2026-03-10T23:15:00Z",
        &[("a1", 10, 110)],
    )
    .await;
    d.delivery(
        "d4",
        "bolt",
        "ber",
        "2026-03-10T12:00:00+01:00",
        &[("b1", 4, 300)],
    )
    .await;
    // Tokyo 23:59 on the 10th, then 00:01 on the 11th.
    d.delivery(
        "d5",
        "acme",
        "tyo",
        "2026-03-10T14:59:00Z",
        &[("a1", 8, 95), ("a2", 3, 820)],
    )
    .await;
    d.delivery(
        "d6",
        "bolt",
        "tyo",
        "2026-03-10T15:01:00Z",
        &[("b2", 30, 35)],
    )
    .await;
    // Rejections.
    d.delivery("d7", "acme", "la", "2026-03-10T10:00:00Z", &[("b1", 1, 1)])
        .await; // item_not_from_supplier
    d.delivery("d1", "acme", "la", "2026-03-10T10:00:00Z", &[("a1", 1, 1)])
        .await; // duplicate_id
    d.delivery(
        "d8",
        "acme",
        "nowhere",
        "2026-03-10T10:00:00Z",
        &[("a1", 1, 1)],
    )
    .await; // unknown_store
    d.delivery("d9", "acme", "la", "2026-03-10T10:00:00Z", &[("zz", 1, 1)])
        .await; // unknown_item
    d.delivery(
        "d10",
        "nosup",
        "la",
        "2026-03-10T10:00:00Z",
        &[("a1", 1, 1)],
    )
    .await; // unknown_supplier
}

async fn sales(d: &mut Driver) {
    // LA 2026-03-10 23:50 local (UTC 03-11).
    d.sale(
        "s-la-1",
        "la",
        "2026-03-11T06:50:00Z",
        &[("a1", 3, 250), ("b2", 10, 75)],
    )
    .await;
    // LA 2026-03-11 00:10 local.
    d.sale("s-la-2", "la", "2026-03-11T07:10:00Z", &[("a2", 2, 1299)])
        .await;
    d.sale("s-la-3", "la", "2026-03-11T18:00:00Z", &[("b1", 1, 500)])
        .await;
    // LA 2026-03-11 23:59:59 local (UTC 03-12).
    d.sale("s-la-4", "la", "2026-03-12T06:59:59Z", &[("a1", 1, 240)])
        .await;
    // Berlin 2026-03-12 00:30 local (UTC 03-11).
    d.sale(
        "s-ber-1",
        "ber",
        "2026-03-11T23:30:00Z",
        &[("a1", 4, 260), ("b1", 2, 550)],
    )
    .await;
    // Berlin 2026-03-11 23:59 local: its only sale that day, voided below.
    d.sale("s-ber-2", "ber", "2026-03-11T22:59:00Z", &[("a1", 1, 260)])
        .await;
    // Tokyo 2026-03-11 00:30 local (UTC 03-10).
    d.sale(
        "s-tyo-1",
        "tyo",
        "2026-03-10T15:30:00Z",
        &[("a1", 2, 250), ("a2", 1, 1299), ("b2", 5, 80)],
    )
    .await;
    // Tokyo 2026-03-10 23:30 local, recorded after the 03-11 sale (late fact), with an offset.
    d.sale(
        "s-tyo-2",
        "tyo",
        "2026-03-10T23:30:00+09:00",
        &[("b2", 3, 80)],
    )
    .await;
    // Around daylight saving time: LA springs forward on 2026-03-08, Berlin on 2026-03-29. With
    // today's offset instead of the one in force, these would land on the wrong date.
    // LA 2026-03-07 23:30 PST (UTC-8).
    d.sale("s-la-dst", "la", "2026-03-08T07:30:00Z", &[("a1", 1, 250)])
        .await;
    // Berlin 2026-03-30 00:30 CEST (UTC+2).
    d.sale(
        "s-ber-dst",
        "ber",
        "2026-03-29T22:30:00Z",
        &[("a1", 1, 260)],
    )
    .await;
    // Rejections.
    d.sale(
        "s-la-big",
        "la",
        "2026-03-11T20:00:00Z",
        &[("a2", 10, 1299)],
    )
    .await; // insufficient_stock
    // The first line would fit, the second not: nothing of the sale happens.
    d.sale(
        "s-la-half",
        "la",
        "2026-03-11T20:00:00Z",
        &[("a1", 1, 250), ("a2", 99, 1299)],
    )
    .await;
    d.sale("s-la-1", "la", "2026-03-11T20:00:00Z", &[("a1", 1, 250)])
        .await; // duplicate_id
    d.sale("s-la-1", "tyo", "2026-03-11T20:00:00Z", &[("a1", 1, 250)])
        .await; // duplicate_id, other store
    d.sale("s-la-5", "la", "2026-03-11T20:00:00Z", &[("nope", 1, 250)])
        .await; // unknown_item
    d.sale(
        "s-x-1",
        "nowhere",
        "2026-03-11T20:00:00Z",
        &[("a1", 1, 250)],
    )
    .await; // unknown_store
}

async fn voids_returns_adjustments(d: &mut Driver) {
    d.void("s-la-3", "rung up twice").await;
    d.void("s-ber-2", "test sale").await;
    d.void("s-la-3", "again").await; // sale_voided
    d.void("nosale", "what sale").await; // unknown_sale
    // A voided sale's id stays used.
    d.sale("s-la-3", "la", "2026-03-11T18:00:00Z", &[("b1", 1, 500)])
        .await; // duplicate_id

    // LA 2026-03-12 18:00 local: a partial return on a later date.
    d.ret("r1", "s-la-1", "la", "2026-03-13T01:00:00Z", &[("a1", 1)])
        .await;
    // LA 2026-03-13 01:00 local.
    d.ret(
        "r2",
        "s-la-1",
        "la",
        "2026-03-13T08:00:00Z",
        &[("a1", 2), ("b2", 4)],
    )
    .await;
    d.ret("r3", "s-la-1", "la", "2026-03-13T09:00:00Z", &[("a1", 1)])
        .await; // return_exceeds_sale
    d.ret("r3b", "s-la-1", "la", "2026-03-13T09:00:00Z", &[("b2", 7)])
        .await; // return_exceeds_sale
    // Tokyo 2026-03-12 01:00 local (UTC 03-11).
    d.ret("r4", "s-tyo-1", "tyo", "2026-03-11T16:00:00Z", &[("b2", 5)])
        .await;
    // Berlin, same business day as the sale.
    d.ret(
        "r5",
        "s-ber-1",
        "ber",
        "2026-03-12T10:00:00+01:00",
        &[("b1", 1)],
    )
    .await;
    d.void("s-la-1", "too late").await; // sale_has_returns
    d.ret("r6", "s-ber-2", "ber", "2026-03-12T10:00:00Z", &[("a1", 1)])
        .await; // sale_voided
    d.ret("r7", "nosale", "la", "2026-03-12T10:00:00Z", &[("a1", 1)])
        .await; // unknown_sale
    d.ret("r1", "s-la-4", "la", "2026-03-13T01:00:00Z", &[("a1", 1)])
        .await; // duplicate_id

    d.adjust("adj1", "la", "a1", -2, "damage").await;
    d.adjust("adj2", "tyo", "b2", 5, "count_correction").await;
    d.adjust("adj3", "ber", "b1", -100, "theft").await; // insufficient_stock
    d.adjust("adj1", "la", "a1", -1, "damage").await; // duplicate_id
    d.adjust("adj4", "ber", "a1", -1, "other").await;
    d.adjust("adj5", "ber", "nope", 1, "other").await; // unknown_item
    // Exactly to zero is allowed.
    let b1_berlin = d.model.on_hand("ber", "b1");
    d.adjust("adj6", "ber", "b1", -b1_berlin, "count_correction")
        .await;
}

fn sorted_by(mut rows: Vec<Value>, key: &str) -> Vec<Value> {
    rows.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
    rows
}

fn day_row(date: &str, figures: Value) -> Value {
    let mut row = json!({ "date": date });
    row.as_object_mut()
        .unwrap()
        .extend(figures.as_object().unwrap().clone());
    row
}

async fn check_inventory(d: &Driver) {
    let stores: Vec<String> = d.model.stores.keys().cloned().collect();
    for store in &stores {
        let answer = d.read(&format!("/v1/inventory/{store}")).await;
        assert_eq!(answer["store_id"], json!(store), "{answer}");
        let mut got: BTreeMap<String, i64> = BTreeMap::new();
        for row in answer["items"].as_array().unwrap() {
            let item = row["item_id"].as_str().unwrap().to_owned();
            let n = row["on_hand"].as_i64().unwrap();
            assert!(n >= 0, "no negative stock: {row}");
            assert!(got.insert(item, n).is_none(), "one row per item: {answer}");
        }
        for item in d.model.items.keys() {
            let want = d.model.on_hand(store, item);
            let have = got.remove(item).unwrap_or(0);
            assert_eq!(have, want, "inventory {store}/{item}: {answer}");
            let one = d.read(&format!("/v1/inventory/{store}/items/{item}")).await;
            assert_eq!(
                (&one["store_id"], &one["item_id"], &one["on_hand"]),
                (&json!(store), &json!(item), &json!(want)),
                "item inventory {store}/{item}: {one}"
            );
        }
        assert!(
            got.values().all(|n| *n == 0),
            "no stock of unknown items in {store}: {got:?}"
        );
    }
}

fn expected_store_days(model: &Model, store: &str) -> Vec<Value> {
    model
        .store_days(store)
        .iter()
        .map(|(date, day)| day_row(date, day.figures()))
        .collect()
}

async fn check_store_reports(d: &Driver) {
    let stores: Vec<String> = d.model.stores.keys().cloned().collect();
    for store in &stores {
        let answer = d
            .read(&format!("/v1/reports/stores/{store}/daily-sales"))
            .await;
        assert_eq!(answer["store_id"], json!(store), "{answer}");
        let days = sorted_by(answer["days"].as_array().unwrap().clone(), "date");
        assert_eq!(
            days,
            expected_store_days(&d.model, store),
            "daily sales of {store}"
        );
    }
    // from/to bound the dates, inclusive.
    let answer = d
        .read("/v1/reports/stores/la/daily-sales?from=2026-03-11&to=2026-03-12")
        .await;
    let want: Vec<Value> = expected_store_days(&d.model, "la")
        .into_iter()
        .filter(|r| ["2026-03-11", "2026-03-12"].contains(&r["date"].as_str().unwrap()))
        .collect();
    assert_eq!(
        sorted_by(answer["days"].as_array().unwrap().clone(), "date"),
        want,
        "la from/to"
    );

    // The all-stores report of each date, and of a date without activity.
    let mut dates = d.model.all_dates();
    dates.insert("2026-03-01".to_owned());
    for date in &dates {
        let answer = d
            .read(&format!("/v1/reports/daily-sales?date={date}"))
            .await;
        assert_eq!(answer["date"], json!(date), "{answer}");
        let mut want = Vec::new();
        for store in &stores {
            if let Some(day) = d.model.store_days(store).get(date) {
                let mut row = json!({ "store_id": store });
                row.as_object_mut()
                    .unwrap()
                    .extend(day.figures().as_object().unwrap().clone());
                want.push(row);
            }
        }
        let got = sorted_by(answer["stores"].as_array().unwrap().clone(), "store_id");
        assert_eq!(got, sorted_by(want, "store_id"), "daily sales of {date}");
    }
}

async fn check_supplier_reports(d: &Driver) {
    for supplier in ["acme", "bolt"] {
        let answer = d
            .read(&format!("/v1/reports/suppliers/{supplier}/daily"))
            .await;
        assert_eq!(answer["supplier_id"], json!(supplier), "{answer}");
        let want: Vec<Value> = d
            .model
            .supplier_days(supplier)
            .iter()
            .map(|(date, s)| {
                json!({"date": date, "deliveries": s.deliveries, "units_supplied": s.units_supplied,
                       "supply_cost_cents": s.supply_cost_cents, "units_sold": s.units_sold,
                       "sales_cents": s.sales_cents})
            })
            .collect();
        let got = sorted_by(answer["days"].as_array().unwrap().clone(), "date");
        assert_eq!(got, want, "supplier daily of {supplier}");
    }
}

async fn check_csv(d: &Driver) {
    let path = format!(
        "/v1/reports/stores/la/daily-sales?min_position={}",
        d.last_position
    );
    let text = d.app.csv_of(&path).await;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("a header row").split(',').collect();
    let mut rows: Vec<Value> = lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(
                cells.len(),
                header.len(),
                "CSV row {line:?} vs header {header:?}"
            );
            let mut row = serde_json::Map::new();
            for (name, cell) in header.iter().zip(cells) {
                let value = cell
                    .parse::<i64>()
                    .map_or_else(|_| json!(cell), |n| json!(n));
                row.insert((*name).to_owned(), value);
            }
            Value::Object(row)
        })
        .collect();
    rows.sort_by(|a, b| a["date"].as_str().cmp(&b["date"].as_str()));
    let want = expected_store_days(&d.model, "la");
    assert_eq!(rows.len(), want.len(), "CSV rows:\n{text}");
    for (row, want) in rows.iter().zip(&want) {
        for (field, value) in want.as_object().unwrap() {
            assert_eq!(&row[field], value, "CSV {field} in {row}\n{text}");
        }
        if let Some(store) = row.get("store_id") {
            assert_eq!(store, "la", "{text}");
        }
    }
}

async fn check_events(d: &Driver) {
    let events = d.app.all_events().await;
    assert!(!events.is_empty());
    let mut by_position: HashMap<u64, &Value> = HashMap::new();
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut previous = 0;
    for e in &events {
        let position = e["position"].as_u64().expect("position");
        assert!(
            position > previous,
            "one global order: {position} after {previous}"
        );
        previous = position;
        let stream = e["stream_id"].as_str().expect("stream_id");
        let version = e["version"].as_u64().expect("version");
        let last = versions.entry(stream.to_owned()).or_insert(0);
        assert_eq!(
            version,
            *last + 1,
            "versions of {stream} count up from 1: {e}"
        );
        *last = version;
        assert!(e["type"].as_str().is_some_and(|t| !t.is_empty()), "{e}");
        assert!(e["schema_version"].as_u64().is_some_and(|v| v >= 1), "{e}");
        for field in ["occurred_at", "recorded_at"] {
            let raw = e[field].as_str().expect(field);
            raw.parse::<Timestamp>()
                .unwrap_or_else(|err| panic!("{field} is RFC 3339: {raw}: {err}"));
        }
        assert!(e["data"].is_object(), "{e}");
        assert!(e["metadata"]["command_id"].is_string(), "{e}");
        by_position.insert(position, e);
    }
    assert_eq!(
        previous, d.last_position,
        "the feed ends at the last processed position"
    );

    // Each processed command's position is one of its events; rejected commands wrote nothing.
    let processed: HashSet<&str> = d.processed.iter().map(|(id, _)| id.as_str()).collect();
    for (id, position) in &d.processed {
        let e = by_position
            .get(position)
            .unwrap_or_else(|| panic!("no event at {position}"));
        assert_eq!(e["metadata"]["command_id"], json!(id), "{e}");
    }
    for e in &events {
        let id = e["metadata"]["command_id"].as_str().unwrap();
        assert!(
            processed.contains(id),
            "event of a command that was not processed: {e}"
        );
    }
    // Sales keep their business time.
    for (position, at) in &d.sale_times {
        let e = by_position[position];
        let got: Timestamp = e["occurred_at"].as_str().unwrap().parse().unwrap();
        let sent: Timestamp = at.parse().unwrap();
        assert_eq!(got, sent, "occurred_at of {e}");
    }

    // Paging: limit is respected and next_after continues the feed.
    let page = d
        .app
        .get_ok("/v1/events?after=0&limit=3", &d.app.admin)
        .await;
    let first: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = events
        .iter()
        .take(3)
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(first, want);
    assert_eq!(page["next_after"], json!(want[2]));

    // One stream: the store's events, in version order.
    for store in ["la", "tyo"] {
        let stream_id = format!("store-{store}");
        let answer = d
            .app
            .get_ok(&format!("/v1/streams/{stream_id}"), &d.app.admin)
            .await;
        let got = match &answer {
            Value::Array(a) => a.clone(),
            other => other["events"].as_array().expect("events").clone(),
        };
        assert!(!got.is_empty(), "{stream_id} has events");
        // An event may belong to more than one stream (a delivery is in its own stream and in its
        // store's): here it carries this stream's id and version; everything else is the feed's.
        let mut previous = 0;
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e["stream_id"], json!(stream_id), "{e}");
            assert_eq!(e["version"], json!(i + 1), "version order from 1: {e}");
            let position = e["position"].as_u64().unwrap();
            assert!(position > previous, "{stream_id} in global order");
            previous = position;
            let feed = by_position
                .get(&position)
                .unwrap_or_else(|| panic!("{stream_id} event at {position} is in the feed"));
            for field in [
                "type",
                "schema_version",
                "occurred_at",
                "recorded_at",
                "data",
                "metadata",
            ] {
                assert_eq!(
                    e[field], feed[field],
                    "{stream_id} event {position}: {field}"
                );
            }
        }
        let positions: HashSet<u64> = got
            .iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect();
        for e in events.iter().filter(|e| e["stream_id"] == json!(stream_id)) {
            assert!(
                positions.contains(&e["position"].as_u64().unwrap()),
                "{stream_id} holds {e}"
            );
        }
        // The store's sales are in it.
        for position in d.sale_times.keys() {
            let feed = by_position[position];
            if feed["data"]["store_id"] == json!(store) {
                assert!(
                    positions.contains(position),
                    "{stream_id} holds the sale at {position}"
                );
            }
        }
    }
}

async fn post_with_key(app: &App, key: &str, idempotency: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.at("/v1/sales"))
        .bearer_auth(key)
        .header("idempotency-key", idempotency)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Same key and body: the first answer again. Same key, other body: 409. Another API key: its own.
async fn check_idempotency(d: &mut Driver) {
    let at = "2026-03-12T20:00:00Z";
    let body = json!({"sale_id": "s-idem-1", "store_id": "la", "occurred_at": at,
                      "lines": [{"item_id": "b2", "quantity": 2, "unit_price_cents": 75}]});
    let key = "retry-7f3a";
    let r1 = post_with_key(&d.app, &d.app.admin, key, &body).await;
    assert!(
        r1.headers().get("idempotent-replayed").is_none(),
        "a first answer is no replay"
    );
    let (s1, first) = json_of(r1).await;
    assert_eq!(s1, StatusCode::ACCEPTED, "{first}");
    let r2 = post_with_key(&d.app, &d.app.admin, key, &body).await;
    assert_eq!(
        r2.headers()["idempotent-replayed"],
        "true",
        "a replay says so"
    );
    let (s2, second) = json_of(r2).await;
    assert_eq!(s2, StatusCode::ACCEPTED, "{second}");
    assert_eq!(
        first["command_id"], second["command_id"],
        "same key and body, same command"
    );

    let other = json!({"sale_id": "s-idem-2", "store_id": "la", "occurred_at": at,
                       "lines": [{"item_id": "b2", "quantity": 1, "unit_price_cents": 75}]});
    let r = post_with_key(&d.app, &d.app.admin, key, &other).await;
    expect_problem(r, 409, "same Idempotency-Key, other body").await;

    // The command took effect once.
    let id = first["command_id"].as_str().unwrap().to_owned();
    let outcome = d.app.wait(&id).await;
    assert_eq!(outcome["status"], "processed", "{outcome}");
    d.model
        .sale("s-idem-1", "la", at, &[("b2", 2, 75)])
        .expect("the model takes the sale");
    let position = outcome["position"].as_u64().unwrap();
    d.last_position = d.last_position.max(position);
    d.processed.push((id.clone(), position));
    d.sale_times.insert(position, at.to_owned());
    // Asking again after processing still answers the first command.
    let (s3, third) = json_of(post_with_key(&d.app, &d.app.admin, key, &body).await).await;
    assert_eq!(s3, StatusCode::ACCEPTED, "{third}");
    assert_eq!(third["command_id"], json!(id));

    // Keys are per API key: the la till may use the same Idempotency-Key for its own command.
    let till = d.app.create_key("store", Some("la")).await;
    let r = post_with_key(&d.app, &till, key, &other).await;
    let (s4, fourth) = json_of(r).await;
    assert_eq!(
        s4,
        StatusCode::ACCEPTED,
        "another API key, same Idempotency-Key: {fourth}"
    );
    assert_ne!(fourth["command_id"], json!(id));
    let id2 = fourth["command_id"].as_str().unwrap().to_owned();
    let outcome = d.app.wait_as(&id2, &till).await;
    assert_eq!(outcome["status"], "processed", "{outcome}");
    d.model
        .sale("s-idem-2", "la", at, &[("b2", 1, 75)])
        .expect("the model takes the sale");
    let position = outcome["position"].as_u64().unwrap();
    d.last_position = d.last_position.max(position);
    d.processed.push((id2, position));
    d.sale_times.insert(position, at.to_owned());
}

/// Runs the whole scenario through `app` and checks every figure; returns the driver for more checks.
async fn scenario(app: App) -> Driver {
    let mut d = Driver {
        app,
        model: Model::default(),
        last_position: 0,
        processed: Vec::new(),
        rejected: Vec::new(),
        sale_times: HashMap::new(),
    };
    reference_data(&mut d).await;
    deliveries(&mut d).await;
    sales(&mut d).await;
    voids_returns_adjustments(&mut d).await;
    check_idempotency(&mut d).await;

    // The scenario exercised what it meant to: dates that differ between UTC and local time.
    assert!(d.model.store_days("la").contains_key("2026-03-10"));
    assert!(!d.model.store_days("ber").contains_key("2026-03-11"));
    assert!(d.model.store_days("la").contains_key("2026-03-07"));
    assert!(d.model.store_days("ber").contains_key("2026-03-30"));
    assert_eq!(d.rejected.len(), 27, "every planned rejection happened");

    check_inventory(&d).await;
    check_store_reports(&d).await;
    check_supplier_reports(&d).await;
    check_csv(&d).await;
    check_events(&d).await;
    d
}

#[tokio::test]
async fn retail_scenario_across_three_time_zones() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = scenario(spawn_app(dir.path())).await;
    d.app.stop();
}

/// The same scenario on PostgreSQL, with each role in its own process: a gateway, two processors, a
/// projector and a query server. Commands go in through the gateway; every figure is checked through
/// the gateway and again through the query server.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn retail_scenario_on_postgres_across_separate_processes() {
    use common::{ADMIN_KEY, Schema, spawn_role};
    let dir = tempfile::tempdir().unwrap();
    let db = Schema::new("e2e");
    let (url, schema) = (db.url.as_str(), db.name.as_str());
    db.migrate_with_cli(dir.path());
    let gateway = spawn_role(dir.path(), "gateway", "gateway", url, schema);
    let mut others = vec![
        spawn_role(dir.path(), "processor-1", "processor", url, schema),
        spawn_role(dir.path(), "processor-2", "processor", url, schema),
        spawn_role(dir.path(), "projector", "projector", url, schema),
    ];
    let mut query = spawn_role(dir.path(), "query", "query", url, schema);
    // Processes that serve no API say so, and still answer probes.
    let (status, _) = others[0].get("/v1/inventory/la", ADMIN_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        others[0].get_raw("/readyz", None).await.status(),
        StatusCode::OK
    );

    let mut d = scenario(gateway).await;
    // Whichever process a request reaches, the answer is the same.
    let head = d.app.head().await;
    for path in [
        format!("/v1/inventory/la?min_position={head}"),
        format!("/v1/reports/stores/ber/daily-sales?min_position={head}"),
        format!("/v1/reports/suppliers/acme/daily?min_position={head}"),
        "/v1/events?after=0&limit=1000".to_owned(),
    ] {
        let via_gateway = d.app.get_ok(&path, ADMIN_KEY).await;
        let via_query = query.get_ok(&path, ADMIN_KEY).await;
        assert_eq!(via_gateway, via_query, "{path}");
    }
    d.app.stop();
    query.stop();
    for o in &mut others {
        o.stop();
    }
}
