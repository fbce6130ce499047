//! Configuration: each setting comes from a command-line flag, else its `TALLY_*` environment
//! variable, else `tally.toml` (`--config`/`TALLY_CONFIG`, or `./tally.toml` when it exists), else the
//! default. This module reads the file and resolves where the data lives.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tally_core::Backend;
use tally_store_postgres::{PgOptions, Postgres};
use tally_store_sqlite::Sqlite;

use crate::cli::{QueueKind, StoreArgs};

/// `tally.toml`. Unknown keys are refused, so a typo is an error, not a silently ignored setting.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub queue: QueueSection,
    /// Rate limits, load shedding, request timeout (see `limits.rs`).
    #[serde(default)]
    pub limits: crate::limits::LimitsSection,
    /// Named queries served as endpoints (data services, `queries.rs`).
    #[serde(default)]
    pub queries: Vec<crate::queries::QueryDecl>,
    /// A directory of `*.toml` files of more `[[queries]]` (relative to this file's directory).
    /// A key of its own: TOML cannot have both `[[queries]]` and a `[queries]` table.
    pub queries_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<std::net::SocketAddr>,
    pub role: Option<crate::cli::Role>,
    /// Certificate chain and private key (PEM files) to serve HTTPS with.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A secret accepted as an admin key (as `TALLY_ADMIN_KEY`).
    pub admin_key: Option<String>,
    pub stock_policy: Option<crate::cli::Policy>,
    pub log_format: Option<crate::cli::LogFormat>,
    pub rebuild_pace_ms: Option<u64>,
    pub park_poison: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    pub url: Option<String>,
    pub schema: Option<String>,
    pub pool_size: Option<std::num::NonZeroUsize>,
    pub query_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    pub kind: Option<QueueKind>,
    /// The broker's address (brokers only).
    pub url: Option<String>,
    /// Prefix of the broker's queue names (brokers only).
    pub namespace: Option<String>,
    /// Seconds a queue consumer keeps a partition without settling it (PostgreSQL queue).
    pub lease_seconds: Option<u64>,
}

impl FileConfig {
    /// Reads `path`, or `./tally.toml` if no path is given and it exists; no file means all defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("tally.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text).with_context(|| format!("in the configuration file {}", path.display()))
    }

    /// Parses the text of a tally.toml; an error names the key at fault (`server.listen: …`) and
    /// where it is.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        parse_toml(text)
    }

    /// The file [`FileConfig::load`] reads, when there is one.
    pub fn source(path: Option<&Path>) -> Option<PathBuf> {
        match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("tally.toml")).filter(|p| p.exists()),
        }
    }
}

/// Parses a TOML text into `T`; an error names the key at fault (`server.listen: …`) and where it
/// is.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let at = inner
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" (line {line}, column {column})")
            })
            .unwrap_or_default();
        let message = inner.message().trim_end();
        if key == "." || key.is_empty() {
            anyhow::anyhow!("{message}{at}")
        } else {
            anyhow::anyhow!("{key}: {message}{at}")
        }
    })
}

/// Where the ports live.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// SQLite files in a data dir (the intake's and the rest), with the embedded queue.
    Embedded {
        data_dir: PathBuf,
        broker: Option<BrokerConfig>,
    },
    /// PostgreSQL, with the queue in it.
    Postgres {
        options: PgOptions,
        broker: Option<BrokerConfig>,
    },
}

/// A broker as the command queue; the database keeps accepted records and the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub kind: QueueKind,
    pub url: String,
    pub namespace: String,
}

impl BrokerConfig {
    fn resolve(kind: QueueKind, url: Option<String>, namespace: Option<String>) -> Self {
        let default = match kind {
            QueueKind::Activemq => "stomp://127.0.0.1:61613",
            QueueKind::Rabbitmq => "amqp://guest:guest@127.0.0.1:5672/%2f",
            _ => "nats://127.0.0.1:4222",
        };
        Self {
            kind,
            url: url.unwrap_or_else(|| default.to_owned()),
            namespace: namespace.unwrap_or_else(|| "tally".to_owned()),
        }
    }
}

impl StoreConfig {
    pub fn resolve(args: &StoreArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let store = Self::resolve_store(args, file)?;
        let queue = args.queue_kind.or(file.queue.kind);
        let broker = queue.filter(|q| q.is_broker()).map(|kind| {
            BrokerConfig::resolve(
                kind,
                args.queue_url.clone().or_else(|| file.queue.url.clone()),
                args.queue_namespace
                    .clone()
                    .or_else(|| file.queue.namespace.clone()),
            )
        });
        Ok(match store {
            Self::Embedded { data_dir, .. } => Self::Embedded { data_dir, broker },
            Self::Postgres { options, .. } => Self::Postgres { options, broker },
        })
    }

    pub fn broker(&self) -> Option<&BrokerConfig> {
        match self {
            Self::Embedded { broker, .. } | Self::Postgres { broker, .. } => broker.as_ref(),
        }
    }

    fn resolve_store(args: &StoreArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let url = args
            .database_url
            .clone()
            .or_else(|| file.database.url.clone());
        let queue = args.queue_kind.or(file.queue.kind);
        match url {
            None => {
                if queue == Some(QueueKind::Postgres) {
                    bail!(
                        "the postgres queue needs a database: set TALLY_DATABASE_URL (or --database-url, or database.url in tally.toml)"
                    );
                }
                let data_dir = args
                    .data_dir
                    .clone()
                    .or_else(|| file.data_dir.clone())
                    .unwrap_or_else(|| PathBuf::from("./tally-data"));
                Ok(Self::Embedded {
                    data_dir,
                    broker: None,
                })
            }
            Some(url) => {
                if queue == Some(QueueKind::Embedded) {
                    bail!(
                        "the embedded queue lives in the SQLite data dir and cannot serve several processes: with a database URL use TALLY_QUEUE_KIND=postgres"
                    );
                }
                if let Err(e) = url.parse::<tally_store_postgres::PgConfig>() {
                    bail!(
                        "the database URL (--database-url, TALLY_DATABASE_URL, database.url) is not a PostgreSQL URL: {e}"
                    );
                }
                let mut options = PgOptions::new(url);
                if let Some(schema) = args
                    .database_schema
                    .clone()
                    .or_else(|| file.database.schema.clone())
                {
                    if !tally_store_postgres::schema::valid_name(&schema) {
                        bail!(
                            "invalid database schema {schema:?} (--database-schema, TALLY_DATABASE_SCHEMA, database.schema): use lowercase letters, digits and _, not starting with a digit"
                        );
                    }
                    options.schema = schema;
                }
                if let Some(n) = args.database_pool_size.or(file.database.pool_size) {
                    options.pool_size = n.get();
                }
                if let Some(url) = args
                    .database_query_url
                    .clone()
                    .or_else(|| file.database.query_url.clone())
                {
                    if let Err(e) = url.parse::<tally_store_postgres::PgConfig>() {
                        bail!(
                            "the data services' login (--database-query-url, TALLY_DATABASE_QUERY_URL, database.query_url) is not a PostgreSQL URL: {e}"
                        );
                    }
                    options.query_url = Some(url);
                }
                if let Some(s) = args.queue_lease_seconds.or(file.queue.lease_seconds) {
                    options.queue_lease = Duration::from_secs(s.max(1));
                }
                Ok(Self::Postgres {
                    options,
                    broker: None,
                })
            }
        }
    }

    /// Where the data is, for messages (never the database password).
    pub fn describe(&self) -> String {
        let store = match self {
            Self::Embedded { data_dir, .. } => format!("data in {}", data_dir.display()),
            Self::Postgres { options, .. } => {
                let host = options
                    .url
                    .parse::<tally_store_postgres::PgConfig>()
                    .ok()
                    .map(|c| describe_pg(&c))
                    .unwrap_or_else(|| "PostgreSQL".to_owned());
                format!("{host}, schema {}", options.schema)
            }
        };
        match self.broker() {
            None => store,
            Some(b) => format!(
                "{store}; queue {} at {}",
                format!("{:?}", b.kind).to_lowercase(),
                redact(&b.url)
            ),
        }
    }
}

fn describe_pg(c: &tally_store_postgres::PgConfig) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            tally_store_postgres::PgHost::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tally_store_postgres::PgHost::Unix(p) => p.display().to_string(),
        })
        .collect();
    format!(
        "PostgreSQL at {} database {}",
        hosts.join(","),
        c.get_dbname().unwrap_or("(default)")
    )
}

/// A URL without its password: `scheme://user:***@host…`, and `password=***` in a query string or
/// in a PostgreSQL `key=value` connection string.
pub(crate) fn redact(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    let mut out = String::with_capacity(url.len());
    let mut rest = url.as_str();
    while let Some(i) = rest.find("password=") {
        let starts_word = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b' ');
        let value_at = i + "password=".len();
        out.push_str(&rest[..value_at]);
        rest = &rest[value_at..];
        if starts_word {
            let end = match rest.strip_prefix('\'') {
                // A quoted key=value password may hold spaces; it ends at the closing quote.
                Some(quoted) => quoted.find('\'').map_or(rest.len(), |i| i + 2),
                None => rest.find(['&', ' ']).unwrap_or(rest.len()),
            };
            out.push_str("***");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// An opened store, and the broker when the queue is one.
pub struct Opened {
    pub store: OpenedStore,
    pub broker: Option<Arc<dyn tally_core::CommandQueue>>,
}

pub enum OpenedStore {
    Embedded(Arc<Sqlite>),
    Postgres(Arc<Postgres>),
}

impl Opened {
    /// Opens the store and, when the queue is a broker, connects to it. Both are retried with
    /// back-off while they cannot be reached (a server starting before its database), until
    /// `give_up_after`.
    pub async fn open(
        config: &StoreConfig,
        migrate: bool,
        give_up_after: Duration,
    ) -> anyhow::Result<Self> {
        let store = OpenedStore::open(config, migrate, give_up_after).await?;
        let broker = match config.broker() {
            None => None,
            Some(b) => Some(crate::brokers::connect(b, give_up_after).await?),
        };
        Ok(Self { store, broker })
    }

    /// Only the store, for commands that need no broker (keys, migrate, rebuild).
    pub async fn store_only(
        config: &StoreConfig,
        migrate: bool,
        give_up_after: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            store: OpenedStore::open(config, migrate, give_up_after).await?,
            broker: None,
        })
    }

    /// The store as it is, for commands that only read what is there (`events check`, `verify`):
    /// no migrations, and a data dir that does not exist is an error (opening would create an empty
    /// one, which would check nothing).
    pub async fn existing(config: &StoreConfig) -> anyhow::Result<Self> {
        if let StoreConfig::Embedded { data_dir, .. } = config
            && !data_dir.is_dir()
        {
            anyhow::bail!("no data dir at {}", data_dir.display());
        }
        Self::store_only(config, false, Duration::from_secs(10)).await
    }

    /// The ports; with a broker, the queue is the broker and the intake records in the database first.
    pub fn backend(&self) -> Backend {
        let backend = match &self.store {
            OpenedStore::Embedded(s) => s.backend(),
            OpenedStore::Postgres(p) => p.backend(),
        };
        match &self.broker {
            None => backend,
            Some(queue) => backend.with_broker(queue.clone()),
        }
    }
}

impl OpenedStore {
    async fn open(
        config: &StoreConfig,
        migrate: bool,
        give_up_after: Duration,
    ) -> anyhow::Result<Self> {
        match config {
            StoreConfig::Embedded { data_dir, .. } => Ok(Self::Embedded(
                Sqlite::open(data_dir)
                    .with_context(|| format!("opening the data dir {}", data_dir.display()))?,
            )),
            StoreConfig::Postgres { options, .. } => {
                let mut options = options.clone();
                options.migrate = migrate;
                let deadline = tokio::time::Instant::now() + give_up_after;
                let mut backoff = Duration::from_millis(200);
                loop {
                    let attempt = async {
                        let pg = Postgres::connect(options.clone()).await?;
                        pg.ping().await?;
                        Ok::<_, tally_core::Error>(pg)
                    };
                    match attempt.await {
                        Ok(pg) => return Ok(Self::Postgres(pg)),
                        Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                            tracing::warn!(error = %e, ?backoff, "database not reachable yet; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                        Err(e) => {
                            return Err(anyhow::anyhow!("{e}"))
                                .context(format!("connecting to {}", config.describe()));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).expect("valid tally.toml")
    }

    #[test]
    fn without_a_database_url_the_store_is_embedded() {
        let c =
            StoreConfig::resolve(&StoreArgs::default(), &FileConfig::default()).expect("resolve");
        assert!(
            matches!(c, StoreConfig::Embedded { data_dir, broker: None } if data_dir == Path::new("./tally-data"))
        );
    }

    #[test]
    fn the_file_fills_in_what_flags_and_environment_leave_open() {
        let f = file(
            "data_dir = \"/srv/tally\"\n[database]\nurl = \"postgres://db/x\"\nschema = \"shop\"\npool_size = 7\n[queue]\nlease_seconds = 9\n",
        );
        let c = StoreConfig::resolve(&StoreArgs::default(), &f).expect("resolve");
        let StoreConfig::Postgres { options, .. } = c else {
            panic!("expected PostgreSQL");
        };
        assert_eq!(options.url, "postgres://db/x");
        assert_eq!(options.schema, "shop");
        assert_eq!(options.pool_size, 7);
        assert_eq!(options.queue_lease, Duration::from_secs(9));
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let f = file("[database]\nurl = \"postgres://file/x\"\nschema = \"from_file\"\n");
        let args = StoreArgs {
            database_url: Some("postgres://flag/y".into()),
            database_schema: Some("from_flag".into()),
            ..StoreArgs::default()
        };
        let StoreConfig::Postgres { options, .. } =
            StoreConfig::resolve(&args, &f).expect("resolve")
        else {
            panic!("expected PostgreSQL");
        };
        assert_eq!(options.url, "postgres://flag/y");
        assert_eq!(options.schema, "from_flag");
    }

    #[test]
    fn contradictory_queue_kinds_are_refused() {
        let args = StoreArgs {
            queue_kind: Some(QueueKind::Postgres),
            ..StoreArgs::default()
        };
        let e = StoreConfig::resolve(&args, &FileConfig::default()).expect_err("no database");
        assert!(e.to_string().contains("TALLY_DATABASE_URL"), "{e}");
        let args = StoreArgs {
            database_url: Some("postgres://db/x".into()),
            queue_kind: Some(QueueKind::Embedded),
            ..StoreArgs::default()
        };
        assert!(StoreConfig::resolve(&args, &FileConfig::default()).is_err());
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        assert!(toml::from_str::<FileConfig>("[database]\nulr = \"x\"\n").is_err());
        assert!(toml::from_str::<FileConfig>("listen = \"x\"\n").is_err());
        let f = file("[server]\nrole = \"processor\"\nlisten = \"0.0.0.0:9000\"\n");
        assert_eq!(f.server.role, Some(crate::cli::Role::Processor));
    }

    #[test]
    fn an_explicit_config_file_must_exist() {
        let e = FileConfig::load(Some(Path::new("/nonexistent/tally.toml"))).expect_err("missing");
        assert!(
            format!("{e:#}").contains("/nonexistent/tally.toml"),
            "{e:#}"
        );
    }

    #[test]
    fn descriptions_never_show_the_password() {
        let c = StoreConfig::Postgres {
            options: PgOptions::new("postgres://tally:secret@db.internal:5432/retail"),
            broker: Some(BrokerConfig::resolve(
                QueueKind::Rabbitmq,
                Some("amqp://guest:hunter2@mq:5672/%2f".into()),
                None,
            )),
        };
        let d = c.describe();
        assert!(!d.contains("secret") && !d.contains("hunter2"), "{d}");
        assert!(d.contains("rabbitmq") && d.contains("mq:5672"), "{d}");
        assert!(d.contains("db.internal") && d.contains("retail"), "{d}");
    }
    #[test]
    fn a_bad_value_in_the_file_is_named_by_its_key_and_place() {
        let e =
            FileConfig::parse("[server]\nrole = \"all\"\nlisten = \"garbage\"\n").expect_err("bad");
        let e = e.to_string();
        assert!(e.starts_with("server.listen: "), "{e}");
        assert!(e.contains("line 3, column 10"), "{e}");
        let e = FileConfig::parse("[database]\npool_size = 0\n").expect_err("zero");
        assert!(e.to_string().starts_with("database.pool_size: "), "{e}");
        let e = FileConfig::parse("[database]\nurll = \"x\"\n").expect_err("unknown");
        assert!(e.to_string().contains("database.urll"), "{e}");
        let e = FileConfig::parse("[server\n").expect_err("not TOML");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn a_bad_database_setting_is_refused_before_connecting() {
        let bad_schema = file("[database]\nurl = \"postgres://db/x\"\nschema = \"drop table\"\n");
        let e = StoreConfig::resolve(&StoreArgs::default(), &bad_schema).expect_err("schema");
        assert!(e.to_string().contains("database.schema"), "{e}");
        let args = StoreArgs {
            database_url: Some("postgres://db:notaport/x".into()),
            ..StoreArgs::default()
        };
        let e = StoreConfig::resolve(&args, &FileConfig::default()).expect_err("url");
        assert!(e.to_string().contains("TALLY_DATABASE_URL"), "{e}");
    }

    #[test]
    fn redaction_hides_passwords_in_every_url_form() {
        assert_eq!(
            redact("postgres://tally:s3cret@db:5432/retail"),
            "postgres://tally:***@db:5432/retail"
        );
        assert_eq!(
            redact("postgres://tally@db/retail"),
            "postgres://tally@db/retail"
        );
        assert_eq!(
            redact("postgres://db/retail?user=tally&password=s3cret&sslmode=require"),
            "postgres://db/retail?user=tally&password=***&sslmode=require"
        );
        assert_eq!(
            redact("host=db user=tally password=s3cret dbname=retail"),
            "host=db user=tally password=*** dbname=retail"
        );
        assert_eq!(
            redact("host=db password='two words' dbname=retail"),
            "host=db password=*** dbname=retail"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
