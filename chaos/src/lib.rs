//! # eventstream-chaos
//!
//! A Jepsen-style fault-injection run against real `eventstream node` processes on loopback,
//! followed by a history checker.
//!
//! Public API (everything is re-exported here; the modules are private):
//! * [`History`] — everything a run observed: every publish ([`PublishRecord`]: id,
//!   acknowledged offset or failure, timestamps), every event each consumer received
//!   ([`ConsumerLog`]: node, offset, id), every node's stream read back after healing
//!   ([`FinalRead`]), and every fault the nemesis injected ([`FaultRecord`]). Serialisable, so
//!   a failing run's history can be kept and re-checked.
//! * [`check`] — a pure function `&History -> CheckReport` listing every anomaly: lost
//!   acknowledged events, ids stored twice, replicas disagreeing at an offset, consumers seeing
//!   offsets go backwards or skip, unacknowledged publishes stored more than once, acknowledged
//!   offsets that hold another event, and ids nobody published. [`CheckReport`] has the counts
//!   and up to [`MAX_EXAMPLES`] examples of each kind.
//! * [`run()`] — the orchestration: producers, consumers, nemesis cycles, heal, final reads,
//!   check; takes a [`ChaosConfig`], returns a [`ChaosOutcome`].
//! * [`ChaosError`] — this crate's error type.
//!
//! Internals (`checker.rs`, `history.rs` and `run.rs` hold the above):
//! * `proxy.rs` — one TCP proxy per directed peer link (node *i* reaches node *j* only through
//!   the proxy for `(i, j)`), so links can be cut and healed: a partition.
//! * the node processes are an `eventstream_testkit::ProcessCluster` whose peer links are
//!   routed through the proxies: spawn, `kill -9`, `SIGSTOP` / `SIGCONT`, restart on the same
//!   data directory, status polling, leader discovery.
//! * `nemesis.rs` — the fault schedule, from a seeded SplitMix64 PRNG: kill the leader, kill a
//!   follower, pause a node, partition a minority, partition the leader away, restart
//!   everything ([`FaultKind`]).
#![warn(missing_docs)]

mod checker;
mod error;
mod history;
mod nemesis;
mod proxy;
mod run;

pub use checker::{
    check, AckMismatch, CheckReport, ConsumerAnomaly, Divergence, Duplicate, LostEvent,
    MAX_EXAMPLES,
};
pub use error::ChaosError;
pub use history::{
    ConsumerLog, Delivery, FaultKind, FaultRecord, FinalRead, History, PublishOutcome,
    PublishRecord, OFFSET_UNKNOWN,
};
pub use run::{run, ChaosConfig, ChaosOutcome};
