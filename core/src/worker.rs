//! Worker threads: drain a lane's rings by strict priority with a starvation guard, hand each
//! batch to the lane's [`Stage`], idle without burning a core.
//!
//! An idle worker parks after the sleeping handshake of `lane.rs` and counts how its parks end
//! (see [`WorkerStatus`](crate::WorkerStatus)): a park that ran to its timeout although an event
//! was published into the lane meanwhile is the signature of a lost wake-up (or of a publisher
//! stalled between its claim and its wake-up check).

use crate::apply::Applier;
use crate::config::{EngineConfig, IdleStrategy};
use crate::event::Event;
use crate::lane::Lane;
use crate::ring::Consumer;
use crate::stats::{ApplierSlot, ParkCounts};
use crate::sync::{thread, AtomicU8, Ordering};
use crate::tier::Tier;
use crossbeam_utils::CachePadded;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a worker does with the batches it drains. The embedded engine's stage is an
/// [`Applier`] (dedup → dispatch); a cluster node's stage proposes batches to raft instead, and
/// applies them after commit. Either way the rings, priorities and workers are the same.
pub trait Stage: Send + 'static {
    /// Takes one batch, all from `tier`, oldest first. The worker clears `batch` afterwards
    /// (a stage may also drain it).
    fn process(&mut self, tier: Tier, batch: &mut Vec<Event>);
    /// The worker found every ring empty (called once per idle spell, which at high rates is
    /// after nearly every batch): a chance to flush partial work. Must be cheap.
    fn on_idle(&mut self) {}
    /// The worker is about to park (it has been idle for a while): publish everything.
    fn on_sleep(&mut self) {}
    /// The worker is exiting; every event it took has been passed to `process`.
    fn on_stop(&mut self) {}
}

impl Stage for Applier {
    fn process(&mut self, _tier: Tier, batch: &mut Vec<Event>) {
        self.apply(batch);
    }
    fn on_sleep(&mut self) {
        self.flush();
    }
    fn on_stop(&mut self) {
        self.flush();
    }
}

/// Engine run state, shared by the engine and its workers.
pub(crate) const RUNNING: u8 = 0;
/// Rings are closed; drain what was accepted, then exit.
pub(crate) const DRAINING: u8 = 1;
/// Exit after the current batch.
pub(crate) const STOPPING: u8 = 2;

/// Tells the workers of `lanes` to finish in `mode` ([`DRAINING`] or [`STOPPING`]): closes every
/// ring (no claim succeeds any more, so each ring's final tail is fixed), publishes `mode`, then
/// wakes every worker unconditionally, parked or about to park.
pub(crate) fn signal_stop(lanes: &[Arc<Lane>], state: &AtomicU8, mode: u8) {
    for lane in lanes {
        for ring in &lane.rings {
            ring.close();
        }
    }
    // Release: pairs with the worker's Acquire load of `state` at the top of its loop, so a
    // worker that sees `mode` also sees its rings closed (`drained` relies on it). A parked
    // worker gets the same through `force_wake`'s unpark, which happens after this store.
    state.store(mode, Ordering::Release);
    for lane in lanes {
        lane.force_wake();
    }
}

pub(crate) struct Worker {
    pub(crate) lane: Arc<Lane>,
    pub(crate) consumers: [Consumer<Event>; 3],
    pub(crate) stage: Box<dyn Stage>,
    pub(crate) state: Arc<CachePadded<AtomicU8>>,
    pub(crate) slot: Arc<ApplierSlot>,
    pub(crate) core: Option<core_affinity::CoreId>,
    pub(crate) max_batch: usize,
    pub(crate) starvation_rounds: u32,
    pub(crate) idle: IdleStrategy,
    /// How this worker's parks ended so far; published into `slot` after each park.
    parks: ParkCounts,
    /// Test hook, run after the sleep re-check said "park" and just before the park.
    #[cfg(test)]
    pub(crate) before_park: Option<Box<dyn FnMut() + Send>>,
}

impl Worker {
    pub(crate) fn new(
        config: &EngineConfig,
        lane: Arc<Lane>,
        consumers: [Consumer<Event>; 3],
        stage: Box<dyn Stage>,
        state: Arc<CachePadded<AtomicU8>>,
        slot: Arc<ApplierSlot>,
        core: Option<core_affinity::CoreId>,
    ) -> Self {
        Worker {
            lane,
            consumers,
            stage,
            state,
            slot,
            core,
            max_batch: config.max_batch,
            starvation_rounds: config.starvation_rounds,
            idle: config.idle,
            parks: ParkCounts::default(),
            #[cfg(test)]
            before_park: None,
        }
    }

    fn heads(&self) -> [u64; 3] {
        std::array::from_fn(|i| self.consumers[i].head())
    }

    /// Drains until every ring is closed and caught up to its final tail.
    fn drained(&self) -> bool {
        self.consumers
            .iter()
            .all(|c| c.ring().is_closed() && c.head() == c.ring().claimed())
    }

    pub(crate) fn run(mut self) {
        // Clears the alive flag however the thread ends, unwinding included.
        struct AliveGuard(Arc<ApplierSlot>);
        impl Drop for AliveGuard {
            fn drop(&mut self) {
                self.0.set_alive(false);
            }
        }
        let _alive = AliveGuard(self.slot.clone());
        if let Some(core) = self.core {
            if core_affinity::set_for_current(core) {
                self.slot.set_core(Some(core.id));
            } else {
                tracing::warn!(core = core.id, "could not pin worker; running unpinned");
            }
        }
        let mut batch: Vec<Event> = Vec::with_capacity(self.max_batch);
        let mut passed_over = [0u32; 3];
        let mut idle_polls: u64 = 0;
        loop {
            let state = self.state.load(Ordering::Acquire);
            if state == STOPPING {
                break;
            }
            let mut did = 0;
            for t in Tier::ALL {
                let i = t.index();
                if did == 0 || passed_over[i] >= self.starvation_rounds {
                    let n = self.consumers[i].pop_batch(&mut batch, self.max_batch);
                    if n > 0 {
                        self.lane.notify_space();
                        self.stage.process(t, &mut batch);
                        batch.clear();
                        did += n;
                    }
                    passed_over[i] = 0;
                } else if !self.consumers[i].is_empty() {
                    passed_over[i] += 1;
                }
            }
            if did > 0 {
                idle_polls = 0;
                continue;
            }
            if state == DRAINING && self.drained() {
                break;
            }
            if idle_polls == 0 {
                self.stage.on_idle();
            }
            idle_polls += 1;
            self.idle_step(idle_polls, state);
        }
        self.stage.on_stop();
    }

    fn idle_step(&mut self, polls: u64, state: u8) {
        match self.idle {
            IdleStrategy::BusySpin => {
                if polls % (1 << 20) == 0 {
                    // Idle for a while (~10 ms): publish the statistics.
                    self.stage.on_sleep();
                }
                crate::sync::spin_hint()
            }
            IdleStrategy::SpinThenPark {
                spin_iters,
                yield_iters,
                park_timeout_us,
            } => {
                if polls <= spin_iters as u64 {
                    crate::sync::spin_hint();
                } else if polls <= spin_iters as u64 + yield_iters as u64 || state != RUNNING {
                    // While draining, claimed-but-unwritten slots are about to appear: never park.
                    thread::yield_now();
                } else {
                    if polls == spin_iters as u64 + yield_iters as u64 + 1 {
                        self.stage.on_sleep();
                    }
                    let heads = self.heads();
                    if self.lane.prepare_sleep(heads) {
                        #[cfg(test)]
                        if let Some(hook) = self.before_park.as_mut() {
                            hook();
                        }
                        self.park(heads, Duration::from_micros(park_timeout_us));
                    } else {
                        // A claim came in, possibly not written yet: poll again shortly (under
                        // loom a yield, which lets the publisher finish writing it).
                        crate::sync::spin_hint();
                    }
                }
            }
        }
    }

    /// Parks until a publisher or shutdown wakes this worker or `timeout` passes, then counts
    /// how the park ended. `heads` are this worker's ring positions, unchanged while it parks.
    fn park(&mut self, heads: [u64; 3], timeout: Duration) {
        let started = Instant::now();
        thread::park_timeout(timeout);
        let woken = self.lane.end_sleep();
        let slept = started.elapsed();
        self.parks.parks += 1;
        // Ended by the timeout (no wake-up was taken, and the park lasted the whole timeout)
        // although an event claimed a slot in the lane meanwhile: `prepare_sleep` saw no claim
        // past `heads` before the park, so any there now came during it.
        if !woken && slept >= timeout && self.lane.claims_past(heads) {
            let ns = u64::try_from(slept.as_nanos()).unwrap_or(u64::MAX);
            self.parks.timed_out_with_work += 1;
            self.parks.longest_timed_out_ns = self.parks.longest_timed_out_ns.max(ns);
        }
        self.slot.publish_parks(&self.parks);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::event::Priority;
    use crate::lane::Publisher;
    use crate::stats::{StatsHandle, WorkerStatus};
    use std::sync::mpsc;

    /// Hands the id of every event the worker takes to the test.
    struct Forward(mpsc::Sender<u64>);

    impl Stage for Forward {
        fn process(&mut self, _tier: Tier, batch: &mut Vec<Event>) {
            for e in batch.drain(..) {
                let _ = self.0.send(e.id.0);
            }
        }
    }

    struct Running {
        lane: Arc<Lane>,
        state: Arc<CachePadded<AtomicU8>>,
        stats: StatsHandle,
        delivered: mpsc::Receiver<u64>,
        thread: std::thread::JoinHandle<()>,
    }

    impl Running {
        /// Stops the worker gracefully and returns its final status.
        fn stop(self) -> WorkerStatus {
            signal_stop(std::slice::from_ref(&self.lane), &self.state, DRAINING);
            self.thread.join().unwrap();
            self.stats.stats().workers.remove(0)
        }
    }

    /// A worker that parks on its first empty poll for at most `park_timeout`, running
    /// `before_park(lane)` between its sleep re-check and its first park.
    fn start(
        park_timeout: Duration,
        before_park: impl FnOnce(&Arc<Lane>) + Send + 'static,
    ) -> Running {
        let config = EngineConfig::parking_at_once(8, park_timeout.as_micros() as u64);
        let (lane, consumers) = Lane::new(&config);
        let stats = StatsHandle::detached();
        let state = Arc::new(CachePadded::new(AtomicU8::new(RUNNING)));
        let (tx, delivered) = mpsc::channel();
        let mut worker = Worker::new(
            &config,
            lane.clone(),
            consumers,
            Box::new(Forward(tx)),
            state.clone(),
            stats.register("worker-0"),
            None,
        );
        let hook_lane = lane.clone();
        let mut before_park = Some(before_park);
        worker.before_park = Some(Box::new(move || {
            if let Some(f) = before_park.take() {
                f(&hook_lane);
            }
        }));
        // As the engine does: the worker is registered before anything can publish (here the
        // hook, on the worker thread itself).
        let (registered, wait_registered) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = wait_registered.recv();
            worker.run()
        });
        lane.set_worker(thread.thread().clone());
        drop(registered);
        Running {
            lane,
            state,
            stats,
            delivered,
            thread,
        }
    }

    fn event(id: u64) -> Event {
        Event::new("t", Priority::High, &b""[..]).with_id(id)
    }

    /// An event published while the worker is committed to parking (after its re-check, before
    /// its park) wakes it through the publisher's unpark: delivered at once, no timed-out park.
    #[test]
    fn a_publish_during_the_park_wakes_the_worker_and_no_timed_out_park_is_counted() {
        let timeout = Duration::from_secs(10);
        let w = start(timeout, |lane| {
            let publisher = Publisher::new(lane.clone());
            assert_eq!(publisher.publish(event(1)), Ok(crate::Published::Accepted));
        });
        let started = Instant::now();
        assert_eq!(w.delivered.recv_timeout(timeout / 2), Ok(1));
        assert!(started.elapsed() < timeout / 2);
        let status = w.stop();
        assert!(status.parks >= 1, "{status:?}");
        assert_eq!(status.parks_timed_out_with_work, 0, "{status:?}");
        assert_eq!(status.longest_timed_out_park_ns, 0, "{status:?}");
    }

    /// An event that lands in a ring during the park without its publisher's wake-up (pushed
    /// straight into the ring, as a lost wake-up would leave it) waits for the park timeout, and
    /// that park is counted with its length.
    #[test]
    fn a_park_that_times_out_with_an_event_waiting_is_counted() {
        let timeout = Duration::from_millis(20);
        let w = start(timeout, |lane| {
            lane.rings[Tier::Realtime.index()]
                .push(event(7))
                .expect("room in the ring");
        });
        assert_eq!(w.delivered.recv_timeout(Duration::from_secs(10)), Ok(7));
        let (stats, _) = w.stats.snapshot();
        let status = w.stop();
        assert_eq!(status.parks_timed_out_with_work, 1, "{status:?}");
        let longest = status.longest_timed_out_park_ns;
        assert!(longest >= timeout.as_nanos() as u64, "{status:?}");
        assert!(longest < 10_000_000_000, "{status:?}");
        // The engine-wide totals are the workers' sum and maximum.
        assert_eq!(stats.parks_timed_out_with_work, 1);
        assert_eq!(stats.longest_timed_out_park_ns, longest);
    }

    /// Parks that time out on an idle lane are normal and not counted.
    #[test]
    fn idle_timeouts_are_not_counted() {
        let w = start(Duration::from_millis(1), |_| {});
        std::thread::sleep(Duration::from_millis(30));
        let status = w.stop();
        assert!(status.parks >= 2, "{status:?}");
        assert_eq!(status.parks_timed_out_with_work, 0, "{status:?}");
        assert_eq!(status.longest_timed_out_park_ns, 0, "{status:?}");
    }
}
