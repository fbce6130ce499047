//! tally's application core: the ports that storage and messaging adapters implement, and the parts
//! built on them alone — the processor, the projector, the read-model folds, waits for outcomes and
//! positions, and the W1 workload.
//!
//! This crate knows no database, broker or HTTP framework. Adapters depend on it, never the reverse.
//!
//! Layout:
//! - [`ports`]: the traits and their contracts ([`EventStore`], [`Intake`], [`CommandQueue`],
//!   [`CommandLog`], [`ProjectionSink`], [`ReadModels`], [`KeyStore`]);
//! - [`model`]: the records that cross them;
//! - [`processor`], [`projector`], [`readmodel`]: the write path and the read path;
//! - [`rows`], [`timetravel`]: what queries answer, and the answers as of an earlier moment;
//! - [`metrics`]: the processor's counters and histograms (recorded through the `metrics` facade);
//! - [`wait`]: long polls for command outcomes and read-your-writes;
//! - [`workload`]: W1, the standard benchmark workload, and its independent expected books;
//! - `conformance` (feature `test-util`): one test suite per port, run against every adapter.

use std::sync::Arc;

pub mod dataservices;
pub mod intake;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod processor;
pub mod projector;
pub mod readmodel;
pub mod rows;
pub mod signals;
pub mod timetravel;
pub mod verify;
pub mod wait;
pub mod workload;

#[cfg(feature = "test-util")]
pub mod conformance;

pub use lease::{Lease, Leases, LocalLeases};
pub use ports::{
    CommandLog, CommandQueue, Error, EventStore, Intake, IntakeLedger, Journal, KeyStore,
    ProjectionSink, ReadModels,
};
pub use signals::Signals;

/// Every port, as one backend provides them. The binary builds one from configuration and hands its
/// parts to the gateway, processor, projector and queries.
#[derive(Clone)]
pub struct Backend {
    pub events: Arc<dyn EventStore>,
    pub commands: Arc<dyn CommandLog>,
    pub intake: Arc<dyn Intake>,
    pub queue: Arc<dyn CommandQueue>,
    /// Where the projector writes the read models.
    pub sink: Arc<dyn ProjectionSink>,
    /// What queries read of them.
    pub read: Arc<dyn ReadModels>,
    /// The journal's chunks, for time travel.
    pub journal: Arc<dyn Journal>,
    pub keys: Arc<dyn KeyStore>,
    /// Roles only one process may hold at a time (the projector).
    pub leases: Arc<dyn Leases>,
    /// Accepted records and the outbox, for an intake in front of a broker ([`intake::BrokerIntake`]).
    pub ledger: Arc<dyn IntakeLedger>,
    /// Operators' SQL over the read-model views, on connections that cannot write.
    pub data: Arc<dyn dataservices::DataServices>,
    /// Every row of the read models, for `tally verify`.
    pub rows: Arc<dyn ports::ReadModelRows>,
}

impl Backend {
    /// This backend with a broker as its command queue: the intake records commands here and publishes
    /// them to the broker ([`intake::BrokerIntake`]).
    pub fn with_broker(mut self, queue: Arc<dyn CommandQueue>) -> Self {
        self.intake = Arc::new(intake::BrokerIntake::new(
            self.ledger.clone(),
            queue.clone(),
        ));
        self.queue = queue;
        self
    }
}
