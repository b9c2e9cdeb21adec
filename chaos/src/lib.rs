//! # eventstream-chaos
//!
//! A Jepsen-style fault-injection run against real `eventstream node` processes on loopback,
//! followed by a history checker.
//!
//! Main types:
//! * [`history::History`] — everything a run observed: every publish (id, acknowledged offset or
//!   failure, timestamps), every event each consumer received (node, offset, id), every node's
//!   stream read back after healing, and every fault the nemesis injected. Serialisable, so a
//!   failing run's history can be kept and re-checked.
//! * [`checker::check`] — a pure function `&History -> CheckReport` listing every anomaly: lost
//!   acknowledged events, ids stored twice, replicas disagreeing at an offset, consumers seeing
//!   offsets go backwards or skip, unacknowledged publishes stored more than once, acknowledged
//!   offsets that hold another event, and ids nobody published.
//! * [`proxy::Proxies`] — one TCP proxy per directed peer link (node *i* reaches node *j* only
//!   through the proxy for `(i, j)`), so links can be cut and healed: a partition.
//! * the node processes are an `eventstream_testkit::ProcessCluster` whose peer links are
//!   routed through the proxies: spawn, `kill -9`, `SIGSTOP` / `SIGCONT`, restart on the same
//!   data directory, status polling, leader discovery.
//! * [`nemesis::Nemesis`] — the fault schedule, from a seeded PRNG ([`nemesis::SplitMix64`]):
//!   kill the leader, kill a follower, pause a node, partition a minority, partition the leader
//!   away, restart everything.
//! * [`run::run`] — the orchestration: producers, consumers, nemesis cycles, heal, final reads,
//!   check; returns a [`run::ChaosOutcome`].
//! * [`ChaosError`] — this crate's error type.
#![warn(missing_docs)]

pub mod checker;
pub mod error;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod run;

pub use checker::{check, CheckReport};
pub use error::ChaosError;
pub use history::History;
pub use run::{run, ChaosConfig, ChaosOutcome};
