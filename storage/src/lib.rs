//! # eventstream-storage
//!
//! What a node keeps on disk, with no threads, sockets or consensus logic of its own:
//!
//! * [`Wal`] — the raft write-ahead log: segment files of checksummed records (entries, hard
//!   state, conf state, installed snapshots), one buffered write and one `fdatasync` per
//!   [`Wal::sync`], torn-tail truncation on recovery ([`wal`] documents the layout).
//! * [`snapshot`] — the snapshot format: one node's applied state at one log index, used as
//!   a raft snapshot's data, as `DATA_DIR/state.snapshot` and as a backup file; a pure,
//!   checksummed decoder.
//! * [`fault`] — write/fsync fault injection per data directory, compiled in only with the
//!   `fault-injection` feature (tests enable it; production builds do not).
//! * [`StorageError`] — the crate's one error type.
//!
//! Invariant: nothing is reported durable before it is written and fsynced; after one failed
//! write or fsync a log refuses every later write.
#![warn(missing_docs)]

mod error;
pub mod fault;
pub mod snapshot;
pub mod stream;
pub mod wal;

pub use error::StorageError;
pub use snapshot::{
    SnapshotData, SnapshotGroupOffset, SnapshotMember, SnapshotProducer, StreamChunk,
};
pub use stream::{RetentionPolicy, StreamConfig, StreamLog};
pub use wal::{Recovered, Wal};
