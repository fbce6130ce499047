//! `tally report …`: the read models of a running server as a table, CSV or JSON. JSON is the
//! server's answer as it came; CSV is the server's own `Accept: text/csv` answer; the table is drawn
//! here from the JSON (`report/table.rs`), money as currency units formatted from integer cents.

mod table;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::client::{Client, ServerArgs, encode};

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// How to print the answer.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub format: Format,
    /// Wait (up to 10 s, the server's limit) until the report reflects this global position, e.g.
    /// a command's from `GET /v1/commands/{id}`: read your own writes.
    #[arg(long, global = true)]
    pub min_position: Option<u64>,
    #[command(subcommand)]
    pub which: ReportCmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table fitted to the terminal's width (or `COLUMNS`).
    Table,
    /// The server's CSV (`Accept: text/csv`).
    Csv,
    /// The server's JSON.
    Json,
}

/// The business dates a report covers, and when it is known as of.
#[derive(Debug, Clone, Default, Args)]
pub struct Range {
    /// First business date (YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<String>,
    /// Last business date (YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub as_of: AsOf,
}

/// As the system knew it at an instant.
#[derive(Debug, Clone, Default, Args)]
pub struct AsOf {
    /// Answer as the system knew it at this instant (RFC 3339).
    #[arg(long)]
    pub as_of: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    /// One store's daily sales.
    StoreDaily {
        /// The store's id.
        #[arg(long)]
        store: String,
        #[command(flatten)]
        range: Range,
    },
    /// Every store's sales on one business date.
    AllStores {
        /// The business date (YYYY-MM-DD).
        #[arg(long)]
        date: String,
        #[command(flatten)]
        as_of: AsOf,
    },
    /// One supplier's daily deliveries and sales of its items.
    SupplierDaily {
        /// The supplier's id.
        #[arg(long)]
        supplier: String,
        #[command(flatten)]
        range: Range,
    },
    /// One item's daily sales, in every store or in one.
    ItemDaily {
        /// The item's id.
        #[arg(long)]
        item: String,
        /// Only this store's sales [default: every store's].
        #[arg(long)]
        store: Option<String>,
        #[command(flatten)]
        range: Range,
    },
    /// A store's stock on hand.
    Inventory {
        /// The store's id.
        #[arg(long)]
        store: String,
        #[command(flatten)]
        as_of: AsOf,
    },
    /// A store's items with at most --threshold on hand.
    LowStock {
        /// The store's id.
        #[arg(long)]
        store: String,
        /// 0..1000000 [server's default: 5].
        #[arg(long)]
        threshold: Option<u32>,
        #[command(flatten)]
        as_of: AsOf,
    },
    /// The best-selling items by units, on --date or over --from/--to.
    TopItems {
        /// One business date (YYYY-MM-DD), instead of --from/--to.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        date: Option<String>,
        /// Only this store's sales [default: every store's].
        #[arg(long)]
        store: Option<String>,
        /// 1..100.
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        range: Range,
    },
}

/// A query string built from the parameters that are given.
struct Query(Vec<(&'static str, String)>);

impl Query {
    fn new() -> Self {
        Self(Vec::new())
    }
    fn opt(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            self.0.push((name, v.to_string()));
        }
        self
    }
    fn range(self, r: &Range) -> Self {
        self.opt("from", r.from.as_ref())
            .opt("to", r.to.as_ref())
            .opt("as_of", r.as_of.as_of.as_ref())
    }
    fn path(self, base: String) -> String {
        if self.0.is_empty() {
            return base;
        }
        let q: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        format!("{base}?{}", q.join("&"))
    }
}

/// The path a report reads, and how its table is drawn.
fn request(which: &ReportCmd) -> (String, &'static table::Shape) {
    let id = |s: &str| encode(s);
    match which {
        ReportCmd::StoreDaily { store, range } => (
            Query::new()
                .range(range)
                .path(format!("/v1/reports/stores/{}/daily-sales", id(store))),
            &table::STORE_DAILY,
        ),
        ReportCmd::AllStores { date, as_of } => (
            Query::new()
                .opt("date", Some(date))
                .opt("as_of", as_of.as_of.as_ref())
                .path("/v1/reports/daily-sales".to_owned()),
            &table::ALL_STORES,
        ),
        ReportCmd::SupplierDaily { supplier, range } => (
            Query::new()
                .range(range)
                .path(format!("/v1/reports/suppliers/{}/daily", id(supplier))),
            &table::SUPPLIER_DAILY,
        ),
        ReportCmd::ItemDaily { item, store, range } => (
            Query::new()
                .opt("store_id", store.as_ref())
                .range(range)
                .path(format!("/v1/reports/items/{}/daily-sales", id(item))),
            &table::ITEM_DAILY,
        ),
        ReportCmd::Inventory { store, as_of } => (
            Query::new()
                .opt("as_of", as_of.as_of.as_ref())
                .path(format!("/v1/inventory/{}", id(store))),
            &table::STOCK,
        ),
        ReportCmd::LowStock {
            store,
            threshold,
            as_of,
        } => (
            Query::new()
                .opt("threshold", *threshold)
                .opt("as_of", as_of.as_of.as_ref())
                .path(format!("/v1/inventory/{}/low-stock", id(store))),
            &table::STOCK,
        ),
        ReportCmd::TopItems {
            date,
            store,
            limit,
            range,
        } => (
            Query::new()
                .opt("date", date.as_ref())
                .opt("store_id", store.as_ref())
                .opt("limit", *limit)
                .range(range)
                .path("/v1/reports/top-items".to_owned()),
            &table::TOP_ITEMS,
        ),
    }
}

pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_args(&args.server)?;
    let (path, shape) = request(&args.which);
    let path = match args.min_position {
        Some(p) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}min_position={p}")
        }
        None => path,
    };
    match args.format {
        Format::Csv => {
            let csv = client.get_text(&path, "text/csv").await?;
            print!("{csv}");
        }
        Format::Json => {
            let json = client.get_json(&path).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json).context("printing the answer")?
            );
        }
        Format::Table => {
            let json = client.get_json(&path).await?;
            print!("{}", table::render(shape, &json, table::width())?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
