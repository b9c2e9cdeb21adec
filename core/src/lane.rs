//! A lane: the three tier rings one worker drains, and the publish side that feeds them.
//!
//! # Invariants
//! * Each lane has exactly one worker, the only consumer of its three rings. Every publisher is
//!   bound to one lane, so the events of one publisher in one tier reach handlers in publish
//!   order (FIFO per publisher per tier).
//! * Sleeping handshake: the worker sets `sleeping = true` (a SeqCst swap) and then re-reads
//!   every ring's claimed tail (SeqCst) before parking; a publisher claims (SeqCst CAS) and then
//!   reads `sleeping` (SeqCst). In the single total order of these operations one side sees the
//!   other: either the worker's re-check sees the claim and it does not park, or the publisher
//!   sees `sleeping`, takes the wake-up by swapping it to `false` and unparks the worker. So an
//!   accepted event never waits for the park timeout (barring a publisher that is itself stalled
//!   between its claim and its check). Only the publisher whose swap took the flag unparks; the
//!   worker swaps it back to `false` when it wakes, and that swap tells it whether a publisher
//!   woke it (`false` seen) or the park ended on its own (`true` seen: a timeout, a spurious
//!   return, or a stale unpark token). Shutdown unparks unconditionally.
//! * The handshake is model-checked by loom (`loom_tests` below) through the real
//!   `prepare_sleep` / park / `end_sleep` of the worker loop and the real publish paths, with
//!   `sleeping`, the worker handle and park/unpark taken from `crate::sync`. Under loom a park has
//!   no timeout, so a lost wake-up is reported as a deadlock. loom does not model the total order
//!   of SeqCst accesses, so each side marks the point where it relies on it with
//!   `sync::seq_cst_order_point` (a SeqCst fence under loom, nothing otherwise).
//! * Publish-side counters are written only on the overflow and closed paths.

use crate::clock;
use crate::config::EngineConfig;
use crate::error::{BatchOutcome, PublishError, Published};
use crate::event::{Event, EventId};
use crate::ring::{Consumer, PushError, Ring};
use crate::stats::{TierCounters, TierSource};
use crate::sync::{thread, AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// The lane's worker, set once (`set_worker`).
    worker: OnceLock<thread::Thread>,
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

    /// Registers the lane's worker thread, before any publisher of the lane exists.
    // Under loom only the models call it (the engine's std threads are not model-checked).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn set_worker(&self, worker: thread::Thread) {
        let _ = self.worker.set(worker);
    }

    /// Publisher side of the sleeping handshake (see module docs); called after every claim.
    #[inline(always)]
    fn wake_worker(&self) {
        // SeqCst load: after our SeqCst claim CAS on a ring's tail (`Ring::push` / `claim`); pairs
        // with the worker's SeqCst swap to `true` in `prepare_sleep`, which precedes its SeqCst
        // re-read of that tail (`Ring::claimed`). If the worker's re-read missed our claim, this
        // load comes after its swap in the total order and sees `true` (or a later `false`
        // written by another waker, who unparks, or by the awake worker itself).
        // The plain load keeps the busy path to a read of a line the worker seldom writes.
        // SeqCst swap: takes the wake-up, so of several publishers exactly one unparks; it is a
        // read-modify-write, so it reads the latest value in `sleeping`'s modification order and
        // pairs with the worker's swap in `end_sleep` the same way (one of the two sees `true`).
        crate::sync::seq_cst_order_point();
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            if let Some(t) = self.worker.get() {
                t.unpark();
            }
        }
    }

    /// True if some ring has claimed the worker's next position (`heads`) or a later one.
    pub(crate) fn claims_past(&self, heads: [u64; 3]) -> bool {
        self.rings.iter().zip(heads).any(|(r, h)| r.claimed() > h)
    }

    /// Worker side: announce sleep, then re-check every ring; true if the worker may park (no
    /// ring got a claim past `heads`).
    pub(crate) fn prepare_sleep(&self, heads: [u64; 3]) -> bool {
        // SeqCst: pairs with the publishers' SeqCst load of `sleeping` in `wake_worker`, which
        // follows their SeqCst claim CAS; it precedes (in the total order, being SeqCst too) the
        // SeqCst loads of the tails in `claims_past` just below. A swap rather than a store (the
        // same `xchg` on x86; the result is always `false`): loom orders a plain store only after
        // the writes this thread has seen, a read-modify-write after the latest one. With a
        // store, loom would let a publisher whose earlier swap this thread never read see its
        // own stale `false` after this store: a false deadlock that the real memory model (a
        // total modification order per location) excludes.
        self.sleeping.swap(true, Ordering::SeqCst);
        crate::sync::seq_cst_order_point();
        let pending = self.claims_past(heads);
        if pending {
            // Relaxed: not parking; the only later access that matters is this thread's next
            // SeqCst swap (coherence orders them). A publisher that saw `true` meanwhile unparks,
            // which leaves a token: the next park returns at once, a harmless spurious wake.
            self.sleeping.store(false, Ordering::Relaxed);
        }
        !pending
    }

    /// Worker side, after a park returned: clears `sleeping`; true if a publisher (or shutdown)
    /// woke the worker, i.e. had already swapped the flag to `false`. False means the park ended
    /// on its own: the timeout, a spurious return, or a stale token of an earlier wake-up.
    pub(crate) fn end_sleep(&self) -> bool {
        // Relaxed: a read-modify-write reads the latest value in `sleeping`'s modification order
        // whatever its ordering, so of this swap and a publisher's SeqCst swap in `wake_worker`
        // exactly one sees `true`; no other memory is published or acquired through it (the
        // unpark itself orders the publisher's writes before this thread's return from park).
        !self.sleeping.swap(false, Ordering::Relaxed)
    }

    /// Wakes every sleeping worker unconditionally (shutdown).
    pub(crate) fn force_wake(&self) {
        // SeqCst: orders nothing the wake-up relies on (the unconditional unpark's token makes the
        // worker's current or next park return, and unpark -> park orders the engine's state
        // store before the worker's next load of it); `false` makes the worker's `end_sleep`
        // count this as a wake-up, not a timeout.
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

    /// One push into `tier`'s ring: `Ok` with the answer to the publisher when the event went
    /// in (the worker is woken) or the ring is closed (counted), `Err` with the event when the
    /// ring is full.
    #[inline]
    fn push(&self, tier: usize, event: Event) -> Result<Result<Published, PublishError>, Event> {
        match self.rings[tier].push(event) {
            Ok(()) => {
                self.wake_worker();
                Ok(Ok(Published::Accepted))
            }
            Err(PushError::Closed(e)) => {
                self.counters[tier]
                    .rejected_closed
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Err(PublishError::Closed(e)))
            }
            Err(PushError::Full(e)) => Err(e),
        }
    }

    /// Pushes one event under its tier's policy (`force_reject` for `try_publish`).
    fn publish(&self, event: Event, force_reject: bool) -> Result<Published, PublishError> {
        let tier = self.tier_map.tier(event.priority).index();
        let counters = &self.counters[tier];
        let mut event = match self.push(tier, event) {
            Ok(answer) => return answer,
            Err(full) => full,
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
                    event = match self.push(tier, event) {
                        Ok(answer) => return answer,
                        Err(full) => full,
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
                    hand_back(events, left, &mut stamp, rejected);
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
                    hand_back(events, left, &mut stamp, rejected);
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

/// Hands the next `left` events of a run back stamped, as `publish` hands back a refused event.
fn hand_back(
    events: &mut std::vec::Drain<'_, Event>,
    left: usize,
    stamp: &mut impl FnMut(&mut Event),
    rejected: &mut Vec<Event>,
) {
    rejected.extend(events.by_ref().take(left).map(|mut e| {
        stamp(&mut e);
        e
    }));
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

/// Model checks of the sleeping handshake: a real [`Worker`](crate::worker::Worker) loop (poll,
/// `prepare_sleep`, park, `end_sleep`) on a real lane against real publishers and the real
/// shutdown signal. Under loom a park returns only when the thread is unparked, so a wake-up the
/// handshake loses leaves the model's main thread blocked on a delivery that never comes, with
/// the worker parked: loom reports a deadlock.
///
/// loom 0.7 drops a pending unpark token when the thread yields (as the worker does while a
/// claimed slot is being written). That can only turn a spurious early return of `park` into a
/// block, never hide a lost wake-up; the models pass with it.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::event::Priority;
    use crate::stats::ApplierSlot;
    use crate::sync::AtomicU8;
    use crate::worker::{signal_stop, Stage, Worker, DRAINING, RUNNING};
    use loom::sync::mpsc;

    /// Hands the id of every event the worker takes to the model's main thread.
    struct Forward(mpsc::Sender<u64>);

    impl Stage for Forward {
        fn process(&mut self, _tier: Tier, batch: &mut Vec<Event>) {
            for e in batch.drain(..) {
                self.0.send(e.id.0).expect("the model outlives its worker");
            }
        }
    }

    /// Rings of two slots (never full here: `Reject` would show it), and a worker that parks
    /// on its first empty poll, so every step of going to sleep races the publishers.
    fn config() -> EngineConfig {
        EngineConfig {
            max_batch: 4,
            ..EngineConfig::parking_at_once(2, 10_000_000)
        }
    }

    struct Model {
        lane: Arc<Lane>,
        state: Arc<CachePadded<AtomicU8>>,
        worker: loom::thread::JoinHandle<()>,
        delivered: mpsc::Receiver<u64>,
    }

    /// A lane and its worker thread, registered as the engine registers it: before any
    /// publisher of the lane exists.
    fn start() -> Model {
        let config = config();
        let (lane, consumers) = Lane::new(&config);
        let (tx, delivered) = mpsc::channel();
        let state = Arc::new(CachePadded::new(AtomicU8::new(RUNNING)));
        let slot = Arc::new(ApplierSlot::new("worker-0".into()));
        let worker = Worker::new(
            &config,
            lane.clone(),
            consumers,
            Box::new(Forward(tx)),
            state.clone(),
            slot,
            None,
        );
        let worker = loom::thread::spawn(move || worker.run());
        lane.set_worker(worker.thread().clone());
        Model {
            lane,
            state,
            worker,
            delivered,
        }
    }

    impl Model {
        /// Graceful shutdown as the engine does it; the worker must exit.
        fn shutdown(self) -> mpsc::Receiver<u64> {
            signal_stop(std::slice::from_ref(&self.lane), &self.state, DRAINING);
            self.worker.join().expect("worker panicked");
            self.delivered
        }
    }

    /// An event with its own id: generated ids come from a process-wide counter that a model
    /// must not share between its executions.
    fn event(id: u64, priority: Priority) -> Event {
        Event::new("t", priority, &b""[..]).with_id(id)
    }

    /// One publisher and the worker: the publish lands before the worker's first poll, between
    /// the poll and the sleeping store, between the store and the re-check, between the re-check
    /// and the park, or during the park; in every case the event is delivered without a timeout.
    #[test]
    fn one_publisher_wakes_the_worker() {
        loom::model(|| {
            let m = start();
            let publisher = Publisher::new(m.lane.clone());
            assert_eq!(
                publisher.publish(event(1, Priority::High)),
                Ok(Published::Accepted)
            );
            assert_eq!(m.delivered.recv(), Ok(1));
            m.shutdown();
        });
    }

    /// A second publish races the worker going back to sleep after the first wake-up: its
    /// `end_sleep` swap against the publisher's, its re-poll and next re-check, with the unpark
    /// token of the first wake possibly still unconsumed.
    #[test]
    fn publish_races_the_worker_going_back_to_sleep() {
        loom::model(|| {
            let m = start();
            let publisher = Publisher::new(m.lane.clone());
            for id in [1, 2] {
                assert_eq!(
                    publisher.publish(event(id, Priority::High)),
                    Ok(Published::Accepted)
                );
                assert_eq!(m.delivered.recv(), Ok(id));
            }
            m.shutdown();
        });
    }

    /// Two publishers on two threads, into different rings of the lane (one by `publish`, one by
    /// the batch path), race each other and the worker's sleep: exactly one takes each wake-up,
    /// and both events are delivered.
    #[test]
    fn two_publishers_wake_the_worker() {
        loom::model(|| {
            let m = start();
            let lane = m.lane.clone();
            let single =
                loom::thread::spawn(move || Publisher::new(lane).publish(event(1, Priority::High)));
            let lane = m.lane.clone();
            let batch = loom::thread::spawn(move || {
                let mut events = vec![event(2, Priority::Low)];
                Publisher::new(lane).publish_batch(&mut events).accepted
            });
            let mut got = [m.delivered.recv().unwrap(), m.delivered.recv().unwrap()];
            got.sort_unstable();
            assert_eq!(got, [1, 2]);
            assert_eq!(single.join().unwrap(), Ok(Published::Accepted));
            assert_eq!(batch.join().unwrap(), 1);
            m.shutdown();
        });
    }

    /// Shutdown with nothing published wakes the worker wherever it is in going to sleep, and it
    /// exits.
    #[test]
    fn shutdown_wakes_a_sleeping_worker() {
        loom::model(|| {
            let m = start();
            let delivered = m.shutdown();
            assert!(delivered.try_recv().is_err());
        });
    }

    /// Shutdown racing a publish: the event is either refused as closed or accepted, and then
    /// delivered before the worker exits.
    #[test]
    fn shutdown_racing_a_publish_delivers_what_was_accepted() {
        loom::model(|| {
            let m = start();
            let lane = m.lane.clone();
            let publisher =
                loom::thread::spawn(move || Publisher::new(lane).publish(event(1, Priority::High)));
            let delivered = m.shutdown();
            match publisher.join().unwrap() {
                Ok(Published::Accepted) => assert_eq!(delivered.try_recv(), Ok(1)),
                Err(PublishError::Closed(_)) => assert!(delivered.try_recv().is_err()),
                other => panic!("unexpected publish outcome {other:?}"),
            }
        });
    }
}
