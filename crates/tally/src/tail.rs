//! `tally events tail`: follows the live feed (`GET /v1/events/live`, server-sent events) and prints
//! one line per event: position, recorded_at, type, stream and a short summary of its data. When the
//! connection drops it connects again from the last position it printed, so no event is shown twice
//! or missed; an answer that is a problem (a bad key, a role that may not read events) ends it.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::client::{Client, Problem, ServerArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Events after this global position [default: 0, the whole log, then live].
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Only events of these types (repeat, or comma-separated), e.g. SaleRecorded.
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
}

/// One message of the feed.
#[derive(Debug, Default, PartialEq)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Splits the SSE messages complete in `buf` off it (the rest waits for more bytes).
fn messages(buf: &mut String) -> Vec<Message> {
    let mut out = Vec::new();
    loop {
        let normalized = buf.replace("\r\n", "\n");
        if normalized.len() != buf.len() {
            *buf = normalized;
        }
        let Some(end) = buf.find("\n\n") else {
            return out;
        };
        let block: String = buf.drain(..end + 2).collect();
        let mut m = Message::default();
        let mut data = Vec::new();
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => m.id = Some(value.to_owned()),
                "event" => m.event = Some(value.to_owned()),
                "data" => data.push(value),
                _ => {} // comments (keep-alives) and fields this client does not use
            }
        }
        m.data = data.join("\n");
        if m.id.is_some() || !m.data.is_empty() {
            out.push(m);
        }
    }
}

/// The fields of an event's data worth a glance, in this order.
const SUMMARY_FIELDS: &[&str] = &[
    "sale_id",
    "delivery_id",
    "return_id",
    "correction_id",
    "adjustment_id",
    "supplier_id",
    "store_id",
    "item_id",
    "name",
    "timezone",
    "delta",
    "reason",
];

/// A short summary of an event's data: its ids and, for lines, how many and their units.
fn summary(data: &Value) -> String {
    let mut parts: Vec<String> = SUMMARY_FIELDS
        .iter()
        .filter_map(|f| match &data[*f] {
            Value::String(s) => Some(format!("{f}={s}")),
            Value::Number(n) => Some(format!("{f}={n}")),
            _ => None,
        })
        .collect();
    if let Some(lines) = data["lines"].as_array() {
        let units: i64 = lines.iter().filter_map(|l| l["quantity"].as_i64()).sum();
        parts.push(format!("lines={} units={units}", lines.len()));
    }
    parts.join(" ")
}

/// The printed line of one event.
fn line(event: &Value, colour: bool) -> String {
    let kind = event["type"].as_str().unwrap_or("?");
    let shown_kind = if colour {
        format!("\x1b[36m{kind:<24}\x1b[0m")
    } else {
        format!("{kind:<24}")
    };
    format!(
        "{:>8} {} {shown_kind} {} {}",
        event["position"].as_u64().unwrap_or(0),
        event["recorded_at"].as_str().unwrap_or("?"),
        event["stream_id"].as_str().unwrap_or("?"),
        summary(&event["data"]),
    )
    .trim_end()
    .to_owned()
}

/// Follows one connection of the feed from `*after`, printing and moving `*after` on; returns when
/// the connection ends (the caller connects again).
async fn follow(client: &Client, args: &TailArgs, after: &mut u64) -> anyhow::Result<()> {
    let path = format!("/v1/events/live?after={after}");
    let mut r = client
        .request(reqwest::Method::GET, &path)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    if !r.status().is_success() {
        let status = r.status();
        let body = r.bytes().await.unwrap_or_default();
        let problem = Problem::decode(status, &body);
        if status.is_client_error() {
            return Err(Fatal(problem).into());
        }
        return Err(anyhow::Error::new(problem).context(format!("GET {path}")));
    }
    // Colour on a terminal only, and not when NO_COLOR asks for none (no-color.org).
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut buf = String::new();
    let mut pending = Vec::new();
    while let Some(chunk) = r.chunk().await.context("reading the feed")? {
        pending.extend_from_slice(&chunk);
        // A chunk may end inside a UTF-8 sequence: keep the incomplete tail for the next one.
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let text: Vec<u8> = pending.drain(..valid).collect();
        buf.push_str(&String::from_utf8_lossy(&text));
        let mut out = std::io::stdout().lock();
        for m in messages(&mut buf) {
            let event: Value = serde_json::from_str(&m.data)
                .with_context(|| format!("an event of the feed is not JSON: {}", m.data))?;
            let position = event["position"].as_u64().unwrap_or(*after);
            *after = (*after).max(position);
            let kind = event["type"].as_str().unwrap_or("");
            if args.types.is_empty() || args.types.iter().any(|t| t == kind) {
                writeln!(out, "{}", line(&event, colour)).map_err(Stdout)?;
            }
        }
        out.flush().map_err(Stdout)?;
    }
    Ok(())
}

/// An answer that connecting again would not change.
#[derive(Debug)]
struct Fatal(Problem);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Fatal {}

/// Stdout could not be written (a reader that went away, `tally events tail | head`): connecting
/// again would not help either.
#[derive(Debug)]
struct Stdout(std::io::Error);

impl std::fmt::Display for Stdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing to stdout: {}", self.0)
    }
}

impl std::error::Error for Stdout {}

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&args.server)?;
    let mut after = args.after;
    let mut wait = Duration::from_millis(250);
    loop {
        let before = after;
        match follow(&client, &args, &mut after).await {
            Err(e) if e.is::<Fatal>() => return Err(e),
            // The reader of our output is gone: nothing is left to do.
            Err(e)
                if e.downcast_ref::<Stdout>()
                    .is_some_and(|s| s.0.kind() == std::io::ErrorKind::BrokenPipe) =>
            {
                return Ok(());
            }
            Err(e) if e.is::<Stdout>() => return Err(e),
            Err(e) => eprintln!("tally: the feed dropped ({e:#}); connecting again after {after}"),
            Ok(()) => eprintln!("tally: the feed ended; connecting again after {after}"),
        }
        // Back off while nothing comes through; start over once events flow again.
        wait = if after > before {
            Duration::from_millis(250)
        } else {
            (wait * 2).min(Duration::from_secs(5))
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_split_where_they_end_and_the_rest_waits() {
        let mut buf = String::from(
            ": keep-alive\n\nid: 1\nevent: SupplierRegistered\ndata: {\"a\":1}\n\nid: 2\r\ndata: {",
        );
        let got = messages(&mut buf);
        assert_eq!(
            got,
            vec![Message {
                id: Some("1".into()),
                event: Some("SupplierRegistered".into()),
                data: "{\"a\":1}".into()
            }]
        );
        assert_eq!(buf, "id: 2\ndata: {");
        buf.push_str("}\n\n");
        assert_eq!(messages(&mut buf)[0].data, "{}");
    }

    #[test]
    fn a_line_names_the_event_and_sums_its_lines() {
        let e = serde_json::json!({"position": 12, "recorded_at": "2026-12-08T03:00:00Z",
            "type": "SaleRecorded", "stream_id": "sale-s1",
            "data": {"sale_id": "s1", "store_id": "st", "lines": [{"quantity": 2}, {"quantity": 3}]}});
        let l = line(&e, false);
        assert!(
            l.starts_with("      12 2026-12-08T03:00:00Z SaleRecorded"),
            "{l}"
        );
        assert!(
            l.ends_with("sale-s1 sale_id=s1 store_id=st lines=2 units=5"),
            "{l}"
        );
    }
}
