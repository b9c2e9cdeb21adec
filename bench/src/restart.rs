//! `bench restart`: graceful restarts (SIGTERM: the leader hands leadership off first) of the
//! leader of a 3-process cluster while clients publish; reports the longest gap between
//! acknowledged writes around each restart and checks that nothing acknowledged was lost.

use crate::common::{p50_p99_max, AckCheck, AckedLoad};
use crate::error::BenchError;
use eventstream_testkit::ProcessCluster;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `bench restart`.
#[derive(Debug, Clone)]
pub struct RestartOptions {
    /// Graceful leader restarts (SIGTERM, wait for exit, start again).
    pub restarts: usize,
    /// Concurrent publishing clients.
    pub clients: usize,
    /// Events per publish request.
    pub batch: usize,
    /// Data directory (default: a temporary directory).
    pub data_dir: Option<PathBuf>,
}

impl Default for RestartOptions {
    fn default() -> Self {
        RestartOptions {
            restarts: 10,
            clients: 4,
            batch: 20,
            data_dir: None,
        }
    }
}

/// Result of `bench restart`.
#[derive(Debug, Serialize)]
pub struct RestartReport {
    /// Graceful leader restarts done.
    pub restarts: usize,
    /// Per restart: the longest gap between consecutive acknowledged writes from just before
    /// the SIGTERM until the restarted node is back and caught up, ms.
    pub gap_ms: Vec<f64>,
    /// Median gap.
    pub gap_p50_ms: f64,
    /// 99th percentile gap.
    pub gap_p99_ms: f64,
    /// Largest gap.
    pub gap_max_ms: f64,
    /// Target: every gap ≤ 300 ms.
    pub target_ms: f64,
    /// Per restart: did leadership move before the old leader exited (term + 1, no election)?
    pub handed_off: Vec<bool>,
    /// Every acknowledged event checked against the nodes' streams.
    #[serde(flatten)]
    pub check: AckCheck,
    /// Wall time, s.
    pub seconds: f64,
}

/// Longest gap between consecutive instants of `acks` (sorted) in `[from, to]`, counting from
/// the last acknowledgement at or before `from`.
pub fn longest_gap(acks: &[Instant], from: Instant, to: Instant) -> Duration {
    let start = acks.partition_point(|t| *t <= from);
    let mut prev = if start > 0 { acks[start - 1] } else { from };
    let mut gap = Duration::ZERO;
    for t in acks[start..].iter().take_while(|t| **t <= to) {
        gap = gap.max(t.duration_since(prev));
        prev = *t;
    }
    // A window that ends without a further acknowledgement counts up to its end.
    gap.max(to.saturating_duration_since(prev))
}

/// Runs `bench restart` with `exe` as the node binary.
pub fn run(a: &RestartOptions, exe: &Path) -> Result<RestartReport, BenchError> {
    let (_scratch, dir) = crate::common::bench_dir(a.data_dir.as_deref(), "restart")?;
    eventstream_testkit::runtime(2)?.block_on(restart(a, exe, &dir))
}

async fn term_of(cluster: &ProcessCluster, id: u64) -> u64 {
    cluster
        .statuses_of(&[id], Duration::from_millis(500))
        .await
        .into_iter()
        .find_map(|(_, s)| s.map(|s| s.term))
        .unwrap_or(0)
}

async fn restart(a: &RestartOptions, exe: &Path, dir: &Path) -> Result<RestartReport, BenchError> {
    let start = Instant::now();
    let mut cluster = ProcessCluster::start(exe, 3, dir, &[])?;
    let eps = cluster.endpoints();
    cluster.wait_healthy(Duration::from_secs(20)).await?;
    let load = AckedLoad::start(&eps, a.clients, a.batch, "restart")?;
    let mut gaps = Vec::new();
    let mut handed_off = Vec::new();
    for k in 0..a.restarts {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let leader = cluster.wait_healthy(Duration::from_secs(30)).await?;
        let term_before = term_of(&cluster, leader).await;
        let t0 = Instant::now();
        cluster.terminate(leader, Duration::from_secs(20))?;
        cluster.restart(leader)?;
        let new_leader = cluster.wait_healthy(Duration::from_secs(30)).await?;
        let t1 = Instant::now();
        let term_after = term_of(&cluster, new_leader).await;
        let gap = longest_gap(&load.ack_times(), t0, t1).as_secs_f64() * 1e3;
        let moved = new_leader != leader && term_after == term_before + 1;
        eprintln!(
            "restart {}/{}: leader {leader} → {new_leader} (term {term_before} → {term_after}), longest write gap {gap:.1} ms",
            k + 1,
            a.restarts
        );
        gaps.push(gap);
        handed_off.push(moved);
    }
    let check = load.finish(&mut cluster).await?;
    drop(cluster);
    let (p50, p99, max) = p50_p99_max(&gaps);
    Ok(RestartReport {
        restarts: gaps.len(),
        gap_p50_ms: p50,
        gap_p99_ms: p99,
        gap_max_ms: max,
        target_ms: 300.0,
        gap_ms: gaps,
        handed_off,
        check,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl std::fmt::Display for RestartReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(
            f,
            "restart: {} graceful leader restarts; longest write gap p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target {:.0} ms); handed off {}/{}; {}",
            r.restarts, r.gap_p50_ms, r.gap_p99_ms, r.gap_max_ms, r.target_ms,
            r.handed_off.iter().filter(|h| **h).count(), r.handed_off.len(),
            r.check
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_gap_counts_from_the_last_ack_before_the_window() {
        let t = Instant::now();
        let ms = |x: u64| t + Duration::from_millis(x);
        let acks = [ms(0), ms(10), ms(20), ms(150), ms(160)];
        assert_eq!(
            longest_gap(&acks, ms(15), ms(170)),
            Duration::from_millis(130)
        );
        assert_eq!(
            longest_gap(&acks, ms(155), ms(300)),
            Duration::from_millis(140)
        );
    }
}
