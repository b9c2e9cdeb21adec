//! The tokio runtime tests, benchmarks and chaos runs drive clients from.

use crate::error::TestkitError;

/// [`eventstream_client::runtime`] with the error as this crate's.
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, TestkitError> {
    eventstream_client::runtime(threads).map_err(|source| TestkitError::Spawn {
        what: "tokio runtime".into(),
        source,
    })
}

/// A two-worker runtime for a test; panics if it cannot be built.
pub fn test_runtime() -> tokio::runtime::Runtime {
    runtime(2).expect("build a tokio runtime")
}
