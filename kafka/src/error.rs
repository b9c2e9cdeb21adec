//! The crate's one error type: what ends a Kafka connection or a request.

/// Why a Kafka request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The connection failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A request larger than `kafka.max_request_bytes` (or a negative size).
    #[error("request of {len} bytes is over the limit of {max}")]
    Oversized {
        /// The size the request announced.
        len: i64,
        /// The limit.
        max: usize,
    },
    /// A request that does not decode as the API and version it names.
    #[error("malformed {api} v{version} request: {reason}")]
    Malformed {
        /// The API key's name (or number).
        api: String,
        /// The version the header named.
        version: i16,
        /// What the decoder said.
        reason: String,
    },
    /// Record batches of a produce request that do not decode (bad CRC, unknown format,
    /// bad compression, a bad `priority` header).
    #[error("bad records: {0}")]
    BadRecords(String),
    /// A response could not be encoded (a bug, or a value the version cannot carry).
    #[error("encoding a response: {0}")]
    Encode(String),
    /// The TLS handshake failed (plain bytes on a TLS port, an untrusted client certificate).
    #[error("TLS handshake: {0}")]
    Tls(String),
    /// SASL authentication failed, or a request came before it (the connection closes).
    #[error("SASL: {0}")]
    Auth(String),
    /// The listener's address could not be bound.
    #[error("binding the Kafka listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}
