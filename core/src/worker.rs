//! Worker threads: drain a lane's rings by strict priority with a starvation guard, hand each
//! batch to the lane's [`Stage`], idle without burning a core.

use crate::apply::Applier;
use crate::config::{EngineConfig, IdleStrategy};
use crate::event::Event;
use crate::lane::Lane;
use crate::ring::Consumer;
use crate::stats::ApplierSlot;
use crate::sync::{thread, AtomicU8, Ordering};
use crate::tier::Tier;
use crossbeam_utils::CachePadded;
use std::sync::Arc;
use std::time::Duration;

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
                    if self.lane.prepare_sleep(self.heads()) {
                        thread::park_timeout(Duration::from_micros(park_timeout_us));
                        self.lane.woke();
                    } else {
                        // A claim came in, possibly not written yet: poll again shortly (under
                        // loom a yield, which lets the publisher finish writing it).
                        crate::sync::spin_hint();
                    }
                }
            }
        }
    }
}
