//! The queue conformance checks of `tally_core::conformance`, on a real ActiveMQ broker (STOMP at
//! `TALLY_TEST_ACTIVEMQ_URL`, default `stomp://127.0.0.1:61613`; `ci.sh` starts one). Each check gets
//! its own namespace, so they run in parallel on one broker, and empties it when done. A broker that
//! cannot be reached fails the checks.
#![cfg(feature = "activemq")]

use std::future::Future;
use std::pin::Pin;

use tally_core::conformance::{Factory, Fresh};
use tally_queue_activemq::{ActiveMqOptions, connect};
use tally_store_sqlite::Sqlite;

fn url() -> String {
    std::env::var("TALLY_TEST_ACTIVEMQ_URL").unwrap_or_else(|_| "stomp://127.0.0.1:61613".into())
}

/// Empties the check's queues once its backend is gone, so the broker keeps nothing of it.
struct Purge(ActiveMqOptions);

impl Drop for Purge {
    fn drop(&mut self) {
        let options = self.0.clone();
        // The check's runtime is busy dropping us: purge on a thread with a runtime of its own.
        let purged = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let queue = connect(options).await.map_err(|e| e.to_string())?;
                queue.purge().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = purged {
            eprintln!("could not purge the check's queues: {e}");
        }
    }
}

struct ActiveMqFactory;

impl Factory for ActiveMqFactory {
    fn make(&self) -> Pin<Box<dyn Future<Output = Fresh> + Send + '_>> {
        Box::pin(async {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store = Sqlite::open(dir.path()).expect("open sqlite backend");
            let mut options = ActiveMqOptions::new(url());
            options.namespace = format!("t{}", uuid::Uuid::now_v7().simple());
            let queue = connect(options.clone())
                .await
                .expect("ActiveMQ must be running (crates/tally-queue-activemq/ci.sh starts it)");
            let mut backend = store.backend();
            backend.queue = queue;
            Fresh {
                backend,
                guard: Box::new((dir, Purge(options))),
            }
        })
    }
}

tally_core::queue_conformance_tests!(ActiveMqFactory);
