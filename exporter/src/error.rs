//! The exporter's error type.

use std::net::SocketAddr;

/// Everything that can go wrong starting or running the exporter.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// A configuration field is out of range; the message names it.
    #[error("invalid exporter config: {field} = {value} (allowed: {allowed})")]
    InvalidConfig {
        /// Dotted field name.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What would be accepted.
        allowed: String,
    },
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exporter's runtime or thread could not be created.
    #[error("cannot start the exporter runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The metrics recorder rejected its configuration.
    #[error("cannot build the metrics recorder: {0}")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
}
