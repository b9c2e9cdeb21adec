//! The crate's error type.

use eventstream_proto::DecodeError;
use std::io;

/// Everything that can go wrong reading or writing a node's files.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file could not be read or written.
    #[error("log storage I/O error on {path}: {source}")]
    Io {
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
    /// Bytes that should hold a record or snapshot do not decode.
    #[error("decode error: {0}")]
    Decode(#[from] DecodeError),
}

impl StorageError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: io::Error) -> Self {
        StorageError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
