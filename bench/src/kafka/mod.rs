//! `bench kafka`: produce throughput and commit latency through the Kafka listener, against
//! the native client in the same run.
//!
//! An in-process cluster (3 nodes by default) with a Kafka listener next to every node, as
//! the binary starts them. Each round is a native run (eventstream-client) and a Kafka run
//! (native first in odd rounds, Kafka first in even ones), both with the same events, payload
//! and events outstanding, each on a topic of its own:
//!
//! * **Native:** `connections` clients (one connection each), each with `in_flight`
//!   publishes of `batch` events outstanding. A publish's latency is from the call to its
//!   acknowledgement.
//! * **Kafka, librdkafka** (the default client, [`KafkaClient::Librdkafka`]): one producer
//!   (the `rdkafka` crate) with `acks=all`, batching as Kafka producers do: up to `batch`
//!   records per batch, `linger.ms` of `linger_ms`, up to `connections × in_flight` produce
//!   requests in flight to the leader. The load keeps at most as many records unacknowledged
//!   as the native run has (`connections × in_flight × batch`), so the two runs are the same
//!   closed loop. A record's latency is from `send` to its delivery report.
//! * **Kafka, wire** ([`KafkaClient::Wire`]): a load client written with the listener's own
//!   codec (`kafka-protocol`): `connections` connections each pipelining `in_flight`
//!   ProduceRequests of exactly `batch` records. It measures the listener without a client
//!   library's batching in the way.
//!
//! After each run every node must hold exactly the acknowledged events of the run's topic:
//! as many as were acknowledged, the same offsets on every node, each event at the offset it
//! was acknowledged with (the wire client learns only a batch's base offset: each one must
//! be one of the topic's offsets). The report gives each round, the medians over the rounds
//! and Kafka's median events/s ÷ the native median (the target is ≥ 0.70).

mod cpu;
mod librdkafka;
mod wire;

use crate::common::ms;
use crate::error::BenchError;
use bytes::Bytes;
use eventstream_client::{Client, ClientConfig};
use eventstream_core::hdrhistogram::Histogram;
use eventstream_core::{Engine, Event, Priority};
use eventstream_kafka::{Coordinator, KafkaCounters, KafkaOptions};
use eventstream_node::LocalCluster;
use eventstream_proto::frame::SubscribeBody;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kafka's median events/s ÷ the native median that the target asks for.
pub const TARGET_RATIO: f64 = 0.70;

/// How long a reader waits for the next event before it gives up.
const CONSUME_IDLE: Duration = Duration::from_secs(30);

/// What a read of a run's topic got.
#[derive(Debug, Default, Clone, Copy)]
struct Consumed {
    events: u64,
    /// Payload bytes.
    bytes: u64,
    seconds: f64,
}

/// The Kafka client of a run's Kafka side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaClient {
    /// librdkafka (the `rdkafka` crate): the client most Kafka libraries are built on.
    #[default]
    Librdkafka,
    /// The bench's own pipelining client on the `kafka-protocol` codec.
    Wire,
}

impl std::fmt::Display for KafkaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KafkaClient::Librdkafka => "librdkafka",
            KafkaClient::Wire => "wire",
        })
    }
}

impl std::str::FromStr for KafkaClient {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "librdkafka" => Ok(KafkaClient::Librdkafka),
            "wire" => Ok(KafkaClient::Wire),
            other => Err(format!("`{other}` is not `librdkafka` or `wire`")),
        }
    }
}

/// The codec of the Kafka load client's record batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaCompression {
    /// Uncompressed batches.
    #[default]
    None,
    /// lz4 (frames), decompressed by the listener.
    Lz4,
}

impl std::fmt::Display for KafkaCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KafkaCompression::None => "none",
            KafkaCompression::Lz4 => "lz4",
        })
    }
}

impl std::str::FromStr for KafkaCompression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(KafkaCompression::None),
            "lz4" => Ok(KafkaCompression::Lz4),
            other => Err(format!("`{other}` is not `none` or `lz4`")),
        }
    }
}

/// Options of `bench kafka`.
#[derive(Debug, Clone)]
pub struct KafkaBenchOptions {
    /// Nodes of the in-process cluster.
    pub nodes: usize,
    /// Events per run (each native and each Kafka run publishes this many).
    pub events: u64,
    /// Events per request (records per Kafka record batch).
    pub batch: usize,
    /// Payload (record value) bytes per event.
    pub payload_bytes: usize,
    /// Connections per run: native clients, or Kafka connections to the leader.
    pub connections: usize,
    /// Requests outstanding per connection.
    pub in_flight: usize,
    /// Rounds of (native run, Kafka run).
    pub rounds: usize,
    /// Codec of the Kafka record batches.
    pub compression: KafkaCompression,
    /// The Kafka client.
    pub client: KafkaClient,
    /// librdkafka's `batch.num.messages` (the most records per batch); `None`: `batch`.
    pub kafka_batch: Option<usize>,
    /// librdkafka's `linger.ms`: how long a batch waits to fill.
    pub linger_ms: u32,
    /// librdkafka's `enable.idempotence` (sequence-checked batches). librdkafka then keeps
    /// one produce request in flight per partition once a batch holds 5 records or more (it
    /// counts the records in flight against its limit of 5 requests), so a one-partition
    /// topic wants big batches (`kafka_batch`).
    pub idempotent: bool,
    /// A new cluster for every run instead of one cluster for all of them.
    pub fresh_cluster: bool,
    /// Where the clusters keep their logs (default: a scratch directory under the current one).
    pub data_dir: Option<PathBuf>,
}

impl Default for KafkaBenchOptions {
    fn default() -> Self {
        KafkaBenchOptions {
            nodes: 3,
            events: 400_000,
            batch: 100,
            payload_bytes: 100,
            connections: 4,
            in_flight: 4,
            rounds: 3,
            compression: KafkaCompression::None,
            client: KafkaClient::Librdkafka,
            kafka_batch: None,
            linger_ms: 5,
            idempotent: false,
            fresh_cluster: false,
            data_dir: None,
        }
    }
}

/// One run: one protocol, one topic.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's topic.
    pub topic: String,
    /// Events acknowledged.
    pub events: u64,
    /// Requests acknowledged (native and wire runs; a librdkafka run sees its records' delivery
    /// reports, not its requests, and counts 0).
    pub requests: u64,
    /// Kafka requests the listeners served during the run (Produce and the client's few
    /// Metadata and ApiVersions requests; 0 for a native run): how a librdkafka run batched.
    pub listener_requests: u64,
    /// Requests refused (an error code in the answer, or a failed native publish) or never
    /// answered.
    pub failed_requests: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Wall time of the load.
    pub seconds: f64,
    /// Acknowledged events per second.
    pub events_per_sec: f64,
    /// Request → acknowledgement latency (commit on a quorum + fsync + apply), ms.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// The topic's events on every node (the least, if they differed).
    pub stored_events: u64,
    /// Offset of the topic's first event.
    pub topic_first_offset: u64,
    /// One past the topic's last event (its high watermark).
    pub topic_end_offset: u64,
    /// CPU seconds the nodes' threads spent during the load (`es-…` threads; 0 where
    /// `/proc` is not readable).
    pub node_cpu_seconds: f64,
    /// CPU seconds the rest of the process spent: the load client (librdkafka's threads or
    /// the native clients) and the bench.
    pub client_cpu_seconds: f64,
    /// `node_cpu_seconds` per acknowledged event, µs.
    pub node_cpu_us_per_event: f64,
    /// `client_cpu_seconds` per acknowledged event, µs.
    pub client_cpu_us_per_event: f64,
    /// Events of the topic read back after the run, from its first offset: by a native
    /// subscriber for a native run, by a librdkafka consumer for a Kafka run.
    pub consumed_events: u64,
    /// Seconds from the subscription (or assignment) to the last event read.
    pub consume_seconds: f64,
    /// `consumed_events / consume_seconds`.
    pub consume_events_per_sec: f64,
    /// Payload megabytes (10^6) read per second.
    pub consume_mb_per_sec: f64,
    /// Why the read stopped short, if it did.
    pub consume_error: Option<String>,
    /// Every node holds exactly the acknowledged events of the topic, at the acknowledged
    /// offsets.
    pub verified: bool,
    /// Why not, when not verified.
    pub verify_error: Option<String>,
}

/// A native run and a Kafka run.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// 1-based.
    pub round: usize,
    /// The native client's run.
    pub native: RunReport,
    /// The Kafka load client's run.
    pub kafka: RunReport,
    /// Kafka events/s ÷ native events/s in this round.
    pub kafka_to_native_ratio: f64,
}

/// Result of `bench kafka`.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaBenchReport {
    /// Nodes.
    pub nodes: usize,
    /// Events per run.
    pub events: u64,
    /// Events per request.
    pub batch: usize,
    /// Payload bytes per event.
    pub payload_bytes: usize,
    /// Connections per run.
    pub connections: usize,
    /// Requests outstanding per connection.
    pub in_flight: usize,
    /// Codec of the Kafka record batches.
    pub compression: String,
    /// The Kafka client.
    pub client: String,
    /// librdkafka's `batch.num.messages` (librdkafka runs).
    pub kafka_batch: usize,
    /// librdkafka's `linger.ms` (librdkafka runs).
    pub linger_ms: u32,
    /// librdkafka's `enable.idempotence` (librdkafka runs).
    pub idempotent: bool,
    /// A new cluster for every run.
    pub fresh_cluster: bool,
    /// The Produce version the wire client used (wire runs only).
    pub produce_version: Option<i16>,
    /// Every round.
    pub rounds: Vec<RoundReport>,
    /// Median over the rounds of the native events/s.
    pub native_events_per_sec: f64,
    /// Median of the native runs' p50 latency, ms.
    pub native_p50_ms: f64,
    /// Median of the native runs' p99 latency, ms.
    pub native_p99_ms: f64,
    /// Median over the rounds of the Kafka events/s.
    pub kafka_events_per_sec: f64,
    /// Median of the Kafka runs' p50 latency, ms.
    pub kafka_p50_ms: f64,
    /// Median of the Kafka runs' p99 latency, ms.
    pub kafka_p99_ms: f64,
    /// `kafka_events_per_sec / native_events_per_sec`.
    pub kafka_to_native_ratio: f64,
    /// Median of the native subscribers' read-back events/s.
    pub native_consume_events_per_sec: f64,
    /// Median of the librdkafka consumers' read-back events/s.
    pub kafka_consume_events_per_sec: f64,
    /// `kafka_consume_events_per_sec / native_consume_events_per_sec`.
    pub kafka_to_native_consume_ratio: f64,
    /// The ratio the target asks for.
    pub target_ratio: f64,
    /// `kafka_to_native_ratio >= target_ratio`.
    pub target_met: bool,
    /// Every run verified.
    pub verified: bool,
    /// Every event of every run acknowledged and read back, no request failed.
    pub complete: bool,
    /// Produce partitions the listeners refused, over every run.
    pub listener_produce_errors: u64,
    /// Kafka connections the listeners closed for a bad request, over every run.
    pub listener_protocol_errors: u64,
}

/// Runs `bench kafka`.
pub fn run(a: &KafkaBenchOptions) -> Result<KafkaBenchReport, BenchError> {
    for (option, v) in [
        ("nodes", a.nodes),
        ("batch", a.batch),
        ("connections", a.connections),
        ("in-flight", a.in_flight),
        ("rounds", a.rounds),
    ] {
        if v == 0 {
            return Err(BenchError::option(option, "must be at least 1"));
        }
    }
    if a.events == 0 {
        return Err(BenchError::option("events", "must be at least 1"));
    }
    if a.kafka_batch == Some(0) {
        return Err(BenchError::option("kafka-batch", "must be at least 1"));
    }
    if a.batch > i32::MAX as usize {
        return Err(BenchError::option(
            "batch",
            "at most 2^31 - 1 records per batch",
        ));
    }
    let (_scratch, dir) = crate::common::bench_dir(a.data_dir.as_deref(), "bench-kafka")?;
    let rt = eventstream_testkit::runtime(2)?;
    let mut shared = if a.fresh_cluster {
        None
    } else {
        Some(BenchCluster::start(a.nodes, &dir)?)
    };
    let mut produce_version = None;
    let mut listener = (0, 0);
    let mut rounds = Vec::with_capacity(a.rounds);
    let mut run_one = |round: usize, side: Side| -> Result<RunReport, BenchError> {
        let fresh = match shared {
            Some(_) => None,
            None => {
                let d = dir.join(format!("round-{round}-{side}"));
                Some((BenchCluster::start(a.nodes, &d)?, d))
            }
        };
        let cluster = match (&shared, &fresh) {
            (Some(c), _) | (None, Some((c, _))) => c,
            (None, None) => unreachable!("a cluster was started"),
        };
        let topic = format!("bench-{side}-{round}");
        let plan = Arc::new(Plan::new(a, &topic));
        let served_before = cluster.listener_requests();
        let cpu_before = cpu::CpuSample::now();
        let load = match side {
            Side::Native => rt.block_on(native_load(&plan, cluster.endpoints_leader_first())),
            Side::Kafka => match a.client {
                KafkaClient::Librdkafka => librdkafka::load(&plan, &cluster.kafka, a),
                KafkaClient::Wire => {
                    let (load, v) = rt.block_on(wire::load(&plan, cluster.kafka[0]))?;
                    produce_version = Some(v);
                    Ok(load)
                }
            },
        }?;
        let cpu_after = cpu::CpuSample::now();
        let mut report = cluster.check(&topic, load, Duration::from_secs(30));
        if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
            report.cpu(a.until(&b));
        }
        report.listener_requests = cluster.listener_requests() - served_before;
        let read = match side {
            Side::Native => rt.block_on(native_consume(
                cluster.endpoints_leader_first(),
                &topic,
                report.topic_first_offset,
                report.events,
            )),
            Side::Kafka => librdkafka::consume(
                &cluster.kafka,
                &topic,
                report.topic_first_offset,
                report.events,
            ),
        };
        report.read_back(read);
        eprintln!(
            "round {round} {side}: {} events in {:.2} s = {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, failed requests {}, verified {}; CPU µs/event nodes {:.2}, client {:.2}; read back {:.0} events/s",
            report.events,
            report.seconds,
            report.events_per_sec,
            report.p50_ms,
            report.p99_ms,
            report.failed_requests,
            report.verified,
            report.node_cpu_us_per_event,
            report.client_cpu_us_per_event,
            report.consume_events_per_sec
        );
        if let Some((c, d)) = fresh {
            let (p, e) = c.listener_errors();
            listener = (listener.0 + p, listener.1 + e);
            c.shutdown();
            let _ = std::fs::remove_dir_all(d);
        }
        Ok(report)
    };
    for round in 1..=a.rounds {
        // A, B, B, A, …: neither side always runs on the cluster the other has just loaded.
        let (native, kafka) = if round % 2 == 1 {
            let native = run_one(round, Side::Native)?;
            (native, run_one(round, Side::Kafka)?)
        } else {
            let kafka = run_one(round, Side::Kafka)?;
            (run_one(round, Side::Native)?, kafka)
        };
        rounds.push(RoundReport {
            round,
            kafka_to_native_ratio: ratio(kafka.events_per_sec, native.events_per_sec),
            native,
            kafka,
        });
    }
    if let Some(c) = shared.take() {
        let (p, e) = c.listener_errors();
        listener = (listener.0 + p, listener.1 + e);
        c.shutdown();
    }
    let med = |f: fn(&RoundReport) -> f64| median(rounds.iter().map(f).collect());
    let native_eps = med(|r| r.native.events_per_sec);
    let kafka_eps = med(|r| r.kafka.events_per_sec);
    let kafka_to_native_ratio = ratio(kafka_eps, native_eps);
    let native_read = med(|r| r.native.consume_events_per_sec);
    let kafka_read = med(|r| r.kafka.consume_events_per_sec);
    let runs: Vec<&RunReport> = rounds.iter().flat_map(|r| [&r.native, &r.kafka]).collect();
    let verified = runs.iter().all(|r| r.verified);
    let complete = runs
        .iter()
        .all(|r| r.events == a.events && r.failed_requests == 0 && r.consumed_events == r.events);
    Ok(KafkaBenchReport {
        nodes: a.nodes,
        events: a.events,
        batch: a.batch,
        payload_bytes: a.payload_bytes,
        connections: a.connections,
        in_flight: a.in_flight,
        compression: a.compression.to_string(),
        client: a.client.to_string(),
        kafka_batch: a.kafka_batch.unwrap_or(a.batch),
        linger_ms: a.linger_ms,
        idempotent: a.idempotent,
        fresh_cluster: a.fresh_cluster,
        produce_version,
        native_events_per_sec: native_eps,
        native_p50_ms: med(|r| r.native.p50_ms),
        native_p99_ms: med(|r| r.native.p99_ms),
        kafka_events_per_sec: kafka_eps,
        kafka_p50_ms: med(|r| r.kafka.p50_ms),
        kafka_p99_ms: med(|r| r.kafka.p99_ms),
        kafka_to_native_ratio,
        native_consume_events_per_sec: native_read,
        kafka_consume_events_per_sec: kafka_read,
        kafka_to_native_consume_ratio: ratio(kafka_read, native_read),
        target_ratio: TARGET_RATIO,
        target_met: kafka_to_native_ratio >= TARGET_RATIO,
        verified,
        complete,
        listener_produce_errors: listener.0,
        listener_protocol_errors: listener.1,
        rounds,
    })
}

/// The median (the mean of the middle two for an even count; 0 for none).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Native,
    Kafka,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Native => "native",
            Side::Kafka => "kafka",
        })
    }
}

/// The in-process cluster with a Kafka listener next to every node.
struct BenchCluster {
    nodes: LocalCluster,
    /// Every node's Kafka address, by node index.
    kafka: Vec<SocketAddr>,
    counters: Vec<Arc<KafkaCounters>>,
}

impl BenchCluster {
    /// `n` nodes under `dir`, each member advertising its Kafka address (so Metadata names
    /// every broker), each listener served on its node's runtime.
    fn start(n: usize, dir: &Path) -> Result<BenchCluster, BenchError> {
        let listeners = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| BenchError::Network {
                peer: "127.0.0.1:0".into(),
                source,
            })?;
        let kafka = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| BenchError::Network {
                peer: "127.0.0.1:0".into(),
                source,
            })?;
        let nodes = LocalCluster::start(
            n,
            dir,
            |c| {
                for (i, p) in c.peers.iter_mut().enumerate() {
                    p.push_str(&format!("+{}", kafka[i]));
                }
            },
            |_| Engine::builder(),
        )?;
        let mut counters = Vec::with_capacity(n);
        for (node, l) in nodes.nodes.iter().flatten().zip(listeners) {
            let rt = node.runtime_handle();
            let listener = {
                let _guard = rt.enter();
                l.set_nonblocking(true)
                    .and_then(|_| tokio::net::TcpListener::from_std(l))
                    .map_err(|source| BenchError::Network {
                        peer: "the Kafka listener".into(),
                        source,
                    })?
            };
            let c = Arc::new(KafkaCounters::default());
            counters.push(c.clone());
            rt.spawn(eventstream_kafka::serve(
                listener,
                node.gateway(),
                KafkaOptions::default(),
                c,
                Coordinator::default(),
            ));
        }
        nodes
            .wait_for_leader(Duration::from_secs(10))
            .ok_or_else(|| BenchError::Failed("no leader elected in 10 s".into()))?;
        Ok(BenchCluster {
            nodes,
            kafka,
            counters,
        })
    }

    /// Client endpoints, the leader's first (the native client starts where the Kafka client
    /// goes: at the leader).
    fn endpoints_leader_first(&self) -> Vec<String> {
        let mut eps = self.nodes.endpoints();
        if let Some(l) = self.nodes.leader() {
            eps.swap(0, (l - 1) as usize);
        }
        eps
    }

    /// (produce partitions refused, connections closed for a bad request) over every listener.
    fn listener_errors(&self) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(p, e), c| {
            (
                p + c.produce_errors.load(Ordering::Relaxed),
                e + c.protocol_errors.load(Ordering::Relaxed),
            )
        })
    }

    /// Kafka requests served so far, over every listener.
    fn listener_requests(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.requests.load(Ordering::Relaxed))
            .sum()
    }

    fn shutdown(self) {
        self.nodes.shutdown();
    }

    /// The run's report, with its check against every node's stream.
    fn check(&self, topic: &str, mut load: Load, timeout: Duration) -> RunReport {
        let verdict = self.verify(topic, &mut load, timeout);
        let h = &load.hist;
        let (stored_events, topic_first_offset, topic_end_offset, verify_error) = match verdict {
            Ok(found) => (found.events, found.first, found.end, None),
            Err((found, why)) => (found.events, found.first, found.end, Some(why)),
        };
        RunReport {
            topic: topic.to_owned(),
            events: load.acked,
            requests: load.requests,
            listener_requests: 0,
            failed_requests: load.failed,
            first_error: load.first_error,
            seconds: load.seconds,
            events_per_sec: load.acked as f64 / load.seconds.max(1e-9),
            p50_ms: ms(h, 0.5),
            p99_ms: ms(h, 0.99),
            p999_ms: ms(h, 0.999),
            max_ms: h.max() as f64 / 1e6,
            stored_events,
            node_cpu_seconds: 0.0,
            client_cpu_seconds: 0.0,
            node_cpu_us_per_event: 0.0,
            client_cpu_us_per_event: 0.0,
            consumed_events: 0,
            consume_seconds: 0.0,
            consume_events_per_sec: 0.0,
            consume_mb_per_sec: 0.0,
            consume_error: None,
            topic_first_offset,
            topic_end_offset,
            verified: verify_error.is_none(),
            verify_error,
        }
    }

    /// Waits until every node has applied what the leader has, then compares each node's
    /// copy of `topic` with what was acknowledged (`load.offsets`).
    fn verify(
        &self,
        topic: &str,
        load: &mut Load,
        timeout: Duration,
    ) -> Result<Found, (Found, String)> {
        let mut found = Found::default();
        let streams: Vec<_> = self
            .nodes
            .nodes
            .iter()
            .flatten()
            .map(|n| n.stream())
            .collect();
        let end = streams.iter().map(|s| s.next_offset()).max().unwrap_or(0);
        let deadline = Instant::now() + timeout;
        while streams.iter().any(|s| s.next_offset() < end) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut first_copy: Option<Vec<u64>> = None;
        for (i, s) in streams.iter().enumerate() {
            let node = i + 1;
            let info = match s.topics() {
                Ok(ts) => ts.into_iter().find(|t| t.name.as_str() == topic),
                Err(e) => return Err((found, format!("node {node}: listing topics: {e}"))),
            };
            let Some(info) = info else {
                if load.acked == 0 {
                    continue;
                }
                return Err((found, format!("node {node} has no events of `{topic}`")));
            };
            if i == 0 {
                found = Found {
                    events: info.events,
                    first: info.first_offset,
                    end: info.last_offset + 1,
                };
            }
            found.events = found.events.min(info.events);
            if info.events != load.acked {
                return Err((
                    found,
                    format!(
                        "node {node} holds {} events of `{topic}`, {} were acknowledged",
                        info.events, load.acked
                    ),
                ));
            }
            let offsets = match topic_offsets(s, topic, info.first_offset, info.last_offset) {
                Ok(o) => o,
                Err(e) => return Err((found, format!("node {node}: reading `{topic}`: {e}"))),
            };
            match &first_copy {
                None => first_copy = Some(offsets),
                Some(o) if *o != offsets => {
                    return Err((
                        found,
                        format!("node {node}'s offsets of `{topic}` differ from node 1's"),
                    ))
                }
                Some(_) => {}
            }
        }
        let stored = first_copy.unwrap_or_default();
        load.offsets.sort_unstable();
        if !load.batch_offsets {
            return if load.offsets == stored {
                Ok(found)
            } else {
                Err((
                    found,
                    "the acknowledged offsets are not the offsets the topic holds".into(),
                ))
            };
        }
        let distinct = load.offsets.windows(2).all(|w| w[0] < w[1]);
        let held = load.offsets.iter().all(|o| stored.binary_search(o).is_ok());
        if distinct && held {
            Ok(found)
        } else {
            Err((
                found,
                format!(
                    "acknowledged base offsets: distinct {distinct}, all of them the topic's {held}"
                ),
            ))
        }
    }
}

/// What the nodes hold of a run's topic.
#[derive(Debug, Default, Clone, Copy)]
struct Found {
    events: u64,
    first: u64,
    end: u64,
}

/// The offsets of `topic`'s events in `first..=last` on one node, ascending.
fn topic_offsets(
    s: &eventstream_node::CommittedStream,
    topic: &str,
    first: u64,
    last: u64,
) -> Result<Vec<u64>, String> {
    let mut offsets = Vec::new();
    let mut out = Vec::new();
    let mut from = first;
    while from <= last {
        out.clear();
        let next = match s.read_topic(topic, from, 16_384, 16 << 20, &mut out) {
            Ok(next) => next,
            Err(Ok(earliest)) => return Err(format!("retained from offset {earliest} only")),
            Err(Err(e)) => return Err(e.to_string()),
        };
        offsets.extend(out.iter().map(|(o, _)| *o).filter(|o| *o <= last));
        if next <= from {
            return Err(format!("no progress reading at offset {from}"));
        }
        from = next;
    }
    Ok(offsets)
}

impl RunReport {
    /// Records the CPU the load took: (nodes' seconds, clients' seconds).
    fn cpu(&mut self, (nodes, clients): (f64, f64)) {
        let per_event = |s: f64| s * 1e6 / self.events.max(1) as f64;
        self.node_cpu_seconds = nodes;
        self.client_cpu_seconds = clients;
        self.node_cpu_us_per_event = per_event(nodes);
        self.client_cpu_us_per_event = per_event(clients);
    }

    /// Records the read back of the run's topic.
    fn read_back(&mut self, read: Result<Consumed, BenchError>) {
        match read {
            Ok(c) => {
                self.consumed_events = c.events;
                self.consume_seconds = c.seconds;
                self.consume_events_per_sec = c.events as f64 / c.seconds.max(1e-9);
                self.consume_mb_per_sec = c.bytes as f64 / 1e6 / c.seconds.max(1e-9);
            }
            Err(e) => self.consume_error = Some(e.to_string()),
        }
    }
}

/// Reads `events` events of `topic` from `first_offset` with a native subscriber.
async fn native_consume(
    endpoints: Vec<String>,
    topic: &str,
    first_offset: u64,
    events: u64,
) -> Result<Consumed, BenchError> {
    let client = Client::new(ClientConfig::new(endpoints))?;
    let start = Instant::now();
    let mut sub = client.subscribe(SubscribeBody {
        from_offset: first_offset,
        topic: Some(topic.to_owned()),
        ..SubscribeBody::default()
    });
    let mut got = Consumed::default();
    while got.events < events {
        match sub.next_timeout(CONSUME_IDLE).await? {
            Some((_, e)) => {
                got.events += 1;
                got.bytes += e.payload.len() as u64;
            }
            None => {
                return Err(BenchError::Timeout(format!(
                    "a native subscriber read {} of {events} events of `{topic}`, then nothing for {} s",
                    got.events,
                    CONSUME_IDLE.as_secs()
                )))
            }
        }
    }
    got.seconds = start.elapsed().as_secs_f64();
    Ok(got)
}

/// What one run offers: `requests` requests of `batch` events (the last one the rest).
struct Plan {
    topic: String,
    events: u64,
    batch: usize,
    requests: u64,
    in_flight: usize,
    connections: usize,
    payload: Bytes,
    compression: KafkaCompression,
    /// The next request to send, shared by every connection.
    next: AtomicU64,
}

impl Plan {
    fn new(a: &KafkaBenchOptions, topic: &str) -> Plan {
        Plan {
            topic: topic.to_owned(),
            events: a.events,
            batch: a.batch,
            requests: a.events.div_ceil(a.batch as u64),
            in_flight: a.in_flight,
            connections: a.connections,
            payload: Bytes::from(vec![b'x'; a.payload_bytes]),
            compression: a.compression,
            next: AtomicU64::new(0),
        }
    }

    /// The next request's number of events, or `None` when every request has been taken.
    fn take(&self) -> Option<usize> {
        let r = self.next.fetch_add(1, Ordering::Relaxed);
        (r < self.requests)
            .then(|| (self.events - r * self.batch as u64).min(self.batch as u64) as usize)
    }
}

/// What one connection (or, merged, one run) saw.
struct Load {
    acked: u64,
    requests: u64,
    failed: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
    /// Every acknowledged event's offset, or with `batch_offsets` every acknowledged
    /// batch's base offset.
    offsets: Vec<u64>,
    /// `offsets` are batches' base offsets (the wire client's answers name no more).
    batch_offsets: bool,
    seconds: f64,
}

impl Load {
    fn new() -> Load {
        Load {
            acked: 0,
            requests: 0,
            failed: 0,
            first_error: None,
            hist: Histogram::<u64>::new_with_bounds(1_000, 120_000_000_000, 3).expect("bounds"),
            offsets: Vec::new(),
            batch_offsets: false,
            seconds: 0.0,
        }
    }

    /// A load that learns batches' base offsets only.
    fn of_batches() -> Load {
        Load {
            batch_offsets: true,
            ..Load::new()
        }
    }

    fn fail(&mut self, n: u64, why: impl FnOnce() -> String) {
        self.failed += n;
        if n > 0 && self.first_error.is_none() {
            self.first_error = Some(why());
        }
    }

    fn merge(&mut self, o: Load) {
        self.acked += o.acked;
        self.requests += o.requests;
        self.fail(o.failed, || o.first_error.unwrap_or_default());
        self.hist.add(&o.hist).expect("same bounds");
        self.offsets.extend(o.offsets);
    }
}

/// The native run: `connections` clients, each with `in_flight` publishes outstanding.
async fn native_load(plan: &Arc<Plan>, endpoints: Vec<String>) -> Result<Load, BenchError> {
    let config = ClientConfig::new(endpoints);
    let clients = (0..plan.connections)
        .map(|_| Client::new(config.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in &clients {
        for _ in 0..plan.in_flight {
            let (client, plan) = (client.clone(), plan.clone());
            tasks.push(tokio::spawn(async move {
                let mut load = Load::new();
                while let Some(n) = plan.take() {
                    let events: Vec<Event> = (0..n)
                        .map(|_| {
                            Event::new(plan.topic.as_str(), Priority::Medium, plan.payload.clone())
                        })
                        .collect();
                    let t = Instant::now();
                    let result = client.publish(events).await;
                    load.hist.saturating_record(t.elapsed().as_nanos() as u64);
                    match result {
                        Ok(offsets) => {
                            load.acked += offsets.len() as u64;
                            load.requests += 1;
                            load.offsets.extend(offsets);
                        }
                        Err(e) => load.fail(1, || format!("publish: {e}")),
                    }
                }
                load
            }));
        }
    }
    let mut all = Load::new();
    for t in tasks {
        match t.await {
            Ok(l) => all.merge(l),
            Err(e) => all.fail(1, || format!("publishing task: {e}")),
        }
    }
    all.seconds = start.elapsed().as_secs_f64();
    Ok(all)
}

impl std::fmt::Display for KafkaBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(
            f,
            "kafka ({}) vs native: {} nodes, {} events per run, {} events per request, {}-byte payloads, {} connections x {} in flight, compression {}{}{}",
            r.client,
            r.nodes,
            r.events,
            r.batch,
            r.payload_bytes,
            r.connections,
            r.in_flight,
            r.compression,
            match r.produce_version {
                Some(v) => format!(", Produce v{v}"),
                None => format!(
                    ", batch.num.messages {}, linger.ms {}, idempotence {}",
                    r.kafka_batch, r.linger_ms, r.idempotent
                ),
            },
            if r.fresh_cluster { ", a new cluster per run" } else { "" }
        )?;
        writeln!(
            f,
            "{:>6}  {:>14} {:>9} {:>9}  {:>14} {:>9} {:>9}  {:>6}  {:>14} {:>14}  {:>8}",
            "round",
            "native ev/s",
            "p50 ms",
            "p99 ms",
            "kafka ev/s",
            "p50 ms",
            "p99 ms",
            "ratio",
            "native read/s",
            "kafka read/s",
            "verified"
        )?;
        for x in &r.rounds {
            writeln!(
                f,
                "{:>6}  {:>14.0} {:>9.2} {:>9.2}  {:>14.0} {:>9.2} {:>9.2}  {:>6.2}  {:>14.0} {:>14.0}  {:>8}",
                x.round,
                x.native.events_per_sec,
                x.native.p50_ms,
                x.native.p99_ms,
                x.kafka.events_per_sec,
                x.kafka.p50_ms,
                x.kafka.p99_ms,
                x.kafka_to_native_ratio,
                x.native.consume_events_per_sec,
                x.kafka.consume_events_per_sec,
                x.native.verified && x.kafka.verified
            )?;
        }
        writeln!(
            f,
            "{:>6}  {:>14.0} {:>9.2} {:>9.2}  {:>14.0} {:>9.2} {:>9.2}  {:>6.2}  {:>14.0} {:>14.0}",
            "median",
            r.native_events_per_sec,
            r.native_p50_ms,
            r.native_p99_ms,
            r.kafka_events_per_sec,
            r.kafka_p50_ms,
            r.kafka_p99_ms,
            r.kafka_to_native_ratio,
            r.native_consume_events_per_sec,
            r.kafka_consume_events_per_sec
        )?;
        for x in &r.rounds {
            for run in [&x.native, &x.kafka] {
                if let Some(e) = run.first_error.as_ref().or(run.verify_error.as_ref()) {
                    writeln!(
                        f,
                        "round {} `{}`: {} failed requests; {e}",
                        x.round, run.topic, run.failed_requests
                    )?;
                }
                if let Some(e) = &run.consume_error {
                    writeln!(f, "round {} `{}`: reading back: {e}", x.round, run.topic)?;
                }
            }
        }
        writeln!(
            f,
            "kafka / native {:.2} (target >= {:.2}: {}), reading {:.2}; verified {}, complete {}; listener produce errors {}, protocol errors {}",
            r.kafka_to_native_ratio,
            r.target_ratio,
            if r.target_met { "met" } else { "not met" },
            r.kafka_to_native_consume_ratio,
            r.verified,
            r.complete,
            r.listener_produce_errors,
            r.listener_protocol_errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn a_plan_takes_full_requests_then_the_rest() {
        let a = KafkaBenchOptions {
            events: 250,
            batch: 100,
            ..KafkaBenchOptions::default()
        };
        let p = Plan::new(&a, "t");
        assert_eq!(
            std::iter::from_fn(|| p.take()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
    }
}
