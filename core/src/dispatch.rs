//! Handlers and the dispatcher that calls them.
//!
//! Handlers are registered per topic, plus an optional catch-all for topics nobody registered.
//! They are called on worker threads with *batches*: each call gets a run of consecutive events
//! of one topic, in the order the worker took them. A panicking handler is caught and counted;
//! the worker and the rest of the batch carry on.

use crate::event::{Event, Topic};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// A handler's failure, counted as `handler_errors`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Something that consumes events. Called concurrently from every worker, hence `Sync`.
pub trait Handler: Send + Sync + 'static {
    /// Handles a batch of events of one topic. An `Err` is counted; the events still count as
    /// processed (delivery happened; what the handler made of it is its business).
    fn handle(&self, events: &[Event]) -> Result<(), HandlerError>;
}

impl<F> Handler for F
where
    F: Fn(&[Event]) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    fn handle(&self, events: &[Event]) -> Result<(), HandlerError> {
        self(events)
    }
}

/// Outcome of dispatching one run of events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchOutcome {
    /// Handler calls that panicked.
    pub panics: u64,
    /// Handler calls that returned an error.
    pub errors: u64,
    /// Handler calls made.
    pub calls: u64,
}

/// Topic → handlers, plus the catch-all. Immutable once the engine starts.
///
/// Handlers are stored in one flat list; a topic's route is a range of it, so an applier can
/// cache the route of the last topic it saw.
#[derive(Clone, Default)]
pub struct Dispatcher {
    by_topic: HashMap<Topic, Vec<Arc<dyn Handler>>, ahash::RandomState>,
    catch_all: Vec<Arc<dyn Handler>>,
    /// Flattened: catch-all first, then each topic's handlers; rebuilt on registration.
    flat: Vec<Arc<dyn Handler>>,
    ranges: HashMap<Topic, std::ops::Range<usize>, ahash::RandomState>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("topics", &self.by_topic.keys().collect::<Vec<_>>())
            .field("catch_all", &self.catch_all.len())
            .finish()
    }
}

impl Dispatcher {
    /// An empty dispatcher: events are processed (deduplicated, counted, timed) and discarded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a handler for `topic`; several handlers of one topic are called in registration order.
    pub fn on(&mut self, topic: impl Into<Topic>, handler: impl Handler) -> &mut Self {
        self.by_topic
            .entry(topic.into())
            .or_default()
            .push(Arc::new(handler));
        self.reflatten();
        self
    }

    /// Adds a catch-all handler: it gets the events of every topic that has no handler of its own.
    pub fn on_any(&mut self, handler: impl Handler) -> &mut Self {
        self.catch_all.push(Arc::new(handler));
        self.reflatten();
        self
    }

    fn reflatten(&mut self) {
        self.flat = self.catch_all.clone();
        self.ranges.clear();
        for (topic, hs) in &self.by_topic {
            let start = self.flat.len();
            self.flat.extend(hs.iter().cloned());
            self.ranges.insert(topic.clone(), start..self.flat.len());
        }
    }

    /// Where `topic`'s handlers are in the flat list (the catch-all's range if it has none).
    #[inline]
    pub fn route(&self, topic: &str) -> std::ops::Range<usize> {
        match self.ranges.get(topic) {
            Some(r) => r.clone(),
            None => 0..self.catch_all.len(),
        }
    }

    /// The handlers of a route from [`route`](Self::route).
    #[inline]
    pub fn handlers(&self, route: std::ops::Range<usize>) -> &[Arc<dyn Handler>] {
        &self.flat[route]
    }

    /// The handlers for `topic`.
    #[inline]
    pub fn handlers_for(&self, topic: &str) -> &[Arc<dyn Handler>] {
        match self.by_topic.get(topic) {
            Some(h) => h,
            None => &self.catch_all,
        }
    }

    /// Calls every handler for a run of same-topic events, catching panics.
    #[inline]
    pub fn dispatch_run(&self, handlers: &[Arc<dyn Handler>], run: &[Event]) -> DispatchOutcome {
        let mut out = DispatchOutcome::default();
        for h in handlers {
            out.calls += 1;
            match catch_unwind(AssertUnwindSafe(|| h.handle(run))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    out.errors += 1;
                    tracing::debug!(topic = %run[0].topic, error = %e, "handler returned an error");
                }
                Err(_) => {
                    out.panics += 1;
                    tracing::warn!(topic = %run[0].topic, events = run.len(), "handler panicked; worker continues");
                }
            }
        }
        out
    }
}
