//! `bench overload`: producers faster than the cluster. Three real node processes;
//! the benchmark measures the cluster's capacity (closed loop), then offers a multiple of it
//! (open loop, `--factor`, default 2) for `--duration` seconds over several raw connections to
//! the leader (a producer follows a leader change: it drains its connection, finds the new
//! leader and goes on), samples every node's RSS, the leader's term and the acknowledged count
//! each second, and checks exact accounting at the end:
//!
//! * every request gets exactly one answer, and the client-side tallies add up:
//!   `offered == acked + rejected (by kind) + indeterminate`;
//! * the nodes' own publish counters, summed over the nodes, equal what the clients observed,
//!   kind by kind;
//! * the nodes run with retention (`--retention-max-events`, default 1 M), so each node keeps
//!   only the newest events; below a node's earliest retained offset (as the node reports it,
//!   in the `Compacted` answer to a subscription from offset 0) events are gone by design. Every
//!   acknowledged event at or above it is in that node's stream exactly once, at its
//!   acknowledged offset; the acknowledged offsets are distinct and below the stream's next
//!   offset; every offset below the earliest that was not acknowledged is accounted for by an
//!   indeterminate request (so with no indeterminate requests the trimmed events are exactly
//!   the acknowledged ones below the earliest offset, and `next offset == acked events`); no
//!   event of a request refused at the in-flight limit (or by raft) is anywhere; nothing that
//!   was not offered is anywhere; all nodes hold the same events over their common range.
//!
//! Memory: RSS of every node is sampled each second. "Flat" (checked when the soak lasts at
//! least [`FLAT_MIN_DURATION_S`] seconds) means, per node, over the second half of the soak
//! (after warm-up, the retention limit being reached and the first compactions): a
//! least-squares slope below [`FLAT_MAX_SLOPE_KIB_S`] and no peak above the first half's peak
//! plus [`FLAT_MAX_NEW_PEAK_KIB`]; and the load went on (the second half acknowledged at
//! least half as many events as the first), so that flat means flat under load.

use crate::error::BenchError;
use bytes::{Bytes, BytesMut};
use eventstream_client::net::FrameReader;
use eventstream_core::replication::{PublishCounts, PublishOutcome, PublishOutcomes};
use eventstream_core::{Event, Priority};
use eventstream_node::config::OverloadPolicy;
use eventstream_proto::frame::{self, ErrorCode, Kind, SubscribeBody};
use eventstream_testkit::ProcessCluster;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Options of `bench overload`.
#[derive(Debug, Clone)]
pub struct OverloadOptions {
    /// Seconds of overload (the soak); the capacity measurement comes before it.
    pub duration: u64,
    /// Seconds of the closed-loop capacity measurement.
    pub capacity_seconds: u64,
    /// Offered load as a multiple of the measured capacity.
    pub factor: f64,
    /// Producer connections (all to the leader).
    pub clients: usize,
    /// Events per publish request.
    pub batch: usize,
    /// Payload bytes per event.
    pub payload_bytes: usize,
    /// The nodes' overload policy (`reject` or `block`).
    pub policy: OverloadPolicy,
    /// The nodes' `limits.max_inflight_events` (default: the node default).
    pub max_inflight_events: Option<usize>,
    /// The nodes' `limits.max_inflight_per_connection` (default: the node default).
    pub max_inflight_per_connection: Option<usize>,
    /// The nodes' `retention.max_events`: each node keeps about this many of the newest
    /// events (0 = no limit: memory then grows with the stream).
    pub retention_max_events: u64,
    /// The nodes' `retention.max_bytes` (0 = no limit).
    pub retention_max_bytes: u64,
    /// The nodes' `storage.stream_segment_bytes`: retention deletes whole segments, so a run
    /// that should see it trim writes more than one segment.
    pub stream_segment_bytes: u64,
    /// The nodes' `storage.snapshot_entries` (entries applied between compactions).
    pub snapshot_entries: u64,
    /// The nodes' `storage.log_keep_entries` (entries kept below the applied index at compaction).
    pub log_keep_entries: u64,
    /// The nodes' `storage.compaction_interval_ms`.
    pub compaction_interval_ms: u64,
    /// The `eventstream` binary to run as nodes (default: this executable).
    pub binary: Option<PathBuf>,
    /// Keep the nodes' data directories and logs.
    pub keep: bool,
}

impl Default for OverloadOptions {
    fn default() -> Self {
        OverloadOptions {
            duration: 180,
            capacity_seconds: 5,
            factor: 2.0,
            clients: 8,
            batch: 20,
            payload_bytes: 100,
            policy: "reject".parse().expect("static default"),
            max_inflight_events: None,
            max_inflight_per_connection: None,
            retention_max_events: 1_000_000,
            retention_max_bytes: 0,
            stream_segment_bytes: 64 << 20,
            snapshot_entries: 1_000,
            log_keep_entries: 500,
            compaction_interval_ms: 5_000,
            binary: None,
            keep: false,
        }
    }
}

/// What the clients counted, each as `[requests, events]`: the outcomes the nodes count too,
/// plus what only a client sees (what it wrote, what was never answered).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Tally {
    /// Requests written to the socket.
    pub offered: [u64; 2],
    /// The answers by outcome, told apart by code and message (serialized flat, next to
    /// `offered`). Ring rejections and timeouts are indeterminate: possibly (partly) stored.
    #[serde(flatten)]
    pub answered: PublishOutcomes,
    /// Requests that never got an answer (must be 0).
    pub unanswered: [u64; 2],
}

impl Tally {
    /// Counts one offered request of `events` events and its outcome (`None`: unanswered).
    fn count(&mut self, outcome: Option<PublishOutcome>, events: u64) {
        let slot = match outcome {
            Some(o) => self.answered.get_mut(o),
            None => &mut self.unanswered,
        };
        slot[0] += 1;
        slot[1] += events;
        self.offered[0] += 1;
        self.offered[1] += events;
    }

    /// Every outcome plus the unanswered: equals `offered` when the accounting is exact.
    fn accounted(&self) -> [u64; 2] {
        let t = self.answered.total();
        [t[0] + self.unanswered[0], t[1] + self.unanswered[1]]
    }
}

/// Other errors the clients got, by code and message, with counts.
pub type OtherErrors = std::collections::BTreeMap<String, u64>;

/// Soaks at least this long (seconds) must keep every node's RSS flat to be valid.
pub const FLAT_MIN_DURATION_S: u64 = 60;
/// "Flat": the least-squares RSS slope over the second half of the soak stays below this
/// (0.5 MiB/s, KiB/s). The unbounded log this replaced grew ~25 MiB/s at the same load; a
/// leak of even 2% of that rate fails it, while the saw-tooth of compaction (snapshot encoded,
/// old log dropped) averages out over 90 s.
pub const FLAT_MAX_SLOPE_KIB_S: f64 = 512.0;
/// "Flat": no RSS peak in the second half above the first half's peak plus this (KiB). The
/// retention limit is reached within seconds, so the first half already holds the retained
/// stream, the raft log tail and a served snapshot; a second-half peak beyond it is growth.
pub const FLAT_MAX_NEW_PEAK_KIB: u64 = 64 << 10;

/// One node's memory and stream at the end of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeReport {
    /// Raft id.
    pub id: u64,
    /// Earliest retained offset, as the node reported it (`Compacted` to a subscription from
    /// offset 0, or 0 when nothing was trimmed).
    pub earliest_offset: u64,
    /// The stream's next offset.
    pub next_offset: u64,
    /// Events read back (offsets `earliest..next`).
    pub events_read: u64,
    /// Acknowledged events below `earliest_offset` (trimmed by retention, by design).
    pub acked_trimmed: u64,
    /// Acknowledged events at or above `earliest_offset` not found exactly once at their
    /// offset (must be 0).
    pub acked_missing: u64,
    /// Offsets below `earliest_offset` that no acknowledgement covers (must be covered by
    /// indeterminate requests: 0 when there are none).
    pub trimmed_not_acked: u64,
    /// A subscription from offset 0 was answered `Compacted` (expected once anything was
    /// trimmed).
    pub compacted_from_zero: bool,
    /// RSS at the first sample of the soak, KiB.
    pub rss_start_kib: u64,
    /// Largest RSS during the soak, KiB.
    pub rss_max_kib: u64,
    /// RSS at the last sample, KiB.
    pub rss_end_kib: u64,
    /// Largest RSS in the first half of the soak, KiB.
    pub rss_max_first_half_kib: u64,
    /// Largest RSS in the second half of the soak, KiB.
    pub rss_max_second_half_kib: u64,
    /// Least-squares slope of RSS over the whole soak, KiB/s.
    pub rss_slope_kib_per_s: f64,
    /// Least-squares slope of RSS over the second half of the soak, KiB/s.
    pub rss_slope_second_half_kib_per_s: f64,
    /// Second-half slope below [`FLAT_MAX_SLOPE_KIB_S`] and no new peak beyond
    /// [`FLAT_MAX_NEW_PEAK_KIB`].
    pub rss_flat: bool,
    /// `(second, RSS KiB)` samples.
    pub rss_samples: Vec<(u64, u64)>,
}

/// What `bench overload` reports.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadReport {
    /// Overload policy of the nodes.
    pub policy: String,
    /// The nodes' retention limit, events (0 = none).
    pub retention_max_events: u64,
    /// The nodes' retention limit, bytes (0 = none).
    pub retention_max_bytes: u64,
    /// The nodes' `snapshot_entries`.
    pub snapshot_entries: u64,
    /// The nodes' `log_keep_entries`.
    pub log_keep_entries: u64,
    /// Measured capacity, events/s (closed loop).
    pub capacity_events_per_sec: f64,
    /// Offered rate targeted during the soak, events/s.
    pub target_offered_events_per_sec: f64,
    /// Offered rate achieved (written to the sockets), events/s.
    pub offered_events_per_sec: f64,
    /// Acknowledged rate during the soak, events/s.
    pub acked_events_per_sec: f64,
    /// Soak seconds.
    pub duration_s: f64,
    /// Client-side tallies of the soak (`[requests, events]`).
    pub soak: Tally,
    /// Client-side tallies of the whole run (capacity phase + soak).
    pub total: Tally,
    /// Requests answered with other errors (not leader, no leader, ...), by message.
    pub other_errors: OtherErrors,
    /// The nodes' own counters, summed over the nodes (whole run).
    pub node_counters: PublishCounts,
    /// The nodes' summed counters equal the clients' tallies, kind by kind.
    pub node_counters_match: bool,
    /// offered == acked + every rejection kind + indeterminate, and nothing unanswered.
    pub accounting_exact: bool,
    /// Distinct acknowledged events (each has its own offset).
    pub acked_distinct_events: u64,
    /// Acknowledged offsets that were not distinct or not below the next offset (must be 0).
    pub acked_offsets_invalid: u64,
    /// Events of indeterminate requests (ring rejections, timeouts): each may or may not be
    /// stored.
    pub indeterminate_offered_events: u64,
    /// The stream's next offset (the same on every node).
    pub next_offset: u64,
    /// `next_offset - acked_distinct_events`: stored events that were not acknowledged. Must
    /// be at most `indeterminate_offered_events` (0 when that is 0).
    pub stored_not_acked: u64,
    /// Acknowledged events trimmed by retention on the node that trimmed least.
    pub acked_trimmed_min: u64,
    /// Acknowledged events at or above each node's earliest offset found exactly once at
    /// their offset on that node.
    pub acked_found_on_every_node: bool,
    /// Events of requests refused at an in-flight limit or by raft found in some stream
    /// (must be 0).
    pub refused_but_stored: u64,
    /// Events found in a stream that were never offered, found twice, or at another offset
    /// than acknowledged (must be 0).
    pub unexpected_in_stream: u64,
    /// Indeterminate events (timeouts, ring rejections) found in the retained stream.
    pub indeterminate_stored: u64,
    /// Every node holds the same events over the range all of them retain.
    pub nodes_agree: bool,
    /// Offsets all nodes retain: `common_from..next_offset`.
    pub common_from: u64,
    /// The leader at the end is not the one the producers were connected to.
    pub leader_changed: bool,
    /// Leader changes seen by the once-a-second status polls during the soak (a second with
    /// no leader counts as a change when a leader reappears).
    pub leader_changes: u64,
    /// Highest term seen minus the term at the start of the soak.
    pub term_increase: u64,
    /// `(second, leader id or 0, term)` of each second of the soak.
    pub leader_samples: Vec<(u64, u64, u64)>,
    /// `(second, each node's role@term)` of each second of the soak (`?`: no status in 1 s).
    pub role_samples: Vec<(u64, Vec<String>)>,
    /// `(second, events acknowledged so far)` of each second of the soak (whole run).
    pub acked_samples: Vec<(u64, u64)>,
    /// Events acknowledged in the first half of the soak (from the run's start).
    pub first_half_acked_events: u64,
    /// Events acknowledged in the second half of the soak.
    pub second_half_acked_events: u64,
    /// The second half acknowledged at least half as many events as the first (required for
    /// a valid soak: flat RSS without load means nothing).
    pub load_sustained: bool,
    /// Each node's replication counters at the end (elections, send failures, compactions).
    pub replication_counters: Vec<serde_json::Value>,
    /// Per node: offsets, trimming, RSS.
    pub nodes: Vec<NodeReport>,
    /// Every node's RSS was flat (required, together with no leader change during the soak,
    /// when the soak lasts at least [`FLAT_MIN_DURATION_S`] seconds).
    pub rss_flat: bool,
    /// True when every check passed.
    pub valid: bool,
}

/// One producer connection's record: per request its outcome (`None` until answered), per
/// event its offset.
#[derive(Debug, Default)]
struct Ledger {
    /// Requests answered with other errors, by code and message.
    other: std::collections::BTreeMap<String, u64>,
    outcome: Vec<Option<PublishOutcome>>,
    offsets: Vec<u64>,
    soak_from_req: usize,
}

fn event_id(conn: usize, seq: u64) -> u64 {
    ((conn as u64 + 1) << 40) | seq
}

fn read_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

fn net_error(addr: &str, source: std::io::Error) -> BenchError {
    BenchError::Network {
        peer: addr.into(),
        source,
    }
}

async fn connect_client(addr: &str) -> Result<TcpStream, BenchError> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| net_error(addr, e))?;
    let _ = s.set_nodelay(true);
    let mut s = s;
    let mut b = BytesMut::new();
    frame::put_frame(
        &mut b,
        Kind::Hello,
        &frame::encode_hello(frame::Role::Client),
    );
    s.write_all(&b).await.map_err(|e| net_error(addr, e))?;
    Ok(s)
}

/// A client connection to `addr` on which `request` (whole frames) has been sent: the reader
/// of the answers, and the writer (kept open until the answers are read).
async fn send_request(
    addr: &str,
    request: &[u8],
) -> Result<(FrameReader<OwnedReadHalf>, OwnedWriteHalf), BenchError> {
    let (r, mut w) = connect_client(addr).await?.into_split();
    w.write_all(request).await.map_err(|e| net_error(addr, e))?;
    Ok((FrameReader::new(r, 64 << 20), w))
}

/// The next frame `addr` sends on `reader` (`None` at the end of the stream) within `wait`;
/// `late` says what did not come in time.
async fn next_answer(
    reader: &mut FrameReader<OwnedReadHalf>,
    addr: &str,
    wait: Duration,
    late: impl FnOnce() -> String,
) -> Result<Option<(Kind, Bytes)>, BenchError> {
    tokio::time::timeout(wait, reader.next())
        .await
        .map_err(|_| BenchError::Timeout(late()))?
        .map_err(|e| net_error(addr, e))
}

/// The status JSON of a node, with its `publishes` counters.
async fn raw_status(addr: &str) -> Result<serde_json::Value, BenchError> {
    let mut b = BytesMut::new();
    frame::put_status(&mut b, 1);
    let (mut reader, _w) = send_request(addr, &b).await?;
    let f = next_answer(&mut reader, addr, Duration::from_secs(5), || {
        format!("status of {addr}")
    })
    .await?;
    match f {
        Some((Kind::StatusOk, body)) if body.len() >= 8 => serde_json::from_slice(&body[8..])
            .map_err(|e| BenchError::Timeout(format!("status of {addr}: {e}"))),
        _ => Err(BenchError::Timeout(format!("no status from {addr}"))),
    }
}

/// The leader as the nodes report it: the address of a node whose status says it leads,
/// polled until `timeout`.
async fn find_leader(endpoints: &[String], timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for ep in endpoints {
            if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(1), raw_status(ep)).await {
                if v["role"].as_str() == Some("leader") {
                    return Some(ep.clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// How one producer sends: `rate` events/s (0 = closed loop with `window` requests
/// outstanding).
#[derive(Debug, Clone)]
struct ProducerPlan {
    batch: usize,
    payload: Bytes,
    rate: f64,
    window: usize,
    /// How long to wait for outstanding answers when a connection ends.
    drain: Duration,
}

/// Runs one producer until `stop`: a connection to the leader, and after a leader change
/// (`NotLeader`, or `Unavailable` without a leader) a new connection to the new leader, the
/// way a real producer follows redirects. Each connection's outstanding requests are drained
/// (every one answered) before the next starts; `acked` counts acknowledged events as they
/// arrive (the soak samples it each second).
async fn producer(
    conn: usize,
    endpoints: Arc<Vec<String>>,
    mut addr: String,
    ledger: Arc<Mutex<Ledger>>,
    plan: ProducerPlan,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Result<(), BenchError> {
    loop {
        let lost = producer_connection(conn, &addr, &ledger, &plan, &stop, &acked).await?;
        if !lost || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match find_leader(&endpoints, Duration::from_secs(30)).await {
            Some(l) => addr = l,
            None => {
                return Err(BenchError::Timeout(
                    "no leader within 30 s of a leader change".into(),
                ))
            }
        }
    }
}

/// One connection of [`producer`]. Returns true when it ended because the node is no longer
/// the leader.
async fn producer_connection(
    conn: usize,
    addr: &str,
    ledger: &Arc<Mutex<Ledger>>,
    plan: &ProducerPlan,
    stop: &AtomicBool,
    acked: &Arc<AtomicU64>,
) -> Result<bool, BenchError> {
    let batch = plan.batch;
    let s = connect_client(addr).await?;
    let (r, mut w) = s.into_split();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let outstanding = Arc::new(tokio::sync::Semaphore::new(plan.window.max(1)));
    let lost = Arc::new(AtomicBool::new(false));
    let reader_ledger = ledger.clone();
    let reader_out = outstanding.clone();
    let reader_lost = lost.clone();
    let reader_acked = acked.clone();
    let reader = tokio::spawn(async move {
        let mut reader = FrameReader::new(r, 64 << 20);
        let mut pending = std::collections::BTreeSet::new();
        let mut closed = false;
        loop {
            // Learn about every request written so far before matching answers.
            while let Ok(req) = sent_rx.try_recv() {
                pending.insert(req);
            }
            if closed && pending.is_empty() {
                return;
            }
            let next = tokio::select! {
                f = reader.next() => f,
                req = sent_rx.recv(), if !closed => {
                    match req {
                        Some(req) => { pending.insert(req); }
                        None => closed = true,
                    }
                    continue;
                }
            };
            let Ok(Some((kind, body))) = next else {
                return;
            };
            let (req, outcome, offsets) = match kind {
                Kind::PublishOk => match frame::decode_publish_ok(&body) {
                    Ok((req, offsets)) => (req as usize, PublishOutcome::Acked, offsets),
                    Err(_) => return,
                },
                Kind::Error => match frame::decode_error(&body) {
                    Ok(e) => {
                        let o = match e.code {
                            ErrorCode::Busy if e.message.contains("in flight") => {
                                PublishOutcome::RejectedInflight
                            }
                            ErrorCode::Busy if e.message.contains("tier rings") => {
                                PublishOutcome::RejectedRings
                            }
                            // Raft refused the proposal: `Busy`, or `Unavailable` when
                            // there is no leader (the node counts both as rejected_raft).
                            ErrorCode::Busy | ErrorCode::Unavailable
                                if e.message.contains("proposal dropped") =>
                            {
                                PublishOutcome::RejectedRaft
                            }
                            ErrorCode::Timeout => PublishOutcome::TimedOut,
                            _ => PublishOutcome::OtherError,
                        };
                        if matches!(e.code, ErrorCode::NotLeader | ErrorCode::Unavailable)
                            && o == PublishOutcome::OtherError
                        {
                            // Stop sending here; the writer moves to the new leader once
                            // everything outstanding is answered.
                            reader_lost.store(true, Ordering::Relaxed);
                        }
                        if o == PublishOutcome::OtherError {
                            let mut l = reader_ledger.lock().unwrap_or_else(|p| p.into_inner());
                            *l.other
                                .entry(format!("{:?}: {}", e.code, e.message))
                                .or_default() += 1;
                        }
                        (e.req_id as usize, o, Vec::new())
                    }
                    Err(_) => return,
                },
                _ => return,
            };
            while let Ok(r) = sent_rx.try_recv() {
                pending.insert(r);
            }
            if !pending.remove(&req) {
                continue; // not ours (cannot happen: one answer per request)
            }
            {
                let mut l = reader_ledger.lock().unwrap_or_else(|p| p.into_inner());
                l.outcome[req] = Some(outcome);
                if outcome == PublishOutcome::Acked {
                    for (i, o) in offsets.iter().enumerate().take(batch) {
                        l.offsets[req * batch + i] = *o;
                    }
                    reader_acked.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
            reader_out.add_permits(1);
        }
    });
    let start = Instant::now();
    let mut req = {
        let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
        l.outcome.len()
    };
    let first_req = req;
    let mut buf = BytesMut::new();
    while !stop.load(Ordering::Relaxed) && !lost.load(Ordering::Relaxed) {
        if plan.rate > 0.0 {
            let due = (start.elapsed().as_secs_f64() * plan.rate / batch as f64) as usize;
            if req - first_req >= due {
                tokio::time::sleep(Duration::from_micros(500)).await;
                continue;
            }
        } else {
            // Wakes up now and then to notice `lost` while every request is outstanding.
            match tokio::time::timeout(Duration::from_millis(100), outstanding.acquire()).await {
                Ok(Ok(p)) => p.forget(),
                Ok(Err(_)) => break,
                Err(_) => continue,
            }
        }
        let events: Vec<Event> = (0..batch)
            .map(|i| {
                Event::new("load", Priority::High, plan.payload.clone())
                    .with_id(event_id(conn, (req * batch + i) as u64))
            })
            .collect();
        {
            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            l.outcome.push(None);
            l.offsets.extend(std::iter::repeat_n(u64::MAX, batch));
        }
        buf.clear();
        frame::put_publish(&mut buf, req as u64, &events);
        // Registered before it is written: the answer may arrive before `write_all` returns.
        let _ = sent_tx.send(req);
        req += 1;
        if w.write_all(&buf).await.is_err() {
            break;
        }
    }
    drop(sent_tx);
    let _ = tokio::time::timeout(plan.drain, reader).await;
    Ok(lost.load(Ordering::Relaxed))
}

fn tally(ledgers: &[Arc<Mutex<Ledger>>], batch: usize, soak_only: bool) -> Tally {
    let mut t = Tally::default();
    for l in ledgers {
        let l = l.lock().unwrap_or_else(|p| p.into_inner());
        let from = if soak_only { l.soak_from_req } else { 0 };
        for &o in &l.outcome[from..] {
            t.count(o, batch as u64);
        }
    }
    t
}

/// What reading one node's retained stream back found.
#[derive(Debug, Default)]
struct StreamCheck {
    events: u64,
    /// Hash of the events at offsets `>= common_from` (compared across nodes).
    common_hash: u64,
    refused: u64,
    unexpected: u64,
    indeterminate: u64,
    acked_missing: u64,
    acked_trimmed: u64,
}

/// Subscribes to `addr` from offset 0: `(earliest offset, answered Compacted)`. A node that
/// trimmed answers `Compacted` with its earliest offset in the request-id field.
async fn earliest_offset(addr: &str) -> Result<(u64, bool), BenchError> {
    let mut b = BytesMut::new();
    frame::put_subscribe(&mut b, &SubscribeBody::default());
    let (mut reader, _w) = send_request(addr, &b).await?;
    let f = next_answer(&mut reader, addr, Duration::from_secs(10), || {
        format!("no answer to a subscription on {addr}")
    })
    .await?;
    match f {
        Some((Kind::Events, _)) => Ok((0, false)),
        Some((Kind::Error, body)) => match frame::decode_error(&body) {
            Ok(e) if e.code == ErrorCode::Compacted => Ok((e.req_id, true)),
            Ok(e) => Err(BenchError::Timeout(format!(
                "subscription from 0 on {addr}: {:?}: {}",
                e.code, e.message
            ))),
            Err(e) => Err(BenchError::Timeout(format!(
                "subscription from 0 on {addr}: bad error frame: {e}"
            ))),
        },
        other => Err(BenchError::Timeout(format!(
            "subscription from 0 on {addr}: unexpected answer {:?}",
            other.map(|f| f.0)
        ))),
    }
}

/// Reads node `addr`'s stream from `from` (its earliest retained offset) to `end` and checks
/// it against the ledgers: acknowledged events below `from` are trimmed (counted), those at or
/// above it must be there exactly once at their offset.
async fn check_stream(
    addr: &str,
    ledgers: &[Arc<Mutex<Ledger>>],
    batch: usize,
    from: u64,
    end: u64,
    common_from: u64,
) -> Result<StreamCheck, BenchError> {
    let mut b = BytesMut::new();
    frame::put_subscribe(
        &mut b,
        &SubscribeBody {
            from_offset: from,
            ..SubscribeBody::default()
        },
    );
    let (mut reader, _w) = send_request(addr, &b).await?;
    let ls: Vec<_> = ledgers
        .iter()
        .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()))
        .collect();
    let mut seen: Vec<Vec<u8>> = ls.iter().map(|l| vec![0u8; l.offsets.len()]).collect();
    let mut c = StreamCheck::default();
    let mut next = from;
    while next < end {
        let f = next_answer(&mut reader, addr, Duration::from_secs(10), || {
            format!("stream of {addr} stopped at {next}")
        })
        .await?;
        let body = match f {
            Some((Kind::Events, body)) => body,
            Some((Kind::Error, body)) => {
                let why = frame::decode_error(&body)
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .unwrap_or_else(|e| e.to_string());
                return Err(BenchError::Timeout(format!(
                    "stream of {addr} ended at {next}: {why}"
                )));
            }
            _ => {
                return Err(BenchError::Timeout(format!(
                    "stream of {addr} ended at {next}"
                )))
            }
        };
        let evs = eventstream_proto::codec::decode_offset_events(&body, 0)?;
        for (off, e) in evs {
            if off != next {
                c.unexpected += 1;
            }
            next = off + 1;
            c.events += 1;
            if off >= common_from {
                c.common_hash = c.common_hash.rotate_left(5)
                    ^ (off.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ e.id.0);
            }
            let conn = (e.id.0 >> 40) as usize;
            let seq = (e.id.0 & ((1 << 40) - 1)) as usize;
            if conn == 0 || conn > ls.len() || seq >= ls[conn - 1].offsets.len() {
                c.unexpected += 1;
                continue;
            }
            let l = &ls[conn - 1];
            let k = &mut seen[conn - 1][seq];
            *k += 1;
            if *k > 1 {
                c.unexpected += 1;
            }
            match l.outcome[seq / batch] {
                Some(PublishOutcome::Acked) => {
                    if l.offsets[seq] != off {
                        c.unexpected += 1;
                    }
                }
                Some(PublishOutcome::RejectedInflight | PublishOutcome::RejectedRaft) => {
                    c.refused += 1
                }
                _ => c.indeterminate += 1,
            }
        }
    }
    for (l, s) in ls.iter().zip(&seen) {
        for (seq, &n) in s.iter().enumerate() {
            if l.outcome[seq / batch] != Some(PublishOutcome::Acked) {
                continue;
            }
            if l.offsets[seq] < from {
                c.acked_trimmed += 1;
                if n != 0 {
                    c.unexpected += 1;
                }
            } else if n != 1 {
                c.acked_missing += 1;
            }
        }
    }
    Ok(c)
}

fn extra_flags(a: &OverloadOptions) -> Vec<String> {
    let mut v = vec![
        "--limits-overload-policy".into(),
        match a.policy {
            OverloadPolicy::Reject => "reject".into(),
            OverloadPolicy::Block => "block".into(),
        },
        "--limits-request-timeout-ms".into(),
        "10000".into(),
    ];
    for (flag, n) in [
        ("--retention-max-events", a.retention_max_events),
        ("--retention-max-bytes", a.retention_max_bytes),
        ("--storage-stream-segment-bytes", a.stream_segment_bytes),
        ("--storage-snapshot-entries", a.snapshot_entries),
        ("--storage-log-keep-entries", a.log_keep_entries),
        ("--storage-compaction-interval-ms", a.compaction_interval_ms),
    ] {
        v.extend([flag.to_string(), n.to_string()]);
    }
    if let Some(n) = a.max_inflight_events {
        v.extend(["--limits-max-inflight-events".into(), n.to_string()]);
    }
    if let Some(n) = a.max_inflight_per_connection {
        v.extend(["--limits-max-inflight-per-connection".into(), n.to_string()]);
    }
    v
}

/// Runs the benchmark; the report says whether every check passed (`valid`).
pub fn run(a: &OverloadOptions) -> Result<OverloadReport, BenchError> {
    let exe = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| BenchError::Spawn {
            what: "finding the eventstream binary",
            source: e,
        })?,
    };
    let dir = eventstream_testkit::Scratch::try_new("overload")?;
    let rt = eventstream_testkit::runtime(2)?;
    let mut cluster = ProcessCluster::start(&exe, 3, dir.path(), &extra_flags(a))?;
    let report = rt.block_on(run_on(a, &mut cluster));
    drop(cluster);
    if a.keep {
        let kept = dir.keep();
        eprintln!("kept {}", kept.display());
    }
    report
}

/// How long a producer waits for its outstanding answers when its connection ends.
const PRODUCER_DRAIN: Duration = Duration::from_secs(15);

/// The producers of a run: one per ledger, all starting at the leader.
struct Producers {
    endpoints: Arc<Vec<String>>,
    leader_addr: String,
    ledgers: Vec<Arc<Mutex<Ledger>>>,
    /// Events acknowledged so far (the soak samples it each second).
    acked: Arc<AtomicU64>,
    payload: Bytes,
    batch: usize,
}

type ProducerTask = tokio::task::JoinHandle<Result<(), BenchError>>;

impl Producers {
    /// Starts one producer per ledger, each sending `rate` events/s (0: closed loop with
    /// `window` requests outstanding), until `stop`.
    fn spawn(&self, rate: f64, window: usize, stop: &Arc<AtomicBool>) -> Vec<ProducerTask> {
        (0..self.ledgers.len())
            .map(|c| {
                tokio::spawn(producer(
                    c,
                    self.endpoints.clone(),
                    self.leader_addr.clone(),
                    self.ledgers[c].clone(),
                    ProducerPlan {
                        batch: self.batch,
                        payload: self.payload.clone(),
                        rate,
                        window,
                        drain: PRODUCER_DRAIN,
                    },
                    stop.clone(),
                    self.acked.clone(),
                ))
            })
            .collect()
    }

    /// The clients' tally of the soak (`soak_only`) or of the whole run.
    fn tally(&self, soak_only: bool) -> Tally {
        tally(&self.ledgers, self.batch, soak_only)
    }

    /// Requests answered with other errors, by code and message, over every producer.
    fn other_errors(&self) -> OtherErrors {
        let mut m = OtherErrors::new();
        for l in &self.ledgers {
            let l = l.lock().unwrap_or_else(|p| p.into_inner());
            for (k, v) in &l.other {
                *m.entry(k.clone()).or_default() += v;
            }
        }
        m
    }
}

/// Waits for producers that were told to stop (each drains its connection).
async fn join(tasks: Vec<ProducerTask>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Phase 1, capacity: closed loop, a few requests outstanding per connection, for `seconds`.
/// Events acknowledged per second; the soak's tallies start after it.
async fn measure_capacity(p: &Producers, seconds: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let tasks = p.spawn(0.0, 4, &stop);
    tokio::time::sleep(Duration::from_secs(seconds.max(1))).await;
    stop.store(true, Ordering::Relaxed);
    join(tasks).await;
    let capacity = p.tally(false).answered.acked[1] as f64 / t0.elapsed().as_secs_f64();
    for l in &p.ledgers {
        let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
        l.soak_from_req = l.outcome.len();
    }
    capacity
}

/// What the soak sampled each second, and how long it lasted.
#[derive(Debug, Default)]
struct SoakSamples {
    duration_s: f64,
    /// Per node, `(second, RSS KiB)`.
    rss: Vec<Vec<(u64, u64)>>,
    /// `(second, leader id or 0, term)`.
    leaders: Vec<(u64, u64, u64)>,
    /// `(second, each node's role@term)`.
    roles: Vec<(u64, Vec<String>)>,
    /// `(second, events acknowledged so far)`.
    acked: Vec<(u64, u64)>,
}

/// Phase 2, soak: open loop at `target` events/s over every producer for `duration` seconds,
/// sampling every node's RSS, the leader and the acknowledged count each second.
async fn soak(p: &Producers, cluster: &ProcessCluster, target: f64, duration: u64) -> SoakSamples {
    let per_conn = target / p.ledgers.len() as f64;
    let stop = Arc::new(AtomicBool::new(false));
    let pids: Vec<Option<u32>> = (1..=3).map(|id| cluster.pid(id)).collect();
    let start = Instant::now();
    let tasks = p.spawn(per_conn, 1, &stop);
    let mut s = SoakSamples {
        rss: vec![Vec::new(); pids.len()],
        ..SoakSamples::default()
    };
    let mut tick = 0;
    while start.elapsed() < Duration::from_secs(duration) {
        // Samples carry the time they were taken (a starved node answers its status late).
        let sec = start.elapsed().as_secs();
        for (i, pid) in pids.iter().enumerate() {
            if let Some(kib) = pid.and_then(read_rss_kib) {
                s.rss[i].push((sec, kib));
            }
        }
        let ((leader, term), roles) = sample_roles(&cluster.endpoints()).await;
        s.leaders.push((sec, leader, term));
        s.roles.push((sec, roles));
        s.acked.push((sec, p.acked.load(Ordering::Relaxed)));
        tick += 1;
        tokio::time::sleep_until((start + Duration::from_secs(tick)).into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    s.duration_s = start.elapsed().as_secs_f64();
    join(tasks).await;
    s
}

/// The leader as the nodes see it: `(id, term)` of the node that says it leads, at the
/// highest term (`(0, term)` when none does); and each node's `role@term` (`?`: no status
/// within 1 s), kept as evidence.
async fn sample_roles(endpoints: &[String]) -> ((u64, u64), Vec<String>) {
    let mut seen = (0u64, 0u64);
    let mut roles = Vec::new();
    for ep in endpoints {
        match tokio::time::timeout(Duration::from_secs(1), raw_status(ep)).await {
            Ok(Ok(v)) => {
                let term = v["term"].as_u64().unwrap_or(0);
                let role = v["role"].as_str().unwrap_or("?");
                let leads = role == "leader";
                if term > seen.1 || (term == seen.1 && leads) {
                    seen = (
                        if leads {
                            v["node_id"].as_u64().unwrap_or(0)
                        } else {
                            0
                        },
                        term,
                    );
                }
                roles.push(format!("{role}@{term}"));
            }
            _ => roles.push("?".into()),
        }
    }
    (seen, roles)
}

/// The nodes' own publish counters, summed over the nodes (after a leader change the
/// producers' requests went to more than one).
async fn node_counters(endpoints: &[String]) -> Result<PublishCounts, BenchError> {
    let mut sum = PublishCounts::default();
    for ep in endpoints {
        let c: PublishCounts = raw_status(ep)
            .await
            .ok()
            .and_then(|v| serde_json::from_value(v["publishes"].clone()).ok())
            .ok_or_else(|| BenchError::Timeout(format!("no publish counters from {ep}")))?;
        sum.add(&c);
    }
    Ok(sum)
}

/// The stream's next offset once every node has applied everything (equal next offsets),
/// polled for up to 60 s.
async fn settled_next_offset(endpoints: &[String]) -> Result<u64, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut nexts = Vec::new();
        for ep in endpoints {
            nexts.push(
                raw_status(ep)
                    .await
                    .ok()
                    .and_then(|v| v["stream"]["next_offset"].as_u64()),
            );
        }
        if let Some(Some(n)) = nexts.first().copied() {
            if nexts.iter().all(|x| *x == Some(n)) {
                return Ok(n);
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "nodes did not agree on the stream's next offset: {nexts:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The acknowledged offsets, checked against the stream's next offset.
#[derive(Debug, Default)]
struct AckedOffsets {
    /// Distinct acknowledged events (each has its own offset below the next offset).
    distinct: u64,
    /// Acknowledged offsets that were not distinct or not below the next offset.
    invalid: u64,
    /// Events of indeterminate requests (ring rejections, timeouts, other errors, unanswered).
    indeterminate_offered: u64,
}

fn acked_offsets(ledgers: &[Arc<Mutex<Ledger>>], batch: usize, next_offset: u64) -> AckedOffsets {
    let mut r = AckedOffsets::default();
    let mut bits = vec![0u64; (next_offset as usize).div_ceil(64)];
    for l in ledgers {
        let l = l.lock().unwrap_or_else(|p| p.into_inner());
        for (seq, &o) in l.offsets.iter().enumerate() {
            match l.outcome[seq / batch] {
                Some(PublishOutcome::Acked) => {}
                Some(
                    PublishOutcome::RejectedRings
                    | PublishOutcome::TimedOut
                    | PublishOutcome::OtherError,
                )
                | None => {
                    r.indeterminate_offered += 1;
                    continue;
                }
                _ => continue,
            }
            let (w, bit) = ((o / 64) as usize, 1u64 << (o % 64));
            if o >= next_offset || bits[w] & bit != 0 {
                r.invalid += 1;
            } else {
                bits[w] |= bit;
                r.distinct += 1;
            }
        }
    }
    r
}

/// Each node's replication counters (`null` when its status cannot be read).
async fn replication_counters(endpoints: &[String]) -> Vec<serde_json::Value> {
    let mut counters = Vec::new();
    for ep in endpoints {
        counters.push(
            raw_status(ep)
                .await
                .map(|v| v["counters"].clone())
                .unwrap_or_default(),
        );
    }
    counters
}

/// Every node's retained stream, read back and checked against the ledgers.
#[derive(Debug)]
struct ReadBack {
    /// Per node, `(earliest retained offset, answered Compacted)`.
    earliest: Vec<(u64, bool)>,
    /// Offsets all nodes retain start here.
    common_from: u64,
    /// Per node.
    checks: Vec<StreamCheck>,
}

async fn read_back(
    endpoints: &[String],
    ledgers: &[Arc<Mutex<Ledger>>],
    batch: usize,
    next_offset: u64,
) -> Result<ReadBack, BenchError> {
    let mut earliest = Vec::new();
    for ep in endpoints {
        earliest.push(earliest_offset(ep).await?);
    }
    let common_from = earliest.iter().map(|e| e.0).max().unwrap_or(0);
    let mut checks = Vec::new();
    for (ep, &(from, _)) in endpoints.iter().zip(&earliest) {
        checks.push(check_stream(ep, ledgers, batch, from, next_offset, common_from).await?);
    }
    Ok(ReadBack {
        earliest,
        common_from,
        checks,
    })
}

impl ReadBack {
    /// Every node holds the same events over the common range, and all it retains.
    fn nodes_agree(&self, next_offset: u64) -> bool {
        self.checks
            .windows(2)
            .all(|w| w[0].common_hash == w[1].common_hash)
            && self
                .checks
                .iter()
                .zip(&self.earliest)
                .all(|(c, e)| c.events == next_offset - e.0)
    }
}

/// Node `id`'s memory and stream: its read-back `c` from `earliest`, its RSS `samples`;
/// `half` is the second the soak's second half starts at.
fn node_report(
    id: u64,
    c: &StreamCheck,
    (from, compacted): (u64, bool),
    samples: &[(u64, u64)],
    next_offset: u64,
    half: u64,
) -> NodeReport {
    let pts = |it: &mut dyn Iterator<Item = &(u64, u64)>| -> Vec<(f64, f64)> {
        it.map(|s| (s.0 as f64, s.1 as f64)).collect()
    };
    let max_where = |f: &dyn Fn(u64) -> bool| {
        samples
            .iter()
            .filter(|s| f(s.0))
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    };
    let slope2 = slope(&pts(&mut samples.iter().filter(|s| s.0 >= half)));
    let max1 = max_where(&|t| t < half);
    let max2 = max_where(&|t| t >= half);
    NodeReport {
        id,
        earliest_offset: from,
        next_offset,
        events_read: c.events,
        acked_trimmed: c.acked_trimmed,
        acked_missing: c.acked_missing,
        trimmed_not_acked: from.saturating_sub(c.acked_trimmed),
        compacted_from_zero: compacted,
        rss_start_kib: samples.first().map_or(0, |s| s.1),
        rss_max_kib: samples.iter().map(|s| s.1).max().unwrap_or(0),
        rss_end_kib: samples.last().map_or(0, |s| s.1),
        rss_max_first_half_kib: max1,
        rss_max_second_half_kib: max2,
        rss_slope_kib_per_s: slope(&pts(&mut samples.iter())),
        rss_slope_second_half_kib_per_s: slope2,
        rss_flat: samples.len() >= 4
            && slope2 < FLAT_MAX_SLOPE_KIB_S
            && max2 <= max1 + FLAT_MAX_NEW_PEAK_KIB,
        rss_samples: samples.to_vec(),
    }
}

/// Leader changes the soak's samples show, from `leader` at the start (a second with no
/// leader counts as a change when a different leader reappears).
fn leader_changes(leader: u64, samples: &[(u64, u64, u64)]) -> u64 {
    let mut changes = 0;
    let mut last = leader;
    for &(_, l, _) in samples {
        if l != 0 && l != last {
            changes += 1;
        }
        if l != 0 {
            last = l;
        }
    }
    changes
}

/// Events acknowledged in the soak's first half (from the run's start, up to second `half`)
/// and in its second half.
fn acked_by_half(samples: &[(u64, u64)], half: u64) -> (u64, u64) {
    let first = samples
        .iter()
        .take_while(|s| s.0 <= half)
        .last()
        .map_or(0, |s| s.1);
    (first, samples.last().map_or(0, |s| s.1) - first)
}

/// Everything a run observed, for [`Observed::report`].
#[derive(Debug)]
struct Observed {
    capacity: f64,
    target: f64,
    /// The leader the producers started at, and the one at the end.
    leader: u64,
    healthy_leader: u64,
    samples: SoakSamples,
    soak: Tally,
    total: Tally,
    other_errors: OtherErrors,
    node: PublishCounts,
    next_offset: u64,
    acked: AckedOffsets,
    replication_counters: Vec<serde_json::Value>,
    read: ReadBack,
}

async fn run_on(
    a: &OverloadOptions,
    cluster: &mut ProcessCluster,
) -> Result<OverloadReport, BenchError> {
    let batch = a.batch.max(1);
    let leader = cluster.wait_healthy(Duration::from_secs(30)).await?;
    let endpoints = Arc::new(cluster.endpoints());
    let producers = Producers {
        leader_addr: endpoints[(leader - 1) as usize].clone(),
        endpoints,
        ledgers: (0..a.clients)
            .map(|_| Arc::new(Mutex::new(Ledger::default())))
            .collect(),
        acked: Arc::new(AtomicU64::new(0)),
        payload: Bytes::from(vec![b'x'; a.payload_bytes]),
        batch,
    };
    // 1. Capacity, closed loop. 2. Soak: open loop at factor × capacity.
    let capacity = measure_capacity(&producers, a.capacity_seconds).await;
    let target = capacity * a.factor;
    let samples = soak(&producers, cluster, target, a.duration).await;
    let soak = producers.tally(true);
    let total = producers.tally(false);
    // 3. Node counters and read-back.
    let node = node_counters(&cluster.endpoints()).await?;
    let healthy_leader = cluster.wait_healthy(Duration::from_secs(60)).await?;
    let next_offset = settled_next_offset(&cluster.endpoints()).await?;
    // Retention has run since the last append, so the earliest offsets stay put while the
    // streams are read.
    tokio::time::sleep(Duration::from_millis(2 * a.compaction_interval_ms + 500)).await;
    let acked = acked_offsets(&producers.ledgers, batch, next_offset);
    let replication_counters = replication_counters(&cluster.endpoints()).await;
    let read = read_back(&cluster.endpoints(), &producers.ledgers, batch, next_offset).await?;
    let observed = Observed {
        capacity,
        target,
        leader,
        healthy_leader,
        samples,
        soak,
        total,
        other_errors: producers.other_errors(),
        node,
        next_offset,
        acked,
        replication_counters,
        read,
    };
    Ok(observed.report(a))
}

impl Observed {
    /// The report, with every check.
    fn report(self, a: &OverloadOptions) -> OverloadReport {
        let Observed {
            capacity,
            target,
            leader,
            healthy_leader,
            samples,
            soak,
            total,
            other_errors,
            node,
            next_offset,
            acked,
            replication_counters,
            read,
        } = self;
        let checks = &read.checks;
        let half = a.duration / 2;
        let nodes: Vec<NodeReport> = checks
            .iter()
            .zip(&read.earliest)
            .zip(&samples.rss)
            .enumerate()
            .map(|(i, ((c, &e), rss))| node_report(i as u64 + 1, c, e, rss, next_offset, half))
            .collect();
        let missing: u64 = checks.iter().map(|r| r.acked_missing).sum();
        // Offsets nobody acknowledged (below the earliest or read back as indeterminate) can
        // only belong to indeterminate requests.
        let trimmed_ok = nodes.iter().zip(checks).all(|(n, c)| {
            n.trimmed_not_acked + c.indeterminate <= acked.indeterminate_offered
                && n.compacted_from_zero == (n.earliest_offset > 0)
        });
        let term0 = samples.leaders.first().map_or(0, |s| s.2);
        let term_max = samples.leaders.iter().map(|s| s.2).max().unwrap_or(0);
        // Flat RSS says something about memory under load only if the load went on: the
        // second half of the soak acknowledged at least half as many events as the first.
        let (first_half_acked, second_half_acked) = acked_by_half(&samples.acked, half);
        let mut report = OverloadReport {
            policy: format!("{:?}", a.policy).to_lowercase(),
            retention_max_events: a.retention_max_events,
            retention_max_bytes: a.retention_max_bytes,
            snapshot_entries: a.snapshot_entries,
            log_keep_entries: a.log_keep_entries,
            capacity_events_per_sec: capacity,
            target_offered_events_per_sec: target,
            offered_events_per_sec: soak.offered[1] as f64 / samples.duration_s,
            acked_events_per_sec: soak.answered.acked[1] as f64 / samples.duration_s,
            duration_s: samples.duration_s,
            soak,
            total,
            other_errors,
            node_counters: node,
            node_counters_match: node.requests == total.offered && node.outcomes == total.answered,
            accounting_exact: total.accounted() == total.offered && total.unanswered == [0, 0],
            acked_distinct_events: acked.distinct,
            acked_offsets_invalid: acked.invalid,
            indeterminate_offered_events: acked.indeterminate_offered,
            next_offset,
            stored_not_acked: next_offset.saturating_sub(acked.distinct),
            acked_trimmed_min: nodes.iter().map(|n| n.acked_trimmed).min().unwrap_or(0),
            acked_found_on_every_node: missing == 0,
            refused_but_stored: checks.iter().map(|r| r.refused).sum(),
            unexpected_in_stream: checks.iter().map(|r| r.unexpected).sum(),
            indeterminate_stored: checks.iter().map(|r| r.indeterminate).max().unwrap_or(0),
            nodes_agree: read.nodes_agree(next_offset),
            common_from: read.common_from,
            leader_changed: healthy_leader != leader,
            leader_changes: leader_changes(leader, &samples.leaders),
            term_increase: term_max - term0,
            leader_samples: samples.leaders,
            role_samples: samples.roles,
            acked_samples: samples.acked,
            first_half_acked_events: first_half_acked,
            second_half_acked_events: second_half_acked,
            load_sustained: second_half_acked * 2 >= first_half_acked && second_half_acked > 0,
            replication_counters,
            rss_flat: nodes.iter().all(|n| n.rss_flat),
            nodes,
            valid: false,
        };
        report.valid = report.checks_pass(trimmed_ok, a.duration);
        report
    }
}

impl OverloadReport {
    /// Every check passed: `trimmed_ok` (offsets nobody acknowledged belong to indeterminate
    /// requests, on every node) and the report's own flags; for a soak of `duration` seconds
    /// of at least [`FLAT_MIN_DURATION_S`] also flat RSS under sustained load.
    fn checks_pass(&self, trimmed_ok: bool, duration: u64) -> bool {
        self.accounting_exact
            && self.node_counters_match
            && self.acked_found_on_every_node
            && self.acked_offsets_invalid == 0
            && self.refused_but_stored == 0
            && self.unexpected_in_stream == 0
            && self.nodes_agree
            && trimmed_ok
            && self.stored_not_acked <= self.indeterminate_offered_events
            && self.acked_distinct_events == self.total.answered.acked[1]
            && self.soak.answered.acked[1] > 0
            && self.nodes.len() == 3
            // The producers follow a leader change, so a change is reported, not fatal; but
            // the load must have gone on for flat RSS to mean anything.
            && (duration < FLAT_MIN_DURATION_S || (self.rss_flat && self.load_sustained))
    }
}

/// Prints the report as a table.
impl std::fmt::Display for OverloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(f, "policy                 {}", r.policy)?;
        writeln!(
                f,
        "retention              {} events, {} bytes (0 = none); snapshot every {} entries, keep {}",
        r.retention_max_events, r.retention_max_bytes, r.snapshot_entries, r.log_keep_entries
    )?;
        writeln!(
            f,
            "capacity               {:.0} events/s",
            r.capacity_events_per_sec
        )?;
        writeln!(
            f,
            "offered                {:.0} events/s (target {:.0})",
            r.offered_events_per_sec, r.target_offered_events_per_sec
        )?;
        writeln!(
            f,
            "acked                  {:.0} events/s",
            r.acked_events_per_sec
        )?;
        let t = &r.soak;
        writeln!(
                f,
        "soak [requests,events] offered {:?} acked {:?} rejected: in-flight {:?} rings {:?} raft {:?}; timed out {:?}; other {:?}; unanswered {:?}",
        t.offered, t.answered.acked, t.answered.rejected_inflight, t.answered.rejected_rings, t.answered.rejected_raft, t.answered.timed_out, t.answered.other_errors, t.unanswered
    )?;
        writeln!(
            f,
            "accounting exact {}  node counters match {}  acked on every node {}  nodes agree {}",
            r.accounting_exact, r.node_counters_match, r.acked_found_on_every_node, r.nodes_agree
        )?;
        writeln!(
                f,
        "stream next offset {}  acked distinct {}  stored not acked {} (indeterminate offered {})  acked offsets invalid {}",
        r.next_offset, r.acked_distinct_events, r.stored_not_acked, r.indeterminate_offered_events, r.acked_offsets_invalid
    )?;
        writeln!(
            f,
            "refused but stored {}  unexpected {}  indeterminate stored {}  common range {}..{}",
            r.refused_but_stored,
            r.unexpected_in_stream,
            r.indeterminate_stored,
            r.common_from,
            r.next_offset
        )?;
        writeln!(
            f,
            "leader changed {}  leader changes during soak {}  term increase {}",
            r.leader_changed, r.leader_changes, r.term_increase
        )?;
        for n in &r.nodes {
            writeln!(
                f,
            "node {}: earliest {} (Compacted from 0: {}) read {} acked trimmed {} missing {}; RSS KiB start {} max {} end {} (max 1st half {}, 2nd half {}); slope {:.1} KiB/s, 2nd half {:.1} KiB/s; flat {}",
            n.id, n.earliest_offset, n.compacted_from_zero, n.events_read, n.acked_trimmed, n.acked_missing,
            n.rss_start_kib, n.rss_max_kib, n.rss_end_kib, n.rss_max_first_half_kib, n.rss_max_second_half_kib,
            n.rss_slope_kib_per_s, n.rss_slope_second_half_kib_per_s, n.rss_flat
        )?;
        }
        for (k, v) in &r.other_errors {
            writeln!(f, "other error x{v}: {k}")?;
        }
        writeln!(f, "valid                  {}", r.valid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(outcomes: &[Option<PublishOutcome>], offsets: &[u64]) -> Arc<Mutex<Ledger>> {
        Arc::new(Mutex::new(Ledger {
            outcome: outcomes.to_vec(),
            offsets: offsets.to_vec(),
            ..Ledger::default()
        }))
    }

    #[test]
    fn tally_counts_outcomes_offered_and_unanswered() {
        use PublishOutcome::*;
        let ls = [ledger(&[Some(Acked), Some(RejectedInflight), None], &[])];
        ls[0].lock().unwrap().soak_from_req = 1;
        let t = tally(&ls, 2, false);
        assert_eq!(t.offered, [3, 6]);
        assert_eq!(t.answered.acked, [1, 2]);
        assert_eq!(t.answered.rejected_inflight, [1, 2]);
        assert_eq!(t.unanswered, [1, 2]);
        assert_eq!(t.accounted(), t.offered);
        let soak = tally(&ls, 2, true);
        assert_eq!((soak.offered, soak.answered.acked), ([2, 4], [0, 0]));
        // Serialized flat, as the report always was.
        let v = serde_json::to_value(t).unwrap();
        assert_eq!(v["rejected_inflight"], serde_json::json!([1, 2]));
        assert_eq!(v["unanswered"], serde_json::json!([1, 2]));
        assert!(v.get("answered").is_none(), "{v}");
    }

    #[test]
    fn acked_offsets_are_distinct_and_below_the_next_offset() {
        use PublishOutcome::*;
        // Batches of 2: acked (offsets 0, 1), timed out, acked with a duplicate and an
        // offset past the end, refused at the in-flight limit.
        let ls = [ledger(
            &[
                Some(Acked),
                Some(TimedOut),
                Some(Acked),
                Some(RejectedInflight),
            ],
            &[0, 1, u64::MAX, u64::MAX, 1, 9, u64::MAX, u64::MAX],
        )];
        let r = acked_offsets(&ls, 2, 4);
        assert_eq!((r.distinct, r.invalid, r.indeterminate_offered), (2, 2, 2));
    }

    #[test]
    fn leader_changes_and_load_halves() {
        // Leader 1, a second without one, 1 again, then 2.
        let leaders = [(0, 1, 5), (1, 0, 6), (2, 1, 6), (3, 2, 7)];
        assert_eq!(leader_changes(1, &leaders), 1);
        assert_eq!(leader_changes(3, &leaders), 2);
        let acked = [(0, 10), (1, 40), (2, 70), (3, 90)];
        assert_eq!(acked_by_half(&acked, 1), (40, 50));
    }
}
