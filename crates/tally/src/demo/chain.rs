//! The demo's chain: two suppliers, stores in time zones on both sides of the date line (Kiritimati
//! at UTC+14 and Pago Pago at UTC−11 share a clock time a day apart), and a handful of items.

use anyhow::Context;
use serde_json::{Value, json};

use crate::client::Client;

pub const SUPPLIERS: &[(&str, &str)] = &[("acme", "Acme Foods"), ("bolt", "Bolt Household")];

/// (store_id, name, IANA time zone)
pub const STORES: &[(&str, &str, &str)] = &[
    ("kiritimati-1", "Kiritimati Harbour", "Pacific/Kiritimati"),
    ("auckland-1", "Auckland Quay", "Pacific/Auckland"),
    ("tokyo-1", "Tokyo Ginza", "Asia/Tokyo"),
    ("berlin-1", "Berlin Mitte", "Europe/Berlin"),
    ("newyork-1", "New York SoHo", "America/New_York"),
    ("pagopago-1", "Pago Pago Bay", "Pacific/Pago_Pago"),
];

/// (item_id, name, supplier_id, unit price in cents, unit cost in cents)
pub const ITEMS: &[(&str, &str, &str, i64, i64)] = &[
    ("coffee-1kg", "Coffee 1kg", "acme", 1299, 780),
    ("tea-100", "Tea, 100 bags", "acme", 549, 300),
    ("oats-500g", "Oats 500g", "acme", 249, 120),
    ("choc-100g", "Chocolate 100g", "acme", 199, 90),
    ("soap-3", "Soap, 3 bars", "bolt", 399, 210),
    ("towel", "Kitchen towel", "bolt", 299, 140),
    ("bulb-led", "LED bulb", "bolt", 649, 330),
    ("batt-aa4", "AA batteries, 4", "bolt", 499, 260),
];

/// Units of each item in each store's first delivery, for the demo.
pub const OPENING_STOCK: i64 = 400;

/// POSTs one command and waits until it is processed (reference data must exist before it is used).
pub async fn run_ok(client: &Client, path: &str, body: &Value) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(body).context("encoding a body")?;
    let answer = client.post(path, &bytes, None).await?.json()?;
    let id = answer["command_id"]
        .as_str()
        .context("a 202 names its command_id")?;
    let status = client.command(id, 10_000).await?;
    match status["status"].as_str() {
        Some("processed") | Some("accepted") => Ok(()),
        _ => anyhow::bail!("POST {path} was rejected: {status}"),
    }
}

/// Registers the chain and stocks every store with `opening` units of each item.
pub async fn register(client: &Client, opening: i64) -> anyhow::Result<()> {
    for (id, name) in SUPPLIERS {
        run_ok(
            client,
            "/v1/suppliers",
            &json!({"supplier_id": id, "name": name}),
        )
        .await?;
    }
    for (id, name, tz) in STORES {
        run_ok(
            client,
            "/v1/stores",
            &json!({"store_id": id, "name": name, "timezone": tz}),
        )
        .await?;
    }
    for (id, name, supplier, price, _) in ITEMS {
        run_ok(
            client,
            "/v1/items",
            &json!({"item_id": id, "name": name, "supplier_id": supplier, "unit_price_cents": price}),
        )
        .await?;
    }
    for (store, ..) in STORES {
        for (supplier, _) in SUPPLIERS {
            let lines: Vec<Value> = ITEMS
                .iter()
                .filter(|i| i.2 == *supplier)
                .map(|i| json!({"item_id": i.0, "quantity": opening, "unit_cost_cents": i.4}))
                .collect();
            run_ok(
                client,
                "/v1/deliveries",
                &json!({"delivery_id": format!("open-{store}-{supplier}"), "supplier_id": supplier,
                        "store_id": store, "lines": lines}),
            )
            .await?;
        }
    }
    Ok(())
}
