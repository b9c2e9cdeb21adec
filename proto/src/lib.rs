//! # eventstream-proto
//!
//! The wire protocol of eventstream, shared by the client, the node and the fuzzers: pure
//! encoders and decoders over byte slices, with no I/O, no async runtime and no consensus
//! code. The format is specified in `docs/protocol.md`.
//!
//! * [`frame`] — the 8-byte frame header, frame kinds, `Hello`, error codes and error bodies,
//!   publish / subscribe / status / snapshot-chunk bodies.
//! * [`codec`] — the event block codec: the body of a publish, a subscription's events and a
//!   raft entry's data are all event blocks.
//! * [`admin`] — membership and leader-transfer requests and replies.
//! * [`Member`] / [`parse_member`] — a member's `ID=HOST:PORT[@HTTP]` specification.
//! * [`DecodeError`] — why bytes could not be decoded; every decoder returns it instead of
//!   panicking (fuzzed by `eventstream-fuzz`).
//!
//! Invariant: no decoder allocates more than its input length justifies, so a hostile length
//! or count cannot exhaust memory.
#![warn(missing_docs)]

pub mod admin;
pub mod codec;
mod error;
pub mod frame;
mod member;

pub use error::DecodeError;
pub use frame::{ErrorBody, ErrorCode, Kind, SubscribeBody};
pub use member::{check_addr, parse_member, Member};
