//! Instrumentation, as its own layer.
//!
//! Hot loops never touch shared state per event. A worker (or any [`Applier`](crate::Applier))
//! counts into a [`LocalStats`] — plain integers and an HDR histogram it owns — and publishes
//! per batch: counters by relaxed *stores* of running totals into its own cache-padded
//! [`ApplierSlot`] (no read-modify-write, no sharing: each slot has exactly one writer), and the
//! histogram by merging into the slot's mutex-protected copy every `stats_flush_ms`. Readers
//! ([`StatsHandle::stats`]) sum the slots and merge the histograms, off the hot path.
//!
//! Engine workers also count how their parks end ([`ParkCounts`]) and store the totals into the
//! same slot after each park — a slow path (a park is a system call), never per event.
//!
//! Publish-side counters (ring full, drops, rejections) are touched only on the overflow path.
//! Push and pop totals come straight from the rings' own positions, and depth is `tail - head`.

use crate::event::Priority;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::tier::Tier;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Highest latency the histograms resolve (60 s); larger values are clamped to it.
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;
/// Significant figures kept by the latency histograms: 1 % relative precision. Two rather than
/// three keeps a histogram at ~30 KiB instead of ~220 KiB, which makes the worker's periodic
/// merge ~7x cheaper — that merge runs on the worker thread, so its cost shows up in p99.9.
pub const LATENCY_SIGFIG: u8 = 2;

/// A fresh latency histogram with the engine's bounds.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, LATENCY_SIGFIG).expect("static bounds are valid")
}

/// Counters one applier owns. Mirrors [`ApplierSlot`]'s atomics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplierCounters {
    /// Events dispatched to handlers (duplicates excluded).
    pub processed: u64,
    /// Events recognised as duplicates and not dispatched.
    pub dedup_hits: u64,
    /// Events checked by dedup and found fresh.
    pub dedup_misses: u64,
    /// Handler calls that panicked.
    pub handler_panics: u64,
    /// Handler calls that returned an error.
    pub handler_errors: u64,
    /// Events taken from the rings (or the log), by priority, duplicates included.
    pub by_priority: [u64; 4],
    /// Batches handled.
    pub batches: u64,
}

/// The shared, single-writer side of one applier's statistics.
#[derive(Debug)]
pub struct ApplierSlot {
    processed: CachePadded<AtomicU64>,
    dedup_hits: AtomicU64,
    dedup_misses: AtomicU64,
    handler_panics: AtomicU64,
    handler_errors: AtomicU64,
    by_priority: [AtomicU64; 4],
    batches: AtomicU64,
    /// The owning worker's [`ParkCounts`] (zero for appliers outside an engine's workers).
    parks: AtomicU64,
    parks_timed_out_with_work: AtomicU64,
    longest_timed_out_park_ns: AtomicU64,
    alive: AtomicBool,
    /// Core the owning worker is pinned to, `usize::MAX` if none.
    core: AtomicUsize,
    histogram: Mutex<Histogram<u64>>,
    name: String,
}

impl ApplierSlot {
    pub(crate) fn new(name: String) -> Self {
        ApplierSlot {
            processed: CachePadded::new(AtomicU64::new(0)),
            dedup_hits: AtomicU64::new(0),
            dedup_misses: AtomicU64::new(0),
            handler_panics: AtomicU64::new(0),
            handler_errors: AtomicU64::new(0),
            by_priority: Default::default(),
            batches: AtomicU64::new(0),
            parks: AtomicU64::new(0),
            parks_timed_out_with_work: AtomicU64::new(0),
            longest_timed_out_park_ns: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            core: AtomicUsize::new(usize::MAX),
            histogram: Mutex::new(new_latency_histogram()),
            name,
        }
    }

    fn counters(&self) -> ApplierCounters {
        // Relaxed loads: each value is a monotonically growing total written by one thread; a
        // snapshot may mix totals from adjacent batches, which statistics tolerate.
        ApplierCounters {
            processed: self.processed.load(Ordering::Relaxed),
            dedup_hits: self.dedup_hits.load(Ordering::Relaxed),
            dedup_misses: self.dedup_misses.load(Ordering::Relaxed),
            handler_panics: self.handler_panics.load(Ordering::Relaxed),
            handler_errors: self.handler_errors.load(Ordering::Relaxed),
            by_priority: std::array::from_fn(|i| self.by_priority[i].load(Ordering::Relaxed)),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }

    /// The owning worker's park totals, as last published.
    fn parks(&self) -> ParkCounts {
        // Relaxed loads: totals (and a maximum) that only grow, written by one thread; as in
        // `counters`, a snapshot may mix two adjacent parks.
        ParkCounts {
            parks: self.parks.load(Ordering::Relaxed),
            timed_out_with_work: self.parks_timed_out_with_work.load(Ordering::Relaxed),
            longest_timed_out_ns: self.longest_timed_out_park_ns.load(Ordering::Relaxed),
        }
    }

    /// Publishes the owning worker's park totals (after each park; the worker is the only writer).
    pub(crate) fn publish_parks(&self, p: &ParkCounts) {
        // Relaxed stores of running totals by the single writer: pair with the Relaxed loads in
        // `parks`; readers need no ordering with anything else.
        self.parks.store(p.parks, Ordering::Relaxed);
        if p.timed_out_with_work != 0 {
            self.parks_timed_out_with_work
                .store(p.timed_out_with_work, Ordering::Relaxed);
            self.longest_timed_out_park_ns
                .store(p.longest_timed_out_ns, Ordering::Relaxed);
        }
    }

    pub(crate) fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::Release);
    }

    pub(crate) fn set_core(&self, core: Option<usize>) {
        self.core
            .store(core.unwrap_or(usize::MAX), Ordering::Relaxed);
    }
}

/// How one engine worker's parks ended: its local running totals, published into its slot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParkCounts {
    /// Parks that returned (however they ended).
    pub(crate) parks: u64,
    /// Parks that ended by their timeout, not by a wake-up, although an event was published
    /// into the worker's lane during the park (see [`WorkerStatus::parks_timed_out_with_work`]).
    pub(crate) timed_out_with_work: u64,
    /// The longest of those, in nanoseconds.
    pub(crate) longest_timed_out_ns: u64,
}

/// What an applier counts locally between flushes.
#[derive(Debug)]
pub struct LocalStats {
    pub(crate) counters: ApplierCounters,
    pub(crate) histogram: Histogram<u64>,
    next_merge_ns: u64,
    merge_every_ns: u64,
    slot: Arc<ApplierSlot>,
}

impl LocalStats {
    pub(crate) fn new(slot: Arc<ApplierSlot>, merge_every: Duration) -> Self {
        LocalStats {
            counters: ApplierCounters::default(),
            histogram: new_latency_histogram(),
            next_merge_ns: 0,
            merge_every_ns: merge_every.as_nanos() as u64,
            slot,
        }
    }

    /// Records `n` dispatched events that share one latency.
    #[inline(always)]
    pub(crate) fn record_latency_n(&mut self, ns: u64, n: u64) {
        self.histogram.saturating_record_n(ns.max(1), n);
    }

    /// Publishes counters (cheap, per batch) and, when due or `force`d, the histogram.
    #[inline]
    pub(crate) fn flush(&mut self, now_ns: u64, force: bool) {
        let c = &self.counters;
        let s = &*self.slot;
        // Relaxed stores of running totals: this thread is the only writer (see module docs);
        // readers need no ordering with anything else.
        s.processed.store(c.processed, Ordering::Relaxed);
        s.dedup_hits.store(c.dedup_hits, Ordering::Relaxed);
        s.dedup_misses.store(c.dedup_misses, Ordering::Relaxed);
        s.handler_panics.store(c.handler_panics, Ordering::Relaxed);
        s.handler_errors.store(c.handler_errors, Ordering::Relaxed);
        for (dst, src) in s.by_priority.iter().zip(c.by_priority) {
            dst.store(src, Ordering::Relaxed);
        }
        s.batches.store(c.batches, Ordering::Relaxed);
        if (force || now_ns >= self.next_merge_ns) && !self.histogram.is_empty() {
            if let Ok(mut shared) = s.histogram.lock() {
                // Both histograms share bounds, so `add` cannot fail.
                let _ = shared.add(&self.histogram);
            }
            self.histogram.reset();
            self.next_merge_ns = now_ns + self.merge_every_ns;
        }
    }

    /// The running totals so far (including what is not yet flushed).
    pub fn counters(&self) -> ApplierCounters {
        self.counters
    }
}

/// Publish-side counters of one tier ring: touched only when the ring is full or closed.
#[derive(Debug, Default)]
pub(crate) struct TierCounters {
    /// Publish attempts that found the ring full (whatever happened next).
    pub full: AtomicU64,
    /// Events discarded by `DropNewest`.
    pub dropped_full: AtomicU64,
    /// Events handed back by `Reject` / `try_publish`.
    pub rejected_full: AtomicU64,
    /// Events handed back because the engine was closed.
    pub rejected_closed: AtomicU64,
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Events recorded.
    pub count: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
}

impl LatencySummary {
    /// Summarises an HDR histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            min_ns: h.min(),
            p50_ns: h.value_at_quantile(0.50),
            p90_ns: h.value_at_quantile(0.90),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            mean_ns: h.mean(),
        }
    }
}

/// One tier's numbers, summed over the worker lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TierStats {
    /// Which tier.
    pub tier: Tier,
    /// Slots (all lanes).
    pub capacity: u64,
    /// Events waiting now.
    pub depth: u64,
    /// Events ever pushed.
    pub pushed: u64,
    /// Events ever popped.
    pub popped: u64,
    /// Publish attempts that found the ring full.
    pub full: u64,
    /// Events discarded by `DropNewest`.
    pub dropped: u64,
    /// Events handed back to the publisher (`Reject`, `try_publish`, or closed).
    pub rejected: u64,
}

/// Drops by reason. Each of these events was offered and is gone; each is counted here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DropStats {
    /// A `DropNewest` tier was full.
    pub queue_full: u64,
    /// Still queued when the engine was hard-stopped.
    pub hard_stop: u64,
}

impl DropStats {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.queue_full + self.hard_stop
    }

    /// `(reason label, count)` pairs, for exporters.
    pub fn by_reason(&self) -> [(&'static str, u64); 2] {
        [
            ("queue_full", self.queue_full),
            ("hard_stop", self.hard_stop),
        ]
    }
}

/// One worker's (or external applier's) state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerStatus {
    /// `worker-0`, ... or the name given to an external applier.
    pub name: String,
    /// Still running.
    pub alive: bool,
    /// Core it is pinned to.
    pub core: Option<usize>,
    /// Batches handled.
    pub batches: u64,
    /// Times this worker parked (idle with `SpinThenPark`) and the park returned, however it
    /// ended. Zero for appliers that are not engine workers.
    pub parks: u64,
    /// Parks that ended by their timeout rather than by a wake-up although an event had been
    /// published into this worker's lane during the park: no publisher had taken the wake-up
    /// (the sleeping flag was still set when the worker woke), the park lasted the whole
    /// `park_timeout_us`, and a ring of the lane had a claimed slot the worker had not read.
    /// A park that times out on an idle lane is normal and not counted. Each counted park is an
    /// event that waited up to the park timeout: a lost wake-up, or a publisher stalled (e.g.
    /// preempted) between claiming its slot and checking the flag, or — for a park that ends
    /// within nanoseconds of the claim — a near-tie between the timeout and that check.
    pub parks_timed_out_with_work: u64,
    /// The longest of the parks counted in `parks_timed_out_with_work`, in nanoseconds, from
    /// just before the park to just after it returned (0 if none).
    pub longest_timed_out_park_ns: u64,
}

/// A point-in-time snapshot of everything the engine counts.
///
/// Accounting identity, exact once the engine is stopped:
/// `received = accepted + dropped.queue_full + rejected` and
/// `accepted = processed + dedup_hits + dropped.hard_stop + in_flight`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Time since the engine started.
    pub uptime: Duration,
    /// True between start and shutdown.
    pub running: bool,
    /// Events offered to publish (accepted, dropped or handed back).
    pub received: u64,
    /// Events enqueued.
    pub accepted: u64,
    /// Events dispatched to handlers.
    pub processed: u64,
    /// Events handed back to publishers (full `Reject` tier, `try_publish`, closed engine).
    pub rejected: u64,
    /// Events dropped, by reason.
    pub dropped: DropStats,
    /// Events taken from the rings by priority (index with [`Priority::index`]).
    pub by_priority: [u64; 4],
    /// Duplicates caught by dedup.
    pub dedup_hits: u64,
    /// Fresh events passed by dedup.
    pub dedup_misses: u64,
    /// Handler calls that panicked.
    pub handler_panics: u64,
    /// Handler calls that returned an error.
    pub handler_errors: u64,
    /// Per tier, in drain order.
    pub tiers: [TierStats; 3],
    /// Ingest → handler-start latency of dispatched events.
    pub latency: LatencySummary,
    /// Worker threads the engine was configured with (one per lane).
    pub configured_workers: usize,
    /// Workers and external appliers.
    pub workers: Vec<WorkerStatus>,
    /// Sum over the workers of [`WorkerStatus::parks_timed_out_with_work`]: parks that ended by
    /// timeout although an event had been published into the worker's lane during the park. A
    /// benchmark that sees it non-zero had events wait for the park timeout.
    pub parks_timed_out_with_work: u64,
    /// Maximum over the workers of [`WorkerStatus::longest_timed_out_park_ns`] (0 if none).
    pub longest_timed_out_park_ns: u64,
}

impl Stats {
    /// Events accepted and not yet processed, deduplicated or dropped.
    pub fn in_flight(&self) -> u64 {
        self.accepted
            .saturating_sub(self.processed + self.dedup_hits + self.dropped.hard_stop)
    }

    /// Count for one priority.
    pub fn priority(&self, p: Priority) -> u64 {
        self.by_priority[p.index()]
    }

    /// The numbers of one tier.
    pub fn tier(&self, t: Tier) -> &TierStats {
        &self.tiers[t.index()]
    }
}

/// Where the rings' numbers come from; implemented by the engine's lanes.
pub(crate) trait TierSource: Send + Sync {
    /// `(capacity, depth, pushed, popped)` of `tier`.
    fn ring_numbers(&self, tier: Tier) -> (u64, u64, u64, u64);
    fn counters(&self, tier: Tier) -> &TierCounters;
}

/// Shared registry of everything counted: a cheap, cloneable handle that exporters hold.
#[derive(Clone)]
pub struct StatsHandle {
    inner: Arc<StatsInner>,
}

struct StatsInner {
    started: Instant,
    running: AtomicBool,
    hard_stop_dropped: AtomicU64,
    lanes: Vec<Arc<dyn TierSource>>,
    appliers: Mutex<Vec<Arc<ApplierSlot>>>,
}

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsHandle")
            .field("lanes", &self.inner.lanes.len())
            .finish()
    }
}

impl StatsHandle {
    pub(crate) fn new(lanes: Vec<Arc<dyn TierSource>>) -> Self {
        StatsHandle {
            inner: Arc::new(StatsInner {
                started: Instant::now(),
                running: AtomicBool::new(true),
                hard_stop_dropped: AtomicU64::new(0),
                lanes,
                appliers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A registry with no rings, for appliers used outside an engine (e.g. tests, tools).
    pub fn detached() -> Self {
        StatsHandle::new(Vec::new())
    }

    /// Registers a new applier slot under `name`.
    pub fn register(&self, name: impl Into<String>) -> Arc<ApplierSlot> {
        let slot = Arc::new(ApplierSlot::new(name.into()));
        self.inner
            .appliers
            .lock()
            .expect("stats registry poisoned")
            .push(slot.clone());
        slot
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.inner.running.store(running, Ordering::Release);
    }

    pub(crate) fn add_hard_stop_drops(&self, n: u64) {
        self.inner.hard_stop_dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn slots(&self) -> Vec<Arc<ApplierSlot>> {
        self.inner
            .appliers
            .lock()
            .expect("stats registry poisoned")
            .clone()
    }

    /// All counters and latency percentiles, now.
    pub fn stats(&self) -> Stats {
        self.snapshot().0
    }

    /// [`stats`](Self::stats) and [`latency_histogram`](Self::latency_histogram) together, with
    /// one merge of the workers' histograms instead of two.
    pub fn snapshot(&self) -> (Stats, Histogram<u64>) {
        let mut tiers = Tier::ALL.map(|tier| TierStats {
            tier,
            capacity: 0,
            depth: 0,
            pushed: 0,
            popped: 0,
            full: 0,
            dropped: 0,
            rejected: 0,
        });
        for lane in &self.inner.lanes {
            for t in Tier::ALL {
                let (cap, depth, pushed, popped) = lane.ring_numbers(t);
                let c = lane.counters(t);
                let ts = &mut tiers[t.index()];
                ts.capacity += cap;
                ts.depth += depth;
                ts.pushed += pushed;
                ts.popped += popped;
                ts.full += c.full.load(Ordering::Relaxed);
                ts.dropped += c.dropped_full.load(Ordering::Relaxed);
                ts.rejected += c.rejected_full.load(Ordering::Relaxed)
                    + c.rejected_closed.load(Ordering::Relaxed);
            }
        }
        let mut total = ApplierCounters::default();
        let mut parks_timed_out_with_work = 0;
        let mut longest_timed_out_park_ns = 0;
        let mut workers = Vec::new();
        for slot in self.slots() {
            let c = slot.counters();
            total.processed += c.processed;
            total.dedup_hits += c.dedup_hits;
            total.dedup_misses += c.dedup_misses;
            total.handler_panics += c.handler_panics;
            total.handler_errors += c.handler_errors;
            for (t, v) in total.by_priority.iter_mut().zip(c.by_priority) {
                *t += v;
            }
            let p = slot.parks();
            parks_timed_out_with_work += p.timed_out_with_work;
            longest_timed_out_park_ns = longest_timed_out_park_ns.max(p.longest_timed_out_ns);
            let core = slot.core.load(Ordering::Relaxed);
            workers.push(WorkerStatus {
                name: slot.name.clone(),
                alive: slot.alive.load(Ordering::Acquire),
                core: (core != usize::MAX).then_some(core),
                batches: c.batches,
                parks: p.parks,
                parks_timed_out_with_work: p.timed_out_with_work,
                longest_timed_out_park_ns: p.longest_timed_out_ns,
            });
        }
        let histogram = self.latency_histogram();
        let accepted: u64 = tiers.iter().map(|t| t.pushed).sum();
        let queue_full: u64 = tiers.iter().map(|t| t.dropped).sum();
        let rejected: u64 = tiers.iter().map(|t| t.rejected).sum();
        let stats = Stats {
            uptime: self.inner.started.elapsed(),
            running: self.inner.running.load(Ordering::Acquire),
            received: accepted + queue_full + rejected,
            accepted,
            processed: total.processed,
            rejected,
            dropped: DropStats {
                queue_full,
                hard_stop: self.inner.hard_stop_dropped.load(Ordering::Relaxed),
            },
            by_priority: total.by_priority,
            dedup_hits: total.dedup_hits,
            dedup_misses: total.dedup_misses,
            handler_panics: total.handler_panics,
            handler_errors: total.handler_errors,
            tiers,
            latency: LatencySummary::of(&histogram),
            configured_workers: self.inner.lanes.len(),
            workers,
            parks_timed_out_with_work,
            longest_timed_out_park_ns,
        };
        (stats, histogram)
    }

    /// The merged ingest → handler-start latency histogram since start (nanoseconds). Lags the
    /// hot path by at most `stats_flush_ms`.
    pub fn latency_histogram(&self) -> Histogram<u64> {
        let mut merged = new_latency_histogram();
        for slot in self.slots() {
            if let Ok(h) = slot.histogram.lock() {
                let _ = merged.add(&*h);
            }
        }
        merged
    }
}
