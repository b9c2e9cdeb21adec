//! `bench failover`: `kill -9` the leader of a 3-process cluster again and again while
//! clients publish; reports how long writes stopped after each kill (kill → first
//! acknowledged write on the new leader) and checks that nothing acknowledged was lost or
//! duplicated.

use crate::common::{p50_p99_max, AckCheck, AckedLoad};
use crate::error::BenchError;
use bytes::Bytes;
use eventstream_client::{Client, ClientConfig};
use eventstream_core::{Event, Priority};
use eventstream_testkit::ProcessCluster;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `bench failover`.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// Leader kills (each followed by a restart of the killed node).
    pub kills: usize,
    /// Concurrent publishing clients.
    pub clients: usize,
    /// Events per publish request.
    pub batch: usize,
    /// Data directory (default: a temporary directory).
    pub data_dir: Option<PathBuf>,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions {
            kills: 20,
            clients: 4,
            batch: 20,
            data_dir: None,
        }
    }
}

/// Result of `bench failover`.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// Leader kills done.
    pub kills: usize,
    /// Kill → first acknowledged write on the new leader, per kill, ms.
    pub failover_ms: Vec<f64>,
    /// Median.
    pub failover_p50_ms: f64,
    /// 99th percentile.
    pub failover_p99_ms: f64,
    /// Maximum.
    pub failover_max_ms: f64,
    /// Every acknowledged event checked against the nodes' streams.
    #[serde(flatten)]
    pub check: AckCheck,
    /// Wall time.
    pub seconds: f64,
}

/// Runs `bench failover` with `exe` as the node binary.
pub fn run(a: &FailoverOptions, exe: &Path) -> Result<FailoverReport, BenchError> {
    let (_scratch, dir) = crate::common::bench_dir(a.data_dir.as_deref(), "failover")?;
    eventstream_testkit::runtime(2)?.block_on(failover(a, exe, &dir))
}

/// Probes: a tiny publish started every 5 ms, each independent, so the first one
/// acknowledged after a kill marks when the new leader accepted writes.
fn start_probes(
    client: Arc<Client>,
    stop: Arc<AtomicBool>,
    load: Arc<AckedLoad>,
) -> Arc<Mutex<Vec<(Instant, Instant)>>> {
    let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let probe_acks = acks.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let (client, acks, load) = (client.clone(), probe_acks.clone(), load.clone());
            tokio::spawn(async move {
                let sent = Instant::now();
                let id = client.next_id().0;
                let probe = Event::new("probe", Priority::Critical, Bytes::from_static(b"p"));
                if let Ok(o) = client.publish(vec![probe.with_id(id)]).await {
                    acks.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((sent, Instant::now()));
                    load.record(id, o[0]);
                }
            });
        }
    });
    acks
}

/// Kill → the first probe sent after the kill and acknowledged.
async fn time_to_first_write(
    probe_acks: &Mutex<Vec<(Instant, Instant)>>,
    killed_at: Instant,
    kill: usize,
) -> Result<Duration, BenchError> {
    let deadline = killed_at + Duration::from_secs(30);
    loop {
        let first = probe_acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(sent, _)| *sent > killed_at)
            .map(|(_, at)| *at)
            .min();
        if let Some(at) = first {
            return Ok(at.duration_since(killed_at));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!(
                "no write acknowledged 30 s after kill {kill}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn failover(
    a: &FailoverOptions,
    exe: &Path,
    dir: &Path,
) -> Result<FailoverReport, BenchError> {
    let start = Instant::now();
    let mut cluster = ProcessCluster::start(exe, 3, dir, &[])?;
    let eps = cluster.endpoints();
    cluster.wait_healthy(Duration::from_secs(20)).await?;
    let load = Arc::new(AckedLoad::start(&eps, a.clients, a.batch, "failover")?);
    let stop = Arc::new(AtomicBool::new(false));
    let probe_client = Arc::new(Client::new(ClientConfig::new(eps.clone()))?);
    let probe_acks = start_probes(probe_client, stop.clone(), load.clone());
    let mut failovers = Vec::new();
    for k in 0..a.kills {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leader = cluster.wait_healthy(Duration::from_secs(30)).await?;
        let killed_at = Instant::now();
        cluster.kill(leader);
        let took = time_to_first_write(&probe_acks, killed_at, k).await?;
        failovers.push(took.as_secs_f64() * 1e3);
        eprintln!(
            "kill {}/{}: leader {leader} killed, writes acknowledged again after {:.1} ms",
            k + 1,
            a.kills,
            took.as_secs_f64() * 1e3
        );
        cluster.restart(leader)?;
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let check = load.finish(&mut cluster).await?;
    drop(cluster);
    let (p50, p99, max) = p50_p99_max(&failovers);
    Ok(FailoverReport {
        kills: failovers.len(),
        failover_p50_ms: p50,
        failover_p99_ms: p99,
        failover_max_ms: max,
        failover_ms: failovers,
        check,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl std::fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(
            f,
            "failover: {} kills; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {}",
            r.kills, r.failover_p50_ms, r.failover_p99_ms, r.failover_max_ms, r.check
        )
    }
}
