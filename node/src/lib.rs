//! # eventstream-node
//!
//! A member of a 3- or 5-node eventstream cluster: raft consensus (raft-rs) over a durable,
//! fsynced log, a TCP peer transport, and the client listener.
//!
//! The shape: `publish → tier ring (core Engine) → ProposalStage → raft driver (batched
//! proposals, quorum commit + fsync) → StateMachine (dedup → offsets → committed stream →
//! core Applier dispatch) → acknowledgements`. There is one pipeline: a node embeds a core
//! [`eventstream_core::Engine`] whose stage proposes instead of applying.
//!
//! Main types:
//! * [`Node`] — a running member: engine (its [`ProposalStage`] proposes), driver thread,
//!   TCP transport and client listener; [`NodeConfig`] validates every setting and names the
//!   bad one.
//! * [`LocalCluster`] — N nodes in one process on loopback (the demo, benchmarks, tests).
//! * [`Replica`] — RawNode + WAL + [`StateMachine`], no threads or sockets: what the
//!   deterministic simulation drives and what the driver thread owns.
//! * [`StateMachine`] — applies committed entries: dedup (core `DedupWindow`), stream offsets,
//!   dispatch through core's `Applier`, publish acknowledgements.
//! * [`CommittedStream`] — the offset-addressed stream subscribers read, identical on every
//!   node; retention trims it from the front.
//! * [`AckRegistry`] — publishes waiting (by event id) for their offsets.
//! * [`NodeMetrics`] — implements core's `ReplicationSource` for exporters.
//! * [`Gateway`] — publish and read steps for listeners of other protocols (the Kafka one):
//!   admitted, limited and acknowledged as native publishes are.
//! * [`GroupOffsets`] — consumer groups' committed offsets, replicated as events of the
//!   reserved topic [`GROUP_OFFSETS_TOPIC`] and carried in snapshots.
//! * [`ProducerSequences`] — idempotent producers' last sequences, replicated as events of
//!   the reserved topic [`PRODUCER_STATE_TOPIC`]; the leader checks batches against them
//!   ([`Producer::publish_sequenced`]).
//! * [`NodeError`] — the crate's one error type.
//!
//! The wire format lives in `eventstream-proto`, the log and snapshot formats in
//! `eventstream-storage`, the client in `eventstream-client`. See `docs/cluster.md` for
//! threads, storage format, configuration and benchmarks.
#![warn(missing_docs)]

mod acks;
pub mod backup;
pub mod config;
mod copy;
mod driver;
mod error;
mod gateway;
mod groups;
mod join;
mod metrics;
mod node;
mod producers;
mod reclaim;
pub mod replica;
mod server;
mod state;
mod stream;
mod tls;
mod transport;

pub use acks::{AckError, AckRegistry};
pub use config::NodeConfig;
pub use copy::{answer_fetch, store_chunk, CopyCounters, Stored};
pub use driver::raise_thread_priority;
pub use error::NodeError;
pub use eventstream_proto::Member;
pub use eventstream_storage::stream::TopicInfo;
pub use gateway::{Gateway, Pending, Producer, SequencedError, StreamRead};
pub use groups::{
    CommittedOffset, GroupOffsets, OffsetCommit, GROUP_OFFSETS_TOPIC, MAX_COMMIT_METADATA_BYTES,
    MAX_GROUP_ID_BYTES,
};
pub use metrics::NodeMetrics;
pub use node::{LocalCluster, Node, ProposalStage};
pub use producers::{
    ProducerBatch, ProducerSequences, SequenceError, PRODUCER_EXPIRY_MS, PRODUCER_STATE_TOPIC,
};
pub use replica::{Replica, ReplicaConfig};
pub use server::Refusal;
pub use state::StateMachine;
pub use stream::{CommittedStream, Retention, StreamSettings};
pub use tls::{NodeTls, PeerCert};
pub use transport::decode_raft_message;

/// True for the topics only the node writes ([`GROUP_OFFSETS_TOPIC`],
/// [`PRODUCER_STATE_TOPIC`]); clients are refused when they publish to them.
pub fn is_reserved_topic(topic: &str) -> bool {
    topic == GROUP_OFFSETS_TOPIC || topic == PRODUCER_STATE_TOPIC
}
