//! # eventstream-kafka
//!
//! The Kafka-protocol listener: Kafka clients and tools (librdkafka and everything built on
//! it, kcat, the Java client) produce to and fetch from an eventstream node with no
//! eventstream library. Requests are decoded and responses encoded by the `kafka-protocol`
//! crate; publishes and reads go through the node's [`eventstream_node::Gateway`], so a
//! Kafka produce is admitted, limited, replicated, fsynced on a quorum and acknowledged
//! exactly as a native publish is.
//!
//! The model (see `docs/kafka.md`):
//! * every eventstream topic is a Kafka topic with one partition (0); any valid name exists
//!   (created on first use); offsets are stream offsets, so a topic's offsets have gaps where
//!   other topics' events sit;
//! * the raft leader is every partition's leader; every member with a Kafka address is a
//!   broker; a follower answers produce with `NOT_LEADER_OR_FOLLOWER`, and serves fetches
//!   from its own copy of the committed stream;
//! * `acks=all` and `acks=1` answer after the quorum commit and fsync; `acks=0` gets no
//!   answer and is counted;
//! * fetch long-polls (`max_wait_ms`, `min_bytes`) and reads only the topic's events through
//!   the stream's per-topic index;
//! * the raft leader coordinates consumer groups (Kafka's classic protocol); committed offsets
//!   are replicated through the node;
//! * idempotent producers' sequences become event ids, which the node's replicated dedup
//!   window checks;
//! * TLS with the node's certificate, SASL SCRAM-SHA-256 and PLAIN ([`SaslUsers`]).
//!
//! Main items: [`serve`] (accept loop), [`KafkaOptions`], [`KafkaCounters`],
//! [`KafkaError`], and [`alloc::Allocator`], the global allocator a process serving the
//! listener installs (the decoder may reserve capacity from counts a peer chose). Modules: `conn` (framing, in-order answers, one connection's life), `api`
//! (the supported APIs and versions, dispatch), one module per request family
//! (`metadata`, `produce`, `fetch`, `admin`, `coordinator` with `group`, the group protocol's
//! state machine), `sasl` and `auth` (authentication), `records` (record batches ↔ events).
#![warn(missing_docs)]

mod admin;
pub mod alloc;
mod api;
mod auth;
mod conn;
mod coordinator;
mod decompress;
mod error;
mod fetch;
mod group;
mod metadata;
mod produce;
pub mod records;
mod sasl;

pub use api::{check_request, SUPPORTED};
pub use conn::{serve, Coordinator, KafkaCounters, KafkaOptions};
pub use error::KafkaError;
pub use sasl::SaslUsers;
