//! What several of this crate's test binaries share.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

pub mod sim;

use eventstream_core::Engine;
use eventstream_node::{LocalCluster, NodeConfig};
use std::path::Path;

/// `n` in-process nodes keeping their data under `dir`, on 10 ms raft ticks (elections within
/// a test's patience) and whatever else `tune` sets.
pub fn cluster(n: usize, dir: &Path, mut tune: impl FnMut(&mut NodeConfig)) -> LocalCluster {
    LocalCluster::start(
        n,
        dir,
        |c| {
            c.raft.tick_ms = 10;
            tune(c)
        },
        |_| Engine::builder(),
    )
    .unwrap()
}
