//! A lane: the three tier rings one worker drains, and the publish side that feeds them.
//!
//! # Invariants
//! * Each lane has exactly one worker, the only consumer of its three rings. Every publisher is
//!   bound to one lane, so the events of one publisher in one tier reach handlers in publish
//!   order (FIFO per publisher per tier).
//! * Sleeping handshake: the worker stores `sleeping = true` (SeqCst) and then re-reads every
//!   ring's claimed tail (SeqCst) before parking; a publisher claims (SeqCst CAS) and then reads
//!   `sleeping` (SeqCst). In the single total order of these operations one side sees the other,
//!   so an accepted event never waits for the park timeout.
//! * Publish-side counters are written only on the overflow and closed paths.

use crate::clock;
use crate::config::EngineConfig;
use crate::error::{BatchOutcome, PublishError, Published};
use crate::event::{Event, EventId};
use crate::ring::{Consumer, PushError, Ring};
use crate::stats::{TierCounters, TierSource};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::tier::{OverflowPolicy, Tier, TierMap};
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Spins of a blocked publisher before it starts yielding, then yields before it parks.
const BLOCK_SPINS: u32 = 128;
const BLOCK_YIELDS: u32 = 32;
/// Longest single park of a blocked publisher; the worker normally wakes it sooner.
const BLOCK_PARK: Duration = Duration::from_millis(1);

pub(crate) struct Lane {
    pub(crate) rings: [crate::sync::Arc<Ring<Event>>; 3],
    counters: [CachePadded<TierCounters>; 3],
    policies: [OverflowPolicy; 3],
    tier_map: TierMap,
    sleeping: CachePadded<AtomicBool>,
    worker: OnceLock<std::thread::Thread>,
    waiting_publishers: CachePadded<AtomicUsize>,
    space: Mutex<()>,
    space_freed: Condvar,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("rings", &self.rings).finish()
    }
}

impl Lane {
    /// A lane and the consumers of its rings (for its worker).
    pub(crate) fn new(config: &EngineConfig) -> (Arc<Lane>, [Consumer<Event>; 3]) {
        let [(r0, c0), (r1, c1), (r2, c2)] =
            Tier::ALL.map(|t| Ring::with_capacity(config.tiers.get(t).capacity));
        let lane = Lane {
            rings: [r0, r1, r2],
            counters: Default::default(),
            policies: Tier::ALL.map(|t| config.tiers.get(t).overflow),
            tier_map: config.tier_map,
            sleeping: CachePadded::new(AtomicBool::new(false)),
            worker: OnceLock::new(),
            waiting_publishers: CachePadded::new(AtomicUsize::new(0)),
            space: Mutex::new(()),
            space_freed: Condvar::new(),
        };
        (Arc::new(lane), [c0, c1, c2])
    }

    pub(crate) fn set_worker(&self, thread: std::thread::Thread) {
        let _ = self.worker.set(thread);
    }

    /// Publisher side of the sleeping handshake (see module docs).
    #[inline(always)]
    fn wake_worker(&self) {
        // SeqCst: after our SeqCst claim CAS; pairs with the worker's SeqCst store in `prepare_sleep`.
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            if let Some(t) = self.worker.get() {
                t.unpark();
            }
        }
    }

    /// Worker side: announce sleep, then report whether any ring got a claim past `heads`.
    pub(crate) fn prepare_sleep(&self, heads: [u64; 3]) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        let pending = self.rings.iter().zip(heads).any(|(r, h)| r.claimed() > h);
        if pending {
            self.sleeping.store(false, Ordering::Relaxed);
        }
        !pending
    }

    pub(crate) fn woke(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Wakes every sleeping worker unconditionally (shutdown).
    pub(crate) fn force_wake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        if let Some(t) = self.worker.get() {
            t.unpark();
        }
        self.notify_space();
    }

    /// Worker side, after freeing slots: wake publishers blocked on a full ring.
    #[inline]
    pub(crate) fn notify_space(&self) {
        // SeqCst: pairs with the increment in `wait_for_space`; a missed notification costs at
        // most BLOCK_PARK.
        if self.waiting_publishers.load(Ordering::SeqCst) > 0 {
            let _g = self.space.lock().unwrap_or_else(|p| p.into_inner());
            self.space_freed.notify_all();
        }
    }

    fn wait_for_space(&self, attempt: u32) {
        if attempt < BLOCK_SPINS {
            crate::sync::spin_hint();
        } else if attempt < BLOCK_SPINS + BLOCK_YIELDS {
            std::thread::yield_now();
        } else {
            self.waiting_publishers.fetch_add(1, Ordering::SeqCst);
            let guard = self.space.lock().unwrap_or_else(|p| p.into_inner());
            let _ = self.space_freed.wait_timeout(guard, BLOCK_PARK);
            self.waiting_publishers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Pushes one event under its tier's policy (`force_reject` for `try_publish`).
    fn publish(&self, event: Event, force_reject: bool) -> Result<Published, PublishError> {
        let tier = self.tier_map.tier(event.priority).index();
        let ring = &self.rings[tier];
        let counters = &self.counters[tier];
        let mut event = match ring.push(event) {
            Ok(()) => {
                self.wake_worker();
                return Ok(Published::Accepted);
            }
            Err(PushError::Closed(e)) => {
                counters.rejected_closed.fetch_add(1, Ordering::Relaxed);
                return Err(PublishError::Closed(e));
            }
            Err(PushError::Full(e)) => e,
        };
        counters.full.fetch_add(1, Ordering::Relaxed);
        let policy = if force_reject {
            OverflowPolicy::Reject
        } else {
            self.policies[tier]
        };
        match policy {
            OverflowPolicy::Reject => {
                counters.rejected_full.fetch_add(1, Ordering::Relaxed);
                Err(PublishError::Full(event))
            }
            OverflowPolicy::DropNewest => {
                counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                Ok(Published::Dropped)
            }
            OverflowPolicy::Block => {
                let mut attempt = 0u32;
                loop {
                    self.wake_worker();
                    self.wait_for_space(attempt);
                    attempt = attempt.saturating_add(1);
                    event = match ring.push(event) {
                        Ok(()) => {
                            self.wake_worker();
                            return Ok(Published::Accepted);
                        }
                        Err(PushError::Closed(e)) => {
                            counters.rejected_closed.fetch_add(1, Ordering::Relaxed);
                            return Err(PublishError::Closed(e));
                        }
                        Err(PushError::Full(e)) => e,
                    };
                }
            }
        }
    }

    /// Pushes the next `len` events of `events` (all of one tier) with batch claims, passing each
    /// through `stamp` as it is moved into its slot; applies the tier's policy to what does not
    /// fit. Events are moved straight from the caller's buffer into the ring: no placeholder is
    /// written back, and nothing is left to drop.
    fn publish_run(
        &self,
        tier: usize,
        events: &mut std::vec::Drain<'_, Event>,
        len: usize,
        mut stamp: impl FnMut(&mut Event),
        outcome: &mut BatchOutcome,
        rejected: &mut Vec<Event>,
    ) {
        let ring = &self.rings[tier];
        let counters = &self.counters[tier];
        let mut left = len;
        let mut attempt = 0u32;
        let mut counted_full = false;
        while left > 0 {
            let pushed = ring.push_with(left, || {
                let mut e = events.next().expect("the run has `left` more events");
                stamp(&mut e);
                e
            });
            match pushed {
                None => {
                    counters
                        .rejected_closed
                        .fetch_add(left as u64, Ordering::Relaxed);
                    // Handed back stamped, as `publish` hands back a refused event.
                    rejected.extend(events.by_ref().take(left).map(|mut e| {
                        stamp(&mut e);
                        e
                    }));
                    return;
                }
                Some(n) if n > 0 => {
                    outcome.accepted += n;
                    left -= n;
                    self.wake_worker();
                }
                Some(_) => {}
            }
            if left == 0 {
                return;
            }
            // The ring is full for the rest of this run.
            if !counted_full {
                counters.full.fetch_add(1, Ordering::Relaxed);
                counted_full = true;
            }
            match self.policies[tier] {
                OverflowPolicy::Reject => {
                    counters
                        .rejected_full
                        .fetch_add(left as u64, Ordering::Relaxed);
                    // Handed back stamped, as `publish` hands back a refused event.
                    rejected.extend(events.by_ref().take(left).map(|mut e| {
                        stamp(&mut e);
                        e
                    }));
                    return;
                }
                OverflowPolicy::DropNewest => {
                    counters
                        .dropped_full
                        .fetch_add(left as u64, Ordering::Relaxed);
                    outcome.dropped += left;
                    events.by_ref().take(left).for_each(drop);
                    return;
                }
                OverflowPolicy::Block => {
                    self.wait_for_space(attempt);
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }
}

impl TierSource for Lane {
    fn ring_numbers(&self, tier: Tier) -> (u64, u64, u64, u64) {
        let r = &self.rings[tier.index()];
        (r.capacity() as u64, r.len() as u64, r.pushed(), r.popped())
    }

    fn counters(&self, tier: Tier) -> &TierCounters {
        &self.counters[tier.index()]
    }
}

/// Source of generated event ids: blocks of `ID_BLOCK` from a process-wide counter whose start
/// mixes the start time and pid, with bit 62 set so generated ids stay clear of small
/// producer-chosen keys.
const ID_BLOCK: u64 = 4096;
static NEXT_ID_BLOCK: OnceLock<AtomicU64> = OnceLock::new();

fn next_id_block() -> u64 {
    let counter = NEXT_ID_BLOCK.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = nanos ^ ((std::process::id() as u64) << 40);
        AtomicU64::new(((seed & ((1 << 61) - 1)) | (1 << 62)) & !(ID_BLOCK - 1))
    });
    // Relaxed: only uniqueness matters, which the RMW gives.
    counter.fetch_add(ID_BLOCK, Ordering::Relaxed)
}

/// A producer's handle: publishes into one lane. Cheap to clone (a clone may be bound to the
/// same lane; use [`Engine::publisher`](crate::Engine::publisher) to spread producers over lanes).
/// `Send` but not `Sync`: give each producer thread its own.
pub struct Publisher {
    lane: Arc<Lane>,
    ids: Cell<(u64, u64)>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Clone for Publisher {
    fn clone(&self) -> Self {
        Publisher::new(self.lane.clone())
    }
}

impl Publisher {
    pub(crate) fn new(lane: Arc<Lane>) -> Self {
        Publisher {
            lane,
            ids: Cell::new((0, 0)),
        }
    }

    /// A fresh process-unique id.
    #[inline]
    pub fn next_id(&self) -> EventId {
        let (mut next, mut end) = self.ids.get();
        if next == end {
            next = next_id_block();
            end = next + ID_BLOCK;
        }
        self.ids.set((next + 1, end));
        EventId(next)
    }

    #[inline(always)]
    fn stamp(&self, event: &mut Event, now: u64) {
        if event.id.is_auto() {
            event.id = self.next_id();
        }
        event.ingest_ns = now;
    }

    /// Publishes one event under its tier's overflow policy: `Block` waits for room, `Reject`
    /// hands the event back in `Err(Full)`, `DropNewest` discards and counts it
    /// (`Ok(Published::Dropped)`). After shutdown every publish returns `Err(Closed)`.
    #[inline]
    pub fn publish(&self, mut event: Event) -> Result<Published, PublishError> {
        self.stamp(&mut event, clock::now_ns());
        self.lane.publish(event, false)
    }

    /// Publishes one event without ever blocking or dropping: a full ring hands it back.
    #[inline]
    pub fn try_publish(&self, mut event: Event) -> Result<(), PublishError> {
        self.stamp(&mut event, clock::now_ns());
        self.lane.publish(event, true).map(|_| ())
    }

    /// Publishes a batch, draining `events`. One clock read stamps the whole batch (it is
    /// ingested at one moment) and each run of same-tier events is claimed at once. Events that
    /// a full `Reject` tier or a closed engine refused come back in `rejected`, in order.
    pub fn publish_batch(&self, events: &mut Vec<Event>) -> BatchOutcome {
        self.publish_batch_inner(events, Some(clock::now_ns()))
    }

    /// Like [`publish_batch`](Self::publish_batch), but keeps each event's own `ingest_ns` (a
    /// zero one is stamped with the current time). For open-loop load generators, which stamp
    /// each event with its *intended* send time so that latency includes any delay in sending
    /// it (no coordinated omission), and for replays. Timestamps must come from
    /// [`clock::now_ns`].
    pub fn publish_batch_with_timestamps(&self, events: &mut Vec<Event>) -> BatchOutcome {
        self.publish_batch_inner(events, None)
    }

    fn publish_batch_inner(&self, events: &mut Vec<Event>, stamp: Option<u64>) -> BatchOutcome {
        let now = stamp.unwrap_or_else(clock::now_ns);
        let keep_own = stamp.is_none();
        let mut outcome = BatchOutcome::default();
        let mut rejected = Vec::new();
        let map = self.lane.tier_map;
        let mut drain = events.drain(..);
        while let Some(first) = drain.as_slice().first() {
            let tier = map.tier(first.priority);
            let len = drain
                .as_slice()
                .iter()
                .position(|e| map.tier(e.priority) != tier)
                .unwrap_or(drain.as_slice().len());
            let stamp = |e: &mut Event| {
                let ts = if keep_own && e.ingest_ns != 0 {
                    e.ingest_ns
                } else {
                    now
                };
                self.stamp(e, ts);
            };
            self.lane.publish_run(
                tier.index(),
                &mut drain,
                len,
                stamp,
                &mut outcome,
                &mut rejected,
            );
        }
        drop(drain);
        outcome.rejected = rejected;
        outcome
    }
}
