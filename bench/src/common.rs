//! What the cluster benchmarks share: percentiles of a sample, the data directory of a run,
//! and publishers that record what was acknowledged, checked at the end with
//! `eventstream_testkit::verify_acked` ([`AckCheck`]).

use crate::error::BenchError;
use bytes::Bytes;
use eventstream_client::{Client, ClientConfig};
use eventstream_core::hdrhistogram::Histogram;
use eventstream_core::{Event, Priority};
use eventstream_testkit::{verify_acked, ProcessCluster, Scratch};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `q` quantile of an ascending sample (0 for an empty one).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Median, 99th percentile and maximum of a sample, in any order (0 for an empty one).
pub(crate) fn p50_p99_max(sample: &[f64]) -> (f64, f64, f64) {
    let mut sorted = sample.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or(0.0),
    )
}

/// A histogram quantile in milliseconds (the histogram records nanoseconds).
pub(crate) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

/// The data directory of a benchmark's cluster: `given`, or a scratch directory under the
/// current directory (the disk being measured), removed when the guard drops.
pub(crate) fn bench_dir(
    given: Option<&Path>,
    tag: &str,
) -> Result<(Option<Scratch>, PathBuf), BenchError> {
    match given {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|source| BenchError::Spawn {
                what: "the benchmark's data directory",
                source,
            })?;
            Ok((None, d.to_path_buf()))
        }
        None => {
            let here = std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir());
            let s = Scratch::try_new_in(&here, tag)?;
            let d = s.path().to_path_buf();
            Ok((Some(s), d))
        }
    }
}

/// Publishing clients that go on until stopped, each sending `batch` fresh events per
/// request and recording every acknowledged `(id, offset)` and when it was acknowledged.
pub(crate) struct AckedLoad {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, u64)>>>,
    ack_times: Arc<Mutex<Vec<Instant>>>,
    failed: Arc<AtomicU64>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl AckedLoad {
    /// Starts `clients` publishers on topic `topic` against `endpoints` (call inside a
    /// runtime).
    pub(crate) fn start(
        endpoints: &[String],
        clients: usize,
        batch: usize,
        topic: &'static str,
    ) -> Result<AckedLoad, BenchError> {
        let load = AckedLoad {
            stop: Arc::default(),
            acked: Arc::default(),
            ack_times: Arc::default(),
            failed: Arc::default(),
            tasks: Mutex::default(),
        };
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = Client::new(ClientConfig::new(endpoints.to_vec()))?;
            let (stop, acked, times, failed) = (
                load.stop.clone(),
                load.acked.clone(),
                load.ack_times.clone(),
                load.failed.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let evs: Vec<Event> = (0..batch)
                        .map(|i| {
                            Event::new(topic, Priority::High, Bytes::from(format!("e{i}")))
                                .with_id(client.next_id().0)
                        })
                        .collect();
                    let ids: Vec<u64> = evs.iter().map(|e| e.id.0).collect();
                    match client.publish(evs).await {
                        Ok(offs) => {
                            lock(&times).push(Instant::now());
                            lock(&acked).extend(ids.into_iter().zip(offs));
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        *lock(&load.tasks) = tasks;
        Ok(load)
    }

    /// Records an acknowledgement made outside the publishers (a probe).
    pub(crate) fn record(&self, id: u64, offset: u64) {
        lock(&self.acked).push((id, offset));
    }

    /// When requests were acknowledged so far, ascending.
    pub(crate) fn ack_times(&self) -> Vec<Instant> {
        let mut t = lock(&self.ack_times).clone();
        t.sort_unstable();
        t
    }

    /// Stops the publishers, waits for `cluster` to be healthy again and checks everything
    /// acknowledged against every node's stream.
    pub(crate) async fn finish(
        &self,
        cluster: &mut ProcessCluster,
    ) -> Result<AckCheck, BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let _ = t.await;
        }
        let acked = lock(&self.acked).clone();
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        let v = verify_acked(&cluster.endpoints(), &acked).await?;
        Ok(AckCheck {
            acked: acked.len() as u64,
            lost: v.lost,
            duplicated: v.duplicated,
            diverged_nodes: v.diverged,
            failed_requests: self.failed.load(Ordering::Relaxed),
        })
    }
}

/// What the check at the end of a cluster benchmark found (in its report's JSON, these are
/// fields of the report itself).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AckCheck {
    /// Events acknowledged.
    pub acked: u64,
    /// Acknowledged events not readable afterwards, or not at their offset (must be 0).
    pub lost: u64,
    /// Acknowledged events stored more than once (must be 0).
    pub duplicated: u64,
    /// Nodes whose committed stream differs from node 1's (must be 0).
    pub diverged_nodes: u64,
    /// Publish requests that failed after all retries (not acknowledged, so not "lost").
    pub failed_requests: u64,
}

impl AckCheck {
    /// Nothing acknowledged was lost or duplicated, and every node holds the same stream.
    pub fn intact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.diverged_nodes == 0
    }
}

impl std::fmt::Display for AckCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acked {}, lost {}, duplicated {}, diverged nodes {}",
            self.acked, self.lost, self.duplicated, self.diverged_nodes
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_small_sample() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 0.5), 2.0);
        assert_eq!(percentile(&s, 0.99), 4.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
