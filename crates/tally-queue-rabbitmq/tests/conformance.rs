//! The queue conformance checks from `tally_core::conformance`, on RabbitMQ: each check gets a fresh
//! SQLite backend whose queue is replaced by a RabbitMQ queue in a namespace of its own.

#![cfg(feature = "rabbitmq")]

mod common;

use std::future::Future;
use std::pin::Pin;

use tally_core::conformance::{Factory, Fresh};
use tally_store_sqlite::Sqlite;

struct RabbitFactory;

impl Factory for RabbitFactory {
    fn make(&self) -> Pin<Box<dyn Future<Output = Fresh> + Send + '_>> {
        Box::pin(async {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store = Sqlite::open(dir.path()).expect("open sqlite backend");
            let mut backend = store.backend();
            // Four queues: several partitions share a queue, as they do with the default sixteen.
            let options = common::fresh_options(4);
            let queue = tally_queue_rabbitmq::connect(options.clone())
                .await
                .unwrap_or_else(|e| panic!("RabbitMQ must be running at {}: {e}", options.url));
            backend.queue = queue;
            Fresh {
                backend,
                guard: Box::new((common::Cleanup(options), dir)),
            }
        })
    }
}

tally_core::queue_conformance_tests!(RabbitFactory);
