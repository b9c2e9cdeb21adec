//! The engine: builder, start-up (lanes, pinned workers), publishers, statistics, shutdown.

use crate::apply::Applier;
use crate::config::EngineConfig;
use crate::dispatch::{Dispatcher, Handler};
use crate::error::Error;
use crate::event::Topic;
use crate::lane::{Lane, Publisher};
use crate::stats::{ApplierSlot, Stats, StatsHandle, TierSource};
use crate::sync::{AtomicU8, AtomicUsize, Ordering};
use crate::worker::{signal_stop, Stage, Worker, DRAINING, RUNNING, STOPPING};
use crossbeam_utils::CachePadded;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Builds a [`Stage`] for worker `i`; the default builds an [`Applier`].
pub type StageFactory = Box<dyn FnMut(StageContext<'_>) -> Box<dyn Stage> + Send>;

/// What a [`StageFactory`] gets to build worker `worker`'s stage.
#[derive(Debug)]
pub struct StageContext<'a> {
    /// Worker index.
    pub worker: usize,
    /// The engine configuration.
    pub config: &'a EngineConfig,
    /// The handlers.
    pub dispatcher: &'a Arc<Dispatcher>,
    /// The statistics registry (to register further appliers).
    pub stats: &'a StatsHandle,
    /// This worker's statistics slot (alive flag, pinned core, and the default applier's counters).
    pub slot: &'a Arc<ApplierSlot>,
}

/// Configures and starts an [`Engine`].
///
/// ```
/// use eventstream_core::{Engine, Event, Priority};
/// let engine = Engine::builder()
///     .configure(|c| c.pin_workers = false)
///     .on("orders", |batch: &[Event]| {
///         for e in batch { assert_eq!(e.topic, "orders"); }
///         Ok(())
///     })
///     .start()?;
/// let publisher = engine.publisher();
/// let _ = publisher.publish(Event::new("orders", Priority::High, &b"{}"[..]));
/// let stats = engine.shutdown()?; // delivers every accepted event first
/// assert_eq!(stats.processed, 1);
/// # Ok::<(), eventstream_core::Error>(())
/// ```
pub struct EngineBuilder {
    config: EngineConfig,
    dispatcher: Dispatcher,
    stage: Option<StageFactory>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .field("dispatcher", &self.dispatcher)
            .finish_non_exhaustive()
    }
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            config: EngineConfig::default(),
            dispatcher: Dispatcher::new(),
            stage: None,
        }
    }
}

impl EngineBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Edits the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut EngineConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Adds a handler for `topic`.
    pub fn on(mut self, topic: impl Into<Topic>, handler: impl Handler) -> Self {
        self.dispatcher.on(topic, handler);
        self
    }

    /// Adds a catch-all handler for topics without one.
    pub fn on_any(mut self, handler: impl Handler) -> Self {
        self.dispatcher.on_any(handler);
        self
    }

    /// Replaces what workers do with drained batches (the cluster's proposal stage).
    pub fn stage(
        mut self,
        factory: impl FnMut(StageContext<'_>) -> Box<dyn Stage> + Send + 'static,
    ) -> Self {
        self.stage = Some(Box::new(factory));
        self
    }

    /// Validates the configuration, allocates every ring, and starts the workers.
    ///
    /// Pinning reads the allowed-core mask of the *calling* thread once, before any worker is
    /// pinned (the mask is per thread), and assigns cores round-robin; with fewer cores than
    /// workers, cores are shared and a warning is logged.
    pub fn start(self) -> Result<Engine, Error> {
        let EngineBuilder {
            config,
            dispatcher,
            stage,
        } = self;
        config.validate()?;
        let dispatcher = Arc::new(dispatcher);
        let cores = if config.pin_workers {
            let cores = core_affinity::get_core_ids().unwrap_or_default();
            if cores.is_empty() {
                tracing::warn!("no core ids available; workers run unpinned");
            } else if cores.len() < config.workers {
                tracing::warn!(
                    workers = config.workers,
                    cores = cores.len(),
                    "fewer allowed cores than workers; workers share cores"
                );
            }
            cores
        } else {
            Vec::new()
        };

        let mut lanes = Vec::with_capacity(config.workers);
        let mut consumers = Vec::with_capacity(config.workers);
        for _ in 0..config.workers {
            let (lane, c) = Lane::new(&config);
            lanes.push(lane);
            consumers.push(c);
        }
        let stats = StatsHandle::new(
            lanes
                .iter()
                .map(|l| l.clone() as Arc<dyn TierSource>)
                .collect(),
        );
        // Padded: every worker reads it on every pass, and a small heap neighbour written by a
        // producer on another core would otherwise drag its cache line back and forth.
        let state = Arc::new(CachePadded::new(AtomicU8::new(RUNNING)));
        let mut factory: StageFactory = stage.unwrap_or_else(|| {
            Box::new(|ctx: StageContext<'_>| {
                Box::new(Applier::new(
                    ctx.config.dedup,
                    ctx.dispatcher.clone(),
                    ctx.slot.clone(),
                    Duration::from_millis(ctx.config.stats_flush_ms),
                )) as Box<dyn Stage>
            })
        });

        let mut workers = Vec::with_capacity(config.workers);
        for (i, (lane, consumers)) in lanes.iter().zip(consumers).enumerate() {
            let slot = stats.register(format!("worker-{i}"));
            let stage = factory(StageContext {
                worker: i,
                config: &config,
                dispatcher: &dispatcher,
                stats: &stats,
                slot: &slot,
            });
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let worker = Worker::new(
                &config,
                lane.clone(),
                consumers,
                stage,
                state.clone(),
                slot,
                core,
            );
            let handle = std::thread::Builder::new()
                .name(format!("es-worker-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| Error::SpawnWorker {
                    index: i,
                    reason: e.to_string(),
                })?;
            // Before any publisher of the lane exists. (Under `--cfg loom` the lane holds a
            // loom thread handle, and the engine's std threads are never model-checked: the loom
            // models of `lane.rs` register their worker the same way.)
            #[cfg(not(loom))]
            lane.set_worker(handle.thread().clone());
            workers.push(handle);
        }
        Ok(Engine {
            config,
            dispatcher,
            lanes,
            workers,
            state,
            stats,
            next_lane: AtomicUsize::new(0),
            finished: false,
        })
    }
}

/// A running engine. Dropping it shuts it down gracefully (see [`Engine::shutdown`]).
pub struct Engine {
    config: EngineConfig,
    dispatcher: Arc<Dispatcher>,
    lanes: Vec<Arc<Lane>>,
    workers: Vec<JoinHandle<()>>,
    state: Arc<CachePadded<AtomicU8>>,
    stats: StatsHandle,
    next_lane: AtomicUsize,
    finished: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.workers.len())
            .field("lanes", &self.lanes)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder with default configuration and no handlers.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// A publisher bound to the next lane, round-robin.
    pub fn publisher(&self) -> Publisher {
        let i = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        Publisher::new(self.lanes[i].clone())
    }

    /// A publisher bound to lane `lane % workers` (the same lane keeps one producer's order
    /// across handles).
    pub fn publisher_on_lane(&self, lane: usize) -> Publisher {
        Publisher::new(self.lanes[lane % self.lanes.len()].clone())
    }

    /// The validated configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// All counters and latency percentiles, now.
    pub fn stats(&self) -> Stats {
        self.stats.stats()
    }

    /// A cloneable handle for exporters: reads snapshots, never ring internals.
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// A new dedup → dispatch stage sharing this engine's handlers and statistics (the cluster's
    /// apply loop uses one).
    pub fn new_applier(&self, name: impl Into<String>) -> Applier {
        Applier::new(
            self.config.dedup,
            self.dispatcher.clone(),
            self.stats.register(name),
            Duration::from_millis(self.config.stats_flush_ms),
        )
    }

    /// True while every worker thread is alive.
    pub fn workers_alive(&self) -> bool {
        self.workers.iter().all(|w| !w.is_finished())
    }

    /// Graceful shutdown: refuse new events (`PublishError::Closed`), deliver every accepted
    /// event to its handlers, stop the workers. Returns the final statistics.
    pub fn shutdown(mut self) -> Result<Stats, Error> {
        self.finish(DRAINING)
    }

    /// Hard stop: refuse new events, stop workers after their current batch, and count what is
    /// still queued as `dropped{reason="hard_stop"}`.
    pub fn stop(mut self) -> Result<Stats, Error> {
        self.finish(STOPPING)
    }

    fn finish(&mut self, mode: u8) -> Result<Stats, Error> {
        if self.finished {
            return Ok(self.stats.stats());
        }
        self.finished = true;
        signal_stop(&self.lanes, &self.state, mode);
        let mut result = Ok(());
        for (i, w) in self.workers.drain(..).enumerate() {
            if w.join().is_err() && result.is_ok() {
                result = Err(Error::WorkerPanicked(i));
            }
        }
        let left: u64 = self
            .lanes
            .iter()
            .flat_map(|l| l.rings.iter())
            .map(|r| r.len() as u64)
            .sum();
        if left > 0 {
            self.stats.add_hard_stop_drops(left);
        }
        self.stats.set_running(false);
        result.map(|()| self.stats.stats())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.finish(DRAINING);
        }
    }
}
