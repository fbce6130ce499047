//! `tally bench asof`: time travel on a long log. A W1-shaped log (W1's reference data and
//! deliveries, then sales until about `--events` events, business times over `--days` days) goes
//! through the processor and the projector; then, at random instants of the log's recorded span,
//! three questions are timed through [`TimeTravel`], as the query API asks them: a store's daily
//! sales over 31 days as of the instant, one item's stock in a store as of the instant, and the
//! history of one store's day. Each timing includes finding the instant's position. Disk per event
//! is measured per table.

use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;
use jiff::{SignedDuration, Timestamp};
use tally_core::Signals;
use tally_core::projector::Projector;
use tally_core::rows::DateRange;
use tally_core::timetravel::TimeTravel;
use tally_core::workload::{SplitMix64, W1_FIRST_DAY, W1Size, w1_over};
use tally_domain::values::{ItemId, StoreId};

use super::scratch::{Scratch, enqueue, process};

/// The long W1-shaped log the time-travel and query benchmarks run on.
pub struct LogOptions {
    pub seed: u64,
    /// About this many events.
    pub events: usize,
    /// Business times spread over this many days.
    pub days: usize,
    /// A scratch schema of this PostgreSQL database; a temporary SQLite data dir without.
    pub postgres: Option<String>,
}

pub struct AsofOptions {
    pub log: LogOptions,
    pub queries: usize,
}

/// A random W1 business date, within `spread` days of its first.
pub(super) fn w1_day(rng: &mut SplitMix64, spread: usize) -> jiff::civil::Date {
    let offset = rng.below(spread.max(1) as u64) as i64;
    W1_FIRST_DAY
        .checked_add(jiff::Span::new().days(offset))
        .unwrap_or(W1_FIRST_DAY)
}

pub async fn asof_bench(o: AsofOptions) -> anyhow::Result<()> {
    let scratch = Scratch::open(o.log.postgres.clone()).await?;
    let result = run(&scratch, &o).await;
    scratch.close(result).await
}

/// Latencies in microseconds.
pub(super) struct Timings(pub(super) Histogram<u64>);

impl Timings {
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(Self(
            Histogram::new_with_bounds(1, 60_000_000, 3).context("a latency histogram")?,
        ))
    }
    pub(super) fn record(&mut self, since: Instant) {
        let micros = since.elapsed().as_micros().clamp(1, 60_000_000) as u64;
        let _ = self.0.record(micros);
    }
    pub(super) fn line(&self, what: &str) -> String {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{what}: n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
            self.0.len(),
            ms(0.5),
            ms(0.99),
            self.0.max() as f64 / 1000.0
        )
    }
}

/// Fills an empty backend with a W1-shaped log of about `events` events (W1's reference data and
/// deliveries, then sales, business times over `days` days), processed and projected; the head.
pub async fn fill(
    backend: &tally_core::Backend,
    log: &LogOptions,
) -> anyhow::Result<(u64, Signals)> {
    let (head, signals) = fill_log(backend, log).await?;
    let started = Instant::now();
    let mut projector = Projector::new(
        backend.events.clone(),
        backend.sink.clone(),
        signals.clone(),
    );
    projector.catch_up().await.context("projection catch-up")?;
    projector.flush().await.context("projection flush")?;
    eprintln!("projected in {:.1}s", started.elapsed().as_secs_f64());
    Ok((head, signals))
}

/// [`fill`] without the projection: the log alone, processed; the head.
pub async fn fill_log(
    backend: &tally_core::Backend,
    log: &LogOptions,
) -> anyhow::Result<(u64, Signals)> {
    let (seed, events, days) = (log.seed, log.events, log.days);
    let size = W1Size::FULL;
    // W1's reference data and deliveries come first; sales fill the rest. About 6 % of W1's sales
    // are rejected (its scarce items run out), so a few more are sent.
    let fixed = size.suppliers + size.stores + size.items * (size.stores + 1);
    let sales = (events.saturating_sub(fixed) * 100 / 94).max(1);
    let workload = w1_over(seed, W1Size { sales, ..size }, days);
    eprintln!(
        "{} commands (seed {seed}, business times over {days} days)",
        workload.commands.len(),
    );
    let started = Instant::now();
    enqueue(backend, workload.commands).await?;
    let signals = Signals::default();
    process(backend, &signals, 2048).await?;
    let head = backend.events.head().await?;
    eprintln!(
        "{head} events in the log after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok((head, signals))
}

async fn run(scratch: &Scratch, o: &AsofOptions) -> anyhow::Result<()> {
    let backend = &scratch.backend;
    let size = W1Size::FULL;
    eprintln!("time travel on {}, {}", scratch.name, scratch.place);
    let (head, _) = fill(backend, &o.log).await?;
    let first = backend.events.read_positions(&[1]).await?;
    let last = backend.events.read_positions(&[head]).await?;
    let (Some(first), Some(last)) = (first.first(), last.first()) else {
        anyhow::bail!("the log is empty");
    };
    let span = last.recorded_at.duration_since(first.recorded_at);
    let travel = TimeTravel::new(backend.events.clone(), backend.journal.clone());
    let mut rng = SplitMix64::new(o.log.seed ^ 0xA5_0F);
    let instant = |rng: &mut SplitMix64| -> Timestamp {
        let micros = span.as_micros().max(1) as u64;
        first.recorded_at + SignedDuration::from_micros(rng.below(micros) as i64)
    };
    let store = |rng: &mut SplitMix64| -> anyhow::Result<StoreId> {
        StoreId::parse(format!("store-{:02}", rng.below(size.stores as u64)))
            .context("a W1 store id")
    };
    let day = w1_day;

    let (mut daily, mut item, mut history) = (Timings::new()?, Timings::new()?, Timings::new()?);
    let mut rows = 0usize;
    for _ in 0..o.queries {
        // A store's 31 days of daily sales, as known at a random instant.
        let (s, at) = (store(&mut rng)?, instant(&mut rng));
        let from = day(&mut rng, o.log.days.saturating_sub(30));
        let range = DateRange::new(
            Some(from),
            from.checked_add(jiff::Span::new().days(30)).ok(),
        );
        let t = Instant::now();
        let upto = travel.position_at(at).await?;
        rows += travel.store_daily(&s, range, upto).await?.rows.len();
        daily.record(t);

        // One item's stock in a store, as known at a random instant.
        let (s, at) = (store(&mut rng)?, instant(&mut rng));
        let i = ItemId::parse(format!("item-{:04}", rng.below(size.items as u64)))
            .context("a W1 item id")?;
        let t = Instant::now();
        let upto = travel.position_at(at).await?;
        travel.inventory_item(&s, &i, upto, None).await?;
        item.record(t);

        // The history of one store's day, as the log knows it now.
        let (s, d) = (store(&mut rng)?, day(&mut rng, o.log.days));
        let t = Instant::now();
        rows += travel.store_day_history(&s, d, head).await?.rows.len();
        history.record(t);
    }
    println!("{}", daily.line("store daily sales, 31 days, as_of"));
    println!("{}", item.line("one item's inventory, as_of"));
    println!("{}", history.line("a day's history"));

    let tables = scratch.table_bytes().await?;
    let total: u64 = tables.iter().map(|t| t.bytes).sum();
    for t in tables.iter().take(12) {
        println!(
            "  {:<32} {:>12} bytes  {:>7.1} bytes/event",
            t.table,
            t.bytes,
            t.bytes as f64 / head as f64
        );
    }
    println!(
        "ASOF backend={} events={head} queries={} daily_p99_ms={:.2} item_p99_ms={:.2} history_p99_ms={:.2} bytes_per_event={:.1} rows_read={rows}",
        scratch.name,
        o.queries,
        daily.0.value_at_quantile(0.99) as f64 / 1000.0,
        item.0.value_at_quantile(0.99) as f64 / 1000.0,
        history.0.value_at_quantile(0.99) as f64 / 1000.0,
        total as f64 / head as f64,
    );
    Ok(())
}
