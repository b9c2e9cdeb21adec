//! The crate's error type.

use eventstream_proto::{DecodeError, ErrorCode};
use std::io;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A client setting is invalid; `field` names it (as the command-line flag or the
    /// `ClientConfig` field).
    #[error("invalid configuration: `{field}`: {reason}")]
    InvalidConfig {
        /// The setting.
        field: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A connection could not be made or broke.
    #[error("network error talking to {peer}: {source}")]
    Network {
        /// The remote address.
        peer: String,
        /// The OS error.
        source: io::Error,
    },
    /// The node answered the request with an error.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// The error class; [`ErrorCode::retryable`] tells whether the same request may
        /// succeed later.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
    },
    /// A subscription asked for events that retention has already removed.
    #[error("offset {requested} is compacted; the earliest available offset is {earliest}")]
    Compacted {
        /// The offset asked for.
        requested: u64,
        /// The earliest offset the node still serves.
        earliest: u64,
    },
    /// The call did not complete in time (after retries), or no endpoint answered at all.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A reply could not be decoded.
    #[error("decode error: {0}")]
    Decode(#[from] DecodeError),
}

impl ClientError {
    /// An invalid setting named `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ClientError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn network(peer: &str, source: io::Error) -> Self {
        ClientError::Network {
            peer: peer.to_owned(),
            source,
        }
    }

    /// True for an error no retry of the same request can fix (a malformed request, a refused
    /// administrative change, a bad setting, a compacted offset).
    pub fn is_final(&self) -> bool {
        match self {
            ClientError::Server { code, .. } => !code.retryable(),
            ClientError::InvalidConfig { .. } | ClientError::Compacted { .. } => true,
            ClientError::Network { .. } | ClientError::Timeout(_) | ClientError::Decode(_) => false,
        }
    }
}
