//! # eventstream-core
//!
//! The embedded engine of eventstream: producers publish [`Event`]s through a [`Publisher`];
//! each event goes into one of three bounded lock-free tier rings by its [`Priority`]; pinned
//! worker threads drain the rings by strict priority (with a starvation guard) and hand batches
//! to a [`Stage`] — by default an [`Applier`], which drops duplicates with a deterministic
//! [`DedupWindow`], calls the [`Handler`]s of the event's topic, and records ingest →
//! handler-start latency in nanoseconds into worker-local HDR histograms.
//!
//! Main types:
//! * [`Engine`] / [`EngineBuilder`] — configuration ([`EngineConfig`], validated), start,
//!   graceful [`shutdown`](Engine::shutdown) and hard [`stop`](Engine::stop).
//! * [`Publisher`] — `publish` (per-tier [`OverflowPolicy`]), `try_publish`, `publish_batch`.
//! * [`Ring`] — the bounded MPSC ring under each tier; `push` hands the value back when full.
//! * [`Applier`] — dedup → dispatch → latency, reused by the cluster's apply loop.
//! * [`Stats`] / [`StatsHandle`] — snapshots for exporters; core knows nothing of Prometheus.
//!
//! Ordering guarantee: events from one [`Publisher`] in one tier reach handlers in publish
//! order. Nothing is promised across tiers (that is the point of priorities) or across
//! publishers bound to different lanes.
//!
//! See `ARCHITECTURE.md` at the repository root for the path of one event and the invariants.
#![warn(missing_docs)]

mod apply;
pub mod clock;
mod config;
mod dedup;
mod dispatch;
mod engine;
mod error;
mod event;
mod lane;
pub mod replication;
pub mod ring;
mod stats;
mod sync;
mod tier;
mod worker;

pub use apply::{Applier, ApplyOutcome};
pub use config::{
    DedupConfig, EngineConfig, IdleStrategy, TierConfig, TiersConfig, MAX_DEDUP_WINDOW,
    MAX_RING_CAPACITY, MAX_WORKERS,
};
pub use dedup::{Decision, DedupWindow, Tagged};
pub use dispatch::{DispatchOutcome, Dispatcher, Handler, HandlerError};
pub use engine::{Engine, EngineBuilder, StageContext, StageFactory};
pub use error::{BatchOutcome, Error, PublishError, Published};
pub use event::{Event, EventId, EventMeta, Header, Priority, Topic};
pub use lane::Publisher;
pub use ring::Ring;
pub use stats::{
    new_latency_histogram, ApplierCounters, ApplierSlot, DropStats, LatencySummary, Stats,
    StatsHandle, TierStats, WorkerStatus, LATENCY_MAX_NS, LATENCY_SIGFIG,
};
pub use tier::{OverflowPolicy, Tier, TierMap};
pub use worker::Stage;

/// Re-exported so users can name histogram types without another dependency.
pub use hdrhistogram;
