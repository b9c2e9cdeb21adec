//! The crate's error type and the publish outcomes that hand events back.

use crate::event::Event;

/// Everything that can go wrong in eventstream-core, apart from publish refusals (which carry
/// the event back; see [`PublishError`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A configuration value is out of range; `field` is the dotted path of the setting.
    #[error("invalid configuration: `{field}` = {value}: {allowed}")]
    InvalidConfig {
        /// Dotted path, e.g. `tiers.realtime.capacity`.
        field: &'static str,
        /// The rejected value, rendered.
        value: String,
        /// What would have been accepted.
        allowed: String,
    },
    /// A priority name that is not one of critical, high, medium, low.
    #[error("unknown priority `{0}` (expected one of: critical, high, medium, low)")]
    UnknownPriority(String),
    /// A tier name that is not one of realtime, transactional, batch.
    #[error("unknown tier `{0}` (expected one of: realtime, transactional, batch)")]
    UnknownTier(String),
    /// A worker thread could not be started.
    #[error("could not spawn worker thread {index}: {reason}")]
    SpawnWorker {
        /// Worker index.
        index: usize,
        /// The OS error.
        reason: String,
    },
    /// The engine has been shut down (or is shutting down).
    #[error("the engine is shut down")]
    Closed,
    /// A worker thread died outside a handler (a bug in eventstream), reported at shutdown.
    #[error("worker {0} panicked outside a handler")]
    WorkerPanicked(usize),
}

/// Why a publish did not enqueue the event; the event is handed back, never lost silently.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    /// The tier ring is full and its policy is `Reject` (or the call was `try_publish`).
    #[error("tier ring full")]
    Full(Event),
    /// The engine is shutting down and accepts no new events.
    #[error("engine closed")]
    Closed(Event),
}

impl PublishError {
    /// The event that was not accepted.
    pub fn into_event(self) -> Event {
        match self {
            PublishError::Full(e) | PublishError::Closed(e) => e,
        }
    }
}

/// What happened to an event that the publish call did not hand back.
#[must_use = "a DropNewest tier may have discarded the event; check or count it"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Enqueued: it will reach its handlers unless the engine is hard-stopped.
    Accepted,
    /// The tier was full and its policy is `DropNewest`: discarded and counted as
    /// `dropped{reason="queue_full"}`.
    Dropped,
}

/// Outcome of a batch publish.
#[must_use = "events not accepted are handed back in `rejected`; dropped ones are only counted"]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events enqueued.
    pub accepted: usize,
    /// Events discarded by a `DropNewest` tier (counted).
    pub dropped: usize,
    /// Events handed back (`Reject` tier full, or engine closed), in publish order.
    pub rejected: Vec<Event>,
}
