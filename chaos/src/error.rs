//! The chaos crate's error type.

use std::path::PathBuf;

/// Why a chaos run could not be carried out. Anomalies found by the checker are not errors:
/// they are listed in the [`crate::CheckReport`].
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A run setting is out of range.
    #[error("invalid chaos setting `{field}`: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A socket operation of the harness (proxy listener, runtime) failed.
    #[error("network setup: {0}")]
    Network(#[source] std::io::Error),
    /// A client could not be built.
    #[error(transparent)]
    Client(#[from] eventstream_client::ClientError),
    /// The node processes, their ports or their directory failed.
    #[error(transparent)]
    Nodes(#[from] eventstream_testkit::TestkitError),
    /// The cluster never elected a leader everyone follows, so the run cannot start.
    #[error("no leader after {waited_ms} ms (last statuses: {last})")]
    NoLeader {
        /// How long the harness waited.
        waited_ms: u64,
        /// What the nodes last reported.
        last: String,
    },
    /// The history could not be serialised.
    #[error("history serialisation: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl ChaosError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ChaosError::Io {
            path: path.into(),
            source,
        }
    }
}
