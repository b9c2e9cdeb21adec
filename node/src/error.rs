//! The crate's error type.

use eventstream_client::ClientError;
use eventstream_proto::DecodeError;
use eventstream_storage::StorageError;
use std::io;

/// Everything that can go wrong running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A configuration value is invalid; `field` names the setting.
    #[error("invalid configuration: `{field}`: {reason}")]
    InvalidConfig {
        /// Dotted name of the setting (as in the TOML file; the `EVENTSTREAM_*` variable and
        /// the flag are derived from it).
        field: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The log or a snapshot could not be read or written, or is corrupt.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A backup's manifest, snapshot or stream files do not check out.
    #[error("corrupt backup {path}: {reason}")]
    CorruptBackup {
        /// The file (or backup directory).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A subscription asked for events that retention has already removed.
    #[error("offset {requested} is compacted; the earliest available offset is {earliest}")]
    Compacted {
        /// The offset asked for.
        requested: u64,
        /// The earliest offset the node still serves.
        earliest: u64,
    },
    /// raft-rs refused an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A frame or record could not be decoded.
    #[error("decode error: {0}")]
    Decode(#[from] DecodeError),
    /// A network operation failed.
    #[error("network error talking to {peer}: {source}")]
    Network {
        /// The remote address.
        peer: String,
        /// The OS error.
        source: io::Error,
    },
    /// A request to another member (joining a cluster) failed.
    #[error(transparent)]
    Client(ClientError),
    /// An operation did not complete in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The node or engine is shut down.
    #[error("node is shut down")]
    Closed,
    /// The embedded engine failed.
    #[error("engine: {0}")]
    Engine(#[from] eventstream_core::Error),
    /// A thread could not be started.
    #[error("could not start {what}: {source}")]
    Spawn {
        /// Which thread / runtime.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// A client-side setting that is wrong (a TLS file of the node's own configuration, read by
/// the client crate's loaders) is a configuration error of the node; anything else stays a
/// client error.
impl From<ClientError> for NodeError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::InvalidConfig { field, reason } => {
                NodeError::InvalidConfig { field, reason }
            }
            other => NodeError::Client(other),
        }
    }
}

impl NodeError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: io::Error) -> Self {
        NodeError::Storage(StorageError::io(path, source))
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        NodeError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
