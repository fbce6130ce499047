//! The demo's simulated traffic: tills ringing up sales (some of them late, with a business time
//! hours or days back), a few voids and returns of recent sales, suppliers delivering and correcting
//! their delivery notes. Commands go out one at a time on a fixed schedule; what the processor makes
//! of them (a sale rejected for stock, say) is the demo's to show, not to check.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tally_core::workload::SplitMix64;
use tokio::sync::watch;

use super::chain::{self, ITEMS, STORES, SUPPLIERS};
use crate::client::Client;

/// Recent sales and deliveries kept to void, return or correct.
const RECENT: usize = 50;

struct Sale {
    id: String,
    store: &'static str,
    item: &'static str,
    quantity: u64,
    /// Voided or returned already: touched no more.
    done: bool,
}

struct Delivery {
    id: String,
    lines: Vec<(&'static str, u64, i64)>,
    corrections: u32,
}

struct Simulation {
    rng: SplitMix64,
    n: u64,
    sales: VecDeque<Sale>,
    deliveries: VecDeque<Delivery>,
}

fn pick<'a, T>(rng: &mut SplitMix64, from: &'a [T]) -> &'a T {
    &from[rng.below(from.len() as u64) as usize]
}

impl Simulation {
    /// The next command: its path and body.
    fn next(&mut self) -> (String, Value) {
        self.n += 1;
        let n = self.n;
        let roll = self.rng.below(100);
        if roll < 5
            && let Some(s) = self.sales.iter_mut().rev().find(|s| !s.done)
        {
            s.done = true;
            return (
                format!("/v1/sales/{}/void", s.id),
                json!({"reason": "rung up twice"}),
            );
        }
        if roll < 12
            && let Some(s) = self.sales.iter_mut().find(|s| !s.done)
        {
            s.done = true;
            let units = 1 + self.rng.below(s.quantity);
            return (
                "/v1/returns".to_owned(),
                json!({"return_id": format!("demo-r{n}"), "sale_id": s.id, "store_id": s.store,
                       "lines": [{"item_id": s.item, "quantity": units}]}),
            );
        }
        if roll < 15
            && let Some(d) = self.deliveries.iter_mut().find(|d| d.corrections == 0)
        {
            d.corrections += 1;
            let lines: Vec<Value> = d
                .lines
                .iter()
                .enumerate()
                .map(|(i, (item, q, cost))| {
                    // The first line was miscounted by a couple of units.
                    let q = if i == 0 {
                        q.saturating_sub(2).max(1)
                    } else {
                        *q
                    };
                    json!({"item_id": item, "quantity": q, "unit_cost_cents": cost})
                })
                .collect();
            return (
                format!("/v1/deliveries/{}/corrections", d.id),
                json!({"correction_id": format!("demo-c{n}"), "reason": "recounted at the store",
                       "lines": lines}),
            );
        }
        if roll < 22 {
            return self.delivery(n);
        }
        self.sale(n, roll < 30)
    }

    fn delivery(&mut self, n: u64) -> (String, Value) {
        let store = pick(&mut self.rng, STORES).0;
        let supplier = pick(&mut self.rng, SUPPLIERS).0;
        let lines: Vec<(&'static str, u64, i64)> = ITEMS
            .iter()
            .filter(|i| i.2 == supplier)
            .map(|i| (i.0, 20 + self.rng.below(40), i.4))
            .collect();
        let id = format!("demo-d{n}");
        let body = json!({"delivery_id": id, "supplier_id": supplier, "store_id": store,
            "lines": lines.iter().map(|(item, q, cost)|
                json!({"item_id": item, "quantity": q, "unit_cost_cents": cost})).collect::<Vec<_>>()});
        self.deliveries.push_back(Delivery {
            id,
            lines,
            corrections: 0,
        });
        if self.deliveries.len() > RECENT {
            self.deliveries.pop_front();
        }
        ("/v1/deliveries".to_owned(), body)
    }

    /// A sale of one to three distinct items; a late one happened hours or days ago.
    fn sale(&mut self, n: u64, late: bool) -> (String, Value) {
        let store = pick(&mut self.rng, STORES).0;
        let first = self.rng.below(ITEMS.len() as u64) as usize;
        let count = 1 + self.rng.below(3) as usize;
        let mut lines = Vec::new();
        for k in 0..count {
            let (item, _, _, price, _) = ITEMS[(first + k * 3) % ITEMS.len()];
            let quantity = 1 + self.rng.below(3);
            let discount = if self.rng.below(10) == 0 { 50 } else { 0 };
            lines.push(
                json!({"item_id": item, "quantity": quantity, "unit_price_cents": price,
                              "discount_cents": discount}),
            );
        }
        let id = format!("demo-s{n}");
        let mut body = json!({"sale_id": id, "store_id": store, "till_id": format!("till-{}", 1 + n % 3),
                              "lines": lines});
        if late {
            let back = SignedDuration::from_mins(30 + self.rng.below(60 * 48) as i64);
            body["occurred_at"] = json!((Timestamp::now() - back).to_string());
        }
        let first_line = &body["lines"][0];
        self.sales.push_back(Sale {
            id,
            store,
            item: ITEMS[first].0,
            quantity: first_line["quantity"].as_u64().unwrap_or(1),
            done: false,
        });
        if self.sales.len() > RECENT {
            self.sales.pop_front();
        }
        ("/v1/sales".to_owned(), body)
    }
}

/// Registers the chain, then sends `rate` commands a second until `stop`.
pub async fn run(
    client: Client,
    rate: f64,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tokio::select! {
        r = chain::register(&client, chain::OPENING_STOCK) => r?,
        _ = stop.changed() => return Ok(()),
    }
    eprintln!(
        "demo: {} suppliers, {} stores, {} items registered; traffic at {rate} commands/s",
        SUPPLIERS.len(),
        STORES.len(),
        ITEMS.len()
    );
    let mut sim = Simulation {
        rng: SplitMix64::new(seed),
        n: 0,
        sales: VecDeque::new(),
        deliveries: VecDeque::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        let (path, body) = sim.next();
        let bytes = serde_json::to_vec(&body)?;
        let sent = tokio::select! {
            r = client.post(&path, &bytes, None) => r,
            _ = stop.changed() => return Ok(()),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %format!("{e:#}"), path, "a demo command was refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulation_mixes_every_kind_of_command() {
        let mut sim = Simulation {
            rng: SplitMix64::new(1),
            n: 0,
            sales: VecDeque::new(),
            deliveries: VecDeque::new(),
        };
        let paths: Vec<String> = (0..2000).map(|_| sim.next().0).collect();
        for kind in [
            "/v1/sales",
            "/void",
            "/v1/returns",
            "/v1/deliveries",
            "/corrections",
        ] {
            assert!(paths.iter().any(|p| p.ends_with(kind)), "no {kind}");
        }
        let late = (0..500)
            .map(|_| sim.next().1)
            .filter(|b| b.get("occurred_at").is_some())
            .count();
        assert!(late > 0, "some sales are late");
    }
}
