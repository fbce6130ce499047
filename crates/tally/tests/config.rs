//! `tally config` through the real binary: the layering defaults → tally.toml → `TALLY_*`
//! environment → flags, secrets redacted, and a bad setting refused with its name.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `tally ARGS` in `dir` with only these `TALLY_*` variables.
fn tally(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.args(args).current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("TALLY_") {
            command.env_remove(name);
        }
    }
    command.envs(envs.iter().copied());
    command.output().expect("run tally")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tally failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The error of a run that must fail.
fn refusal(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a refusal, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const FILE: &str = r#"
[server]
listen = "0.0.0.0:9000"
role = "gateway"
stock_policy = "allow-negative"

[database]
url = "postgres://tally:file-secret@db.internal:5432/retail"
schema = "from_file"

[queue]
lease_seconds = 9
"#;

#[test]
fn flags_beat_environment_beat_the_file_beat_defaults_and_secrets_are_hidden() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tally.toml"), FILE).unwrap();
    // ./tally.toml is read without --config.
    let out = tally(
        dir.path(),
        &["config", "--listen", "127.0.0.1:7000"],
        &[
            ("TALLY_LISTEN", "127.0.0.1:6000"),
            ("TALLY_DATABASE_SCHEMA", "from_env"),
            ("TALLY_ADMIN_KEY", "env-admin-secret"),
        ],
    );
    let text = stdout_of(&out);
    for secret in ["file-secret", "env-admin-secret"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    let config: toml::Value = toml::from_str(&text).expect("tally config prints TOML");
    let server = &config["server"];
    assert_eq!(
        server["listen"].as_str(),
        Some("127.0.0.1:7000"),
        "flag wins"
    );
    assert_eq!(server["role"].as_str(), Some("gateway"), "from the file");
    assert_eq!(server["stock_policy"].as_str(), Some("allow-negative"));
    assert_eq!(server["log_format"].as_str(), Some("human"), "default");
    assert_eq!(server["admin_key"].as_str(), Some("***"));
    let database = &config["database"];
    assert_eq!(database["schema"].as_str(), Some("from_env"), "env wins");
    assert_eq!(
        database["url"].as_str(),
        Some("postgres://tally:***@db.internal:5432/retail")
    );
    assert_eq!(database["pool_size"].as_integer(), Some(16), "default");
    assert_eq!(config["queue"]["kind"].as_str(), Some("postgres"));
    assert_eq!(config["queue"]["lease_seconds"].as_integer(), Some(9));
    assert!(
        text.contains("tally.toml"),
        "says which file it read:\n{text}"
    );

    // TALLY_CONFIG names another file; nothing else set: its values and the defaults.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        "data_dir = \"/srv/tally\"\n[server]\ntls_cert = \"/etc/c.pem\"\ntls_key = \"/etc/k.pem\"\n",
    )
    .unwrap();
    let text = stdout_of(&tally(
        dir.path(),
        &["config"],
        &[("TALLY_CONFIG", other.to_str().unwrap())],
    ));
    let config: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(config["data_dir"].as_str(), Some("/srv/tally"));
    assert_eq!(config["server"]["listen"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(config["server"]["role"].as_str(), Some("all"));
    assert_eq!(config["server"]["tls_key"].as_str(), Some("/etc/k.pem"));
    assert_eq!(config["queue"]["kind"].as_str(), Some("embedded"));
    assert!(config.get("database").is_none(), "{text}");
}

#[test]
fn a_bad_setting_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    // (file, what the refusal must name); a value the file cannot even hold also names the file.
    let cases: &[(&str, &[&str])] = &[
        (
            "[server]\nlisten_addr = \"0.0.0.0:1\"\n",
            &["bad.toml", "listen_addr"],
        ),
        (
            "[server]\nlisten = \"garbage\"\n",
            &["bad.toml", "server.listen", "line 2"],
        ),
        ("[server]\nlisten = 8080\n", &["bad.toml", "server.listen"]),
        (
            "[database]\npool_size = 0\n",
            &["bad.toml", "database.pool_size"],
        ),
        (
            "[queue]\nkind = \"kafka\"\n",
            &["bad.toml", "queue.kind", "rabbitmq"],
        ),
        (
            "[database]\nurl = \"postgres://db/x\"\nschema = \"Bad-Name\"\n",
            &["database.schema", "Bad-Name"],
        ),
        ("[server]\ntls_cert = \"/c.pem\"\n", &["server.tls_key"]),
    ];
    for (text, names) in cases {
        std::fs::write(&file, text).unwrap();
        for command in [&["config"][..], &["serve"][..]] {
            let mut args = vec!["--config", file.to_str().unwrap()];
            args.extend_from_slice(command);
            let err = refusal(&tally(dir.path(), &args, &[]));
            for name in *names {
                assert!(err.contains(name), "{text}: names {name}: {err}");
            }
        }
    }
    let envs: &[(&str, &str, &str)] = &[
        ("TALLY_LISTEN", "garbage", "invalid socket address"),
        ("TALLY_DATABASE_POOL_SIZE", "0", "zero"),
        ("TALLY_ROLE", "boss", "gateway"),
        ("TALLY_STOCK_POLICY", "maybe", "allow-negative"),
    ];
    for (var, value, reason) in envs {
        for command in ["config", "serve"] {
            let err = refusal(&tally(dir.path(), &[command], &[(var, value)]));
            assert!(
                err.contains(var) && err.contains(value) && err.contains(reason),
                "{var}={value}: {err}"
            );
        }
    }
    // A flag typed on the command line is named as the flag.
    let err = refusal(&tally(dir.path(), &["config", "--listen", "nope"], &[]));
    assert!(
        err.contains("--listen") && !err.contains("TALLY_LISTEN"),
        "{err}"
    );
}
