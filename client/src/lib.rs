//! # eventstream-client
//!
//! The Rust client of an eventstream cluster, over the framed protocol of
//! `eventstream-proto` (`docs/protocol.md`):
//!
//! * [`Client`] — publish with retries that keep event ids (a retry is stored once), follow
//!   `NotLeader` redirects, rotate endpoints, back off; cluster status; membership and
//!   leader-transfer requests.
//! * [`Subscription`] — the committed stream from an offset, reconnecting to any node from
//!   the next offset.
//! * [`snapshot_of`], [`RecordReader`] — download a node's snapshot and its stream's
//!   segment records (a backup).
//! * [`tls`] — client TLS (a CA to trust, a certificate for mutual TLS), the admin token, and
//!   the connection halves the node's server shares.
//! * [`ClientError`] — the crate's one error type.
//!
//! The crate has no consensus, storage or server code: a producer that embeds it pulls in
//! tokio, rustls and the protocol codecs only.
//!
//! ```no_run
//! use eventstream_client::{Client, ClientConfig};
//! use eventstream_core::{Event, Priority};
//!
//! # async fn run() -> Result<(), eventstream_client::ClientError> {
//! let client = Client::new(ClientConfig::new(vec!["127.0.0.1:7001".into()]))?;
//! let offsets = client
//!     .publish(vec![Event::new("orders", Priority::High, &b"{\"id\":42}"[..])])
//!     .await?;
//! println!("stored at offset {}", offsets[0]);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
mod conn;
mod error;
pub mod net;
mod retry;
mod snapshot;
mod subscription;
pub mod tls;

pub use client::{status_of, status_with, Client, ClientConfig};
pub use error::ClientError;
pub use eventstream_proto::frame::OFFSET_UNKNOWN;
pub use eventstream_proto::{Member, SubscribeBody};
pub use retry::RetryNotice;
pub use snapshot::{snapshot_of, RecordReader};
pub use subscription::Subscription;

/// The README's Rust examples (the embedded engine and this client), compiled and run as
/// doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// A multi-threaded tokio runtime with `worker_threads` workers and I/O and timers enabled:
/// what a program without a runtime of its own drives a [`Client`] from.
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads.max(1))
        .enable_all()
        .build()
}
