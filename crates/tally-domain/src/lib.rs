//! tally's pure retail model: validated values, commands, events, aggregate state and the rules that
//! decide between them.
//!
//! This crate does no I/O, reads no clock and knows nothing of async, storage or HTTP. Everything here
//! is deterministic, which is what makes replay equal live state.
//!
//! Layout:
//! - [`values`]: ids, money, quantities, time zones, each valid by construction;
//! - [`command`]: what clients ask for;
//! - [`event`]: the facts, the streams they belong to, and their stored form;
//! - [`state`]: aggregates folded from their streams;
//! - [`decide`](mod@decide): the rules.

pub mod command;
pub mod decide;
pub mod event;
#[cfg(feature = "schema")]
pub mod schema;
pub mod state;
pub mod values;

pub use command::{Command, CorrectedLine, DeliveryLine, ReturnLine, SaleLine};
pub use decide::{Rejection, RejectionCode, StockPolicy, decide};
pub use event::{Event, StreamId};
pub use state::State;
