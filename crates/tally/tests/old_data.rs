//! Data written by an earlier build still opens: the fixtures in `tests/fixtures/old-data` (written
//! by `make.sh` there with the binary of the build before a schema change; its README names the
//! commit) are opened by this build, which migrates them, and every report must still answer what
//! the old build answered. Fields this build adds are allowed; every field the old answer had must
//! be there with the same value, arrays of the same length. `tally events check` must decode every
//! stored event. SQLite here; PostgreSQL (the dump loaded into a schema of its own) with
//! `--features postgres`, failing when the server is missing.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cli::{counts, events_check};
use common::{App, json_of, spawn_app};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/old-data")
}

/// The reports `make.sh` saved: (file, request path).
fn report_paths() -> Vec<(String, String)> {
    let tsv = std::fs::read_to_string(fixtures().join("reports/paths.tsv")).unwrap();
    let paths: Vec<(String, String)> = tsv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (file, path) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("paths.tsv: {l:?}"));
            (file.to_owned(), path.to_owned())
        })
        .collect();
    assert!(paths.len() > 20, "paths.tsv lists the reports: {tsv}");
    paths
}

fn saved(backend: &str, file: &str) -> Value {
    let path = fixtures().join("reports").join(backend).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Where `new` does not hold `old`, one line per difference: objects must have every key of `old`
/// with a value that holds the old one (keys `new` adds are allowed), arrays the same length and
/// each element holding the old one, anything else must be equal.
fn not_contained(old: &Value, new: &Value, at: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (key, value) in o {
                let here = format!("{at}.{key}");
                match n.get(key) {
                    Some(v) => not_contained(value, v, &here, out),
                    None => out.push(format!("{here}: missing (was {value})")),
                }
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (a, b)) in o.iter().zip(n).enumerate() {
                not_contained(a, b, &format!("{at}[{i}]"), out);
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            out.push(format!("{at}: {} elements, was {}", n.len(), o.len()));
        }
        _ if old == new => {}
        _ => out.push(format!("{at}: {new}, was {old}")),
    }
}

/// The old feed as this build serves it: `schema_version` is the version as served, after
/// upcasting (API.md), so it may have grown; everything else is compared as any report.
fn feed_as_served(old: &Value, new: &[Value]) -> Value {
    let mut old = old.clone();
    if let Some(events) = old["events"].as_array_mut() {
        for (o, n) in events.iter_mut().zip(new) {
            let (was, now) = (o["schema_version"].as_u64(), n["schema_version"].as_u64());
            if let (Some(was), Some(now)) = (was, now)
                && now >= was
            {
                o["schema_version"] = json!(now);
            }
        }
    }
    old
}

/// Until the log's head is `head` and every read model has reached it (the new build may have
/// emptied some of them in its migrations and be folding them again).
async fn caught_up(app: &App, head: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = json_of(app.get_raw("/readyz", None).await).await;
        let models = body["checks"]["projections"]["models"].as_array();
        if body["checks"]["store"]["head"] == json!(head)
            && models
                .is_some_and(|m| !m.is_empty() && m.iter().all(|m| m["position"] == json!(head)))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the read models never reached {head}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fetches every saved report from `app` and compares it with what `backend`'s old build answered;
/// one assertion listing every difference.
async fn compare_reports(app: &App, backend: &str) {
    let mut differences = Vec::new();
    for (file, path) in report_paths() {
        let old = saved(backend, &file);
        let (new, old) = if path == "/v1/events" {
            let events = app.all_events().await;
            let old = feed_as_served(&old, &events);
            (json!({ "events": events }), old)
        } else {
            (app.get_ok(&path, &app.admin).await, old)
        };
        not_contained(&old, &new, &file, &mut differences);
    }
    assert!(
        differences.is_empty(),
        "{} difference(s) from the old build's answers:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// The old feed's events: (type, schema version) → events, as the old build stored them.
fn stored_counts(backend: &str) -> BTreeMap<(String, u64), u64> {
    let mut out = BTreeMap::new();
    for e in saved(backend, "events.json")["events"].as_array().unwrap() {
        let key = (
            e["type"].as_str().unwrap().to_owned(),
            e["schema_version"].as_u64().unwrap(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

/// `tally events check` decodes all of the old log and counts it by its stored types and versions.
fn assert_checks(dir: &Path, store_args: &[&str], backend: &str) {
    let expected = stored_counts(backend);
    let total: u64 = expected.values().sum();
    let out = events_check(dir, &[store_args, &["--json"]].concat());
    assert!(
        out.ok,
        "events check on the old data: {}{}",
        out.stdout, out.stderr
    );
    let summary = out.summary();
    assert_eq!(summary["failed"], json!(0), "{summary}");
    assert_eq!(summary["total"], json!(total), "{summary}");
    assert_eq!(counts(&summary), expected, "{summary}");
}

fn head_of(backend: &str) -> u64 {
    let feed = saved(backend, "events.json");
    let last = feed["events"].as_array().and_then(|e| e.last()).cloned();
    last.and_then(|e| e["position"].as_u64())
        .expect("the saved feed has events")
}

#[tokio::test]
async fn the_sqlite_data_of_the_build_before_opens_and_answers_as_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(fixtures().join("sqlite")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), data.join(entry.file_name())).unwrap();
        copied += 1;
    }
    assert!(data.join("tally.db").is_file(), "the fixture has tally.db");
    assert_eq!(copied, 2, "the fixture is tally.db and intake.db");

    let mut app = spawn_app(&data);
    caught_up(&app, head_of("sqlite")).await;
    compare_reports(&app, "sqlite").await;
    app.stop();
    let data_arg = data.display().to_string();
    assert_checks(dir.path(), &["--data-dir", &data_arg], "sqlite");
}

#[test]
fn containment_allows_added_fields_and_nothing_else() {
    let old = json!({"a": 1, "days": [{"d": "x", "n": 2}], "s": "t"});
    let mut out = Vec::new();
    not_contained(
        &old,
        &json!({"a": 1, "days": [{"d": "x", "n": 2, "new": 0}], "s": "t", "b": [1]}),
        "r",
        &mut out,
    );
    assert_eq!(out, Vec::<String>::new());
    for (new, expected) in [
        (
            json!({"a": 2, "days": [{"d": "x", "n": 2}], "s": "t"}),
            "r.a: 2, was 1",
        ),
        (
            json!({"a": 1, "days": [], "s": "t"}),
            "r.days: 0 elements, was 1",
        ),
        (
            json!({"a": 1, "days": [{"d": "x"}], "s": "t"}),
            "r.days[0].n: missing (was 2)",
        ),
        (
            json!({"a": 1, "days": [{"d": "x", "n": 2}], "s": 5}),
            "r.s: 5, was \"t\"",
        ),
    ] {
        let mut out = Vec::new();
        not_contained(&old, &new, "r", &mut out);
        assert_eq!(out, [expected], "{new}");
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use futures_util::SinkExt;
    use std::collections::VecDeque;

    /// The schema `make.sh` dumped.
    const DUMPED: &str = "tally_v1_fixture";

    /// The dump with its schema renamed. Every mention of the old name must be the schema itself
    /// (`name.` or `name;`), and the dump may touch nothing outside its schema (owners, grants,
    /// roles, extensions are cluster-wide and would collide between runs).
    fn renamed(sql: &str, to: &str) -> String {
        for (i, _) in sql.match_indices(DUMPED) {
            let before = sql[..i].chars().next_back();
            let after = sql[i + DUMPED.len()..].chars().next();
            assert!(
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && matches!(after, Some('.' | ';')),
                "{DUMPED} is mentioned as something other than the schema at byte {i}"
            );
        }
        for statement in [
            "OWNER TO",
            "GRANT ",
            "REVOKE ",
            "CREATE ROLE",
            "CREATE EXTENSION",
        ] {
            assert!(!sql.contains(statement), "the dump has {statement}");
        }
        assert!(!sql.contains(to), "the dump already names {to}");
        sql.replace(DUMPED, to)
    }

    /// Runs a plain-text pg_dump: statements in batches, `COPY … FROM stdin` blocks through COPY.
    /// psql's `\restrict`/`\unrestrict` guards (pg_dump since 15.14) are psql's alone; any other
    /// psql command is refused.
    async fn load(url: &str, sql: &str) {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is needed: {e}"));
        tokio::spawn(conn);
        let mut batch = String::new();
        let mut lines = sql.lines();
        let mut copied = 0u64;
        while let Some(line) = lines.next() {
            if line.starts_with("\\restrict ") || line.starts_with("\\unrestrict ") {
                continue;
            }
            assert!(
                !line.starts_with('\\'),
                "a psql command in the dump: {line}"
            );
            if !(line.starts_with("COPY ") && line.ends_with(" FROM stdin;")) {
                batch.push_str(line);
                batch.push('\n');
                continue;
            }
            client.batch_execute(&batch).await.expect("the dump's DDL");
            batch.clear();
            let mut rows = VecDeque::new();
            for row in lines.by_ref() {
                if row == "\\." {
                    break;
                }
                rows.extend(row.as_bytes());
                rows.push_back(b'\n');
            }
            let sink = client
                .copy_in::<str, VecDeque<u8>>(line)
                .await
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            let mut sink = std::pin::pin!(sink);
            sink.send(rows)
                .await
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            copied += sink
                .finish()
                .await
                .unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        client.batch_execute(&batch).await.expect("the dump's DDL");
        assert!(copied > 0, "the dump has rows");
    }

    #[tokio::test]
    async fn the_postgres_data_of_the_build_before_opens_and_answers_as_it_did() {
        let dir = tempfile::tempdir().unwrap();
        let db = common::Schema::new("old_data");
        let dump = std::fs::read_to_string(fixtures().join("postgres.sql")).unwrap();
        load(&db.url, &renamed(&dump, &db.name)).await;

        let mut app = common::spawn_role(dir.path(), "all", "all", &db.url, &db.name);
        caught_up(&app, head_of("postgres")).await;
        compare_reports(&app, "postgres").await;
        app.stop();
        let store_args = db.store_args();
        assert_checks(dir.path(), &store_args, "postgres");
    }
}
