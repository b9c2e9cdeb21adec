//! The crate's error type.

use std::io;

/// What can go wrong managing test processes and resources.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A file or directory could not be created, read or removed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// A process or runtime could not be started.
    #[error("could not start {what}: {source}")]
    Spawn {
        /// What was being started.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// Not enough free loopback ports.
    #[error("no {wanted} free ports in 127.0.0.1:{lo}-{hi}")]
    NoPorts {
        /// Ports asked for.
        wanted: usize,
        /// Lowest port tried.
        lo: u16,
        /// Highest port tried.
        hi: u16,
    },
    /// A client call failed.
    #[error(transparent)]
    Client(#[from] eventstream_client::ClientError),
    /// A node's stream is not a stream of consecutive offsets.
    #[error("{0}")]
    Diverged(String),
    /// A cluster did not reach the state waited for; `state` says what every node was doing
    /// (its status, or its exit status and the last lines of its log).
    #[error("{what} after {waited_ms} ms:\n{state}")]
    NotReady {
        /// What was waited for.
        what: String,
        /// How long.
        waited_ms: u64,
        /// Every node's state.
        state: String,
    },
}

impl TestkitError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: io::Error) -> Self {
        TestkitError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
