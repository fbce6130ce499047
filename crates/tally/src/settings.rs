//! The settings of `tally serve`, resolved from flags, `TALLY_*` environment, tally.toml and the
//! defaults, and `tally config`, which prints the whole effective configuration as TOML with its
//! secrets redacted. Both go through [`ServeSettings::resolve`] and [`StoreConfig::resolve`], so
//! what `tally config` shows is what `tally serve` runs with.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::cli::{LogFormat, Policy, QueueKind, Role, ServeArgs};
use crate::config::{FileConfig, StoreConfig, redact};
use crate::http_server::TlsFiles;

/// What `tally serve` runs with, beyond where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    pub role: Role,
    pub listen: SocketAddr,
    pub admin_key: Option<String>,
    pub stock_policy: Policy,
    pub log_format: LogFormat,
    /// HTTPS when set; plain HTTP otherwise.
    pub tls: Option<TlsFiles>,
    /// Rate limits, load shedding and the request timeout (`[limits]`; file only).
    pub limits: tally_http::traffic::Limits,
    /// Milliseconds a rebuild waits after each batch it folds.
    pub rebuild_pace_ms: u64,
    /// The projections that park poison events (the others stop).
    pub park_poison: Vec<String>,
    pub policies: tally_core::projector::poison::Policies,
}

impl ServeSettings {
    /// A flag (or its environment variable) beats the file, which beats the default.
    pub fn resolve(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let server = &file.server;
        let cert = args.tls_cert.clone().or_else(|| server.tls_cert.clone());
        let key = args.tls_key.clone().or_else(|| server.tls_key.clone());
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => bail!(
                "a TLS certificate is set but no private key: set --tls-key (TALLY_TLS_KEY, server.tls_key) too"
            ),
            (None, Some(_)) => bail!(
                "a TLS private key is set but no certificate: set --tls-cert (TALLY_TLS_CERT, server.tls_cert) too"
            ),
        };
        let park_poison = args
            .park_poison
            .clone()
            .or_else(|| server.park_poison.clone())
            .unwrap_or_default();
        Ok(Self {
            role: args.role.or(server.role).unwrap_or(Role::All),
            listen: args
                .listen
                .or(server.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            admin_key: args
                .admin_key
                .clone()
                .or_else(|| server.admin_key.clone())
                .filter(|k| !k.trim().is_empty()),
            stock_policy: args
                .stock_policy
                .or(server.stock_policy)
                .unwrap_or(Policy::Reject),
            log_format: args
                .log_format
                .or(server.log_format)
                .unwrap_or(LogFormat::Human),
            tls,
            limits: file.limits.resolve()?,
            rebuild_pace_ms: args.rebuild_pace_ms.or(server.rebuild_pace_ms).unwrap_or(0),
            policies: tally_core::projector::poison::Policies::parking(&park_poison).map_err(
                |e| anyhow::anyhow!("--park-poison (TALLY_PARK_POISON, server.park_poison): {e}"),
            )?,
            park_poison,
        })
    }
}

/// What `tally config` prints: the shape of tally.toml, every setting filled in.
#[derive(Debug, Serialize)]
struct Effective {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<String>,
    server: Server,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<Database>,
    queue: Queue,
    limits: crate::limits::EffectiveLimits,
}

#[derive(Debug, Serialize)]
struct Server {
    role: Role,
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_key: Option<&'static str>,
    stock_policy: Policy,
    log_format: LogFormat,
    rebuild_pace_ms: u64,
    park_poison: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Database {
    url: String,
    schema: String,
    pool_size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_url: Option<String>,
}

#[derive(Debug, Serialize)]
struct Queue {
    kind: QueueKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_seconds: Option<u64>,
}

/// Stands in for a secret in what `tally config` prints.
const REDACTED: &str = "***";

impl Effective {
    fn new(store: &StoreConfig, serve: &ServeSettings) -> Self {
        let server = Server {
            role: serve.role,
            listen: serve.listen.to_string(),
            tls_cert: serve.tls.as_ref().map(|t| t.cert.display().to_string()),
            tls_key: serve.tls.as_ref().map(|t| t.key.display().to_string()),
            admin_key: serve.admin_key.as_ref().map(|_| REDACTED),
            stock_policy: serve.stock_policy,
            log_format: serve.log_format,
            rebuild_pace_ms: serve.rebuild_pace_ms,
            park_poison: serve.park_poison.clone(),
        };
        let (data_dir, database, own_queue) = match store {
            StoreConfig::Embedded { data_dir, .. } => (
                Some(data_dir.display().to_string()),
                None,
                Queue {
                    kind: QueueKind::Embedded,
                    url: None,
                    namespace: None,
                    lease_seconds: None,
                },
            ),
            StoreConfig::Postgres { options, .. } => (
                None,
                Some(Database {
                    url: redact(&options.url),
                    schema: options.schema.clone(),
                    pool_size: options.pool_size,
                    query_url: options.query_url.as_deref().map(redact),
                }),
                Queue {
                    kind: QueueKind::Postgres,
                    url: None,
                    namespace: None,
                    lease_seconds: Some(options.queue_lease.as_secs()),
                },
            ),
        };
        let queue = match store.broker() {
            None => own_queue,
            Some(broker) => Queue {
                kind: broker.kind,
                url: Some(redact(&broker.url)),
                namespace: Some(broker.namespace.clone()),
                lease_seconds: None,
            },
        };
        Self {
            data_dir,
            server,
            database,
            queue,
            limits: crate::limits::EffectiveLimits::of(&serve.limits),
        }
    }
}

/// The effective configuration as TOML (valid tally.toml, secrets replaced by `***`), after a
/// comment saying where it came from.
pub fn render(
    store: &StoreConfig,
    serve: &ServeSettings,
    file: Option<&Path>,
) -> anyhow::Result<String> {
    let file = match file {
        Some(path) => path.display().to_string(),
        None => "no tally.toml".to_owned(),
    };
    let body = toml::to_string_pretty(&Effective::new(store, serve))
        .context("rendering the configuration as TOML")?;
    Ok(format!(
        "# tally's effective configuration: defaults, then {file}, then TALLY_* environment, then flags.\n\
         # Secrets are shown as {REDACTED}.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::StoreArgs;

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(text).expect("valid tally.toml")
    }

    fn render_of(args: &StoreArgs, serve: &ServeArgs, f: &FileConfig) -> String {
        let store = StoreConfig::resolve(args, f).expect("store");
        let settings = ServeSettings::resolve(serve, f).expect("settings");
        render(&store, &settings, None).expect("render")
    }

    #[test]
    fn defaults_fill_in_what_nothing_sets() {
        let s = ServeSettings::resolve(&ServeArgs::default(), &FileConfig::default()).expect("ok");
        assert_eq!(s.role, Role::All);
        assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(
            (s.stock_policy, s.log_format),
            (Policy::Reject, LogFormat::Human)
        );
        assert_eq!((s.admin_key, s.tls), (None, None));
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let f = file(
            "[server]\nlisten = \"0.0.0.0:9000\"\nrole = \"gateway\"\nstock_policy = \"allow-negative\"\n\
             log_format = \"json\"\ntls_cert = \"/etc/tally/cert.pem\"\ntls_key = \"/etc/tally/key.pem\"\n",
        );
        let from_file = ServeSettings::resolve(&ServeArgs::default(), &f).expect("ok");
        assert_eq!(from_file.listen.port(), 9000);
        assert_eq!(from_file.role, Role::Gateway);
        assert_eq!(from_file.stock_policy, Policy::AllowNegative);
        assert_eq!(from_file.log_format, LogFormat::Json);
        assert_eq!(
            from_file.tls.map(|t| t.key),
            Some("/etc/tally/key.pem".into())
        );
        let args = ServeArgs {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 7000))),
            tls_key: Some("/run/key.pem".into()),
            ..ServeArgs::default()
        };
        let flagged = ServeSettings::resolve(&args, &f).expect("ok");
        assert_eq!(flagged.listen.port(), 7000);
        assert_eq!(
            flagged.role,
            Role::Gateway,
            "unset flags leave the file's value"
        );
        let tls = flagged.tls.expect("tls");
        assert_eq!(tls.key, Path::new("/run/key.pem"));
        assert_eq!(tls.cert, Path::new("/etc/tally/cert.pem"));
    }

    #[test]
    fn half_a_tls_setting_is_refused_naming_the_missing_one() {
        let args = ServeArgs {
            tls_cert: Some("/c.pem".into()),
            ..ServeArgs::default()
        };
        let e = ServeSettings::resolve(&args, &FileConfig::default()).expect_err("no key");
        assert!(e.to_string().contains("--tls-key"), "{e}");
        let e = ServeSettings::resolve(&ServeArgs::default(), &file("[server]\ntls_key = \"k\"\n"))
            .expect_err("no cert");
        assert!(e.to_string().contains("server.tls_cert"), "{e}");
    }

    #[test]
    fn the_printed_configuration_hides_every_secret() {
        let f = file(
            "[database]\nurl = \"postgres://tally:pg-secret@db.internal:5432/retail\"\npool_size = 4\n\
             query_url = \"postgres://tally_query:query-secret@db.internal:5432/retail\"\n\
             [queue]\nkind = \"rabbitmq\"\nurl = \"amqp://guest:mq-secret@mq:5672/%2f\"\n\
             [server]\nadmin_key = \"admin-secret\"\n",
        );
        let text = render_of(&StoreArgs::default(), &ServeArgs::default(), &f);
        for secret in ["pg-secret", "query-secret", "mq-secret", "admin-secret"] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        assert!(
            text.contains("url = \"postgres://tally:***@db.internal:5432/retail\""),
            "{text}"
        );
        assert!(
            text.contains("url = \"amqp://guest:***@mq:5672/%2f\""),
            "{text}"
        );
        assert!(text.contains("admin_key = \"***\""), "{text}");
        assert!(
            text.contains("query_url = \"postgres://tally_query:***@db.internal:5432/retail\""),
            "{text}"
        );
        assert!(text.contains("pool_size = 4"), "{text}");
        assert!(text.contains("kind = \"rabbitmq\""), "{text}");
    }

    #[test]
    fn the_printed_configuration_is_a_valid_tally_toml_that_resolves_the_same() {
        let f = file(
            "data_dir = \"/srv/tally\"\n[server]\nlisten = \"0.0.0.0:9000\"\nstock_policy = \"allow-negative\"\n",
        );
        let text = render_of(&StoreArgs::default(), &ServeArgs::default(), &f);
        let again = FileConfig::parse(&text).expect("tally config prints a valid tally.toml");
        assert_eq!(
            ServeSettings::resolve(&ServeArgs::default(), &again).expect("ok"),
            ServeSettings::resolve(&ServeArgs::default(), &f).expect("ok"),
        );
        assert_eq!(again.data_dir, Some("/srv/tally".into()));
        assert!(text.contains("kind = \"embedded\""), "{text}");
    }
}
