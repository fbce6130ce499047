//! The processor's metrics: commands processed and rejected (by type and reason), batch sizes and
//! append latency. Recorded through the `metrics` facade; which exporter renders them is the binary's
//! choice (tally-http serves them at `/metrics`).
//!
//! The handles are registered once, by [`register`], after the process installed its recorder. Until
//! then (and in processes that never install one, such as unit tests) every recording is a no-op that
//! costs one atomic load. Counts of a chunk are gathered in an [`Outcomes`] while it is decided and
//! recorded only once its commit has landed, so a rolled-back chunk is not counted twice.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, Unit, counter, describe_counter, describe_histogram, histogram};
use tally_domain::{Command, RejectionCode};

pub const COMMANDS_PROCESSED: &str = "tally_commands_processed_total";
pub const COMMANDS_REJECTED: &str = "tally_commands_rejected_total";
pub const BATCH_SIZE: &str = "tally_processor_batch_size";
pub const APPEND_SECONDS: &str = "tally_processor_append_duration_seconds";

/// Buckets of [`BATCH_SIZE`]: commands taken from the queue at once (at most the processor's batch
/// size, 8192 by default).
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];
/// Buckets of [`APPEND_SECONDS`]: one group commit (fsync included).
pub const APPEND_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const KINDS: usize = Command::KINDS.len();
const CODES: usize = RejectionCode::ALL.len();

struct Handles {
    processed: [Counter; KINDS],
    rejected: [[Counter; CODES]; KINDS],
    batch_size: Histogram,
    append: Histogram,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

/// Describes the processor's metrics and registers every series (each command type, each type and
/// rejection code) at zero. Call it once the process's recorder is installed; later calls do nothing.
pub fn register() {
    HANDLES.get_or_init(|| {
        describe_counter!(
            COMMANDS_PROCESSED,
            "Commands the processor decided and committed as processed, by command type"
        );
        describe_counter!(
            COMMANDS_REJECTED,
            "Commands the processor rejected by a business rule, by command type and rejection code"
        );
        describe_histogram!(
            BATCH_SIZE,
            Unit::Count,
            "Commands the processor took from the queue in one batch"
        );
        describe_histogram!(
            APPEND_SECONDS,
            Unit::Seconds,
            "Time of one group commit of events and outcomes to the event store"
        );
        Handles {
            processed: Command::KINDS.map(|kind| counter!(COMMANDS_PROCESSED, "type" => kind)),
            rejected: Command::KINDS.map(|kind| {
                RejectionCode::ALL.map(
                    |code| counter!(COMMANDS_REJECTED, "type" => kind, "reason" => code.as_str()),
                )
            }),
            batch_size: histogram!(BATCH_SIZE),
            append: histogram!(APPEND_SECONDS),
        }
    });
}

/// The processor took a batch of `size` commands from the queue.
pub(crate) fn batch_received(size: usize) {
    if let Some(h) = HANDLES.get() {
        h.batch_size.record(size as f64);
    }
}

/// One commit to the event store took this long (whether it succeeded or not).
pub(crate) fn appended(took: Duration) {
    if let Some(h) = HANDLES.get() {
        h.append.record(took.as_secs_f64());
    }
}

/// The decisions of one chunk, counted while it is decided and recorded once its commit landed.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    processed: [u32; KINDS],
    rejected: [[u32; CODES]; KINDS],
}

impl Outcomes {
    pub(crate) fn processed(&mut self, command: &Command) {
        self.processed[command.kind_index()] += 1;
    }

    pub(crate) fn rejected(&mut self, command: &Command, code: RejectionCode) {
        self.rejected[command.kind_index()][code_index(code)] += 1;
    }

    /// Adds the counts to the counters.
    pub(crate) fn record(&self) {
        let Some(h) = HANDLES.get() else { return };
        for (counter, n) in h.processed.iter().zip(self.processed) {
            if n > 0 {
                counter.increment(u64::from(n));
            }
        }
        for (counters, ns) in h.rejected.iter().zip(&self.rejected) {
            for (counter, n) in counters.iter().zip(ns) {
                if *n > 0 {
                    counter.increment(u64::from(*n));
                }
            }
        }
    }
}

/// Where `code` stands in [`RejectionCode::ALL`] (declaration order, checked by a test).
fn code_index(code: RejectionCode) -> usize {
    code as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_codes_index_their_place_in_all() {
        for (i, code) in RejectionCode::ALL.into_iter().enumerate() {
            assert_eq!(code_index(code), i, "{code:?}");
        }
    }

    #[test]
    fn outcomes_count_by_type_and_reason() {
        let supplier = Command::RegisterSupplier {
            supplier_id: tally_domain::values::SupplierId::parse("acme").expect("a valid id"),
            name: tally_domain::values::Text::parse("Acme").expect("a valid name"),
        };
        let mut o = Outcomes::default();
        o.processed(&supplier);
        o.processed(&supplier);
        o.rejected(&supplier, RejectionCode::DuplicateId);
        assert_eq!(Command::KINDS[supplier.kind_index()], "register_supplier");
        assert_eq!(o.processed[0], 2);
        assert_eq!(
            o.rejected[0][code_index(RejectionCode::DuplicateId)],
            1,
            "{o:?}"
        );
        assert_eq!(o.processed.iter().sum::<u32>(), 2);
        assert_eq!(o.rejected.iter().flatten().sum::<u32>(), 1);
    }
}
