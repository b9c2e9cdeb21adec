//! The apply stage: dedup → dispatch → latency, for one thread.
//!
//! Embedded, each worker owns an [`Applier`] and feeds it the batches it drains. In a cluster
//! node the raft apply loop owns one and feeds it committed batches in log order, so every
//! replica makes the same dedup decisions.

use crate::clock;
use crate::config::DedupConfig;
use crate::dedup::{Decision, DedupWindow};
use crate::dispatch::Dispatcher;
use crate::event::Event;
use crate::stats::{ApplierCounters, ApplierSlot, LocalStats};
use std::sync::Arc;
use std::time::Duration;

/// Dedup, dispatch and latency recording for a stream of batches. Single-threaded by design.
#[derive(Debug)]
pub struct Applier {
    dedup: DedupWindow,
    dispatcher: Arc<Dispatcher>,
    stats: LocalStats,
    /// The last topic dispatched and its handlers: consecutive batches are usually of the same
    /// topic, and a 24-byte compare is cheaper than hashing the name.
    last_route: Option<(crate::event::Topic, std::ops::Range<usize>)>,
    /// The dedup decisions of the batch being applied (kept to reuse its allocation).
    decisions: Vec<Decision>,
}

/// What [`Applier::apply`] did with one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Events dispatched.
    pub dispatched: usize,
    /// Events dropped as duplicates.
    pub duplicates: usize,
}

impl Applier {
    /// An applier that reports into `slot` (see [`crate::StatsHandle::register`]).
    pub fn new(
        dedup: DedupConfig,
        dispatcher: Arc<Dispatcher>,
        slot: Arc<ApplierSlot>,
        stats_flush: Duration,
    ) -> Self {
        Applier {
            dedup: DedupWindow::new(dedup),
            dispatcher,
            stats: LocalStats::new(slot, stats_flush),
            last_route: None,
            decisions: Vec::new(),
        }
    }

    /// Applies a batch, leaving `batch` empty: each event is checked against the dedup window;
    /// fresh ones go to their handlers in order (one call per run of equal topics) and have
    /// their ingest → handler-start latency recorded.
    pub fn apply(&mut self, batch: &mut Vec<Event>) -> ApplyOutcome {
        self.apply_inner(batch, None)
    }

    /// Like [`apply`](Self::apply), but latency is measured from `received_ns` (a
    /// [`clock::now_ns`] reading on this node) instead of each event's `ingest_ns`. A cluster
    /// node applies events stamped by another process's clock; it measures its own stage from
    /// when the batch was committed here, and leaves `ingest_ns` untouched because dedup's
    /// time window must see the same timestamps on every replica.
    pub fn apply_received_at(&mut self, batch: &mut Vec<Event>, received_ns: u64) -> ApplyOutcome {
        self.apply_inner(batch, Some(received_ns))
    }

    fn apply_inner(&mut self, batch: &mut Vec<Event>, received_ns: Option<u64>) -> ApplyOutcome {
        let before = self.stats.counters;
        let c = &mut self.stats.counters;
        // With the window off there are no decisions to count (see `count_dedup`).
        let counting = self.dedup.window() > 0;
        // Dedup in place: fresh events are compacted to the front of `batch` (a swap only once
        // a duplicate has been seen, so the common all-fresh batch moves nothing) and the
        // duplicates left at the end are dropped by `truncate`. Order among fresh events is kept.
        // The whole batch is checked first (`check_batch` overlaps the window's cache misses
        // across events: in the closed-loop pipeline, where ring slots evict the window's
        // lines, that measured faster than `check` per event), then compacted by the decisions.
        self.dedup
            .check_batch(batch, |e| (e.id.0, e.ingest_ns), &mut self.decisions);
        let mut fresh = 0;
        for (i, &decision) in self.decisions.iter().enumerate() {
            c.by_priority[batch[i].priority.index()] += 1;
            match decision {
                Decision::Fresh => {
                    if fresh != i {
                        batch.swap(fresh, i);
                    }
                    fresh += 1;
                }
                Decision::Duplicate => c.dedup_hits += 1,
            }
        }
        c.dedup_misses += fresh as u64 * u64::from(counting);
        batch.truncate(fresh);
        let mut now = clock::now_ns();
        let mut start = 0;
        let events = &batch[..];
        while start < events.len() {
            let topic = &events[start].topic;
            let mut end = start + 1;
            while end < events.len() && events[end].topic == *topic {
                end += 1;
            }
            let run = &events[start..end];
            let route = match &self.last_route {
                Some((t, r)) if t == topic => r.clone(),
                _ => {
                    let r = self.dispatcher.route(topic);
                    self.last_route = Some((topic.clone(), r.clone()));
                    r
                }
            };
            let handlers = self.dispatcher.handlers(route);
            if start > 0 {
                // Later runs start later: read the clock again so their latency is honest.
                now = clock::now_ns();
            }
            match received_ns {
                Some(origin) => {
                    self.stats
                        .record_latency_n(now.saturating_sub(origin), run.len() as u64);
                }
                None => record_run_latencies(&mut self.stats, now, run),
            }
            let out = self.dispatcher.dispatch_run(handlers, run);
            self.stats.counters.handler_panics += out.panics;
            self.stats.counters.handler_errors += out.errors;
            start = end;
        }
        batch.clear();
        let c = &mut self.stats.counters;
        c.processed += fresh as u64;
        c.batches += 1;
        let outcome = ApplyOutcome {
            dispatched: (c.processed - before.processed) as usize,
            duplicates: (c.dedup_hits - before.dedup_hits) as usize,
        };
        self.stats.flush(now, false);
        outcome
    }

    /// Counts dedup decisions made outside this applier — by a caller that checks ids itself
    /// before handing over only the fresh events (a cluster node assigns stream offsets at the
    /// same time) and runs the applier with dedup off. Keeps `dedup_hits`/`dedup_misses` true.
    pub fn count_dedup(&mut self, hits: u64, misses: u64) {
        self.stats.counters.dedup_hits += hits;
        self.stats.counters.dedup_misses += misses;
    }

    /// Publishes everything counted so far, including the latency histogram.
    pub fn flush(&mut self) {
        self.stats.flush(clock::now_ns(), true);
    }

    /// Running totals, including what has not been flushed yet.
    pub fn counters(&self) -> ApplierCounters {
        self.stats.counters()
    }

    /// The dedup window (for snapshots).
    pub fn dedup(&self) -> &DedupWindow {
        &self.dedup
    }

    /// Replaces the dedup window (after installing a snapshot).
    pub fn set_dedup(&mut self, window: DedupWindow) {
        self.dedup = window;
    }
}

/// Records `now - ingest_ns` for every event of `run` (all dispatched at `now`). Events published
/// together share one `ingest_ns`, so equal neighbours are counted with one histogram update:
/// the histogram is exactly the one per-event recording would give, at a fraction of the cost.
#[inline]
fn record_run_latencies(stats: &mut LocalStats, now: u64, run: &[Event]) {
    let mut i = 0;
    while i < run.len() {
        let ingest = run[i].ingest_ns;
        let mut j = i + 1;
        while j < run.len() && run[j].ingest_ns == ingest {
            j += 1;
        }
        stats.record_latency_n(now.saturating_sub(ingest), (j - i) as u64);
        i = j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;
    use crate::stats::StatsHandle;
    use std::sync::Mutex;

    #[test]
    fn duplicates_are_counted_not_dispatched_and_panics_are_contained() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut d = Dispatcher::new();
        let s = seen.clone();
        d.on("a", move |evs: &[Event]| {
            s.lock().unwrap().extend(evs.iter().map(|e| e.id.0));
            Ok(())
        });
        d.on("boom", |_: &[Event]| -> Result<(), crate::HandlerError> {
            panic!("handler bug")
        });
        d.on("err", |_: &[Event]| -> Result<(), crate::HandlerError> {
            Err("nope".into())
        });
        let stats = StatsHandle::detached();
        let mut a = Applier::new(
            DedupConfig::default(),
            Arc::new(d),
            stats.register("t"),
            Duration::from_millis(1),
        );
        let ev = |id, topic: &str| Event {
            ingest_ns: clock::now_ns(),
            ..Event::new(topic, Priority::High, &b""[..]).with_id(id)
        };
        let mut batch = vec![
            ev(1, "a"),
            ev(2, "boom"),
            ev(1, "a"),
            ev(3, "a"),
            ev(4, "err"),
        ];
        let out = a.apply(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(
            out,
            ApplyOutcome {
                dispatched: 4,
                duplicates: 1
            }
        );
        assert_eq!(*seen.lock().unwrap(), vec![1, 3]);
        a.flush();
        let st = stats.stats();
        assert_eq!(st.processed, 4);
        assert_eq!(st.dedup_hits, 1);
        assert_eq!(st.dedup_misses, 4);
        assert_eq!(st.handler_panics, 1);
        assert_eq!(st.handler_errors, 1);
        assert_eq!(st.priority(Priority::High), 5);
        assert_eq!(st.latency.count, 4);
        assert!(st.latency.max_ns < 1_000_000_000);
    }

    #[test]
    fn every_fresh_event_gets_its_own_latency_recorded() {
        let stats = StatsHandle::detached();
        let mut a = Applier::new(
            DedupConfig::default(),
            Arc::new(Dispatcher::new()),
            stats.register("t"),
            Duration::from_millis(1),
        );
        // The clock starts at 1 on first use in the process: let it pass 50 ms.
        while clock::now_ns() < 60_000_000 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let now = clock::now_ns();
        // Runs of equal ingest times (as a publish batch stamps them), a duplicate in the
        // middle of a run, and a topic change.
        let old = now - 50_000_000;
        let ev = |id, topic: &str, ingest_ns| Event {
            ingest_ns,
            ..Event::new(topic, Priority::High, &b""[..]).with_id(id)
        };
        let mut batch = vec![
            ev(1, "a", old),
            ev(2, "a", old),
            ev(1, "a", old),
            ev(3, "a", now),
            ev(4, "b", now),
            ev(5, "b", old),
        ];
        let out = a.apply(&mut batch);
        assert_eq!(out.dispatched, 5);
        a.flush();
        let h = stats.latency_histogram();
        assert_eq!(h.len(), 5);
        // Three events waited at least 50 ms, two far less.
        assert_eq!(h.count_between(40_000_000, u64::MAX / 2), 3);
        assert_eq!(h.count_between(1, 40_000_000 - 1), 2);
    }
}
