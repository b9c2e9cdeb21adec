//! The crate's error type.

use eventstream_client::ClientError;
use eventstream_node::NodeError;
use eventstream_testkit::TestkitError;

/// Why a benchmark could not run, or found its own result wrong.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of range; `option` names it as the command line spells it.
    #[error("invalid option `--{option}`: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Why.
        reason: String,
    },
    /// The benchmark's own accounting does not add up (events lost, handed back, ...).
    #[error("{0}")]
    Failed(String),
    /// A connection to a node failed.
    #[error("network error talking to {peer}: {source}")]
    Network {
        /// The node.
        peer: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A node did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A node of an in-process cluster failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A client call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Node processes, ports or scratch directories failed.
    #[error(transparent)]
    Testkit(#[from] TestkitError),
    /// A node's answer could not be decoded.
    #[error("decode error: {0}")]
    Decode(#[from] eventstream_proto::DecodeError),
    /// The embedded engine failed.
    #[error("engine: {0}")]
    Engine(#[from] eventstream_core::Error),
    /// A thread or runtime could not be started.
    #[error("could not start {what}: {source}")]
    Spawn {
        /// What.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl BenchError {
    pub(crate) fn option(option: &'static str, reason: impl Into<String>) -> Self {
        BenchError::InvalidOption {
            option,
            reason: reason.into(),
        }
    }
}
