//! What the RabbitMQ test files share: the broker's address, fresh namespaces, and deleting a test's
//! queues when it ends (quorum queues are heavy; a broker full of stale ones gets slow).

#![allow(dead_code)]

use std::time::Duration;

use tally_queue_rabbitmq::RabbitOptions;

/// The broker the tests use (`TALLY_TEST_AMQP_URL`); it must be running: a missing broker fails.
pub fn url() -> String {
    std::env::var("TALLY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Options for a fresh namespace of its own.
pub fn fresh_options(queues: u16) -> RabbitOptions {
    let mut options = RabbitOptions::new(url());
    options.namespace = format!("tally-test-{}", uuid::Uuid::now_v7().simple());
    options.queues = queues;
    options.timeout = Duration::from_secs(10);
    options
}

/// Deletes a namespace's queues when dropped, on a thread with a runtime of its own (the test's
/// runtime may be ending).
pub struct Cleanup(pub RabbitOptions);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let options = self.0.clone();
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                match tally_queue_rabbitmq::connect(options).await {
                    Ok(q) => {
                        if let Err(e) = q.delete_queues().await {
                            eprintln!("could not delete test queues: {e}");
                        }
                    }
                    Err(e) => eprintln!("could not delete test queues: {e}"),
                }
            });
        });
        let _ = done.join();
    }
}
