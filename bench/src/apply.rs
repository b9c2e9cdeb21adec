//! The apply stage alone (dedup → dispatch → latency record), as the `apply` criterion
//! benchmark and the `apply_cost` example drive it.

use eventstream_core::{
    clock, Applier, DedupConfig, Dispatcher, Event, EventId, Priority, StatsHandle, Topic,
};
use std::sync::Arc;
use std::time::Duration;

/// An applier with one no-op handler (topic `bench`, default dedup) fed batches of events
/// with fresh ids and empty payloads.
#[derive(Debug)]
pub struct ApplyLoop {
    applier: Applier,
    stats: StatsHandle,
    topic: Topic,
    batch: usize,
    next_id: u64,
    buf: Vec<Event>,
}

impl ApplyLoop {
    /// A loop that applies `batch` events per [`ApplyLoop::apply_batch`].
    pub fn new(batch: usize) -> ApplyLoop {
        let mut d = Dispatcher::new();
        d.on("bench", |_: &[Event]| Ok(()));
        let stats = StatsHandle::detached();
        let applier = Applier::new(
            DedupConfig::default(),
            Arc::new(d),
            stats.register("bench"),
            Duration::from_millis(100),
        );
        ApplyLoop {
            applier,
            stats,
            topic: Topic::new_inline("bench"),
            batch,
            next_id: 0,
            buf: Vec::with_capacity(batch),
        }
    }

    /// Builds one batch (ingested now) and applies it.
    pub fn apply_batch(&mut self) {
        let now = clock::now_ns();
        for _ in 0..self.batch {
            self.next_id += 1;
            self.buf.push(Event {
                id: EventId(self.next_id),
                topic: self.topic.clone(),
                priority: Priority::High,
                payload: bytes::Bytes::new(),
                ingest_ns: now,
                meta: None,
            });
        }
        self.applier.apply(&mut self.buf);
    }

    /// Events handed to the applier so far.
    pub fn events(&self) -> u64 {
        self.next_id
    }

    /// Flushes the applier's local counters; the events it processed.
    pub fn processed(&mut self) -> u64 {
        self.applier.flush();
        self.stats.stats().processed
    }
}
