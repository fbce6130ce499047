//! Named queries in configuration: `[[queries]]` in tally.toml and `*.toml` files in the queries
//! directory (`queries_dir`, `--queries-dir`, `TALLY_QUERIES_DIR`), each file holding `[[queries]]`
//! tables of the same form. Read at start, on `SIGHUP` and on `POST /v1/admin/queries/reload`;
//! `tally queries check` reads and checks them against the database without serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use serde::Deserialize;
use tally_core::dataservices::catalog::{self, Catalog, Declarations};
use tally_core::dataservices::{Origin, ParamSpec, QuerySpec};

/// A query as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryDecl {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub sql: String,
    #[serde(default)]
    pub params: Vec<ParamDecl>,
    pub roles: Vec<String>,
    pub scope_param: Option<String>,
    /// The statement's time limit in milliseconds [default: 5000].
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub required: Option<bool>,
    pub default: Option<toml::Value>,
}

/// A file of the queries directory: `[[queries]]` tables only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryFile {
    #[serde(default)]
    queries: Vec<QueryDecl>,
}

/// The line of each `[[queries]]` header of a TOML text, in order (the n-th declaration starts at
/// the n-th).
fn header_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start();
            l.starts_with("[[")
                && l[2..]
                    .trim_start()
                    .strip_prefix("queries")
                    .is_some_and(|r| r.trim_start().starts_with("]]"))
        })
        .map(|(i, _)| i + 1)
        .collect()
}

fn default_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The declarations of one TOML text, each with its file and line.
pub fn specs(decls: &[QueryDecl], text: &str, file: &Path) -> Vec<QuerySpec> {
    let lines = header_lines(text);
    decls
        .iter()
        .enumerate()
        .map(|(i, d)| QuerySpec {
            name: d.name.clone(),
            description: d.description.clone(),
            sql: d.sql.clone(),
            params: d
                .params
                .iter()
                .map(|p| ParamSpec {
                    name: p.name.clone(),
                    ty: p.ty.clone(),
                    required: p.required,
                    default: p.default.as_ref().map(default_text),
                })
                .collect(),
            roles: d.roles.clone(),
            scope_param: d.scope_param.clone(),
            timeout: d.timeout_ms.map(Duration::from_millis),
            origin: Origin {
                file: file.display().to_string(),
                line: lines.get(i).copied().unwrap_or(1),
            },
        })
        .collect()
}

/// Reads the declarations from the configuration file and the queries directory, every time it is
/// asked (a reload reads the files as they are then).
pub struct Files {
    pub config: Option<PathBuf>,
    pub dir: Option<PathBuf>,
}

impl Files {
    fn read_sync(&self) -> Result<Vec<QuerySpec>, Vec<String>> {
        let mut specs = Vec::new();
        let mut problems = Vec::new();
        if let Some(path) = &self.config {
            match std::fs::read_to_string(path) {
                Ok(text) => match crate::config::FileConfig::parse(&text) {
                    Ok(cfg) => specs.extend(self::specs(&cfg.queries, &text, path)),
                    Err(e) => problems.push(format!("{}: {e:#}", path.display())),
                },
                Err(e) => problems.push(format!("reading {}: {e}", path.display())),
            }
        }
        if let Some(dir) = &self.dir {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut files: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                        .collect();
                    files.sort();
                    for path in files {
                        match std::fs::read_to_string(&path) {
                            Ok(text) => match crate::config::parse_toml::<QueryFile>(&text) {
                                Ok(f) => specs.extend(self::specs(&f.queries, &text, &path)),
                                Err(e) => problems.push(format!("{}: {e:#}", path.display())),
                            },
                            Err(e) => problems.push(format!("reading {}: {e}", path.display())),
                        }
                    }
                }
                Err(e) => problems.push(format!(
                    "reading the queries directory {}: {e}",
                    dir.display()
                )),
            }
        }
        if problems.is_empty() {
            Ok(specs)
        } else {
            Err(problems)
        }
    }
}

#[async_trait]
impl Declarations for Files {
    async fn read(&self) -> Result<Vec<QuerySpec>, Vec<String>> {
        self.read_sync()
    }
}

/// The catalog a server starts with: refused (the server does not start) when any query is.
pub async fn open(files: Files, backend: &tally_core::Backend) -> anyhow::Result<Arc<Catalog>> {
    let catalog = Catalog::open(Arc::new(files), backend.data.clone())
        .await
        .map_err(|problems| {
            anyhow::anyhow!(
                "the named queries are refused:\n  {}",
                problems.join("\n  ")
            )
        })?;
    let n = catalog.current().len();
    if n > 0 {
        tracing::info!(queries = n, "named queries loaded");
    }
    Ok(Arc::new(catalog))
}

/// Reloads the catalog on every `SIGHUP` until the process stops.
pub async fn reload_on_hangup(catalog: Arc<Catalog>, mut stop: tokio::sync::watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload the queries with POST /v1/admin/queries/reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => match catalog.reload().await {
                    Ok(n) => tracing::info!(queries = n, "SIGHUP: named queries reloaded"),
                    Err(problems) => tracing::warn!(?problems, "SIGHUP: named queries refused; the old set keeps serving"),
                },
                _ = stop.changed() => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (catalog, stop.changed().await);
    }
}

/// `tally queries check`: every declaration read and prepared against the database's views;
/// prints each problem (query, file and line, what is wrong) and fails when there is one.
pub async fn check(files: Files, store: &crate::config::StoreConfig) -> anyhow::Result<()> {
    let opened = crate::config::Opened::open(store, true, Duration::from_secs(10))
        .await
        .context("opening the database to check the queries against")?;
    let backend = opened.backend();
    match catalog::load(&files, backend.data.as_ref()).await {
        Ok(set) => {
            for q in set.iter() {
                let columns: Vec<&str> = q.columns.iter().map(|c| c.name.as_str()).collect();
                println!("ok  {} ({}): {}", q.name, q.origin, columns.join(", "));
            }
            println!("{} queries checked, none refused", set.len());
            Ok(())
        }
        Err(problems) => {
            for p in &problems {
                println!("refused  {p}");
            }
            anyhow::bail!("{} problem(s) in the named queries", problems.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_declaration_knows_its_line() {
        let text = "data_dir = \"x\"\n\n[[queries]]\nname = \"a\"\nsql = \"select 1\"\nroles = [\"admin\"]\n[[queries.params]]\nname = \"p\"\ntype = \"id\"\n\n  [[ queries ]]\nname = \"b\"\nsql = \"select 2\"\nroles = [\"admin\"]\n";
        assert_eq!(header_lines(text), [3, 11]);
    }
}
