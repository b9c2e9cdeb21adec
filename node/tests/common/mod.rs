//! What several of this crate's test binaries share.

pub mod sim;
