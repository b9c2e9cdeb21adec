//! `bench soak`: the stream on disk under a long write load, on real node processes.
//!
//! Phases, each reported on its own:
//! 1. **write** — `total_bytes` of payload (split evenly over `payloads` sizes), closed loop,
//!    with retention, snapshots and compaction active; commit latency overall and while a
//!    snapshot was being taken; per node: peak RSS, retained bytes, segments, largest
//!    snapshot file and longest snapshot.
//! 2. **catch-up read** — an open-loop write at half the measured rate, first alone, then with
//!    a subscriber reading a follower's whole retained stream from its first offset: read
//!    rate against the write rate, commit p99 with and without the reader. The reader checks
//!    every acknowledged event it passes (its id at its offset).
//! 3. **verify** — every other node's retained stream read the same way.
//! 4. **crash restart** — `kill -9` of a follower and a restart: time until it serves again
//!    (status answers, caught up with the leader) with its retained stream.
//! 5. **follower catch-up** — a follower stopped while `follower_gap_bytes` more are written
//!    (the leader compacts its log past it), then restarted: time until it has installed the
//!    snapshot and copied every segment it lacks.

use crate::common::ms;
use crate::error::BenchError;
use bytes::Bytes;
use eventstream_client::{Client, ClientConfig, ClientError};
use eventstream_core::hdrhistogram::Histogram;
use eventstream_core::replication::ClusterStatus;
use eventstream_core::{Event, Priority};
use eventstream_proto::frame::SubscribeBody;
use eventstream_testkit::ProcessCluster;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `bench soak`.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Node processes.
    pub nodes: usize,
    /// Payload bytes to write in the write phase.
    pub total_bytes: u64,
    /// Payload sizes; the write phase gives each an equal share, in this order.
    pub payloads: Vec<usize>,
    /// Events per publish request.
    pub batch: usize,
    /// Concurrent publishing clients.
    pub clients: usize,
    /// `retention.max_bytes` of every node.
    pub retention_bytes: u64,
    /// `storage.stream_segment_bytes`.
    pub segment_bytes: u64,
    /// `storage.snapshot_bytes`.
    pub snapshot_bytes: u64,
    /// Seconds of the half-rate write without the reader (the reader's phase lasts as long as
    /// the read).
    pub baseline_secs: u64,
    /// Payload bytes written while a follower is stopped (0: skip the catch-up phase).
    pub follower_gap_bytes: u64,
    /// Data directory (default: a scratch directory under the current one).
    pub data_dir: Option<PathBuf>,
}

impl Default for SoakOptions {
    fn default() -> Self {
        SoakOptions {
            nodes: 3,
            total_bytes: 20 << 30,
            payloads: vec![100, 1024],
            batch: 1000,
            clients: 8,
            retention_bytes: 6 << 30,
            segment_bytes: 64 << 20,
            snapshot_bytes: 256 << 20,
            baseline_secs: 20,
            follower_gap_bytes: 5 << 30,
            data_dir: None,
        }
    }
}

/// Commit latency of a load, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Requests measured.
    pub requests: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            requests: h.len(),
            p50_ms: ms(h, 0.5),
            p99_ms: ms(h, 0.99),
            max_ms: h.max() as f64 / 1e6,
        }
    }
}

/// One payload size's share of the write phase.
#[derive(Debug, Clone, Serialize)]
pub struct WritePhase {
    /// Payload bytes per event.
    pub payload_bytes: usize,
    /// Events acknowledged.
    pub events: u64,
    /// Wall time, s.
    pub seconds: f64,
    /// Acknowledged events per second.
    pub events_per_sec: f64,
    /// Acknowledged payload MB/s (10^6 bytes).
    pub payload_mb_per_sec: f64,
    /// Commit latency of every request.
    pub commit: Latency,
    /// Commit latency of the requests answered while some node was taking a snapshot.
    pub commit_during_snapshots: Latency,
    /// Publish requests that failed after all retries.
    pub failed_requests: u64,
}

/// What one node held and used.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeFigures {
    /// Node id.
    pub id: u64,
    /// Peak resident memory of the process (VmHWM) before any restart, bytes.
    pub rss_max_bytes: u64,
    /// Stream bytes on disk at the end of the write phase.
    pub retained_bytes: u64,
    /// Stream segment files then.
    pub segments: u64,
    /// Largest `state.snapshot` seen while writing, bytes.
    pub snapshot_bytes_max: u64,
    /// Longest snapshot taken or installed while writing, ms.
    pub snapshot_ms_max: u64,
    /// Snapshots taken (compactions).
    pub compactions: u64,
    /// Retained bytes per byte of peak RSS.
    pub retained_per_rss: f64,
}

/// The catch-up read phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CatchUp {
    /// Offered write rate, events/s: half the closed-loop rate of the payload size that
    /// wrote the most bytes per second.
    pub write_rate: u64,
    /// Payload bytes of the concurrent writes.
    pub payload_bytes: usize,
    /// Commit latency at that rate without a reader.
    pub commit_without_reader: Latency,
    /// Commit latency at that rate while the reader ran.
    pub commit_with_reader: Latency,
    /// Events the reader read.
    pub read_events: u64,
    /// Payload bytes it read.
    pub read_payload_bytes: u64,
    /// Wall time of the read, s.
    pub read_seconds: f64,
    /// Read payload MB/s.
    pub read_mb_per_sec: f64,
    /// Read payload rate ÷ the write phase's best closed-loop payload rate (target ≥ 2).
    pub read_to_write_ratio: f64,
    /// commit p99 with the reader ÷ without (target ≤ 2).
    pub p99_ratio: f64,
}

/// Result of `bench soak`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    /// Node processes.
    pub nodes: usize,
    /// `retention.max_bytes` per node.
    pub retention_bytes: u64,
    /// `storage.stream_segment_bytes`.
    pub segment_bytes: u64,
    /// `storage.snapshot_bytes`.
    pub snapshot_bytes: u64,
    /// Payload bytes written in the write phase.
    pub written_payload_bytes: u64,
    /// The write phase, per payload size.
    pub write: Vec<WritePhase>,
    /// Per node, after the write phase.
    pub node: Vec<NodeFigures>,
    /// The catch-up read.
    pub catch_up: CatchUp,
    /// `kill -9` of a follower holding `restart_retained_bytes`: ms until it serves again.
    pub crash_restart_ms: f64,
    /// What that follower held.
    pub restart_retained_bytes: u64,
    /// Follower catch-up: payload bytes written while it was stopped.
    pub follower_gap_bytes: u64,
    /// Seconds from its restart until it had installed the snapshot and copied every missing
    /// segment (0 when skipped).
    pub follower_catch_up_secs: f64,
    /// Stream bytes it copied from other members.
    pub follower_copied_bytes: u64,
    /// Acknowledged events checked (each read once at its offset on every node, within the
    /// range each node retains).
    pub checked_events: u64,
    /// Acknowledged events not found at their offset (must be 0).
    pub lost: u64,
    /// Every acknowledged event in every node's retained range was found at its offset.
    pub verified: bool,
    /// Wall time, s.
    pub seconds: f64,
}

/// Acknowledged events: runs of consecutive offsets with consecutive ids.
#[derive(Debug, Default)]
struct Acked {
    /// first offset → (first id, length).
    runs: BTreeMap<u64, (u64, u64)>,
    events: u64,
}

impl Acked {
    fn add(&mut self, ids: &[u64], offsets: &[u64]) {
        let mut i = 0;
        while i < offsets.len() {
            let mut j = i + 1;
            while j < offsets.len() && offsets[j] == offsets[j - 1] + 1 && ids[j] == ids[j - 1] + 1
            {
                j += 1;
            }
            self.runs.insert(offsets[i], (ids[i], (j - i) as u64));
            self.events += (j - i) as u64;
            i = j;
        }
    }

    /// The acknowledged id at `offset`, if one was.
    fn at(&self, offset: u64) -> Option<u64> {
        let (&first, &(id, len)) = self.runs.range(..=offset).next_back()?;
        (offset < first + len).then(|| id + (offset - first))
    }

    /// Acknowledged events at offsets `from..to`.
    fn count_in(&self, from: u64, to: u64) -> u64 {
        let mut n = 0;
        if let Some((&first, &(_, len))) = self.runs.range(..from).next_back() {
            n += (first + len).min(to).saturating_sub(from);
        }
        for (&first, &(_, len)) in self.runs.range(from..to) {
            n += (first + len).min(to) - first;
        }
        n
    }
}

/// The load's shared state: acknowledged events, latency histograms, ids.
struct Load {
    clients: Vec<Arc<Client>>,
    acked: Mutex<Acked>,
    next_id: AtomicU64,
    failed: AtomicU64,
    /// Set while some node is taking a snapshot (the sampler's view).
    snapshotting: AtomicBool,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("bounds")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Load {
    fn new(endpoints: &[String], clients: usize) -> Result<Load, BenchError> {
        let cfg = ClientConfig::new(endpoints.to_vec());
        let clients = (0..clients)
            .map(|_| Client::new(cfg.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Ok(Load {
            clients,
            acked: Mutex::default(),
            // High bits from the clock: ids of earlier runs on the same data never collide.
            next_id: AtomicU64::new((seed & 0xFFFF_FF00_0000_0000) | 1),
            failed: AtomicU64::new(0),
            snapshotting: AtomicBool::new(false),
        })
    }

    /// Publishes one request of `n` events; records what was acknowledged.
    async fn publish(&self, client: &Client, n: usize, payload: &Bytes) -> bool {
        let first = self.next_id.fetch_add(n as u64, Ordering::Relaxed);
        let ids: Vec<u64> = (first..first + n as u64).collect();
        let evs = ids
            .iter()
            .map(|&id| Event::new("soak", Priority::Medium, payload.clone()).with_id(id))
            .collect();
        match client.publish(evs).await {
            Ok(offsets) => {
                lock(&self.acked).add(&ids, &offsets);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "publish failed");
                self.failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Closed loop until `events` are sent: (events acked, all latency, during snapshots).
    async fn closed(
        self: &Arc<Self>,
        events: u64,
        batch: usize,
        payload: Bytes,
    ) -> (u64, Histogram<u64>, Histogram<u64>) {
        let sent = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in self.clients.clone() {
            let (load, sent, payload) = (self.clone(), sent.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let (mut all, mut snap, mut acked) = (hist(), hist(), 0);
                loop {
                    let before = sent.fetch_add(batch as u64, Ordering::Relaxed);
                    if before >= events {
                        break;
                    }
                    let n = (events - before).min(batch as u64) as usize;
                    let t = Instant::now();
                    if load.publish(&c, n, &payload).await {
                        acked += n as u64;
                    }
                    let d = t.elapsed().as_nanos() as u64;
                    all.saturating_record(d);
                    if load.snapshotting.load(Ordering::Relaxed) {
                        snap.saturating_record(d);
                    }
                }
                (acked, all, snap)
            }));
        }
        let (mut acked, mut all, mut snap) = (0, hist(), hist());
        for t in tasks {
            if let Ok((a, h, s)) = t.await {
                acked += a;
                all.add(h).expect("same bounds");
                snap.add(s).expect("same bounds");
            }
        }
        (acked, all, snap)
    }

    /// Open loop at `rate` events/s until `stop`; latency from each request's due time.
    async fn open(
        self: &Arc<Self>,
        rate: u64,
        batch: usize,
        payload: Bytes,
        stop: Arc<AtomicBool>,
    ) -> Histogram<u64> {
        let step = Duration::from_secs_f64(batch as f64 / rate.max(1) as f64);
        let all = Arc::new(Mutex::new(hist()));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        let mut r: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let due = t0 + step * r as u32;
            tokio::time::sleep_until(due.into()).await;
            let c = self.clients[r as usize % self.clients.len()].clone();
            let (load, payload, all) = (self.clone(), payload.clone(), all.clone());
            tasks.push(tokio::spawn(async move {
                load.publish(&c, batch, &payload).await;
                lock(&all).saturating_record(due.elapsed().as_nanos() as u64);
            }));
            r += 1;
            if tasks.len() > 4096 {
                tasks.retain(|t| !t.is_finished());
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        let h = lock(&all).clone();
        h
    }
}

/// Samples the nodes while a phase runs: peak snapshot file size, snapshot activity (a node's
/// compaction count moved since the last sample), status.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<BTreeMap<u64, u64>>,
}

impl Sampler {
    fn start(cluster: &ProcessCluster, load: Arc<Load>) -> Sampler {
        let ids: Vec<(u64, PathBuf, String)> = (1..=cluster.len() as u64)
            .map(|id| (id, cluster.data_dir(id), cluster.addr(id).to_owned()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut max_snapshot: BTreeMap<u64, u64> = BTreeMap::new();
            let mut compactions: BTreeMap<u64, u64> = BTreeMap::new();
            while !s.load(Ordering::Relaxed) {
                let mut moving = false;
                for (id, dir, addr) in &ids {
                    let size = std::fs::metadata(dir.join("state.snapshot")).map_or(0, |m| m.len());
                    let e = max_snapshot.entry(*id).or_default();
                    *e = (*e).max(size);
                    if let Ok(st) =
                        eventstream_client::status_of(addr, Duration::from_millis(300)).await
                    {
                        let c = compactions.entry(*id).or_insert(st.counters.compactions);
                        moving |= st.counters.compactions != *c;
                        *c = st.counters.compactions;
                    }
                }
                load.snapshotting.store(moving, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            max_snapshot
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> BTreeMap<u64, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// Runs `bench soak` with `exe` as the node binary.
pub fn run(a: &SoakOptions, exe: &Path) -> Result<SoakReport, BenchError> {
    if a.nodes == 0 || a.batch == 0 || a.clients == 0 || a.payloads.is_empty() {
        return Err(BenchError::option(
            "nodes/batch/clients/payloads",
            "must be at least 1",
        ));
    }
    let (_scratch, dir) = crate::common::bench_dir(a.data_dir.as_deref(), "soak")?;
    eventstream_testkit::runtime(2)?.block_on(soak(a, exe, &dir))
}

fn node_flags(a: &SoakOptions) -> Vec<String> {
    [
        ("--retention-max-bytes", a.retention_bytes),
        ("--storage-stream-segment-bytes", a.segment_bytes),
        ("--storage-snapshot-bytes", a.snapshot_bytes),
    ]
    .iter()
    .flat_map(|(f, v)| [f.to_string(), v.to_string()])
    .collect()
}

async fn soak(a: &SoakOptions, exe: &Path, dir: &Path) -> Result<SoakReport, BenchError> {
    let started = Instant::now();
    let mut cluster = ProcessCluster::start(exe, a.nodes, dir, &node_flags(a))?;
    let leader = cluster.wait_healthy(Duration::from_secs(30)).await?;
    let load = Arc::new(Load::new(&cluster.endpoints(), a.clients)?);
    let mut report = SoakReport {
        nodes: a.nodes,
        retention_bytes: a.retention_bytes,
        segment_bytes: a.segment_bytes,
        snapshot_bytes: a.snapshot_bytes,
        follower_gap_bytes: a.follower_gap_bytes,
        ..SoakReport::default()
    };
    // 1. Write.
    let sampler = Sampler::start(&cluster, load.clone());
    for &p in &a.payloads {
        let share = a.total_bytes / a.payloads.len() as u64;
        let events = share / p.max(1) as u64;
        let t = Instant::now();
        let failed_before = load.failed.load(Ordering::Relaxed);
        let (acked, all, snap) = load
            .closed(events, a.batch, Bytes::from(vec![b's'; p]))
            .await;
        let secs = t.elapsed().as_secs_f64();
        let w = WritePhase {
            payload_bytes: p,
            events: acked,
            seconds: secs,
            events_per_sec: acked as f64 / secs,
            payload_mb_per_sec: (acked * p as u64) as f64 / secs / 1e6,
            commit: Latency::of(&all),
            commit_during_snapshots: Latency::of(&snap),
            failed_requests: load.failed.load(Ordering::Relaxed) - failed_before,
        };
        eprintln!("soak write {p} B: {w:?}");
        report.written_payload_bytes += acked * p as u64;
        report.write.push(w);
    }
    let max_snapshot = sampler.finish().await;
    cluster.wait_quiescent(Duration::from_secs(120)).await?;
    // One compaction pass (5 s apart by default) after the last write: retention has run.
    tokio::time::sleep(Duration::from_secs(6)).await;
    report.node = node_figures(&cluster, &max_snapshot).await;
    // 2. Catch-up read from a follower, with writes at half rate.
    let follower = (1..=a.nodes as u64)
        .find(|&i| i != leader)
        .unwrap_or(leader);
    report.catch_up = catch_up(a, &cluster, &load, follower, &report.write).await?;
    // 3. Verify every node.
    let mut checked = 0;
    let mut lost = 0;
    for id in 1..=a.nodes as u64 {
        let (c, l, _, _, _) = read_all(cluster.addr(id), &load).await?;
        checked += c;
        lost += l;
    }
    report.checked_events = checked;
    report.lost = lost;
    // 4. Crash restart of a follower.
    let leader = cluster.wait_healthy(Duration::from_secs(30)).await?;
    let victim = (1..=a.nodes as u64)
        .rev()
        .find(|&i| i != leader)
        .unwrap_or(leader);
    if victim != leader {
        report.restart_retained_bytes = status(&cluster, victim)
            .await
            .map_or(0, |s| s.stream.retained_bytes);
        cluster.kill(victim);
        let t = Instant::now();
        cluster.restart(victim)?;
        wait_serving(&cluster, victim, leader, Duration::from_secs(120)).await?;
        report.crash_restart_ms = t.elapsed().as_secs_f64() * 1e3;
        eprintln!(
            "soak crash restart of node {victim}: {:.0} ms",
            report.crash_restart_ms
        );
    }
    // 5. Follower catch-up after a gap.
    if a.follower_gap_bytes > 0 && victim != leader {
        let (secs, copied) = follower_catch_up(a, &mut cluster, &load, victim).await?;
        report.follower_catch_up_secs = secs;
        report.follower_copied_bytes = copied;
        let (c, l, _, _, _) = read_all(cluster.addr(victim), &load).await?;
        report.checked_events += c;
        report.lost += l;
    }
    report.verified = report.lost == 0 && report.checked_events > 0;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn status(cluster: &ProcessCluster, id: u64) -> Option<ClusterStatus> {
    eventstream_client::status_of(cluster.addr(id), Duration::from_secs(2))
        .await
        .ok()
}

async fn node_figures(
    cluster: &ProcessCluster,
    max_snapshot: &BTreeMap<u64, u64>,
) -> Vec<NodeFigures> {
    let mut out = Vec::new();
    for id in 1..=cluster.len() as u64 {
        let st = status(cluster, id).await.unwrap_or_default();
        let rss = cluster.pid(id).map_or(0, peak_rss);
        let f = NodeFigures {
            id,
            rss_max_bytes: rss,
            retained_bytes: st.stream.retained_bytes,
            segments: st.stream.segments,
            snapshot_bytes_max: max_snapshot.get(&id).copied().unwrap_or(0),
            snapshot_ms_max: st.snapshot_max_ms,
            compactions: st.counters.compactions,
            retained_per_rss: st.stream.retained_bytes as f64 / rss.max(1) as f64,
        };
        eprintln!("soak node {id}: {f:?}");
        out.push(f);
    }
    out
}

/// VmHWM of process `pid`, bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Reads node `addr`'s whole retained stream from its first offset to the next offset at the
/// start, checking every acknowledged event: (checked, lost, events read, payload bytes, s).
async fn read_all(addr: &str, load: &Load) -> Result<(u64, u64, u64, u64, f64), BenchError> {
    let st = eventstream_client::status_of(addr, Duration::from_secs(2)).await?;
    let (mut first, next) = (st.stream_first_offset, st.stream_next_offset);
    let client = Client::new(ClientConfig::new(vec![addr.to_owned()]))?;
    let subscribe_from = |from_offset| {
        client.subscribe(SubscribeBody {
            from_offset,
            ..SubscribeBody::default()
        })
    };
    let mut sub = subscribe_from(first);
    let t = Instant::now();
    let (mut events, mut bytes, mut checked) = (0u64, 0u64, 0u64);
    let mut expect = first;
    while expect < next {
        let got = match sub.next_timeout(Duration::from_secs(30)).await {
            // Retention (still at work on a node that has just copied a long prefix) dropped
            // the segment ahead of the reader: what it held is no longer retained, so the
            // check goes on from the earliest offset and counts only what is kept.
            Err(ClientError::Compacted { earliest, .. }) if earliest > expect => {
                eprintln!("soak read {addr}: retention moved the start from {first} to {earliest}");
                (first, expect) = (earliest, earliest);
                // Every event checked so far was below `earliest`.
                checked = 0;
                sub = subscribe_from(earliest);
                continue;
            }
            other => other?,
        };
        let Some((o, e)) = got else {
            return Err(BenchError::Failed(format!(
                "{addr} stopped serving at offset {expect} of {next}"
            )));
        };
        if o != expect {
            return Err(BenchError::Failed(format!(
                "{addr} served offset {o} where {expect} was next"
            )));
        }
        expect = o + 1;
        events += 1;
        bytes += e.payload.len() as u64;
        if let Some(id) = lock(&load.acked).at(o) {
            if id == e.id.0 {
                checked += 1;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let should = lock(&load.acked).count_in(first, next);
    eprintln!("soak read {addr}: {events} events, {bytes} payload bytes in {secs:.1} s; checked {checked} of {should} acknowledged");
    Ok((checked, should - checked.min(should), events, bytes, secs))
}

async fn catch_up(
    a: &SoakOptions,
    cluster: &ProcessCluster,
    load: &Arc<Load>,
    follower: u64,
    write: &[WritePhase],
) -> Result<CatchUp, BenchError> {
    let best = write
        .iter()
        .max_by(|x, y| x.payload_mb_per_sec.total_cmp(&y.payload_mb_per_sec))
        .cloned()
        .unwrap_or_else(|| panic!("a write phase ran"));
    let payload = Bytes::from(vec![b'c'; best.payload_bytes]);
    let rate = (best.events_per_sec / 2.0) as u64;
    let batch = a.batch;
    let run_open = |stop: Arc<AtomicBool>| {
        let (load, payload) = (load.clone(), payload.clone());
        tokio::spawn(async move { load.open(rate, batch, payload, stop).await })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let w = run_open(stop.clone());
    tokio::time::sleep(Duration::from_secs(a.baseline_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let without = w.await.unwrap_or_else(|_| hist());
    let stop = Arc::new(AtomicBool::new(false));
    let w = run_open(stop.clone());
    let read = read_all(cluster.addr(follower), load).await;
    stop.store(true, Ordering::Relaxed);
    let with = w.await.unwrap_or_else(|_| hist());
    let (_, _, events, bytes, secs) = read?;
    let read_mb = bytes as f64 / secs / 1e6;
    let (lw, lr) = (Latency::of(&without), Latency::of(&with));
    let c = CatchUp {
        write_rate: rate,
        payload_bytes: best.payload_bytes,
        commit_without_reader: lw,
        commit_with_reader: lr,
        read_events: events,
        read_payload_bytes: bytes,
        read_seconds: secs,
        read_mb_per_sec: read_mb,
        read_to_write_ratio: read_mb / best.payload_mb_per_sec,
        p99_ratio: lr.p99_ms / lw.p99_ms.max(1e-3),
    };
    eprintln!("soak catch-up: {c:?}");
    Ok(c)
}

/// Waits until node `id` answers and has applied what the leader had committed when the wait
/// began.
async fn wait_serving(
    cluster: &ProcessCluster,
    id: u64,
    leader: u64,
    timeout: Duration,
) -> Result<(), BenchError> {
    let target = status(cluster, leader).await.map_or(0, |s| s.commit_index);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = status(cluster, id).await {
            if s.leader_id.is_some() && s.applied_index >= target {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!(
                "node {id} not serving after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stops `victim`, writes `follower_gap_bytes`, restarts it: seconds until it is caught up and
/// lacks nothing, and the bytes it copied.
async fn follower_catch_up(
    a: &SoakOptions,
    cluster: &mut ProcessCluster,
    load: &Arc<Load>,
    victim: u64,
) -> Result<(f64, u64), BenchError> {
    cluster.terminate(victim, Duration::from_secs(30))?;
    let p = *a.payloads.last().expect("payloads checked");
    let (acked, _, _) = load
        .closed(
            a.follower_gap_bytes / p as u64,
            a.batch,
            Bytes::from(vec![b'g'; p]),
        )
        .await;
    eprintln!("soak: {acked} events written while node {victim} was down");
    let up: Vec<u64> = (1..=cluster.len() as u64)
        .filter(|&i| i != victim)
        .collect();
    let leader = cluster
        .wait_agreed_leader(&up, Duration::from_secs(30))
        .await?;
    let t = Instant::now();
    cluster.restart(victim)?;
    wait_serving(cluster, victim, leader, Duration::from_secs(600)).await?;
    loop {
        let s = status(cluster, victim).await;
        if s.as_ref().is_some_and(|s| s.stream.missing_events == 0) {
            let secs = t.elapsed().as_secs_f64();
            let copied = s.map_or(0, |s| s.stream.copied_bytes);
            eprintln!("soak follower catch-up: {secs:.1} s, {copied} bytes copied");
            return Ok((secs, copied));
        }
        if t.elapsed() > Duration::from_secs(1800) {
            return Err(BenchError::Failed(format!(
                "node {victim} still lacks offsets after 30 min"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(
            f,
            "soak: {} nodes, {} GB written, retention {} GB per node",
            r.nodes,
            r.written_payload_bytes as f64 / 1e9,
            r.retention_bytes as f64 / 1e9
        )?;
        for w in &r.write {
            writeln!(
                f,
                "  write {} B: {:.0} events/s ({:.1} MB/s), commit p50 {:.2} ms p99 {:.2} ms, during snapshots p99 {:.2} ms ({} requests)",
                w.payload_bytes, w.events_per_sec, w.payload_mb_per_sec, w.commit.p50_ms, w.commit.p99_ms, w.commit_during_snapshots.p99_ms, w.commit_during_snapshots.requests
            )?;
        }
        for n in &r.node {
            writeln!(
                f,
                "  node {}: rss max {:.0} MB, retained {:.2} GB in {} segments ({:.1}× rss), snapshot max {} KB / {} ms",
                n.id, n.rss_max_bytes as f64 / 1e6, n.retained_bytes as f64 / 1e9, n.segments, n.retained_per_rss, n.snapshot_bytes_max / 1024, n.snapshot_ms_max
            )?;
        }
        let c = &r.catch_up;
        writeln!(
            f,
            "  catch-up read: {:.1} MB/s ({:.1}× the write rate); commit p99 at {} events/s {:.2} ms without the reader, {:.2} ms with ({:.2}×)",
            c.read_mb_per_sec, c.read_to_write_ratio, c.write_rate, c.commit_without_reader.p99_ms, c.commit_with_reader.p99_ms, c.p99_ratio
        )?;
        writeln!(
            f,
            "  crash restart with {:.2} GB retained: {:.0} ms",
            r.restart_retained_bytes as f64 / 1e9,
            r.crash_restart_ms
        )?;
        writeln!(
            f,
            "  follower catch-up after {:.2} GB: {:.1} s ({:.2} GB copied)",
            r.follower_gap_bytes as f64 / 1e9,
            r.follower_catch_up_secs,
            r.follower_copied_bytes as f64 / 1e9
        )?;
        writeln!(
            f,
            "  checked {} acknowledged events, lost {}, verified {}",
            r.checked_events, r.lost, r.verified
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Acked;

    #[test]
    fn acked_runs_answer_by_offset_and_count_ranges() {
        let mut a = Acked::default();
        a.add(&[10, 11, 12, 20], &[0, 1, 2, 3]);
        a.add(&[30, 31], &[7, 8]);
        assert_eq!(a.events, 6);
        assert_eq!(
            (a.at(0), a.at(2), a.at(3), a.at(4), a.at(8)),
            (Some(10), Some(12), Some(20), None, Some(31))
        );
        assert_eq!(a.count_in(0, 100), 6);
        assert_eq!(a.count_in(1, 8), 4);
        assert_eq!(a.count_in(4, 7), 0);
    }
}
