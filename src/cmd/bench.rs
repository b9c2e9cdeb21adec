//! `eventstream bench …`: the flags of each benchmark; the harnesses are `eventstream-bench`.
//! Every benchmark prints a table, or one JSON object with `--json`.

use super::ClientTlsArgs;
use anyhow::Context;
use clap::{Args, Subcommand};
use eventstream_bench::kafka::{KafkaBenchOptions, KafkaClient, KafkaCompression};
use eventstream_bench::pipeline::{Idle, PipelineOptions};
use eventstream_bench::soak::SoakOptions;
use eventstream_bench::{
    failover, hiccups, kafka, overload, pipeline, replication, restart, soak, AckCheck,
};
use eventstream_node::config::OverloadPolicy;
use std::path::PathBuf;

/// `eventstream bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// End-to-end pipeline throughput and latency of the embedded engine.
    Pipeline(PipelineArgs),
    /// Replicated publish throughput and commit latency (in-process cluster or --endpoints).
    Replication(ReplicationArgs),
    /// Produce throughput and commit latency through the Kafka listener against the native
    /// client, alternating in the same run (in-process cluster, a listener per node).
    Kafka(KafkaArgs),
    /// kill -9 the leader of a 3-process cluster repeatedly; failover time and lost acks.
    Failover(FailoverArgs),
    /// SIGTERM (graceful restart) the leader of a 3-process cluster repeatedly; longest gap
    /// between acknowledged writes around each restart.
    Restart(RestartArgs),
    /// Producers at 2x the cluster's capacity: back-pressure, RSS, exact accounting.
    Overload(OverloadArgs),
    /// The stream on disk under a long write load on real node processes: memory against
    /// retained bytes, snapshots, a catch-up read, crash restart, follower catch-up.
    Soak(SoakArgs),
    /// The machine's own floor under tail latency: time taken from a pinned spinning thread.
    Hiccups(HiccupArgs),
}

/// `eventstream bench pipeline`.
#[derive(Debug, Args, Clone)]
pub struct PipelineArgs {
    /// Events to publish in total.
    #[arg(long, default_value_t = PipelineOptions::default().events)]
    events: u64,
    /// Producer threads.
    #[arg(long, default_value_t = PipelineOptions::default().producers)]
    producers: usize,
    /// Worker threads (one lane each).
    #[arg(long, default_value_t = PipelineOptions::default().workers)]
    workers: usize,
    /// Payload size in bytes (a static buffer: payload creation is not what is measured).
    #[arg(long, default_value_t = PipelineOptions::default().payload_bytes)]
    payload_bytes: usize,
    /// Offered rate in events/s over all producers (open loop); 0 = as fast as possible.
    #[arg(long, default_value_t = PipelineOptions::default().rate)]
    rate: u64,
    /// Events per producer publish call.
    #[arg(long, default_value_t = PipelineOptions::default().batch)]
    batch: usize,
    /// Worker idle strategy: `park` (the default: spin, then yield, then park) or `spin`.
    #[arg(long, default_value = "park")]
    idle: Idle,
    /// Do not pin workers and producers to cores.
    #[arg(long)]
    no_pin: bool,
    /// Disable dedup (it is on by default, as in production).
    #[arg(long)]
    no_dedup: bool,
    /// Also run the same work on crossbeam-channel and report the ratio.
    #[arg(long)]
    compare: bool,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

impl From<&PipelineArgs> for PipelineOptions {
    fn from(a: &PipelineArgs) -> Self {
        PipelineOptions {
            events: a.events,
            producers: a.producers,
            workers: a.workers,
            payload_bytes: a.payload_bytes,
            rate: a.rate,
            batch: a.batch,
            idle: a.idle,
            no_pin: a.no_pin,
            no_dedup: a.no_dedup,
            compare: a.compare,
        }
    }
}

/// `eventstream bench hiccups`.
#[derive(Debug, Args, Clone)]
pub struct HiccupArgs {
    /// How long to measure, seconds.
    #[arg(long, default_value_t = hiccups::HiccupOptions::default().seconds)]
    seconds: f64,
    /// Gaps longer than this count as time taken away (µs). A loop iteration takes ~15 ns.
    #[arg(long, default_value_t = hiccups::HiccupOptions::default().threshold_us)]
    threshold_us: u64,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eventstream bench replication`.
#[derive(Debug, Args, Clone)]
pub struct ReplicationArgs {
    /// Nodes of the in-process cluster.
    #[arg(long, default_value_t = eventstream_bench::replication::ReplicationOptions::default().nodes)]
    pub nodes: usize,
    /// Events to publish in total.
    #[arg(long, default_value_t = eventstream_bench::replication::ReplicationOptions::default().events)]
    pub events: u64,
    /// Events per publish request.
    #[arg(long, default_value_t = eventstream_bench::replication::ReplicationOptions::default().batch)]
    pub batch: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = eventstream_bench::replication::ReplicationOptions::default().payload_bytes)]
    pub payload_bytes: usize,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = eventstream_bench::replication::ReplicationOptions::default().clients)]
    pub clients: usize,
    /// Offered rate in events/s (open loop, latency from intended send time); 0 = closed loop.
    #[arg(long, default_value_t = eventstream_bench::replication::ReplicationOptions::default().rate)]
    pub rate: u64,
    /// Target a running cluster instead of starting one.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Where the in-process cluster keeps its logs (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// fsync inline in the raft driver instead of on a WAL thread (for comparison).
    #[arg(long)]
    pub sync_persist: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// TLS for the clients; for the in-process cluster, --tls-ca, --tls-cert and --tls-key
    /// also become every node's tls_ca / tls_cert / tls_key (one certificate for all nodes,
    /// valid for 127.0.0.1), so peers use mutual TLS too.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

impl From<ReplicationArgs> for eventstream_bench::replication::ReplicationOptions {
    fn from(a: ReplicationArgs) -> Self {
        eventstream_bench::replication::ReplicationOptions {
            nodes: a.nodes,
            events: a.events,
            batch: a.batch,
            payload_bytes: a.payload_bytes,
            clients: a.clients,
            rate: a.rate,
            endpoints: a.endpoints,
            data_dir: a.data_dir,
            sync_persist: a.sync_persist,
            tls_ca: a.tls.tls_ca,
            tls_cert: a.tls.tls_cert,
            tls_key: a.tls.tls_key,
        }
    }
}

/// `eventstream bench kafka`.
#[derive(Debug, Args, Clone)]
pub struct KafkaArgs {
    /// Nodes of the in-process cluster.
    #[arg(long, default_value_t = KafkaBenchOptions::default().nodes)]
    pub nodes: usize,
    /// Events per run (every native and every Kafka run publishes this many).
    #[arg(long, default_value_t = KafkaBenchOptions::default().events)]
    pub events: u64,
    /// Events per request (native publishes; the most records per Kafka record batch).
    #[arg(long, default_value_t = KafkaBenchOptions::default().batch)]
    pub batch: usize,
    /// Payload (record value) bytes per event.
    #[arg(long, default_value_t = KafkaBenchOptions::default().payload_bytes)]
    pub payload_bytes: usize,
    /// Native clients, or the wire client's connections to the leader (librdkafka keeps one
    /// and `connections × in-flight` requests in flight on it).
    #[arg(long, default_value_t = KafkaBenchOptions::default().connections)]
    pub connections: usize,
    /// Requests outstanding per connection.
    #[arg(long, default_value_t = KafkaBenchOptions::default().in_flight)]
    pub in_flight: usize,
    /// Rounds of (native run, Kafka run); the report gives the medians.
    #[arg(long, default_value_t = KafkaBenchOptions::default().rounds)]
    pub rounds: usize,
    /// Codec of the Kafka record batches: `none` or `lz4`.
    #[arg(long, default_value_t = KafkaCompression::None)]
    pub compression: KafkaCompression,
    /// The Kafka client: `librdkafka` (the rdkafka crate) or `wire` (the bench's own
    /// pipelining client on the listener's codec).
    #[arg(long, default_value_t = KafkaClient::Librdkafka)]
    pub client: KafkaClient,
    /// librdkafka's `batch.num.messages`, the most records per batch (default: --batch).
    #[arg(long)]
    pub kafka_batch: Option<usize>,
    /// librdkafka's `linger.ms`.
    #[arg(long, default_value_t = KafkaBenchOptions::default().linger_ms)]
    pub linger_ms: u32,
    /// librdkafka's `enable.idempotence=true` (sequence-checked batches, at most 5 requests
    /// in flight).
    #[arg(long)]
    pub idempotent: bool,
    /// A new cluster for every run instead of one cluster for all of them.
    #[arg(long)]
    pub fresh_cluster: bool,
    /// Where the clusters keep their logs (default: a scratch directory under the current one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl From<KafkaArgs> for KafkaBenchOptions {
    fn from(a: KafkaArgs) -> Self {
        KafkaBenchOptions {
            nodes: a.nodes,
            events: a.events,
            batch: a.batch,
            payload_bytes: a.payload_bytes,
            connections: a.connections,
            in_flight: a.in_flight,
            rounds: a.rounds,
            compression: a.compression,
            client: a.client,
            kafka_batch: a.kafka_batch,
            linger_ms: a.linger_ms,
            idempotent: a.idempotent,
            fresh_cluster: a.fresh_cluster,
            data_dir: a.data_dir,
        }
    }
}

/// `eventstream bench failover`.
#[derive(Debug, Args, Clone)]
pub struct FailoverArgs {
    /// Leader kills (each followed by a restart of the killed node).
    #[arg(long, default_value_t = eventstream_bench::failover::FailoverOptions::default().kills)]
    pub kills: usize,
    /// Concurrent publishing clients.
    #[arg(long, default_value_t = eventstream_bench::failover::FailoverOptions::default().clients)]
    pub clients: usize,
    /// Events per publish request.
    #[arg(long, default_value_t = eventstream_bench::failover::FailoverOptions::default().batch)]
    pub batch: usize,
    /// Data directory (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl From<FailoverArgs> for eventstream_bench::failover::FailoverOptions {
    fn from(a: FailoverArgs) -> Self {
        eventstream_bench::failover::FailoverOptions {
            kills: a.kills,
            clients: a.clients,
            batch: a.batch,
            data_dir: a.data_dir,
        }
    }
}

/// `eventstream bench restart`.
#[derive(Debug, Args, Clone)]
pub struct RestartArgs {
    /// Graceful leader restarts (SIGTERM, wait for exit, start again).
    #[arg(long, default_value_t = eventstream_bench::restart::RestartOptions::default().restarts)]
    pub restarts: usize,
    /// Concurrent publishing clients.
    #[arg(long, default_value_t = eventstream_bench::restart::RestartOptions::default().clients)]
    pub clients: usize,
    /// Events per publish request.
    #[arg(long, default_value_t = eventstream_bench::restart::RestartOptions::default().batch)]
    pub batch: usize,
    /// Data directory (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl From<RestartArgs> for eventstream_bench::restart::RestartOptions {
    fn from(a: RestartArgs) -> Self {
        eventstream_bench::restart::RestartOptions {
            restarts: a.restarts,
            clients: a.clients,
            batch: a.batch,
            data_dir: a.data_dir,
        }
    }
}

/// `eventstream bench soak`.
#[derive(Debug, Args, Clone)]
pub struct SoakArgs {
    /// Node processes.
    #[arg(long, default_value_t = SoakOptions::default().nodes)]
    pub nodes: usize,
    /// Payload bytes to write (e.g. 20GiB, 512MiB).
    #[arg(long, default_value = "20GiB", value_parser = parse_size)]
    pub total: u64,
    /// Payload sizes in bytes, comma-separated; each gets an equal share of --total.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    pub payloads: Vec<usize>,
    /// Events per publish request.
    #[arg(long, default_value_t = SoakOptions::default().batch)]
    pub batch: usize,
    /// Concurrent publishing clients.
    #[arg(long, default_value_t = SoakOptions::default().clients)]
    pub clients: usize,
    /// `retention.max_bytes` of every node.
    #[arg(long, default_value = "6GiB", value_parser = parse_size)]
    pub retention: u64,
    /// `storage.stream_segment_bytes`.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub segment: u64,
    /// `storage.snapshot_bytes`.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub snapshot: u64,
    /// Seconds of half-rate writes without the reader, for comparison.
    #[arg(long, default_value_t = SoakOptions::default().baseline_secs)]
    pub baseline_secs: u64,
    /// Payload written while a follower is stopped (0 skips the follower catch-up).
    #[arg(long, default_value = "5GiB", value_parser = parse_size)]
    pub follower_gap: u64,
    /// Data directory (default: a temporary directory under the current one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl From<SoakArgs> for SoakOptions {
    fn from(a: SoakArgs) -> Self {
        SoakOptions {
            nodes: a.nodes,
            total_bytes: a.total,
            payloads: a.payloads,
            batch: a.batch,
            clients: a.clients,
            retention_bytes: a.retention,
            segment_bytes: a.segment,
            snapshot_bytes: a.snapshot,
            baseline_secs: a.baseline_secs,
            follower_gap_bytes: a.follower_gap,
            data_dir: a.data_dir,
        }
    }
}

/// A size: bytes, or with a KiB/MiB/GiB/KB/MB/GB suffix.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 512MiB, 20GiB, 1000000)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{other}` is not a size unit (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    Ok((n * factor as f64) as u64)
}

/// `eventstream bench overload`.
#[derive(Debug, Args, Clone)]
pub struct OverloadArgs {
    /// Seconds of overload (the soak); the capacity measurement comes before it.
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().duration)]
    pub duration: u64,
    /// Seconds of the closed-loop capacity measurement.
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().capacity_seconds)]
    pub capacity_seconds: u64,
    /// Offered load as a multiple of the measured capacity.
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().factor)]
    pub factor: f64,
    /// Producer connections (all to the leader).
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().clients)]
    pub clients: usize,
    /// Events per publish request.
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().batch)]
    pub batch: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().payload_bytes)]
    pub payload_bytes: usize,
    /// The nodes' overload policy (`reject` or `block`).
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().policy)]
    pub policy: OverloadPolicy,
    /// The nodes' `--max-inflight-events` (default: the node default).
    #[arg(long)]
    pub max_inflight_events: Option<usize>,
    /// The nodes' `--max-inflight-per-connection` (default: the node default).
    #[arg(long)]
    pub max_inflight_per_connection: Option<usize>,
    /// The nodes' `--retention-max-events`: each node keeps about this many of the newest
    /// events (0 = no limit: memory then grows with the stream).
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().retention_max_events)]
    pub retention_max_events: u64,
    /// The nodes' `--retention-max-bytes` (0 = no limit).
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().retention_max_bytes)]
    pub retention_max_bytes: u64,
    /// The nodes' `--storage-stream-segment-bytes` (retention deletes whole segments).
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().stream_segment_bytes)]
    pub stream_segment_bytes: u64,
    /// The nodes' `--snapshot-entries` (entries applied between compactions).
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().snapshot_entries)]
    pub snapshot_entries: u64,
    /// The nodes' `--log-keep-entries` (entries kept below the applied index at compaction).
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().log_keep_entries)]
    pub log_keep_entries: u64,
    /// The nodes' `--compaction-interval-ms`.
    #[arg(long, default_value_t = eventstream_bench::overload::OverloadOptions::default().compaction_interval_ms)]
    pub compaction_interval_ms: u64,
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

impl From<OverloadArgs> for eventstream_bench::overload::OverloadOptions {
    fn from(a: OverloadArgs) -> Self {
        eventstream_bench::overload::OverloadOptions {
            duration: a.duration,
            capacity_seconds: a.capacity_seconds,
            factor: a.factor,
            clients: a.clients,
            batch: a.batch,
            payload_bytes: a.payload_bytes,
            policy: a.policy,
            max_inflight_events: a.max_inflight_events,
            max_inflight_per_connection: a.max_inflight_per_connection,
            retention_max_events: a.retention_max_events,
            retention_max_bytes: a.retention_max_bytes,
            stream_segment_bytes: a.stream_segment_bytes,
            snapshot_entries: a.snapshot_entries,
            log_keep_entries: a.log_keep_entries,
            compaction_interval_ms: a.compaction_interval_ms,
            binary: a.binary,
            keep: a.keep,
        }
    }
}

/// Prints `report` as JSON or text.
fn show<R: serde::Serialize + std::fmt::Display>(report: &R, json: bool) -> anyhow::Result<()> {
    if json {
        super::print_json(report)
    } else {
        print!("{report}");
        Ok(())
    }
}

/// Fails (non-zero exit) when a cluster benchmark found acknowledged events lost, duplicated
/// or diverged.
fn ensure_intact(c: &AckCheck) -> anyhow::Result<()> {
    anyhow::ensure!(
        c.intact(),
        "acknowledged events were lost ({}), duplicated ({}) or diverged ({} nodes)",
        c.lost,
        c.duplicated,
        c.diverged_nodes
    );
    Ok(())
}

fn this_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the eventstream binary for the node processes")
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Pipeline(a) => show(&pipeline::run(&(&a).into())?, a.json),
        BenchCommand::Hiccups(a) => {
            let opts = hiccups::HiccupOptions {
                seconds: a.seconds,
                threshold_us: a.threshold_us,
            };
            show(&hiccups::run(opts)?, a.json)
        }
        BenchCommand::Replication(a) => {
            let json = a.json;
            let r = replication::run(&a.into())?;
            show(&r, json)?;
            anyhow::ensure!(
                r.verified != Some(false),
                "replicated streams do not match the acknowledged events"
            );
            Ok(())
        }
        BenchCommand::Kafka(a) => {
            let json = a.json;
            let r = kafka::run(&a.into())?;
            show(&r, json)?;
            anyhow::ensure!(
                r.verified,
                "a node's stream does not hold exactly the acknowledged events"
            );
            anyhow::ensure!(
                r.complete,
                "not every event was acknowledged (failed requests in the report)"
            );
            Ok(())
        }
        BenchCommand::Failover(a) => {
            let json = a.json;
            let r = failover::run(&a.into(), &this_binary()?)?;
            show(&r, json)?;
            ensure_intact(&r.check)
        }
        BenchCommand::Restart(a) => {
            let json = a.json;
            let r = restart::run(&a.into(), &this_binary()?)?;
            show(&r, json)?;
            ensure_intact(&r.check)
        }
        BenchCommand::Soak(a) => {
            let json = a.json;
            let r = soak::run(&a.into(), &this_binary()?)?;
            show(&r, json)?;
            anyhow::ensure!(
                r.verified,
                "acknowledged events missing from a node's stream"
            );
            Ok(())
        }
        BenchCommand::Overload(a) => {
            let json = a.json;
            let r = overload::run(&a.into())?;
            show(&r, json)?;
            anyhow::ensure!(r.valid, "overload checks failed (see the report)");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_and_decimal_units_and_name_bad_input() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").unwrap_err().contains("`lots`"));
        assert!(parse_size("3TB").unwrap_err().contains("`TB`"));
    }
}
