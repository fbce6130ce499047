//! The article's topology on each real broker: a gateway and two processors as separate processes
//! (plus a projector), PostgreSQL for the log and the accepted records, the broker between them. A
//! burst of W1 goes in through `tally load` while the broker is restarted in the middle; afterwards
//! every 202 has exactly one outcome and the books are right (the load generator verifies both, and
//! retries a 503 with the same idempotency key, as a careful client does). Each broker's test needs
//! its cargo feature and the broker running (its crate's `ci.sh` starts it); PostgreSQL too.
#![cfg(any(feature = "activemq", feature = "rabbitmq", feature = "nats"))]
#![allow(clippy::unwrap_used, dead_code)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, App, Schema, spawn_role_env};

/// Runs `cmd` and insists it succeeds.
fn sh(cmd: &str) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run a shell command");
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Topology {
    _dir: tempfile::TempDir,
    _db: Schema,
    gateway: App,
    others: Vec<App>,
}

fn topology(kind: &str, url: &str) -> Topology {
    let dir = tempfile::tempdir().unwrap();
    let db = Schema::new(&format!("b_{kind}"));
    db.migrate_with_cli(dir.path());
    let namespace = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let env = [
        ("TALLY_QUEUE_KIND", kind),
        ("TALLY_QUEUE_URL", url),
        ("TALLY_QUEUE_NAMESPACE", namespace.as_str()),
    ];
    let spawn =
        |name: &str, role: &str| spawn_role_env(dir.path(), name, role, &db.url, &db.name, &env);
    let gateway = spawn("gateway", "gateway");
    let others = vec![
        spawn("processor-1", "processor"),
        spawn("processor-2", "processor"),
        spawn("projector", "projector"),
    ];
    Topology {
        _dir: dir,
        _db: db,
        gateway,
        others,
    }
}

/// W1 (a few thousand sales) through the gateway, with `restart` run once the burst is under way.
fn burst_with_a_restart(t: &mut Topology, restart: &str) {
    let mut load = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "load",
            "--workload",
            "w1",
            "--url",
            &t.gateway.url,
            "--sales",
            "3000",
            "--connections",
            "16",
        ])
        .env("TALLY_ADMIN_KEY", ADMIN_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tally load");
    std::thread::sleep(Duration::from_secs(3));
    sh(restart);
    let deadline = Instant::now() + Duration::from_secs(600);
    while load.try_wait().expect("wait for tally load").is_none() {
        assert!(Instant::now() < deadline, "the load never finished");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = load.wait_with_output().expect("tally load output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("verified=true"),
        "tally load: {stdout}\n{stderr}\ngateway:\n{}",
        t.gateway.log_text()
    );
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
    t.gateway.stop();
    for o in &mut t.others {
        o.stop();
    }
}

#[cfg(feature = "rabbitmq")]
#[test]
fn rabbitmq_burst_survives_a_broker_restart() {
    let url = std::env::var("TALLY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let mut t = topology("rabbitmq", &url);
    burst_with_a_restart(
        &mut t,
        "rabbitmqctl stop_app && rabbitmqctl start_app && rabbitmqctl await_startup",
    );
}

#[cfg(feature = "nats")]
#[test]
fn nats_burst_survives_a_broker_restart() {
    let url =
        std::env::var("TALLY_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let mut t = topology("nats", &url);
    burst_with_a_restart(
        &mut t,
        "start-stop-daemon --stop --oknodo --retry 10 --exec /usr/sbin/nats-server && \
         start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
           -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log && \
         for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.2; done",
    );
}

#[cfg(feature = "activemq")]
#[test]
fn activemq_burst_survives_a_broker_restart() {
    let url = std::env::var("TALLY_TEST_STOMP_URL")
        .unwrap_or_else(|_| "stomp://127.0.0.1:61613".to_owned());
    let mut t = topology("activemq", &url);
    burst_with_a_restart(
        &mut t,
        "/etc/init.d/activemq restart >/dev/null 2>&1; \
         for i in $(seq 1 150); do (exec 3<>/dev/tcp/127.0.0.1/61613) 2>/dev/null && break; sleep 0.2; done",
    );
}
