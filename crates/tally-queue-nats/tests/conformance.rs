//! The queue conformance checks of `tally_core`, on a real NATS server (each in a fresh namespace),
//! with the other ports from an embedded SQLite backend.
#![cfg(feature = "nats")]

mod support;

use std::future::Future;
use std::pin::Pin;

use tally_core::conformance::{Factory, Fresh};
use tally_store_sqlite::Sqlite;

struct NatsFactory;

impl Factory for NatsFactory {
    fn make(&self) -> Pin<Box<dyn Future<Output = Fresh> + Send + '_>> {
        Box::pin(async {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store = Sqlite::open(dir.path()).expect("open sqlite backend");
            let options = support::options("conf");
            let queue = support::open(&options).await;
            let mut backend = store.backend();
            backend.queue = queue;
            Fresh {
                backend,
                // Dropped after the backend: the queue stops before its namespace is removed.
                guard: Box::new((dir, support::Cleanup(options.namespace))),
            }
        })
    }
}

tally_core::queue_conformance_tests!(NatsFactory);
