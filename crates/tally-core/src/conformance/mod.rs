//! Conformance suites: one per port, written once against the traits in [`crate::ports`] and run by
//! every adapter — SQLite, PostgreSQL, each broker — the way quickwit runs one metastore suite against
//! each metastore. They are what keeps backends interchangeable.
//!
//! An adapter provides a [`Factory`] that opens a fresh, empty [`Backend`] and, in one test file,
//!
//! ```text
//! struct SqliteFactory;
//! impl tally_core::conformance::Factory for SqliteFactory { /* ... */ }
//! tally_core::conformance_tests!(SqliteFactory);
//! ```
//!
//! which expands to one `#[tokio::test]` per check, named after it (`event_store_conflict_writes_nothing`
//! and so on), each on its own fresh backend, so checks run in parallel and fail by name. The calling
//! crate needs `tokio` (features `macros`, `rt-multi-thread`) as a dev-dependency.
//!
//! The checks follow the contracts written on the ports. Where they read a contract more precisely than
//! its doc comment does, the reading is stated here: timestamps round-trip at microsecond precision
//! (what PostgreSQL keeps); `Conflict` names the stream whose version was taken, or the stream of
//! `reads` that moved (when only one did); the intake's queue message carries the encoded envelope; a
//! queue dead-letters a message within [`queue::MAX_NACKS`] deliveries, a dead letter leaves `depth`,
//! and a replayed one leaves `dead_letters`. Where a contract leaves a choice open, no check makes it:
//! whether one `receive` may hand out several messages of a partition (the in-flight checks receive one
//! at a time), the order of `daily_sales` rows and of streams in `read_streams`, whether `list` shows
//! revoked keys, and when the message of a consumer that died unacked comes back. No check asserts
//! speed: waits are bounded only so that a hang becomes a failure.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use crate::Backend;

pub mod dataservices;
pub mod event_store;
pub mod faults;
pub mod history;
pub mod intake;
pub mod keys;
pub mod ledger;
pub mod outcomes;
pub mod queue;
pub mod read_store;
pub mod rebuild;
mod support;
pub mod timetravel;
pub mod upcasting;
pub mod verify;

pub use support::{admin_envelope, submission};

/// A fresh, empty backend, and whatever must live as long as it (a temporary directory, a scratch
/// database to drop).
pub struct Fresh {
    pub backend: Backend,
    pub guard: Box<dyn Any + Send + Sync>,
}

impl Fresh {
    /// A backend that needs nothing kept alive.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            guard: Box::new(()),
        }
    }
}

/// Opens a fresh, empty backend for each check. Nothing may be shared between two backends it makes:
/// checks run in parallel and each expects an empty log, queue, read store and key store.
pub trait Factory: Send + Sync + 'static {
    fn make(&self) -> Pin<Box<dyn Future<Output = Fresh> + Send + '_>>;
}

/// Runs one check on a fresh backend from `factory`; what [`conformance_tests!`] expands to.
pub async fn run<F, C>(factory: &F, check: C)
where
    F: Factory,
    C: AsyncFnOnce(&Backend),
{
    let fresh = factory.make().await;
    check(&fresh.backend).await;
    drop(fresh);
}

/// One `#[tokio::test]` per conformance check, on backends from the given [`Factory`] expression:
/// `tally_core::conformance_tests!(SqliteFactory);`
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_tests! {
            factory: $factory;
            plain: [
                event_store_starts_empty => event_store::starts_empty,
                event_store_appends_and_reads_in_global_order =>
                    event_store::appends_and_reads_in_global_order,
                event_store_round_trips_every_field => event_store::round_trips_every_field,
                event_store_stores_a_multi_stream_event_once =>
                    event_store::stores_a_multi_stream_event_once,
                event_store_reads_several_streams => event_store::reads_several_streams,
                event_store_recorded_at_never_decreases =>
                    event_store::recorded_at_never_decreases,
                event_store_position_at_finds_the_prefix_recorded_by_an_instant =>
                    event_store::position_at_finds_the_prefix_recorded_by_an_instant,
                event_store_read_stream_after_stops_at_a_position =>
                    event_store::read_stream_after_stops_at_a_position,
                event_store_conflict_writes_nothing => outcomes::conflict_writes_nothing,
                event_store_already_decided_writes_nothing =>
                    outcomes::already_decided_writes_nothing,
                event_store_records_outcomes_as_statuses =>
                    outcomes::records_outcomes_as_statuses,
                event_store_reports_decided_commands => outcomes::reports_decided_commands,
                event_store_stale_read_writes_nothing => outcomes::stale_read_writes_nothing,
                event_store_read_of_a_stream_created_since_conflicts =>
                    outcomes::read_of_a_stream_created_since_conflicts,
                event_store_current_reads_commit => outcomes::current_reads_commit,
                queue_delivers_messages_intact => queue::delivers_messages_intact,
                queue_keeps_partition_order => queue::keeps_partition_order,
                queue_holds_a_partition_while_a_message_is_in_flight =>
                    queue::holds_a_partition_while_a_message_is_in_flight,
                queue_ack_removes_messages => queue::ack_removes_messages,
                queue_nack_redelivers_in_partition_order =>
                    queue::nack_redelivers_in_partition_order,
                queue_nack_delays_redelivery => queue::nack_delays_redelivery,
                queue_dead_letters_after_max_deliveries =>
                    queue::dead_letters_after_max_deliveries,
                queue_receive_on_empty_queue_returns_empty =>
                    queue::receive_on_empty_queue_returns_empty,
                queue_receive_waits_for_a_message => queue::receive_waits_for_a_message,
                intake_accepts_and_records_the_command => intake::accepts_and_records_the_command,
                intake_replays_the_same_key_and_request => intake::replays_the_same_key_and_request,
                intake_refuses_a_reused_key => intake::refuses_a_reused_key,
                intake_scopes_idempotency_keys_per_api_key =>
                    intake::scopes_idempotency_keys_per_api_key,
                intake_submit_many_returns_each_result => intake::submit_many_returns_each_result,
                read_store_starts_empty => read_store::starts_empty,
                read_store_apply_moves_checkpoint_and_adds_deltas =>
                    read_store::apply_moves_checkpoint_and_adds_deltas,
                read_store_apply_moves_several_projections_at_once =>
                    read_store::apply_moves_several_projections_at_once,
                read_store_stale_from_writes_nothing => read_store::stale_from_writes_nothing,
                read_store_reset_empties_one_projection => read_store::reset_empties_one_projection,
                read_store_store_daily_filters_dates_and_skips_empty_days =>
                    read_store::store_daily_filters_dates_and_skips_empty_days,
                read_store_supplier_daily_filters_dates_and_skips_empty_days =>
                    read_store::supplier_daily_filters_dates_and_skips_empty_days,
                read_store_catalog_lists_the_registry_by_id =>
                    read_store::catalog_lists_the_registry_by_id,
                read_store_item_daily_top_items_and_low_stock =>
                    read_store::item_daily_top_items_and_low_stock,
                read_store_projector_resumes_behind_its_journal =>
                    read_store::projector_resumes_behind_its_journal,
                timetravel_as_of_equals_a_fold_of_the_prefix =>
                    timetravel::as_of_equals_a_fold_of_the_prefix,
                timetravel_business_time_counts_movements_that_happened_by_then =>
                    timetravel::business_time_counts_movements_that_happened_by_then,
                upcasting_old_and_new_versions_of_the_same_facts_read_the_same =>
                    upcasting::old_and_new_versions_of_the_same_facts_read_the_same,
                verify_passes_on_a_history_and_names_an_altered_row =>
                    verify::passes_on_a_history_and_names_an_altered_row,
                faults_are_recorded_replaced_and_cleared_with_their_update =>
                    faults::are_recorded_replaced_and_cleared_with_their_update,
                rebuild_shadow_versions_swap_in_whole_and_only_forward =>
                    rebuild::shadow_versions_swap_in_whole_and_only_forward,
                rebuild_beside_a_following_projector_equals_a_replay =>
                    rebuild::rebuilds_beside_a_following_projector_equal_a_replay,
                ledger_records_without_queueing => ledger::records_without_queueing,
                ledger_keeps_what_the_broker_refused_and_publishes_it_on_retry =>
                    ledger::keeps_what_the_broker_refused_and_publishes_it_on_retry,
                ledger_the_relay_sends_what_the_outbox_holds =>
                    ledger::the_relay_sends_what_the_outbox_holds,
                broker_intake_accepts_and_records_the_command =>
                    ledger::broker_intake_accepts_and_records_the_command,
                broker_intake_replays_the_same_key_and_request =>
                    ledger::broker_intake_replays_the_same_key_and_request,
                broker_intake_refuses_a_reused_key => ledger::broker_intake_refuses_a_reused_key,
                broker_intake_scopes_idempotency_keys_per_api_key =>
                    ledger::broker_intake_scopes_idempotency_keys_per_api_key,
                broker_intake_submit_many_returns_each_result =>
                    ledger::broker_intake_submit_many_returns_each_result,
                keys_create_find_and_list => keys::create_find_and_list,
                keys_revoke_hides_a_key_once => keys::revoke_hides_a_key_once,
                keys_usage_adds_up_and_never_goes_back_in_time =>
                    keys::usage_adds_up_and_never_goes_back_in_time,
                dataservices_views_have_their_columns => dataservices::views_have_their_columns,
                dataservices_views_hold_the_read_models =>
                    dataservices::views_hold_the_read_models,
                dataservices_refuses_what_is_not_a_read_of_the_views =>
                    dataservices::refuses_what_is_not_a_read_of_the_views,
                dataservices_binds_values_and_limits_rows =>
                    dataservices::binds_values_and_limits_rows,
                dataservices_cancels_a_query_past_its_time_limit =>
                    dataservices::cancels_a_query_past_its_time_limit,
            ];
            concurrent: [
                event_store_concurrent_commits_to_distinct_streams =>
                    event_store::concurrent_commits_to_distinct_streams,
                event_store_racing_writers_one_wins => event_store::racing_writers_one_wins,
            ];
        }
    };
}

/// Only the [`CommandQueue`](crate::CommandQueue) checks, for a queue adapter (a broker) whose other
/// ports come from a database backend: `tally_core::queue_conformance_tests!(RabbitFactory);`. The
/// factory's backend must have the broker's queue as `queue`.
#[macro_export]
macro_rules! queue_conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_tests! {
            factory: $factory;
            plain: [
                queue_delivers_messages_intact => queue::delivers_messages_intact,
                queue_keeps_partition_order => queue::keeps_partition_order,
                queue_holds_a_partition_while_a_message_is_in_flight =>
                    queue::holds_a_partition_while_a_message_is_in_flight,
                queue_ack_removes_messages => queue::ack_removes_messages,
                queue_nack_redelivers_in_partition_order =>
                    queue::nack_redelivers_in_partition_order,
                queue_nack_delays_redelivery => queue::nack_delays_redelivery,
                queue_dead_letters_after_max_deliveries =>
                    queue::dead_letters_after_max_deliveries,
                queue_receive_on_empty_queue_returns_empty =>
                    queue::receive_on_empty_queue_returns_empty,
                queue_receive_waits_for_a_message => queue::receive_waits_for_a_message,
            ];
            concurrent: [];
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (
        factory: $factory:expr;
        plain: [$($name:ident => $module:ident::$check:ident),* $(,)?];
        concurrent: [$($cname:ident => $cmodule:ident::$ccheck:ident),* $(,)?];
    ) => {
        $(
            #[::tokio::test]
            async fn $name() {
                $crate::conformance::run(&$factory, $crate::conformance::$module::$check).await;
            }
        )*
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 8)]
            async fn $cname() {
                $crate::conformance::run(&$factory, $crate::conformance::$cmodule::$ccheck).await;
            }
        )*
    };
}
