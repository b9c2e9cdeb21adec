//! `eventstream bench overload`: producers faster than the cluster. Three real node processes;
//! the benchmark measures the cluster's capacity (closed loop), then offers a multiple of it
//! (open loop, `--factor`, default 2) for `--duration` seconds over several raw connections to
//! the leader, samples every node's RSS each second, and checks exact accounting at the end:
//!
//! * every request gets exactly one answer, and the client-side tallies add up:
//!   `offered == acked + rejected (by kind) + indeterminate`;
//! * every acknowledged event is in every node's stream exactly once, at its acknowledged
//!   offset; no event of a request refused at the in-flight limit (nothing of it published) is
//!   anywhere; nothing that was not offered is anywhere; every node holds the same stream;
//! * the leader's own publish counters equal what the clients observed, kind by kind.
//!
//! Memory: the log is not compacted yet, so every node keeps what it committed (the raft log
//! in memory, shared with the committed stream). The report therefore gives the RSS and the
//! retained log size side by side, and the slope of RSS minus the retained log: overload
//! queues that grew without bound would show there.

use crate::config::OverloadPolicy;
use crate::error::ClusterError;
use crate::frame::{self, ErrorCode, Kind, SubscribeBody};
use crate::net::FrameReader;
use crate::procs::ProcessCluster;
use crate::server::PublishCountsSnapshot;
use bytes::{Bytes, BytesMut};
use clap::Args;
use eventstream_core::{Event, Priority};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `eventstream bench overload`.
#[derive(Debug, Args, Clone)]
pub struct OverloadBenchArgs {
    /// Seconds of overload (the soak); the capacity measurement comes before it.
    #[arg(long, default_value_t = 180)]
    pub duration: u64,
    /// Seconds of the closed-loop capacity measurement.
    #[arg(long, default_value_t = 5)]
    pub capacity_seconds: u64,
    /// Offered load as a multiple of the measured capacity.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// Producer connections (all to the leader).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Events per publish request.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// The nodes' overload policy (`reject` or `block`).
    #[arg(long, default_value = "reject")]
    pub policy: OverloadPolicy,
    /// The nodes' `--max-inflight-events` (default: the node default).
    #[arg(long)]
    pub max_inflight_events: Option<usize>,
    /// The nodes' `--max-inflight-per-connection` (default: the node default).
    #[arg(long)]
    pub max_inflight_per_connection: Option<usize>,
    /// The `eventstream` binary to run as nodes (default: this executable).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Keep the nodes' data directories and logs.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One answer kind as the clients counted it: `[requests, events]`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Tally {
    /// Requests written to the socket.
    pub offered: [u64; 2],
    /// `PublishOk`.
    pub acked: [u64; 2],
    /// `Busy` at an in-flight limit (nothing published).
    pub rejected_inflight: [u64; 2],
    /// `Busy` from full tier rings (possibly partly published: indeterminate).
    pub rejected_rings: [u64; 2],
    /// `Busy`/`Unavailable` after raft refused the proposal (not published).
    pub rejected_raft: [u64; 2],
    /// `Timeout` (indeterminate).
    pub timed_out: [u64; 2],
    /// Any other error.
    pub other_errors: [u64; 2],
    /// Requests that never got an answer (must be 0).
    pub unanswered: [u64; 2],
}

/// Other errors the clients got, by code and message, with counts.
pub type OtherErrors = std::collections::BTreeMap<String, u64>;

/// What `bench overload` reports.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadReport {
    /// Overload policy of the nodes.
    pub policy: String,
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
    /// The leader's own counters (whole run).
    pub node_counters: PublishCountsSnapshot,
    /// The leader's counters equal the clients' tallies, kind by kind.
    pub node_counters_match: bool,
    /// offered == acked + every rejection kind + indeterminate, and nothing unanswered.
    pub accounting_exact: bool,
    /// Acknowledged events found exactly once at their offset on every node.
    pub acked_found_on_every_node: bool,
    /// Events of requests refused at an in-flight limit found in some stream (must be 0).
    pub refused_but_stored: u64,
    /// Events found in a stream that were never offered or found twice (must be 0).
    pub unexpected_in_stream: u64,
    /// Indeterminate events (timeouts, ring rejections) that were stored anyway.
    pub indeterminate_stored: u64,
    /// Every node holds the same stream.
    pub nodes_agree: bool,
    /// The leader at the end is not the one the producers were connected to (an election
    /// under load: its publishes were answered `NotLeader`, counted in `other_errors`).
    pub leader_changed: bool,
    /// Events in the stream.
    pub stream_events: u64,
    /// The leader's RSS at the start of the soak, KiB.
    pub rss_start_kib: u64,
    /// The leader's largest RSS during the soak, KiB.
    pub rss_max_kib: u64,
    /// The leader's RSS at the end of the soak, KiB.
    pub rss_end_kib: u64,
    /// Least-squares slope of the leader's RSS during the soak, KiB/s.
    pub rss_slope_kib_per_s: f64,
    /// Growth of the leader's retained (uncompacted) log during the soak, KiB.
    pub log_growth_kib: u64,
    /// Slope of the leader's RSS minus its retained log, KiB/s (≈ 0: nothing else grows).
    pub rss_minus_log_slope_kib_per_s: f64,
    /// Largest RSS of any node during the soak, KiB.
    pub rss_max_any_node_kib: u64,
    /// `(second, leader RSS KiB, leader log KiB)` samples.
    pub samples: Vec<(u64, u64, u64)>,
    /// True when every check passed.
    pub valid: bool,
}

const OUT_NONE: u8 = 0;
const OUT_ACKED: u8 = 1;
const OUT_INFLIGHT: u8 = 2;
const OUT_RINGS: u8 = 3;
const OUT_RAFT: u8 = 4;
const OUT_TIMEOUT: u8 = 5;
const OUT_OTHER: u8 = 6;

/// One producer connection's record: per request its outcome, per event its offset.
#[derive(Debug, Default)]
struct Ledger {
    /// Requests answered with other errors, by code and message.
    other: std::collections::BTreeMap<String, u64>,
    outcome: Vec<u8>,
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

async fn connect_client(addr: &str) -> Result<TcpStream, ClusterError> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| ClusterError::Network {
            peer: addr.into(),
            source: e,
        })?;
    let _ = s.set_nodelay(true);
    let mut s = s;
    let mut b = BytesMut::new();
    frame::put_frame(
        &mut b,
        Kind::Hello,
        &frame::encode_hello(frame::Role::Client),
    );
    s.write_all(&b).await.map_err(|e| ClusterError::Network {
        peer: addr.into(),
        source: e,
    })?;
    Ok(s)
}

/// The status JSON of a node, with its `publishes` counters.
async fn raw_status(addr: &str) -> Result<serde_json::Value, ClusterError> {
    let s = connect_client(addr).await?;
    let (r, mut w) = s.into_split();
    let mut b = BytesMut::new();
    frame::put_status(&mut b, 1);
    let net = |e| ClusterError::Network {
        peer: addr.into(),
        source: e,
    };
    w.write_all(&b).await.map_err(net)?;
    let mut reader = FrameReader::new(r, 64 << 20);
    let f = tokio::time::timeout(Duration::from_secs(5), reader.next())
        .await
        .map_err(|_| ClusterError::Timeout(format!("status of {addr}")))?
        .map_err(net)?;
    match f {
        Some((Kind::StatusOk, body)) if body.len() >= 8 => serde_json::from_slice(&body[8..])
            .map_err(|e| ClusterError::Timeout(format!("status of {addr}: {e}"))),
        _ => Err(ClusterError::Timeout(format!("no status from {addr}"))),
    }
}

/// Runs one producer connection: `rate` events/s (0 = closed loop with `window` requests
/// outstanding) until `stop`; then waits for every answer (or `drain` passes).
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename these
async fn producer(
    conn: usize,
    addr: String,
    ledger: Arc<Mutex<Ledger>>,
    batch: usize,
    payload: Bytes,
    rate: f64,
    window: usize,
    stop: Arc<AtomicBool>,
    drain: Duration,
) -> Result<(), ClusterError> {
    let s = connect_client(&addr).await?;
    let (r, mut w) = s.into_split();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let outstanding = Arc::new(tokio::sync::Semaphore::new(window.max(1)));
    let reader_ledger = ledger.clone();
    let reader_out = outstanding.clone();
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
                    Ok((req, offsets)) => (req as usize, OUT_ACKED, offsets),
                    Err(_) => return,
                },
                Kind::Error => match frame::decode_error(&body) {
                    Ok(e) => {
                        let o = match e.code {
                            ErrorCode::Busy if e.message.contains("in flight") => OUT_INFLIGHT,
                            ErrorCode::Busy if e.message.contains("tier rings") => OUT_RINGS,
                            // Raft refused the proposal: `Busy`, or `Unavailable` when
                            // there is no leader (the node counts both as rejected_raft).
                            ErrorCode::Busy | ErrorCode::Unavailable
                                if e.message.contains("proposal dropped") =>
                            {
                                OUT_RAFT
                            }
                            ErrorCode::Timeout => OUT_TIMEOUT,
                            _ => OUT_OTHER,
                        };
                        if o == OUT_OTHER {
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
                l.outcome[req] = outcome;
                if outcome == OUT_ACKED {
                    for (i, o) in offsets.iter().enumerate().take(batch) {
                        l.offsets[req * batch + i] = *o;
                    }
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
    while !stop.load(Ordering::Relaxed) {
        if rate > 0.0 {
            let due = (start.elapsed().as_secs_f64() * rate / batch as f64) as usize;
            if req - first_req >= due {
                tokio::time::sleep(Duration::from_micros(500)).await;
                continue;
            }
        } else {
            let Ok(p) = outstanding.acquire().await else {
                break;
            };
            p.forget();
        }
        let events: Vec<Event> = (0..batch)
            .map(|i| {
                Event::new("load", Priority::High, payload.clone())
                    .with_id(event_id(conn, (req * batch + i) as u64))
            })
            .collect();
        {
            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            l.outcome.push(OUT_NONE);
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
    let _ = tokio::time::timeout(drain, reader).await;
    Ok(())
}

fn tally(ledgers: &[Arc<Mutex<Ledger>>], batch: usize, soak_only: bool) -> Tally {
    let mut t = Tally::default();
    for l in ledgers {
        let l = l.lock().unwrap_or_else(|p| p.into_inner());
        let from = if soak_only { l.soak_from_req } else { 0 };
        for &o in &l.outcome[from..] {
            let slot = match o {
                OUT_ACKED => &mut t.acked,
                OUT_INFLIGHT => &mut t.rejected_inflight,
                OUT_RINGS => &mut t.rejected_rings,
                OUT_RAFT => &mut t.rejected_raft,
                OUT_TIMEOUT => &mut t.timed_out,
                OUT_OTHER => &mut t.other_errors,
                _ => &mut t.unanswered,
            };
            slot[0] += 1;
            slot[1] += batch as u64;
            t.offered[0] += 1;
            t.offered[1] += batch as u64;
        }
    }
    t
}

/// Reads node `addr`'s whole stream and checks it against the ledgers. Returns (events, hash,
/// refused-but-stored, unexpected, indeterminate stored, acked missing).
async fn check_stream(
    addr: &str,
    ledgers: &[Arc<Mutex<Ledger>>],
    batch: usize,
    end: u64,
) -> Result<(u64, u64, u64, u64, u64, u64), ClusterError> {
    let s = connect_client(addr).await?;
    let (r, mut w) = s.into_split();
    let mut b = BytesMut::new();
    frame::put_subscribe(&mut b, &SubscribeBody::default());
    w.write_all(&b).await.map_err(|e| ClusterError::Network {
        peer: addr.into(),
        source: e,
    })?;
    let mut reader = FrameReader::new(r, 64 << 20);
    let ls: Vec<_> = ledgers
        .iter()
        .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()))
        .collect();
    let mut seen: Vec<Vec<u8>> = ls.iter().map(|l| vec![0u8; l.offsets.len()]).collect();
    let (mut n, mut hash, mut refused, mut unexpected, mut indeterminate) = (0u64, 0u64, 0, 0, 0);
    let mut next = 0u64;
    while next < end {
        let f = tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .map_err(|_| ClusterError::Timeout(format!("stream of {addr} stopped at {next}")))?
            .map_err(|e| ClusterError::Network {
                peer: addr.into(),
                source: e,
            })?;
        let Some((Kind::Events, body)) = f else {
            return Err(ClusterError::Timeout(format!(
                "stream of {addr} ended at {next}"
            )));
        };
        let evs = crate::codec::decode_offset_events(&body, 0)?;
        for (off, e) in evs {
            if off != next {
                unexpected += 1;
            }
            next = off + 1;
            n += 1;
            hash = hash.rotate_left(5) ^ (off.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ e.id.0);
            let conn = (e.id.0 >> 40) as usize;
            let seq = (e.id.0 & ((1 << 40) - 1)) as usize;
            if conn == 0 || conn > ls.len() || seq >= ls[conn - 1].offsets.len() {
                unexpected += 1;
                continue;
            }
            let l = &ls[conn - 1];
            let k = &mut seen[conn - 1][seq];
            *k += 1;
            if *k > 1 {
                unexpected += 1;
            }
            match l.outcome[seq / batch] {
                OUT_ACKED => {
                    if l.offsets[seq] != off {
                        unexpected += 1;
                    }
                }
                OUT_INFLIGHT | OUT_RAFT => refused += 1,
                _ => indeterminate += 1,
            }
        }
    }
    let mut missing = 0;
    for (l, s) in ls.iter().zip(&seen) {
        for (seq, &c) in s.iter().enumerate() {
            if l.outcome[seq / batch] == OUT_ACKED && c != 1 {
                missing += 1;
            }
        }
    }
    Ok((n, hash, refused, unexpected, indeterminate, missing))
}

fn extra_flags(a: &OverloadBenchArgs) -> Vec<String> {
    let mut v = vec![
        "--overload-policy".into(),
        match a.policy {
            OverloadPolicy::Reject => "reject".into(),
            OverloadPolicy::Block => "block".into(),
        },
        "--request-timeout-ms".into(),
        "10000".into(),
    ];
    if let Some(n) = a.max_inflight_events {
        v.extend(["--max-inflight-events".into(), n.to_string()]);
    }
    if let Some(n) = a.max_inflight_per_connection {
        v.extend(["--max-inflight-per-connection".into(), n.to_string()]);
    }
    v
}

/// Runs the benchmark; the report says whether every check passed (`valid`).
pub fn run(a: &OverloadBenchArgs) -> Result<OverloadReport, ClusterError> {
    let exe = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| ClusterError::Spawn {
            what: "finding the eventstream binary",
            source: e,
        })?,
    };
    let dir = tempfile::Builder::new()
        .prefix("eventstream-overload-")
        .tempdir()
        .map_err(|e| ClusterError::io("temporary directory", e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Spawn {
            what: "tokio runtime",
            source: e,
        })?;
    let cluster = ProcessCluster::start(&exe, 3, dir.path(), &extra_flags(a))?;
    let report = rt.block_on(run_on(a, &cluster));
    drop(cluster);
    if a.keep {
        let kept = dir.keep();
        eprintln!("kept {}", kept.display());
    }
    report
}

async fn run_on(
    a: &OverloadBenchArgs,
    cluster: &ProcessCluster,
) -> Result<OverloadReport, ClusterError> {
    let batch = a.batch.max(1);
    let leader = cluster.wait_healthy(Duration::from_secs(30)).await?;
    let addr = cluster.endpoints()[(leader - 1) as usize].clone();
    let payload = Bytes::from(vec![b'x'; a.payload_bytes]);
    let ledgers: Vec<Arc<Mutex<Ledger>>> = (0..a.clients)
        .map(|_| Arc::new(Mutex::new(Ledger::default())))
        .collect();
    let drain = Duration::from_secs(15);

    // 1. Capacity: closed loop, a few requests outstanding per connection.
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..a.clients)
        .map(|c| {
            tokio::spawn(producer(
                c,
                addr.clone(),
                ledgers[c].clone(),
                batch,
                payload.clone(),
                0.0,
                4,
                stop.clone(),
                drain,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(a.capacity_seconds.max(1))).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let cap_t = tally(&ledgers, batch, false);
    let capacity = cap_t.acked[1] as f64 / t0.elapsed().as_secs_f64();
    for l in &ledgers {
        let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
        l.soak_from_req = l.outcome.len();
    }

    // 2. Soak: open loop at factor × capacity; sample RSS and the retained log every second.
    let target = capacity * a.factor;
    let per_conn = target / a.clients as f64;
    let stop = Arc::new(AtomicBool::new(false));
    let pids: Vec<u32> = (1..=3).filter_map(|id| cluster.pid(id)).collect();
    let leader_pid = cluster.pid(leader).ok_or(ClusterError::Closed)?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..a.clients)
        .map(|c| {
            tokio::spawn(producer(
                c,
                addr.clone(),
                ledgers[c].clone(),
                batch,
                payload.clone(),
                per_conn,
                1,
                stop.clone(),
                drain,
            ))
        })
        .collect();
    let mut samples = Vec::new();
    let mut rss_max_any = 0;
    let mut log_start = None;
    let mut log_end = 0;
    for sec in 0..a.duration {
        let rss = read_rss_kib(leader_pid).unwrap_or(0);
        for &p in &pids {
            rss_max_any = rss_max_any.max(read_rss_kib(p).unwrap_or(0));
        }
        let log_kib = raw_status(&addr)
            .await
            .ok()
            .and_then(|v| v["log_bytes"].as_u64())
            .unwrap_or(0)
            / 1024;
        log_start.get_or_insert(log_kib);
        log_end = log_kib;
        samples.push((sec, rss, log_kib));
        let next = start + Duration::from_secs(sec + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let soak_s = start.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let soak = tally(&ledgers, batch, true);
    let total = tally(&ledgers, batch, false);

    // 3. Node counters and read-back.
    let node: PublishCountsSnapshot = raw_status(&addr)
        .await
        .ok()
        .and_then(|v| serde_json::from_value(v["publishes"].clone()).ok())
        .unwrap_or_default();
    let healthy_leader = cluster.wait_healthy(Duration::from_secs(60)).await?;
    let end = {
        let mut end = 0;
        for l in &ledgers {
            let l = l.lock().unwrap_or_else(|p| p.into_inner());
            end = end.max(
                l.offsets
                    .iter()
                    .filter(|&&o| o != u64::MAX)
                    .max()
                    .map_or(0, |o| o + 1),
            );
        }
        end
    };
    let mut results = Vec::new();
    for ep in cluster.endpoints() {
        results.push(check_stream(ep, &ledgers, batch, end).await?);
    }
    let nodes_agree = results
        .windows(2)
        .all(|w| (w[0].0, w[0].1) == (w[1].0, w[1].1));
    let refused: u64 = results.iter().map(|r| r.2).sum();
    let unexpected: u64 = results.iter().map(|r| r.3).sum();
    let indeterminate = results.first().map_or(0, |r| r.4);
    let missing: u64 = results.iter().map(|r| r.5).sum();

    let sum = |t: &Tally| {
        let mut s = [0u64; 2];
        for k in [
            t.acked,
            t.rejected_inflight,
            t.rejected_rings,
            t.rejected_raft,
            t.timed_out,
            t.other_errors,
            t.unanswered,
        ] {
            s[0] += k[0];
            s[1] += k[1];
        }
        s
    };
    let accounting_exact = sum(&total) == total.offered && total.unanswered == [0, 0];
    let node_counters_match = node.requests == total.offered
        && node.acked == total.acked
        && node.rejected_inflight == total.rejected_inflight
        && node.rejected_rings == total.rejected_rings
        && node.rejected_raft == total.rejected_raft
        && node.timed_out == total.timed_out
        && node.other_errors == total.other_errors;
    let pts: Vec<(f64, f64)> = samples.iter().map(|s| (s.0 as f64, s.1 as f64)).collect();
    let pts_minus: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.0 as f64, s.1 as f64 - s.2 as f64))
        .collect();
    let valid = accounting_exact
        && node_counters_match
        && missing == 0
        && refused == 0
        && unexpected == 0
        && nodes_agree
        && soak.acked[1] > 0;
    Ok(OverloadReport {
        policy: format!("{:?}", a.policy).to_lowercase(),
        capacity_events_per_sec: capacity,
        target_offered_events_per_sec: target,
        offered_events_per_sec: soak.offered[1] as f64 / soak_s,
        acked_events_per_sec: soak.acked[1] as f64 / soak_s,
        duration_s: soak_s,
        soak,
        total,
        other_errors: {
            let mut m = OtherErrors::new();
            for l in &ledgers {
                let l = l.lock().unwrap_or_else(|p| p.into_inner());
                for (k, v) in &l.other {
                    *m.entry(k.clone()).or_default() += v;
                }
            }
            m
        },
        node_counters: node,
        node_counters_match,
        accounting_exact,
        acked_found_on_every_node: missing == 0,
        refused_but_stored: refused,
        unexpected_in_stream: unexpected,
        indeterminate_stored: indeterminate,
        nodes_agree,
        leader_changed: healthy_leader != leader,
        stream_events: results.first().map_or(0, |r| r.0),
        rss_start_kib: samples.first().map_or(0, |s| s.1),
        rss_max_kib: samples.iter().map(|s| s.1).max().unwrap_or(0),
        rss_end_kib: samples.last().map_or(0, |s| s.1),
        rss_slope_kib_per_s: slope(&pts),
        log_growth_kib: log_end.saturating_sub(log_start.unwrap_or(0)),
        rss_minus_log_slope_kib_per_s: slope(&pts_minus),
        rss_max_any_node_kib: rss_max_any,
        samples,
        valid,
    })
}

/// Prints the report as a table.
pub fn print(r: &OverloadReport) {
    println!("policy                 {}", r.policy);
    println!(
        "capacity               {:.0} events/s",
        r.capacity_events_per_sec
    );
    println!(
        "offered                {:.0} events/s (target {:.0})",
        r.offered_events_per_sec, r.target_offered_events_per_sec
    );
    println!(
        "acked                  {:.0} events/s",
        r.acked_events_per_sec
    );
    let t = &r.soak;
    println!(
        "soak [requests,events] offered {:?} acked {:?} rejected: in-flight {:?} rings {:?} raft {:?}; timed out {:?}; other {:?}; unanswered {:?}",
        t.offered, t.acked, t.rejected_inflight, t.rejected_rings, t.rejected_raft, t.timed_out, t.other_errors, t.unanswered
    );
    println!(
        "accounting exact {}  node counters match {}  acked on every node {}  nodes agree {}  leader changed {}",
        r.accounting_exact, r.node_counters_match, r.acked_found_on_every_node, r.nodes_agree, r.leader_changed
    );
    println!(
        "refused but stored {}  unexpected {}  indeterminate stored {}  stream {}",
        r.refused_but_stored, r.unexpected_in_stream, r.indeterminate_stored, r.stream_events
    );
    println!(
        "leader RSS KiB start {} max {} end {} slope {:.1} KiB/s; log growth {} KiB; RSS - log slope {:.1} KiB/s; max any node {} KiB",
        r.rss_start_kib,
        r.rss_max_kib,
        r.rss_end_kib,
        r.rss_slope_kib_per_s,
        r.log_growth_kib,
        r.rss_minus_log_slope_kib_per_s,
        r.rss_max_any_node_kib
    );
    for (k, v) in &r.other_errors {
        println!("other error x{v}: {k}");
    }
    println!("valid                  {}", r.valid);
}
