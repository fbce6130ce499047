//! What the NATS test suites share: the server's address, fresh namespaces, removing them again, and a
//! proxy that misbehaves on request.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proxy;

use std::sync::Arc;
use std::time::Duration;

use tally_queue_nats::{Nats, NatsOptions};

/// The server under test: `TALLY_TEST_NATS_URL`, by default the local one. A missing server fails.
pub fn url() -> String {
    std::env::var("TALLY_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Options for a fresh namespace, with short leases and ack waits so takeovers are quick in tests.
pub fn options(prefix: &str) -> NatsOptions {
    let mut o = NatsOptions::new(url());
    o.namespace = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    o.ack_wait = Duration::from_secs(2);
    o.lease_ttl = Duration::from_secs(2);
    o
}

pub async fn open(options: &NatsOptions) -> Arc<Nats> {
    tally_queue_nats::connect(options.clone())
        .await
        .unwrap_or_else(|e| panic!("connecting to NATS at {}: {e}", options.url))
}

/// Deletes the namespace's streams when dropped, from a thread of its own (drop is not async).
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let namespace = self.0.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(tally_queue_nats::remove_namespace(&url(), &namespace))
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("could not remove test namespace {}: {e}", self.0);
        }
    }
}
