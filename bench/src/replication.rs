//! `bench replication`: replicated publish throughput and commit latency, against an
//! in-process cluster (verified afterwards: every node holds exactly the acknowledged events)
//! or a running one (`endpoints`). Closed loop by default; `rate` runs an open loop whose
//! latency counts from each request's intended send time.

use crate::common::ms;
use crate::error::BenchError;
use bytes::Bytes;
use eventstream_client::{Client, ClientConfig};
use eventstream_core::hdrhistogram::Histogram;
use eventstream_core::replication::ReplicationSource;
use eventstream_core::{Engine, Event, Priority};
use eventstream_node::{CommittedStream, LocalCluster};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `bench replication`.
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    /// Nodes of the in-process cluster.
    pub nodes: usize,
    /// Events to publish in total.
    pub events: u64,
    /// Events per publish request.
    pub batch: usize,
    /// Payload bytes per event.
    pub payload_bytes: usize,
    /// Concurrent clients (one connection each).
    pub clients: usize,
    /// Offered rate in events/s (open loop, latency from intended send time); 0 = closed loop.
    pub rate: u64,
    /// Target a running cluster instead of starting one.
    pub endpoints: Vec<String>,
    /// Where the in-process cluster keeps its logs (default: a temporary directory).
    pub data_dir: Option<PathBuf>,
    /// fsync inline in the raft driver instead of on a WAL thread (for comparison).
    pub sync_persist: bool,
    /// TLS for the clients: the CA the nodes' certificates chain to. For the in-process
    /// cluster, `tls_ca`, `tls_cert` and `tls_key` also become every node's TLS settings (one
    /// certificate for all nodes, valid for 127.0.0.1), so peers use mutual TLS too.
    pub tls_ca: Option<PathBuf>,
    /// Client (and, in process, node) certificate.
    pub tls_cert: Option<PathBuf>,
    /// Private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        ReplicationOptions {
            nodes: 3,
            events: 2_000_000,
            batch: 1000,
            payload_bytes: 100,
            clients: 8,
            rate: 0,
            endpoints: Vec::new(),
            data_dir: None,
            sync_persist: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Result of `bench replication`.
#[derive(Debug, Serialize)]
pub struct ReplicationReport {
    /// Nodes (0 when targeting `--endpoints`).
    pub nodes: usize,
    /// Events acknowledged.
    pub events: u64,
    /// Requests acknowledged.
    pub requests: u64,
    /// Requests that failed after all retries.
    pub failed_requests: u64,
    /// Wall time.
    pub seconds: f64,
    /// Acknowledged events per second.
    pub events_per_sec: f64,
    /// Offered rate (0 = closed loop).
    pub offered_rate: u64,
    /// Publish → acknowledgement latency (commit on a quorum + fsync + apply), ms.
    pub commit_p50_ms: f64,
    /// 99th percentile.
    pub commit_p99_ms: f64,
    /// 99.9th percentile.
    pub commit_p999_ms: f64,
    /// Maximum.
    pub commit_max_ms: f64,
    /// Clients.
    pub clients: usize,
    /// Events per request.
    pub batch: usize,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// In-process only: every node's committed stream holds exactly the acknowledged events,
    /// in the same order.
    pub verified: Option<bool>,
    /// In-process only: the leader's propose → commit p50 (ms), from its histogram.
    pub leader_propose_commit_p50_ms: Option<f64>,
    /// In-process only: the leader's propose → commit p99 (ms), from its histogram.
    pub leader_propose_commit_p99_ms: Option<f64>,
    /// In-process only: worst node's fsync p50 (ms).
    pub fsync_p50_ms: Option<f64>,
    /// In-process only: worst node's fsync p99 (ms).
    pub fsync_p99_ms: Option<f64>,
}

/// Runs `bench replication`.
pub fn run(a: &ReplicationOptions) -> Result<ReplicationReport, BenchError> {
    for (option, v) in [
        ("batch", a.batch),
        ("clients", a.clients),
        ("nodes", a.nodes),
    ] {
        if v == 0 {
            return Err(BenchError::option(option, "must be at least 1"));
        }
    }
    let (_scratch, dir) = crate::common::bench_dir(a.data_dir.as_deref(), "bench")?;
    let (cluster, endpoints) = if a.endpoints.is_empty() {
        let sync = a.sync_persist;
        if a.tls_ca.is_some() && a.tls_cert.is_none() {
            return Err(BenchError::option(
                "tls-cert",
                "the in-process cluster needs --tls-cert and --tls-key for its nodes",
            ));
        }
        let tls = (a.tls_ca.clone(), a.tls_cert.clone(), a.tls_key.clone());
        let c = LocalCluster::start(
            a.nodes,
            &dir,
            |c| {
                c.raft.async_persist = !sync;
                c.tls.ca = tls.0.clone();
                c.tls.cert = tls.1.clone();
                c.tls.key = tls.2.clone();
            },
            |_| Engine::builder(),
        )?;
        c.wait_for_leader(Duration::from_secs(10))
            .ok_or_else(|| BenchError::Failed("no leader elected in 10 s".into()))?;
        let eps = c.endpoints();
        (Some(c), eps)
    } else {
        (None, a.endpoints.clone())
    };
    let rt = eventstream_testkit::runtime(2)?;
    let result = rt.block_on(drive_load(a, &endpoints))?;
    let verified = cluster
        .as_ref()
        .map(|c| verify_local(c, result.events, Duration::from_secs(30)));
    let (mut commit_p50, mut commit_p99, mut fsync_p50, mut fsync_p99) = (None, None, None, None);
    if let Some(c) = &cluster {
        for n in c.nodes.iter().flatten() {
            let h = n.metrics().histograms();
            if n.metrics().is_leader() {
                commit_p50 = Some(ms(&h.commit_ns, 0.5));
                commit_p99 = Some(ms(&h.commit_ns, 0.99));
            }
            let worst = |acc: Option<f64>, f: f64| Some(acc.map_or(f, |x: f64| x.max(f)));
            fsync_p50 = worst(fsync_p50, ms(&h.fsync_ns, 0.5));
            fsync_p99 = worst(fsync_p99, ms(&h.fsync_ns, 0.99));
        }
    }
    if let Some(c) = cluster {
        c.shutdown();
    }
    Ok(ReplicationReport {
        verified,
        leader_propose_commit_p50_ms: commit_p50,
        leader_propose_commit_p99_ms: commit_p99,
        fsync_p50_ms: fsync_p50,
        fsync_p99_ms: fsync_p99,
        ..result
    })
}

fn verify_local(c: &LocalCluster, expect: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let streams: Vec<_> = c.nodes.iter().flatten().map(|n| n.stream()).collect();
    while streams.iter().any(|s| s.next_offset() < expect) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Retention (`retention_max_bytes`) may have trimmed each node's stream from the front, on
    // its own schedule: compare the range every node still holds, which must reach `expect`.
    let from = streams.iter().map(|s| s.first_offset()).max().unwrap_or(0);
    let ids = |s: &CommittedStream| {
        let mut v = Vec::new();
        let mut next = from;
        while next < s.next_offset() {
            next = s.read(next, usize::MAX, |_| true, &mut v);
        }
        v.into_iter().map(|(_, e)| e.id.0).collect::<Vec<u64>>()
    };
    let first = ids(&streams[0]);
    if from > 0 {
        tracing::info!(
            from,
            "retention trimmed the stream: verified the offsets every node still holds"
        );
    }
    first.len() as u64 == expect.saturating_sub(from)
        && streams.iter().all(|s| s.next_offset() == expect)
        && streams[1..].iter().all(|s| ids(s) == first)
}

async fn drive_load(
    a: &ReplicationOptions,
    endpoints: &[String],
) -> Result<ReplicationReport, BenchError> {
    let client_config = ClientConfig::new(endpoints.to_vec()).secured(
        a.tls_ca.as_deref(),
        a.tls_cert.as_deref().zip(a.tls_key.as_deref()),
        None,
        None,
    )?;
    let payload = Bytes::from(vec![b'x'; a.payload_bytes]);
    let requests_total = a.events.div_ceil(a.batch as u64);
    let next_req = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1_000, 120_000_000_000, 3).expect("bounds"),
    ));
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    {
        let (acked, done, hist) = (acked.clone(), done.clone(), hist.clone());
        tokio::spawn(async move {
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = acked.load(Ordering::Relaxed);
                let p99 = ms(&hist.lock().unwrap_or_else(|p| p.into_inner()), 0.99);
                eprintln!(
                    "[{:>5.1}s] acked {n} events ({} /s), commit p99 so far {p99:.2} ms",
                    start.elapsed().as_secs_f64(),
                    n - last
                );
                last = n;
            }
        });
    }
    let clients = (0..a.clients)
        .map(|_| Client::new(client_config.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let make_events = {
        let payload = payload.clone();
        move |n: usize| -> Vec<Event> {
            (0..n)
                .map(|_| Event::new("bench", Priority::Medium, payload.clone()))
                .collect()
        }
    };
    let publish = {
        let (acked, failed) = (acked.clone(), failed.clone());
        move |client: Arc<Client>, evs: Vec<Event>| {
            let (acked, failed) = (acked.clone(), failed.clone());
            async move {
                match client.publish(evs).await {
                    Ok(o) => {
                        acked.fetch_add(o.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "publish failed");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    let record = {
        let hist = hist.clone();
        move |d: Duration| {
            hist.lock()
                .unwrap_or_else(|p| p.into_inner())
                .saturating_record(d.as_nanos() as u64);
        }
    };
    if a.rate > 0 {
        // Open loop: request r is due at t0 + r × batch / rate, on client r mod clients, and its
        // latency counts from that due time (no coordinated omission: a slow ack never delays
        // the next send). A thread keeps the schedule: tokio's timer has millisecond
        // granularity, and its sleeps fired ~1 ms late at p50 (2.7 ms at p99), which this
        // measurement then charged to the cluster.
        let step_ns = a.batch as f64 * 1e9 / a.rate as f64;
        let (rt, batch, events) = (tokio::runtime::Handle::current(), a.batch, a.events);
        let pacer = std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || {
                // It sleeps nearly all the time; at the raft threads' priority its wake-ups are
                // not queued behind the in-process cluster's bulk work (real clients run on
                // other machines).
                eventstream_node::raise_thread_priority("bench pacer");
                let t0 = Instant::now() + Duration::from_millis(1);
                let mut tasks = Vec::with_capacity(requests_total as usize);
                for r in 0..requests_total {
                    let n = (events - r * batch as u64).min(batch as u64) as usize;
                    let evs = make_events(n);
                    let due = t0 + Duration::from_nanos((r as f64 * step_ns) as u64);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let fut = publish(clients[r as usize % clients.len()].clone(), evs);
                    let record = record.clone();
                    tasks.push(rt.spawn(async move {
                        fut.await;
                        record(Instant::now().saturating_duration_since(due));
                    }));
                }
                tasks
            })
            .map_err(|source| BenchError::Spawn {
                what: "bench pacer",
                source,
            })?;
        let tasks = tokio::task::spawn_blocking(move || pacer.join())
            .await
            .ok()
            .and_then(|r| r.ok())
            .ok_or_else(|| BenchError::Failed("the bench pacer thread failed".into()))?;
        for t in tasks {
            let _ = t.await;
        }
    } else {
        // Closed loop: each client sends its next request when the previous one is answered.
        let mut tasks = Vec::new();
        for client in clients {
            let (next_req, make_events, publish, record) = (
                next_req.clone(),
                make_events.clone(),
                publish.clone(),
                record.clone(),
            );
            let (batch, events) = (a.batch, a.events);
            tasks.push(tokio::spawn(async move {
                loop {
                    let r = next_req.fetch_add(1, Ordering::Relaxed);
                    if r >= requests_total {
                        break;
                    }
                    let n = (events - r * batch as u64).min(batch as u64) as usize;
                    let evs = make_events(n);
                    let t = Instant::now();
                    publish(client.clone(), evs).await;
                    record(t.elapsed());
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
    done.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let h = hist.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let events = acked.load(Ordering::Relaxed);
    Ok(ReplicationReport {
        nodes: if a.endpoints.is_empty() { a.nodes } else { 0 },
        events,
        requests: h.len(),
        failed_requests: failed.load(Ordering::Relaxed),
        seconds: secs,
        events_per_sec: events as f64 / secs,
        offered_rate: a.rate,
        commit_p50_ms: ms(&h, 0.5),
        commit_p99_ms: ms(&h, 0.99),
        commit_p999_ms: ms(&h, 0.999),
        commit_max_ms: h.max() as f64 / 1e6,
        clients: a.clients,
        batch: a.batch,
        payload_bytes: a.payload_bytes,
        verified: None,
        leader_propose_commit_p50_ms: None,
        leader_propose_commit_p99_ms: None,
        fsync_p50_ms: None,
        fsync_p99_ms: None,
    })
}

impl std::fmt::Display for ReplicationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(
            f,
            "replication: {} events in {:.2} s = {:.0} events/s; commit p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; failed requests {}; verified {:?}",
            r.events, r.seconds, r.events_per_sec, r.commit_p50_ms, r.commit_p99_ms, r.commit_p999_ms, r.commit_max_ms, r.failed_requests, r.verified
        )
    }
}
