//! # eventstream-testkit
//!
//! What eventstream's tests, benchmarks and chaos runs share, so each of them does not grow
//! its own copy:
//!
//! * [`ProcessCluster`] — real `eventstream node` processes on loopback: spawn, kill, pause,
//!   terminate, restart, join, retire, and waits that explain themselves when they give up
//!   (each node's status, or its exit status and the last lines of its log).
//! * [`free_ports`] — loopback ports below the ephemeral range, leased machine-wide so
//!   concurrent tests never share one.
//! * [`Scratch`] — a temporary directory kept for inspection when its test fails.
//! * [`verify_acked`] — every acknowledged event stored exactly once, at its offset, on every
//!   node.
//! * [`runtime`] / [`test_runtime`] — the tokio runtime clients are driven from.
//! * [`raw_publish_error`] — one publish over a raw connection, for the error a node answers.
//! * [`wait_until`] — polls a condition, panicking with what it waited for.
//! * [`Prometheus`] — a real Prometheus scraping given targets, killed on drop.
//! * [`confluent_kafka_python`] — a python3 with confluent-kafka, or a loud skip (a failure
//!   with `CI=true`).
//! * `fault` (feature `fault-injection`) — the storage crate's write/fsync fault injection.
//! * `Pki` (feature `pki`) — CA, node, client and rogue certificates generated at run time.
//!
//! Production code does not depend on this crate's fault injection: it is only compiled in
//! with the `fault-injection` feature, which only tests enable.
#![warn(missing_docs)]

mod error;
#[cfg(feature = "pki")]
mod pki;
mod ports;
mod procs;
mod prometheus;
mod raw;
mod runtime;
mod scratch;
mod tools;
mod verify;
mod wait;

pub use error::TestkitError;
#[cfg(feature = "fault-injection")]
pub use eventstream_storage::fault;
#[cfg(feature = "pki")]
pub use pki::Pki;
pub use ports::{free_ports, Ports};
pub use procs::{agreed_leader, ProcessCluster, Route};
pub use prometheus::{query_path, Prometheus};
pub use raw::raw_publish_error;
pub use runtime::{runtime, test_runtime};
pub use scratch::Scratch;
pub use tools::confluent_kafka_python;
pub use verify::{verify_acked, Verified};
pub use wait::wait_until;
