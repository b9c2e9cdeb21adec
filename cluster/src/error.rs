//! The crate's error type.

use std::io;

/// Everything that can go wrong in eventstream-cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A configuration value is invalid; `field` names the setting.
    #[error("invalid configuration: `{field}`: {reason}")]
    InvalidConfig {
        /// Dotted name of the setting (as in the TOML file / `EVENTSTREAM_*` variable).
        field: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A file of the durable log could not be read or written.
    #[error("log storage I/O error on {path}: {source}")]
    StorageIo {
        /// The file or directory.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The durable log is corrupt somewhere other than its torn tail.
    #[error("corrupt log record in {path} at byte {offset}: {reason}")]
    CorruptLog {
        /// The segment file.
        path: String,
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A snapshot file (backup or `DATA_DIR/state.snapshot`) is truncated or corrupt.
    #[error("corrupt snapshot {path}: {reason}")]
    CorruptSnapshot {
        /// The file.
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
    /// The server answered a request with an error.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// The error class.
        code: crate::frame::ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The request did not complete in time (after retries).
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

/// Why bytes could not be decoded (frames, log records, event batches). Pure data, so the
/// decoders stay pure functions over byte slices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Input ended inside a field.
    #[error("truncated input: needed {needed} more bytes at {at}")]
    Truncated {
        /// Position of the field.
        at: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// A version this build does not speak.
    #[error("unsupported version {0}")]
    Version(u8),
    /// An unknown frame/record kind.
    #[error("unknown kind {0}")]
    Kind(u8),
    /// A frame or record longer than allowed.
    #[error("length {len} exceeds maximum {max}")]
    TooLong {
        /// Declared length.
        len: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// A checksum mismatch.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Checksum in the record.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// A field has a value outside its domain.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl ClusterError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: io::Error) -> Self {
        ClusterError::StorageIo {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ClusterError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
