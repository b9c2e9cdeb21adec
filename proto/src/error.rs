//! The crate's error type: why bytes could not be decoded.

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
