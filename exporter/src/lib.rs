//! # eventstream-exporter
//!
//! The observability layer of eventstream: Prometheus metrics, a JSON HTTP API and a live,
//! self-contained status page, all fed from `eventstream-core`'s statistics snapshots (and, when
//! attached, a replicated node's [`ReplicationSource`](eventstream_core::replication::ReplicationSource)).
//! It reads snapshots on an interval and never touches the engine's hot path.
//!
//! Main types:
//! * [`Exporter`] / [`ExporterBuilder`] — `Exporter::builder(config, stats)` then optional
//!   `.replication(source)` / `.liveness(check)`, then `.start()` (own thread and runtime, for
//!   synchronous programs) or `.spawn(&handle)` (on an existing tokio runtime).
//! * [`ExporterHandle`] — `local_addr()`, `urls()`, `telemetry()`, `shutdown()`.
//! * [`ExporterConfig`] — listen address (default `0.0.0.0:8080`), publish interval, request
//!   limits; [`ExporterConfig::validate`] names the offending field.
//! * [`Telemetry`] — the `metrics` recorder (metrics-exporter-prometheus, local, not global),
//!   the published [`Published`] views and the `/metrics` renderer; usable without HTTP.
//! * [`catalog`] — every metric name, type, unit, labels and help: the naming contract.
//!
//! Endpoints: `GET /metrics`, `/health`, `/ready`, `/api/v1/metrics/current`,
//! `/api/v1/cluster/status`, and `/` (the status page). See `docs/http-api.md` and
//! `docs/metrics.md`.
#![warn(missing_docs)]

pub mod catalog;
mod config;
mod error;
pub mod histogram;
pub mod process;
mod server;
mod telemetry;
pub mod views;

pub use config::{BuildInfo, ExporterConfig};
pub use error::ExporterError;
pub use server::{Exporter, ExporterBuilder, ExporterHandle, LivenessCheck, ROUTES};
pub use telemetry::{
    ClusterSnapshot, HistoryPoint, Published, RecentLatency, Telemetry, Throughput,
};
