//! The processor: takes commands from the queue, decides them against cached aggregate state, commits
//! the events and outcomes of a whole batch in one transaction (group commit), then acks the batch.
//!
//! Exactly-once effect comes from three things together: the queue delivers at least once; a command
//! id that already has an outcome is acked without being decided again; and the commit that records an
//! outcome is the same transaction that appends the events, guarded by stream versions and the
//! outcome's uniqueness. Aggregate state is cached in memory and only read from the store on a miss or
//! after a failed commit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tally_domain::{State, StockPolicy, StreamId, decide};
use tokio::sync::watch;
use uuid::Uuid;

use crate::model::{
    CommandEnvelope, CommitBatch, Decision, Delivery, EventMetadata, NewEvent, OutcomeRecord,
};
use crate::ports::{CommandQueue, Error, EventStore};
use crate::signals::Signals;

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub policy: StockPolicy,
    /// Most commands decided and committed in one transaction.
    pub batch_size: usize,
    /// How long a poison message waits before it is delivered again.
    pub retry_after: Duration,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            policy: StockPolicy::Reject,
            batch_size: 2048,
            retry_after: Duration::from_millis(500),
        }
    }
}

/// What one [`Processor::step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    pub received: usize,
    pub processed: usize,
    pub rejected: usize,
    /// Already decided before (redelivered or resubmitted): acked without effect.
    pub duplicates: usize,
    /// Undecodable: nacked.
    pub poison: usize,
}

pub struct Processor {
    store: Arc<dyn EventStore>,
    queue: Arc<dyn CommandQueue>,
    signals: Signals,
    config: ProcessorConfig,
    state: State,
    loaded: HashSet<StreamId>,
}

const CONFLICT_RETRIES: usize = 8;

impl Processor {
    pub fn new(
        store: Arc<dyn EventStore>,
        queue: Arc<dyn CommandQueue>,
        signals: Signals,
        config: ProcessorConfig,
    ) -> Self {
        Self {
            store,
            queue,
            signals,
            config,
            state: State::default(),
            loaded: HashSet::new(),
        }
    }

    /// Runs until `shutdown` turns true, finishing the batch in hand before it returns.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(50);
        while !*shutdown.borrow() {
            match self.step(Duration::from_millis(200)).await {
                Ok(_) => backoff = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "processor step failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!("processor stopped");
    }

    /// Takes one batch (waiting up to `wait` for the first message) and handles it completely: decided,
    /// committed and acked. On a storage error the batch stays unacked and is redelivered.
    pub async fn step(&mut self, wait: Duration) -> Result<StepReport, Error> {
        let deliveries = self.queue.receive(self.config.batch_size, wait).await?;
        if deliveries.is_empty() {
            return Ok(StepReport::default());
        }
        let mut report = StepReport {
            received: deliveries.len(),
            ..StepReport::default()
        };
        let mut commands = Vec::with_capacity(deliveries.len());
        let mut ack_tags = Vec::with_capacity(deliveries.len());
        for d in &deliveries {
            match CommandEnvelope::decode(&d.payload) {
                Ok(envelope) => commands.push((d, envelope)),
                Err(e) => {
                    report.poison += 1;
                    tracing::warn!(message_id = %d.message_id, error = %e, "undecodable command message");
                    self.queue
                        .nack(
                            d.tag,
                            &format!("undecodable command: {e}"),
                            self.config.retry_after,
                        )
                        .await?;
                }
            }
        }
        let mut attempt = 0;
        loop {
            match self.decide_and_commit(&commands, &mut report).await {
                Ok(()) => break,
                Err(e @ (Error::Conflict { .. } | Error::AlreadyDecided { .. }))
                    if attempt < CONFLICT_RETRIES =>
                {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "commit conflict; reloading and deciding again");
                    report.processed = 0;
                    report.rejected = 0;
                    report.duplicates = 0;
                }
                Err(e) => return Err(e),
            }
        }
        ack_tags.extend(commands.iter().map(|(d, _)| d.tag));
        self.queue.ack(&ack_tags).await?;
        Ok(report)
    }

    async fn decide_and_commit(
        &mut self,
        commands: &[(&Delivery, CommandEnvelope)],
        report: &mut StepReport,
    ) -> Result<(), Error> {
        let ids: Vec<Uuid> = commands.iter().map(|(_, c)| c.command_id).collect();
        let decided: HashSet<Uuid> = self.store.decided(&ids).await?.into_iter().collect();
        let mut seen = HashSet::with_capacity(commands.len());
        let todo: Vec<&CommandEnvelope> = commands
            .iter()
            .map(|(_, c)| c)
            .filter(|c| !decided.contains(&c.command_id) && seen.insert(c.command_id))
            .collect();
        report.duplicates = commands.len() - todo.len();

        let wanted: Vec<StreamId> = todo.iter().flat_map(|c| c.command.streams_read()).collect();
        self.load(wanted).await?;
        let dependent: Vec<StreamId> = todo
            .iter()
            .flat_map(|c| c.command.dependent_streams(&self.state))
            .collect();
        self.load(dependent).await?;

        let now = Timestamp::now();
        let mut batch = CommitBatch::default();
        let mut touched: HashSet<StreamId> = HashSet::new();
        for envelope in &todo {
            let decision = match decide(&self.state, &envelope.command, self.config.policy) {
                Ok(events) => {
                    let occurred_at = envelope
                        .command
                        .occurred_at()
                        .unwrap_or(envelope.received_at);
                    for event in events {
                        let streams: Vec<(StreamId, u64)> = event
                            .streams()
                            .into_iter()
                            .map(|s| {
                                let v = self.state.version(&s) + 1;
                                (s, v)
                            })
                            .collect();
                        self.state.apply(&event);
                        touched.extend(streams.iter().map(|(s, _)| s.clone()));
                        batch.events.push(NewEvent {
                            event_type: event.event_type().to_owned(),
                            schema_version: tally_domain::Event::SCHEMA_VERSION,
                            occurred_at,
                            recorded_at: now,
                            data: event.encode(),
                            metadata: EventMetadata {
                                command_id: envelope.command_id,
                                correlation_id: envelope.correlation_id.clone(),
                                principal: envelope.principal.key_id.clone(),
                            },
                            streams,
                        });
                    }
                    report.processed += 1;
                    Decision::Processed {
                        last_event: batch.events.len() - 1,
                    }
                }
                Err(rejection) => {
                    report.rejected += 1;
                    Decision::Rejected(rejection)
                }
            };
            batch.outcomes.push(OutcomeRecord {
                command_id: envelope.command_id,
                decision,
            });
        }
        if batch.outcomes.is_empty() {
            return Ok(());
        }
        match self.store.commit(batch).await {
            Ok(positions) => {
                if let Some(last) = positions.last() {
                    self.signals.events_committed(*last);
                }
                self.signals.outcomes_committed();
                Ok(())
            }
            Err(e) => {
                // The cache ran ahead of the store: drop what this batch touched so it is read again.
                for s in touched {
                    self.state.forget(&s);
                    self.loaded.remove(&s);
                }
                Err(e)
            }
        }
    }

    /// Makes sure every stream is in the cache (or known not to exist).
    async fn load(&mut self, streams: Vec<StreamId>) -> Result<(), Error> {
        let mut missing: Vec<StreamId> = streams
            .into_iter()
            .filter(|s| !self.loaded.contains(s))
            .collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        for chunk in missing.chunks(500) {
            let events = self.store.read_streams(chunk).await?;
            for (stream, version, recorded) in events {
                let event = recorded
                    .decode()
                    .map_err(|e| Error::Corrupt(format!("event {}: {e}", recorded.position)))?;
                self.state.apply_to(&stream, version, &event);
            }
        }
        self.loaded.extend(missing);
        Ok(())
    }

    /// The cached aggregate state (for tests and diagnostics).
    pub fn state(&self) -> &State {
        &self.state
    }
}
