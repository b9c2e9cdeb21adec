//! # eventstream-bench
//!
//! The benchmark harnesses behind `eventstream bench …` (the binary parses the flags and
//! prints; each harness takes plain options and returns a report that serializes to JSON):
//!
//! * [`pipeline`] — the embedded engine end to end (publish → ring → worker → dedup →
//!   dispatch), closed or open loop, with a crossbeam-channel baseline in the same run.
//! * [`hiccups`] — the machine's own stalls under a pinned spinning thread per core.
//! * [`replication`] — replicated publish throughput and commit latency.
//! * [`kafka`] — produce and read-back throughput through the Kafka listener (librdkafka, or
//!   a pipelining client on the listener's codec) against the native client, alternating in
//!   the same run.
//! * [`failover`] — `kill -9` of the leader, time until writes are acknowledged again.
//! * [`restart`] — graceful leader restarts, the longest gap between acknowledged writes.
//! * [`soak`] — the stream on disk under a long write load on real processes: memory against
//!   retained bytes, snapshots, a catch-up read, crash restart, follower catch-up.
//! * [`overload`] — producers at a multiple of the cluster's capacity: back-pressure, RSS,
//!   exact accounting.
//!
//! The criterion micro-benchmarks are in `benches/` (`cargo bench -p eventstream-bench`):
//! `ring`, `dedup`, `histogram`, `pipeline` (eventstream vs crossbeam-channel vs the
//! `disruptor` crate in one run) and `apply` (wall-clock and thread-CPU time).
//! `examples/apply_cost.rs` applies a fixed number of events (`apply_cost EVENTS BATCH`), for
//! `perf stat -e task-clock` comparisons between builds; both drive [`apply::ApplyLoop`].
#![warn(missing_docs)]

pub mod apply;
mod common;
mod error;
pub mod failover;
pub mod hiccups;
pub mod kafka;
pub mod overload;
pub mod pipeline;
pub mod replication;
pub mod restart;
pub mod soak;

pub use common::{percentile, AckCheck};
pub use error::BenchError;
