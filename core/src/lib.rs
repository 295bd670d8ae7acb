//! Verdict's shared vocabulary: the types every other crate agrees on.
//!
//! What it is: [`Value`] and [`ValueType`], the [`Schema`] of events (field →
//! type, each field resolved to a slot), the parser that turns the bytes of
//! one event into an [`Event`] or a [`Rejection`], the [`Decision`] and
//! [`DeadLetter`] records of `contracts.md`, and the [`Catalogue`] that maps
//! rules-language paths (`event.amount`, `feature.user.txn_count_1h`,
//! `model.fraud_score`) to typed slots.
//!
//! What it is not: it does no I/O beyond reading the schema file, knows
//! nothing of Kafka, ONNX or the rules language's syntax, and depends on no
//! heavy crate, so `rules`, `features` and `models` build on it alone.

mod catalogue;
mod decision;
mod error;
mod event;
mod schema;
pub mod time;
mod value;

pub use catalogue::{Catalogue, CatalogueEntry, Namespace, Record, Slot, edit_distance};
pub use decision::{Action, Contribution, DeadLetter, Decision, Hit, Position, Scores};
pub use error::CoreError;
pub use event::{DEFAULT_MAX_EVENT_BYTES, Event, EventParser, Rejection, RejectionKind};
pub use schema::{EVENT_ID_SLOT, EVENT_TYPE_SLOT, FieldDef, Schema, TIMESTAMP_SLOT};
pub use value::{Str, Value, ValueType};
