//! One chaos run: start the proxies and node processes, run producers and consumers, let the
//! nemesis inject `cycles` faults, heal, read every node's stream back, check the history.
//!
//! Producers publish requests of `batch` events with mixed priorities, each id unique in the
//! run (`(producer + 1) << 40 | sequence`), through the Rust client (whose retries resend the
//! same ids). A publish that the client gives up on is recorded as failed (every event of it)
//! and its ids are never reused.
//! Consumers speak the wire protocol directly (not through the client's `Subscription`, which
//! filters out offsets it has already seen) so that the checker sees exactly what each node
//! sent.
//!
//! Every phase is bounded: waits for a leader or for quiescence time out and are recorded
//! (an unrecovered cycle, an incomplete final read) rather than hanging the run.

use crate::checker::{check, CheckReport};
use crate::error::ChaosError;
use crate::history::{
    ConsumerLog, Delivery, FaultKind, FaultRecord, FinalRead, History, PublishOutcome,
    PublishRecord, OFFSET_UNKNOWN,
};
use crate::nemesis::Nemesis;
use crate::proxy::Proxies;
use bytes::{Bytes, BytesMut};
use eventstream_client::net::FrameReader;
use eventstream_client::{Client, ClientConfig};
use eventstream_core::{Event, Priority};
use eventstream_proto::codec;
use eventstream_proto::frame::{self, Kind, Role, SubscribeBody};
use eventstream_testkit::ProcessCluster;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Cluster size: 3 or 5.
    pub nodes: usize,
    /// Faults to inject.
    pub cycles: u32,
    /// Nemesis seed.
    pub seed: u64,
    /// How long each fault is held before it is healed, ms.
    pub fault_ms: u64,
    /// The `eventstream` binary that runs the nodes.
    pub binary: PathBuf,
    /// Concurrent producers.
    pub producers: usize,
    /// Events per publish request. Priorities inside a request are mixed (the node reorders
    /// them through its tier rings, yet must answer offsets in request order).
    pub batch: usize,
    /// How long one publish may take including the client's retries before the producer
    /// records it as failed (indeterminate) and moves on to a new id, ms. Short enough that
    /// outages leave indeterminate publishes for the checker to account for.
    pub publish_deadline_ms: u64,
    /// Where node data and logs go (default: a fresh directory under the temp dir).
    pub work_dir: Option<PathBuf>,
    /// Keep the work directory even when the run is clean (it is always kept otherwise).
    pub keep_dir: bool,
    /// How long to wait for one leader followed by every node after a fault is healed.
    pub recovery_timeout: Duration,
    /// Print one line per cycle to stderr.
    pub progress: bool,
}

impl ChaosConfig {
    /// Defaults for a run of `binary`: 3 nodes, 12 cycles, seed 1, faults held 800 ms,
    /// 3 producers publishing 4 events per request, publishes given up after 2 s.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        ChaosConfig {
            nodes: 3,
            cycles: 12,
            seed: 1,
            fault_ms: 800,
            binary: binary.into(),
            producers: 3,
            batch: 4,
            publish_deadline_ms: 2_000,
            work_dir: None,
            keep_dir: false,
            recovery_timeout: Duration::from_secs(15),
            progress: false,
        }
    }

    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ChaosError> {
        let bad = |field, reason: &str| {
            Err(ChaosError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.nodes != 3 && self.nodes != 5 {
            return bad("nodes", &format!("{} is not 3 or 5", self.nodes));
        }
        if self.cycles == 0 {
            return bad("cycles", "must be at least 1");
        }
        if !(50..=60_000).contains(&self.fault_ms) {
            return bad(
                "cycle_ms",
                &format!("{} is outside 50..=60000", self.fault_ms),
            );
        }
        if !(1..=64).contains(&self.producers) {
            return bad(
                "producers",
                &format!("{} is outside 1..=64", self.producers),
            );
        }
        if !(1..=1024).contains(&self.batch) {
            return bad("batch", &format!("{} is outside 1..=1024", self.batch));
        }
        if !(100..=600_000).contains(&self.publish_deadline_ms) {
            return bad(
                "publish_deadline_ms",
                &format!("{} is outside 100..=600000", self.publish_deadline_ms),
            );
        }
        if !self.binary.is_file() {
            return bad(
                "binary",
                &format!("{} is not a file", self.binary.display()),
            );
        }
        Ok(())
    }
}

/// The result of a run, printed by `eventstream chaos --json` as one object.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosOutcome {
    /// Seed of the nemesis (reproduce with `--seed`).
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Wall time of the whole run, ms.
    pub elapsed_ms: u64,
    /// Faults injected, by kind.
    pub faults_by_kind: BTreeMap<String, usize>,
    /// Peer connections the proxies forwarded / black-holed (opened during a cut) / stalled
    /// (open when a cut started).
    pub proxy_connections: BTreeMap<String, u64>,
    /// Nodes that exited without being killed by the nemesis (each one is restarted).
    pub unexpected_exits: Vec<String>,
    /// Why the final quiescence wait failed, if it did.
    pub quiescence_error: Option<String>,
    /// True when the checker found no anomaly.
    pub valid: bool,
    /// Where the history (and node logs) were kept, if they were.
    pub kept_dir: Option<PathBuf>,
    /// The checker's report.
    #[serde(flatten)]
    pub report: CheckReport,
    /// The full history (not printed: written to `history.json` when the directory is kept).
    #[serde(skip)]
    pub history: History,
}

fn ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

/// Runs a chaos test (builds its own tokio runtime; call from a plain thread).
pub fn run(cfg: &ChaosConfig) -> Result<ChaosOutcome, ChaosError> {
    cfg.validate()?;
    let dir = cfg.work_dir.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!(
            "eventstream-chaos-{}-{}-{nanos}",
            cfg.seed,
            std::process::id()
        ))
    });
    std::fs::create_dir_all(&dir).map_err(|e| ChaosError::io(&dir, e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("es-chaos")
        .build()
        .map_err(ChaosError::Network)?;
    let mut outcome = rt.block_on(run_async(cfg, &dir))?;
    rt.shutdown_timeout(Duration::from_secs(2));
    if !outcome.valid || cfg.keep_dir {
        let path = dir.join("history.json");
        let json = serde_json::to_vec(&outcome.history)?;
        std::fs::write(&path, json).map_err(|e| ChaosError::io(&path, e))?;
        outcome.kept_dir = Some(dir);
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(outcome)
}

async fn run_async(cfg: &ChaosConfig, dir: &std::path::Path) -> Result<ChaosOutcome, ChaosError> {
    let t0 = Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ports = eventstream_testkit::free_ports(cfg.nodes)?;
    let real: Vec<SocketAddr> = ports
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    let proxies = Proxies::start(&real).await?;
    // Frequent snapshots and small stream segments: a node killed or cut off for a while is
    // caught up by snapshot and copies the stream below it from another member, under faults.
    let extra: Vec<String> = [
        "--limits-request-timeout-ms",
        "2000",
        "--storage-snapshot-entries",
        "500",
        "--storage-log-keep-entries",
        "100",
        "--storage-stream-segment-bytes",
        "65536",
    ]
    .map(String::from)
    .to_vec();
    let routes: std::collections::BTreeMap<(u64, u64), String> = (1..=cfg.nodes as u64)
        .flat_map(|i| (1..=cfg.nodes as u64).map(move |j| (i, j)))
        .filter(|(i, j)| i != j)
        .map(|(i, j)| ((i, j), proxies.addr(i, j).to_string()))
        .collect();
    let route: eventstream_testkit::Route = Arc::new(move |i, j| routes[&(i, j)].clone());
    let mut nodes =
        ProcessCluster::start_at(&cfg.binary, &ports.addrs(), dir, &extra, Some(route))?;
    let all: Vec<u64> = (1..=cfg.nodes as u64).collect();
    let first_leader_wait = Duration::from_secs(30);
    if let Err(last) = nodes.wait_agreed_leader(&all, first_leader_wait).await {
        return Err(ChaosError::NoLeader {
            waited_ms: first_leader_wait.as_millis() as u64,
            last: last.to_string(),
        });
    }

    // Consumers: one per node, from offset 0.
    let (stop_consumers, stop_rx) = watch::channel(false);
    let consumer_logs: Vec<Arc<Mutex<ConsumerLog>>> = all
        .iter()
        .map(|&node| {
            Arc::new(Mutex::new(ConsumerLog {
                consumer: node as u32 - 1,
                node,
                ..ConsumerLog::default()
            }))
        })
        .collect();
    let consumer_tasks: Vec<_> = all
        .iter()
        .zip(&consumer_logs)
        .map(|(&node, log)| {
            tokio::spawn(consume(
                real[(node - 1) as usize],
                log.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    // Producers.
    let stop_producers = Arc::new(AtomicBool::new(false));
    let acked_so_far = Arc::new(AtomicU64::new(0));
    let publishes: Arc<Mutex<Vec<PublishRecord>>> = Arc::default();
    let mut producer_tasks = Vec::new();
    for p in 0..cfg.producers as u32 {
        let mut ccfg = ClientConfig::new(nodes.endpoints());
        ccfg.deadline = Duration::from_millis(cfg.publish_deadline_ms);
        ccfg.attempt_timeout = (ccfg.deadline / 2).max(Duration::from_millis(50));
        ccfg.connect_timeout = Duration::from_millis(500);
        let client = Client::new(ccfg)?;
        producer_tasks.push(tokio::spawn(produce(
            p,
            cfg.batch,
            client,
            t0,
            stop_producers.clone(),
            acked_so_far.clone(),
            publishes.clone(),
        )));
    }

    // A baseline before the first fault: the producers are connected and committing.
    if wait_for_ack(&acked_so_far, t0, cfg.recovery_timeout)
        .await
        .is_none()
    {
        return Err(ChaosError::NoLeader {
            waited_ms: cfg.recovery_timeout.as_millis() as u64,
            last: "a leader was elected but no publish was acknowledged".into(),
        });
    }

    // The nemesis.
    let mut nemesis = Nemesis::new(cfg.seed, cfg.nodes);
    let mut faults = Vec::new();
    let mut unexpected_exits = Vec::new();
    for cycle in 0..cfg.cycles {
        let leader = nodes
            .wait_agreed_leader(&all, cfg.recovery_timeout)
            .await
            .ok();
        let kind = nemesis.next_kind();
        let targets = nemesis.targets(kind, leader);
        let injected_ms = ms(t0);
        match kind {
            FaultKind::KillLeader | FaultKind::KillFollower | FaultKind::RestartAll => {
                for &t in &targets {
                    nodes.kill(t);
                }
            }
            FaultKind::Pause => {
                for &t in &targets {
                    nodes.pause(t);
                }
            }
            FaultKind::PartitionMinority | FaultKind::PartitionLeader => proxies.isolate(&targets),
        }
        let hold_until = Instant::now() + Duration::from_millis(cfg.fault_ms);
        let survivors: Vec<u64> = match kind {
            FaultKind::RestartAll => Vec::new(),
            _ => all
                .iter()
                .copied()
                .filter(|n| !targets.contains(n))
                .collect(),
        };
        let survivors_leader = if survivors.is_empty() {
            None
        } else {
            nodes
                .wait_agreed_leader(
                    &survivors,
                    hold_until.saturating_duration_since(Instant::now()),
                )
                .await
                .ok()
                .filter(|_| Instant::now() <= hold_until)
                .map(|l| (l, ms(t0)))
        };
        tokio::time::sleep(hold_until.saturating_duration_since(Instant::now())).await;
        match kind {
            FaultKind::KillLeader | FaultKind::KillFollower | FaultKind::RestartAll => {
                for &t in &targets {
                    nodes.spawn(t)?;
                }
            }
            FaultKind::Pause => {
                for &t in &targets {
                    nodes.resume(t);
                }
            }
            FaultKind::PartitionMinority | FaultKind::PartitionLeader => proxies.heal_all(),
        }
        let healed_ms = ms(t0);
        let recovered = nodes.wait_agreed_leader(&all, cfg.recovery_timeout).await;
        let recovered_ms = recovered.as_ref().ok().map(|_| ms(t0));
        let first_ack_ms = match recovered_ms {
            Some(_) => wait_for_ack(&acked_so_far, t0, cfg.recovery_timeout).await,
            None => None,
        };
        for &id in &all {
            if let Err(e) = nodes.check_alive(id) {
                unexpected_exits.push(format!("cycle {cycle}: {e}"));
                nodes.spawn(id)?;
            }
        }
        if cfg.progress {
            let rec = match (&recovered, recovered_ms) {
                (Ok(l), Some(r)) => format!(
                    "leader {l} {} ms after heal, first ack {}",
                    r - healed_ms,
                    first_ack_ms.map_or("NONE".to_owned(), |a| format!(
                        "{} ms after heal",
                        a - healed_ms
                    ))
                ),
                (Err(last), _) => format!("NOT RECOVERED in {:?}: {last}", cfg.recovery_timeout),
                _ => String::new(),
            };
            let during = match survivors_leader {
                Some((l, at)) => format!("survivors elected {l} in {} ms", at - injected_ms),
                None => "no leader among survivors during the fault".to_owned(),
            };
            eprintln!(
                "chaos: cycle {}/{} {:<18} targets {:?} (leader before {:?}): {during}; {rec}; acknowledged requests so far {}",
                cycle + 1,
                cfg.cycles,
                kind.name(),
                targets,
                leader,
                acked_so_far.load(Ordering::Relaxed)
            );
        }
        faults.push(FaultRecord {
            cycle,
            kind,
            targets,
            leader_before: leader,
            injected_ms,
            survivors_leader,
            healed_ms,
            recovered_ms,
            first_ack_ms,
        });
    }

    // Heal everything, stop producers, let the cluster settle.
    proxies.heal_all();
    for &id in &all {
        nodes.resume(id);
        nodes.spawn(id)?;
    }
    stop_producers.store(true, Ordering::Relaxed);
    for t in producer_tasks {
        let _ = t.await;
    }
    let quiescence_error = nodes
        .wait_quiescent(Duration::from_secs(30))
        .await
        .err()
        .map(|e| e.to_string());

    // Read every node's stream back.
    let publishes = std::mem::take(&mut *publishes.lock().unwrap_or_else(|e| e.into_inner()));
    let min_len = publishes
        .iter()
        .filter_map(|p| match p.outcome {
            PublishOutcome::Acked { offset } if offset != OFFSET_UNKNOWN => Some(offset + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut reads = tokio::task::JoinSet::new();
    for &id in &all {
        let addr = real[(id - 1) as usize];
        reads.spawn(async move { final_read(id, addr, min_len).await });
    }
    let mut final_reads = Vec::new();
    while let Some(r) = reads.join_next().await {
        if let Ok(fr) = r {
            final_reads.push(fr);
        }
    }
    final_reads.sort_by_key(|f: &FinalRead| f.node);

    // Let consumers catch up with the longest stream, then stop them.
    let target = final_reads
        .iter()
        .map(|f| f.events.len() as u64)
        .max()
        .unwrap_or(0);
    let catch_up = Instant::now() + Duration::from_secs(15);
    while Instant::now() < catch_up {
        let behind = consumer_logs.iter().any(|l| {
            let l = l.lock().unwrap_or_else(|e| e.into_inner());
            l.deliveries.last().map_or(0, |d| d.offset + 1) < target
        });
        if !behind {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_consumers.send_replace(true);
    for t in consumer_tasks {
        let _ = t.await;
    }
    let consumers = consumer_logs
        .iter()
        .map(|l| std::mem::take(&mut *l.lock().unwrap_or_else(|e| e.into_inner())))
        .collect();
    let (fwd, holed, stalled) = proxies.totals();
    drop(nodes);
    drop(proxies);

    let mut faults_by_kind = BTreeMap::new();
    for f in &faults {
        *faults_by_kind.entry(f.kind.name().to_owned()).or_insert(0) += 1;
    }
    let history = History {
        nodes: cfg.nodes,
        seed: cfg.seed,
        started_unix_ms,
        publishes,
        consumers,
        final_reads,
        faults,
    };
    let report = check(&history);
    Ok(ChaosOutcome {
        seed: cfg.seed,
        nodes: cfg.nodes,
        elapsed_ms: ms(t0),
        faults_by_kind,
        proxy_connections: BTreeMap::from([
            ("forwarded".to_owned(), fwd),
            ("black_holed".to_owned(), holed),
            ("stalled".to_owned(), stalled),
        ]),
        unexpected_exits,
        quiescence_error,
        valid: report.is_valid(),
        kept_dir: None,
        report,
        history,
    })
}

/// Waits for the next acknowledgement (any producer); its time, or `None` after `timeout`.
async fn wait_for_ack(acked: &AtomicU64, t0: Instant, timeout: Duration) -> Option<u64> {
    let before = acked.load(Ordering::Relaxed);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if acked.load(Ordering::Relaxed) > before {
            return Some(ms(t0));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

async fn produce(
    producer: u32,
    batch: usize,
    client: Client,
    t0: Instant,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    out: Arc<Mutex<Vec<PublishRecord>>>,
) {
    const PRIORITIES: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
    ];
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<u64> = (0..batch)
            .map(|_| {
                seq += 1;
                (u64::from(producer) + 1) << 40 | seq
            })
            .collect();
        let events = ids
            .iter()
            .map(|&id| {
                // Mixed priorities, so that the node's tier rings reorder the request.
                let priority = PRIORITIES[(id % 4) as usize];
                Event::new(
                    "chaos",
                    priority,
                    Bytes::from(format!("producer {producer} event {id:#x}")),
                )
                .with_id(id)
            })
            .collect();
        let invoked_ms = ms(t0);
        let outcomes: Vec<PublishOutcome> = match client.publish(events).await {
            Ok(offsets) if offsets.len() == ids.len() => {
                acked.fetch_add(1, Ordering::Relaxed);
                offsets
                    .into_iter()
                    .map(|offset| PublishOutcome::Acked { offset })
                    .collect()
            }
            Ok(offsets) => {
                let error = format!(
                    "protocol: {} offsets for {} events",
                    offsets.len(),
                    ids.len()
                );
                ids.iter()
                    .map(|_| PublishOutcome::Failed {
                        error: error.clone(),
                    })
                    .collect()
            }
            Err(e) => {
                let error = e.to_string();
                ids.iter()
                    .map(|_| PublishOutcome::Failed {
                        error: error.clone(),
                    })
                    .collect()
            }
        };
        let completed_ms = ms(t0);
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        for (id, outcome) in ids.into_iter().zip(outcomes) {
            out.push(PublishRecord {
                id,
                producer,
                invoked_ms,
                completed_ms,
                outcome,
            });
        }
    }
}

/// Connects, says hello and subscribes from `from`.
async fn subscribe(addr: SocketAddr, from: u64) -> std::io::Result<SubscriptionConn> {
    let s = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = s.set_nodelay(true);
    let (r, mut w) = s.into_split();
    let mut b = BytesMut::new();
    frame::put_frame(&mut b, Kind::Hello, &frame::encode_hello(Role::Client));
    frame::put_subscribe(
        &mut b,
        &SubscribeBody {
            from_offset: from,
            ..SubscribeBody::default()
        },
    );
    w.write_all(&b).await?;
    Ok(SubscriptionConn {
        reader: FrameReader::new(r, frame::DEFAULT_MAX_FRAME),
        _writer: w,
    })
}

/// A raw subscription. The write half is held open for as long as the subscription lives:
/// dropping it would half-close the connection, which the node may take as the end.
struct SubscriptionConn {
    reader: FrameReader<OwnedReadHalf>,
    _writer: OwnedWriteHalf,
}

/// Decodes one `Events` frame into deliveries (any other frame ends the subscription).
fn deliveries(kind: Kind, body: &Bytes) -> Option<Vec<Delivery>> {
    if kind != Kind::Events {
        return None;
    }
    let evs = codec::decode_offset_events(body, 0).ok()?;
    Some(
        evs.into_iter()
            .map(|(offset, e)| Delivery { offset, id: e.id.0 })
            .collect(),
    )
}

async fn consume(addr: SocketAddr, log: Arc<Mutex<ConsumerLog>>, mut stop: watch::Receiver<bool>) {
    let mut next = 0u64;
    let mut opened = 0u32;
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let conn = tokio::select! {
            r = subscribe(addr, next) => r,
            _ = stop.changed() => return,
        };
        let Ok(mut sub) = conn else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                _ = stop.changed() => return,
            }
        };
        if opened > 0 {
            log.lock().unwrap_or_else(|e| e.into_inner()).reconnects += 1;
        }
        opened += 1;
        loop {
            let frame = tokio::select! {
                f = sub.reader.next() => f,
                _ = stop.changed() => return,
            };
            let Ok(Some((kind, body))) = frame else { break };
            let Some(ds) = deliveries(kind, &body) else {
                break;
            };
            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
            for d in ds {
                next = next.max(d.offset + 1);
                l.deliveries.push(d);
            }
        }
    }
}

/// Reads node `id`'s whole stream: until at least `min_len` events arrived and nothing more
/// came for a second, or 30 s passed.
async fn final_read(id: u64, addr: SocketAddr, min_len: u64) -> FinalRead {
    let mut fr = FinalRead {
        node: id,
        ..FinalRead::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = 0u64;
    let mut last_error = String::from("no connection");
    while Instant::now() < deadline {
        let mut sub = match subscribe(addr, next).await {
            Ok(r) => r,
            Err(e) => {
                last_error = e.to_string();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let idle = if next >= min_len {
                Duration::from_secs(1)
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match tokio::time::timeout(idle, sub.reader.next()).await {
                Err(_) if next >= min_len => return fr,
                Err(_) => break,
                Ok(Ok(Some((kind, body)))) => match deliveries(kind, &body) {
                    Some(ds) => {
                        for d in ds {
                            next = next.max(d.offset + 1);
                            fr.events.push(d);
                        }
                    }
                    None => {
                        last_error = format!("unexpected {kind:?} frame");
                        break;
                    }
                },
                Ok(Ok(None)) => {
                    last_error = "connection closed".into();
                    break;
                }
                Ok(Err(e)) => {
                    last_error = e.to_string();
                    break;
                }
            }
        }
    }
    fr.error = Some(format!(
        "read {} events, expected at least {min_len}: {last_error}",
        fr.events.len()
    ));
    fr
}
