//! # eventstream-cluster
//!
//! Replication for eventstream: a 3- or 5-node raft cluster (raft-rs) with a durable, fsynced
//! log, a TCP peer transport, a framed client protocol and a Rust client.
//!
//! The shape: `publish → tier ring (core Engine) → ProposalStage → raft driver (batched
//! proposals, quorum commit + fsync) → StateMachine (dedup → offsets → committed stream →
//! core Applier dispatch) → acknowledgements`. There is one pipeline: a node embeds a core
//! [`eventstream_core::Engine`] whose stage proposes instead of applying.
//!
//! Main types:
//! * [`codec`] / [`frame`] / [`wal`] — pure encoders and decoders (event blocks, wire frames,
//!   log records), fuzzable; the wire format is documented in `docs/protocol.md`.
//! * [`Wal`] — segmented write-ahead log with a CRC32 per record; one fsync per Ready;
//!   [`fault`] injects write/fsync errors into it for tests.
//! * [`Replica`] — RawNode + Wal + [`StateMachine`], no threads or sockets: what the
//!   deterministic simulation tests drive and what the [`driver`] thread owns.
//! * [`StateMachine`] — applies committed entries: dedup (core `DedupWindow`), stream offsets,
//!   dispatch through core's `Applier`, publish acknowledgements.
//! * [`CommittedStream`] — the offset-addressed stream subscribers read, identical on every node;
//!   retention trims it from the front (a read below the first retained offset is `Compacted`).
//! * [`snapshot`] — the snapshot format (raft snapshots, `DATA_DIR/state.snapshot`, backups):
//!   raft and stream metadata, members, dedup window, offset index, retained events; pure,
//!   checksummed decoder; [`snapshot_cli`] — `eventstream snapshot save | status | restore`.
//! * [`AckRegistry`] — publishes waiting (by event id) for their offsets.
//! * [`Node`] — a running member: engine (its [`node::ProposalStage`] proposes), driver thread,
//!   TCP transport ([`transport`]) and client listener ([`server`]); [`NodeConfig`] validates.
//! * [`LocalCluster`] — N nodes in one process on loopback (demo, benchmarks, tests);
//!   [`procs::ProcessCluster`] — N real `eventstream node` processes.
//! * [`Client`] / [`Subscription`] — the Rust client: retries keep event ids, follows
//!   redirects; subscriptions resume from the next offset on any node.
//! * [`tls`] — TLS (rustls) for peer and client connections, optional mutual TLS, and the
//!   admin bearer token; see `docs/security.md`.
//! * [`member_cli`] — `member add|remove|list`, `leader transfer`, `bench restart`.
//! * [`join`] — starting a node that joins a running cluster.
//! * [`admin`] — membership changes and leader transfer (requests, replies, wire codecs).
//! * [`reclaim`] — frees compacted log entries and trimmed chunks on a background thread, so
//!   the driver never stalls in `munmap`.
//! * [`NodeMetrics`] — implements core's `ReplicationSource` for exporters.
//! * [`cli`] — the `node` / `publish` / `subscribe` / `status` / `bench replication` /
//!   `bench failover` commands; [`overload`] — `bench overload` (2× capacity, RSS, exact
//!   accounting); [`DemoLoad`] — synthetic load for the demo.
//!
//! See `docs/cluster.md` for threads, storage format, configuration and benchmarks.
#![warn(missing_docs)]

pub mod acks;
pub mod admin;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod driver;
pub mod error;
pub mod fault;
pub mod frame;
pub mod join;
pub mod load;
pub mod member_cli;
pub mod metrics;
pub mod net;
pub mod node;
pub mod overload;
pub mod procs;
pub mod reclaim;
pub mod replica;
pub mod server;
pub mod snapshot;
pub mod snapshot_cli;
pub mod state;
pub mod stream;
pub mod tls;
pub mod transport;
pub mod wal;

pub use acks::{AckError, AckRegistry};
pub use client::{Client, ClientConfig, Subscription};
pub use config::NodeConfig;
pub use error::{ClusterError, DecodeError};
pub use load::DemoLoad;
pub use metrics::{Member, NodeMetrics};
pub use node::{LocalCluster, Node};
pub use replica::{Replica, ReplicaConfig};
pub use state::StateMachine;
pub use stream::CommittedStream;
pub use wal::Wal;
