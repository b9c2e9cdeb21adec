//! Command-line pieces of the `eventstream` binary that belong to the cluster: `node`,
//! `publish`, `subscribe`, `status`, `bench replication`, `bench failover`. The binary only
//! parses and delegates (and adds the HTTP exporter to `node`).

use crate::acks::OFFSET_UNKNOWN;
use crate::client::{status_with, Client, ClientConfig};
use crate::config::NodeConfig;
use crate::error::ClusterError;
use crate::frame::SubscribeBody;
use crate::node::LocalCluster;
use crate::procs::ProcessCluster;
use bytes::Bytes;
use clap::Args;
use eventstream_core::hdrhistogram::Histogram;
use eventstream_core::replication::{ClusterStatus, ReplicationSource};
use eventstream_core::{Engine, Event, Priority};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `eventstream node`: run one cluster member.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// TOML configuration file (fields as in `NodeConfig`); flags and EVENTSTREAM_* override it.
    #[arg(long, env = "EVENTSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's raft id.
    #[arg(long, env = "EVENTSTREAM_ID")]
    pub id: Option<u64>,
    /// Members, comma-separated: `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT]`, this node included.
    #[arg(long, env = "EVENTSTREAM_PEERS", value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Address to bind for peers and clients (default: this node's address in --peers).
    #[arg(long, env = "EVENTSTREAM_LISTEN")]
    pub listen: Option<String>,
    /// Data directory of the log.
    #[arg(long, env = "EVENTSTREAM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP port for metrics / API / status page (0 = off).
    #[arg(long, env = "EVENTSTREAM_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Raft tick in milliseconds.
    #[arg(long, env = "EVENTSTREAM_TICK_MS")]
    pub tick_ms: Option<u64>,
    /// Publish commit timeout in milliseconds.
    #[arg(long, env = "EVENTSTREAM_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// PEM certificate chain of this node (with --tls-key and --tls-ca: TLS on).
    #[arg(long, env = "EVENTSTREAM_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "EVENTSTREAM_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) peers' (and with --tls-client-auth clients') certificates must chain to.
    #[arg(long, env = "EVENTSTREAM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Require client certificates (mutual TLS for clients; peers always use it).
    #[arg(long, env = "EVENTSTREAM_TLS_CLIENT_AUTH")]
    pub tls_client_auth: bool,
    /// Name checked in peers' certificates instead of each member's host.
    #[arg(long, env = "EVENTSTREAM_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// File with the bearer token mutating admin operations require.
    #[arg(long, env = "EVENTSTREAM_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Join a running cluster (with an empty data directory; ignored once it holds a log).
    #[arg(long, env = "EVENTSTREAM_JOIN")]
    pub join: bool,
    /// Retention: keep at most this many events (0 = no limit).
    #[arg(long, env = "EVENTSTREAM_RETENTION_MAX_EVENTS")]
    pub retention_max_events: Option<u64>,
    /// Retention: keep at most this many bytes of event data (0 = no limit).
    #[arg(long, env = "EVENTSTREAM_RETENTION_MAX_BYTES")]
    pub retention_max_bytes: Option<u64>,
    /// Retention: drop events applied more than this many seconds ago (0 = no limit).
    #[arg(long, env = "EVENTSTREAM_RETENTION_MAX_AGE_SECS")]
    pub retention_max_age_secs: Option<u64>,
    /// Entries applied between snapshots (each snapshot compacts the log).
    #[arg(long, env = "EVENTSTREAM_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// Entries kept in the log below the applied index at compaction.
    #[arg(long, env = "EVENTSTREAM_LOG_KEEP_ENTRIES")]
    pub log_keep_entries: Option<u64>,
    /// Bytes of entries applied between snapshots (whichever of this and --snapshot-entries
    /// comes first).
    #[arg(long, env = "EVENTSTREAM_SNAPSHOT_BYTES")]
    pub snapshot_bytes: Option<u64>,
    /// Bytes of entries kept in the log below the applied index at compaction.
    #[arg(long, env = "EVENTSTREAM_LOG_KEEP_BYTES")]
    pub log_keep_bytes: Option<u64>,
    /// How often retention and compaction run, milliseconds.
    #[arg(long, env = "EVENTSTREAM_COMPACTION_INTERVAL_MS")]
    pub compaction_interval_ms: Option<u64>,
    /// At an in-flight limit: `reject` (answer Busy) or `block` (stop reading the connection).
    #[arg(long, env = "EVENTSTREAM_OVERLOAD_POLICY")]
    pub overload_policy: Option<crate::config::OverloadPolicy>,
    /// Publish requests one client connection may have in flight.
    #[arg(long, env = "EVENTSTREAM_MAX_INFLIGHT_PER_CONNECTION")]
    pub max_inflight_per_connection: Option<usize>,
    /// Events in flight on this node over all connections.
    #[arg(long, env = "EVENTSTREAM_MAX_INFLIGHT_EVENTS")]
    pub max_inflight_events: Option<usize>,
}

impl NodeArgs {
    /// File, then environment and flags (clap has merged those two), then validation.
    pub fn to_config(&self) -> Result<NodeConfig, ClusterError> {
        let mut c = match &self.config {
            Some(p) => NodeConfig::from_toml_file(p)?,
            None => NodeConfig::default(),
        };
        if let Some(v) = self.id {
            c.id = v;
        }
        if let Some(v) = &self.peers {
            c.peers = v.clone();
        }
        if let Some(v) = &self.listen {
            c.listen = Some(v.clone());
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = self.http_port {
            c.http_port = v;
        }
        if let Some(v) = self.tick_ms {
            c.tick_ms = v;
        }
        if let Some(v) = self.request_timeout_ms {
            c.request_timeout_ms = v;
        }
        if let Some(v) = &self.tls_cert {
            c.tls_cert = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            c.tls_key = Some(v.clone());
        }
        if let Some(v) = &self.tls_ca {
            c.tls_ca = Some(v.clone());
        }
        if self.tls_client_auth {
            c.tls_client_auth = true;
        }
        if let Some(v) = &self.tls_server_name {
            c.tls_server_name = Some(v.clone());
        }
        if let Some(v) = &self.admin_token_file {
            c.admin_token_file = Some(v.clone());
        }
        if self.join {
            c.join = true;
        }
        for (flag, field) in [
            (self.retention_max_events, &mut c.retention_max_events),
            (self.retention_max_bytes, &mut c.retention_max_bytes),
            (self.retention_max_age_secs, &mut c.retention_max_age_secs),
            (self.snapshot_entries, &mut c.snapshot_entries),
            (self.log_keep_entries, &mut c.log_keep_entries),
            (self.snapshot_bytes, &mut c.snapshot_bytes),
            (self.log_keep_bytes, &mut c.log_keep_bytes),
            (self.compaction_interval_ms, &mut c.compaction_interval_ms),
        ] {
            if let Some(v) = flag {
                *field = v;
            }
        }
        if let Some(v) = self.overload_policy {
            c.overload_policy = v;
        }
        if let Some(v) = self.max_inflight_per_connection {
            c.max_inflight_per_connection = v;
        }
        if let Some(v) = self.max_inflight_events {
            c.max_inflight_events = v;
        }
        c.validate()?;
        Ok(c)
    }
}

/// TLS and admin-token options of every client command (`#[command(flatten)]` it into a new
/// command's arguments and build its client with [`ClientTlsArgs::client_config`]).
#[derive(Debug, Args, Clone, Default)]
pub struct ClientTlsArgs {
    /// CA certificate (PEM) the nodes' certificates must chain to; turns TLS on.
    #[arg(long = "tls-ca", env = "EVENTSTREAM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for nodes that require client certificates (mutual TLS).
    #[arg(long = "tls-cert", env = "EVENTSTREAM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", env = "EVENTSTREAM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to check in the nodes' certificates instead of each endpoint's host.
    #[arg(long = "tls-server-name", env = "EVENTSTREAM_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Admin bearer token (mutating admin operations on nodes with admin_token_file).
    #[arg(long, env = "EVENTSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientTlsArgs {
    /// A client configuration for `endpoints` with these TLS settings and token; errors name
    /// the flag (a file that is missing or not PEM, a certificate without --tls-ca).
    pub fn client_config(&self, endpoints: Vec<String>) -> Result<ClientConfig, ClusterError> {
        let mut cfg = ClientConfig::new(endpoints);
        cfg.tls = match &self.tls_ca {
            Some(ca) => Some(crate::tls::ClientTls::from_files(
                ca,
                self.tls_cert.as_deref().zip(self.tls_key.as_deref()),
                self.tls_server_name.as_deref(),
            )?),
            None if self.tls_cert.is_some() || self.tls_server_name.is_some() => {
                return Err(ClusterError::config(
                    "tls-ca",
                    "TLS options need --tls-ca (the CA the nodes' certificates chain to)",
                ))
            }
            None => None,
        };
        cfg.token = self
            .token
            .as_deref()
            .map(crate::tls::AdminToken::from_text)
            .transpose()?;
        Ok(cfg)
    }
}

pub(crate) fn split_endpoints(s: &[String]) -> Vec<String> {
    s.iter()
        .flat_map(|e| e.split(','))
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect()
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ClusterError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Spawn {
            what: "tokio runtime",
            source: e,
        })
}

/// `eventstream publish`.
#[derive(Debug, Args, Clone)]
pub struct PublishArgs {
    /// Node addresses (comma-separated or repeated).
    #[arg(
        long,
        env = "EVENTSTREAM_ENDPOINTS",
        required = true,
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Topic.
    #[arg(long, default_value = "default")]
    pub topic: String,
    /// Priority: critical, high, medium, low.
    #[arg(long, default_value = "medium")]
    pub priority: String,
    /// Idempotency key of the first event (following events get id+1, id+2, ...); random if absent.
    #[arg(long)]
    pub id: Option<u64>,
    /// Payloads; if none are given, one event per line of standard input.
    pub payloads: Vec<String>,
    /// TLS and token.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// Runs `eventstream publish`; prints one offset per event.
pub fn run_publish(a: PublishArgs) -> Result<(), ClusterError> {
    let priority: Priority = a.priority.parse()?;
    let payloads: Vec<String> = if a.payloads.is_empty() {
        std::io::stdin().lines().map_while(Result::ok).collect()
    } else {
        a.payloads.clone()
    };
    let events: Vec<Event> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let e = Event::new(a.topic.as_str(), priority, Bytes::from(p));
            match a.id {
                Some(id) => e.with_id(id + i as u64),
                None => e,
            }
        })
        .collect();
    let client = Client::new(a.tls.client_config(split_endpoints(&a.endpoints))?)?;
    let offsets = runtime()?.block_on(client.publish(events))?;
    for o in offsets {
        if o == OFFSET_UNKNOWN {
            println!("duplicate");
        } else {
            println!("{o}");
        }
    }
    Ok(())
}

/// `eventstream subscribe`.
#[derive(Debug, Args, Clone)]
pub struct SubscribeArgs {
    /// Node addresses (any node serves the committed stream).
    #[arg(
        long,
        env = "EVENTSTREAM_ENDPOINTS",
        required = true,
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// First offset.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Only this topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only events at least this important (critical > high > medium > low).
    #[arg(long)]
    pub min_priority: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Stop when no event arrives for this many milliseconds.
    #[arg(long)]
    pub idle_exit_ms: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// TLS and token.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

#[derive(Serialize)]
struct EventLine<'a> {
    offset: u64,
    id: u64,
    topic: &'a str,
    priority: Priority,
    payload: String,
}

/// Runs `eventstream subscribe`: prints `offset id topic priority payload` lines (or JSON).
pub fn run_subscribe(a: SubscribeArgs) -> Result<(), ClusterError> {
    let min_priority = a
        .min_priority
        .as_deref()
        .map(str::parse::<Priority>)
        .transpose()?;
    let client = Client::new(a.tls.client_config(split_endpoints(&a.endpoints))?)?;
    let mut sub = client.subscribe(SubscribeBody {
        from_offset: a.from,
        topic: a.topic.clone(),
        min_priority,
    });
    runtime()?.block_on(async {
        let mut n = 0u64;
        let stdout = std::io::stdout();
        while a.limit.is_none_or(|l| n < l) {
            let next = match a.idle_exit_ms {
                Some(ms) => match sub.next_timeout(Duration::from_millis(ms)).await? {
                    Some(x) => x,
                    None => break,
                },
                None => sub.next().await?,
            };
            let (off, e) = next;
            let payload = String::from_utf8_lossy(&e.payload).into_owned();
            let mut out = stdout.lock();
            let r = if a.json {
                let line = EventLine {
                    offset: off,
                    id: e.id.0,
                    topic: &e.topic,
                    priority: e.priority,
                    payload,
                };
                writeln!(out, "{}", serde_json::to_string(&line).unwrap_or_default())
            } else {
                writeln!(
                    out,
                    "{off}\t{}\t{}\t{}\t{payload}",
                    e.id, e.topic, e.priority
                )
            };
            if r.is_err() {
                break; // stdout closed (e.g. piped into `head`)
            }
            n += 1;
        }
        Ok(())
    })
}

/// `eventstream status`.
#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// Node addresses.
    #[arg(
        long,
        env = "EVENTSTREAM_ENDPOINTS",
        required = true,
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// TLS and token.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

#[derive(Serialize)]
struct EndpointStatus {
    endpoint: String,
    status: Option<ClusterStatus>,
    error: Option<String>,
}

/// Renders statuses like `etcdctl endpoint status -w table`.
pub fn status_table(rows: &[(String, Result<ClusterStatus, String>)]) -> String {
    let header = [
        "ENDPOINT", "NODE", "STATE", "TERM", "COMMIT", "APPLIED", "LAG", "LEADER", "ERROR",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for (ep, r) in rows {
        table.push(match r {
            Ok(s) => vec![
                ep.clone(),
                s.node_id.to_string(),
                // A learner replicates like a follower but does not vote: say so.
                if s.members.iter().any(|m| m.id == s.node_id && m.learner) {
                    "learner".to_owned()
                } else {
                    s.role.as_str().to_owned()
                },
                s.term.to_string(),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.commit_index.saturating_sub(s.applied_index).to_string(),
                s.leader_id.map_or("-".into(), |l| l.to_string()),
                // A node whose log cannot be written answers, but accepts no writes: say why.
                s.storage_failure
                    .as_ref()
                    .map_or(String::new(), |why| format!("storage failed: {why}")),
            ],
            Err(e) => {
                let mut v = vec![ep.clone()];
                v.extend(std::iter::repeat_n("-".to_string(), 7));
                v.push(e.clone());
                v
            }
        });
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let sep = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let mut out = sep.clone();
    for (i, r) in table.iter().enumerate() {
        out.push('|');
        for (c, cell) in r.iter().enumerate() {
            out.push_str(&format!(" {cell:<w$} |", w = widths[c]));
        }
        out.push('\n');
        if i == 0 {
            out.push_str(&sep);
        }
    }
    out.push_str(&sep);
    out
}

/// Runs `eventstream status`. Fails (non-zero exit) if no endpoint answered.
pub fn run_status(a: StatusArgs) -> Result<(), ClusterError> {
    let eps = split_endpoints(&a.endpoints);
    let ccfg = a.tls.client_config(eps.clone())?;
    let rows: Vec<(String, Result<ClusterStatus, String>)> = runtime()?.block_on(async {
        let mut rows = Vec::new();
        for ep in &eps {
            rows.push((
                ep.clone(),
                status_with(&ccfg, ep, Duration::from_secs(2))
                    .await
                    .map_err(|e| e.to_string()),
            ));
        }
        rows
    });
    if a.json {
        let v: Vec<EndpointStatus> = rows
            .iter()
            .map(|(ep, r)| EndpointStatus {
                endpoint: ep.clone(),
                status: r.as_ref().ok().cloned(),
                error: r.as_ref().err().cloned(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", status_table(&rows));
    }
    if rows.iter().all(|(_, r)| r.is_err()) {
        return Err(ClusterError::Timeout("no endpoint answered".into()));
    }
    Ok(())
}

/// `eventstream bench replication`.
#[derive(Debug, Args, Clone)]
pub struct ReplicationBenchArgs {
    /// Nodes of the in-process cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Events to publish in total.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Events per publish request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Offered rate in events/s (open loop, latency from intended send time); 0 = closed loop.
    #[arg(long, default_value_t = 0)]
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

/// Result of `bench replication`.
#[derive(Debug, Serialize)]
pub struct ReplicationBenchResult {
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

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

/// Runs `bench replication`.
pub fn run_bench_replication(
    a: ReplicationBenchArgs,
) -> Result<ReplicationBenchResult, ClusterError> {
    if a.batch == 0 || a.clients == 0 || a.nodes == 0 {
        return Err(ClusterError::config(
            "batch/clients/nodes",
            "must be at least 1",
        ));
    }
    let tmp;
    let (cluster, endpoints) = if a.endpoints.is_empty() {
        let dir = match &a.data_dir {
            Some(d) => d.clone(),
            None => {
                tmp = tempfile::Builder::new()
                    .prefix("eventstream-bench-")
                    .tempdir_in(std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir()))
                    .map_err(|e| ClusterError::io("bench data dir", e))?;
                tmp.path().to_path_buf()
            }
        };
        let sync = a.sync_persist;
        if a.tls.tls_ca.is_some() && a.tls.tls_cert.is_none() {
            return Err(ClusterError::config(
                "tls-cert",
                "the in-process cluster needs --tls-cert and --tls-key for its nodes",
            ));
        }
        let tls = a.tls.clone();
        let c = LocalCluster::start(
            a.nodes,
            &dir,
            |c| {
                c.async_persist = !sync;
                c.tls_ca = tls.tls_ca.clone();
                c.tls_cert = tls.tls_cert.clone();
                c.tls_key = tls.tls_key.clone();
            },
            |_| Engine::builder(),
        )?;
        c.wait_for_leader(Duration::from_secs(10))
            .ok_or_else(|| ClusterError::Timeout("no leader elected in 10 s".into()))?;
        let eps = c.endpoints();
        (Some(c), eps)
    } else {
        (None, split_endpoints(&a.endpoints))
    };
    let rt = runtime()?;
    let result = rt.block_on(drive_load(&a, &endpoints))?;
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
    Ok(ReplicationBenchResult {
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
    let ids = |s: &crate::CommittedStream| {
        let mut v = Vec::new();
        s.read(from, usize::MAX, |_| true, &mut v);
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
    a: &ReplicationBenchArgs,
    endpoints: &[String],
) -> Result<ReplicationBenchResult, ClusterError> {
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
        .map(|_| Client::new(a.tls.client_config(endpoints.to_vec())?).map(Arc::new))
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
                crate::driver::raise_thread_priority("bench pacer");
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
            .map_err(|e| ClusterError::Spawn {
                what: "bench pacer",
                source: e,
            })?;
        let tasks = tokio::task::spawn_blocking(move || pacer.join())
            .await
            .ok()
            .and_then(|r| r.ok())
            .ok_or_else(|| ClusterError::Timeout("the bench pacer thread failed".into()))?;
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
    Ok(ReplicationBenchResult {
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

/// `eventstream bench failover`.
#[derive(Debug, Args, Clone)]
pub struct FailoverBenchArgs {
    /// Leader kills (each followed by a restart of the killed node).
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Concurrent publishing clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Events per publish request.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Data directory (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Result of `bench failover`.
#[derive(Debug, Serialize)]
pub struct FailoverBenchResult {
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
    /// Events acknowledged.
    pub acked: u64,
    /// Acknowledged events not readable afterwards (must be 0).
    pub lost: u64,
    /// Acknowledged events stored more than once (must be 0).
    pub duplicated: u64,
    /// Nodes whose committed stream differs from node 1's (must be 0).
    pub diverged_nodes: u64,
    /// Publish requests that failed after all retries (not acknowledged, so not "lost").
    pub failed_requests: u64,
    /// Wall time.
    pub seconds: f64,
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The data directory of a benchmark's cluster: `given`, or a temporary one under the current
/// directory (removed when the returned guard drops).
pub(crate) fn bench_dir(
    given: Option<&std::path::Path>,
    prefix: &str,
) -> Result<(Option<tempfile::TempDir>, PathBuf), ClusterError> {
    let (tmp, dir) = match given {
        Some(d) => (None, d.to_path_buf()),
        None => {
            let t = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in(std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir()))
                .map_err(|e| ClusterError::io("bench data dir", e))?;
            let d = t.path().to_path_buf();
            (Some(t), d)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| ClusterError::io(&dir, e))?;
    Ok((tmp, dir))
}

/// Runs `bench failover` with `exe` as the node binary.
pub fn run_bench_failover(
    a: FailoverBenchArgs,
    exe: &std::path::Path,
) -> Result<FailoverBenchResult, ClusterError> {
    let (_tmp, dir) = bench_dir(a.data_dir.as_deref(), "eventstream-failover-")?;
    let rt = runtime()?;
    rt.block_on(failover(a, exe, &dir))
}

/// What the publishers of a failover run acknowledged: `(id, offset)`.
type Acked = Arc<Mutex<Vec<(u64, u64)>>>;

async fn failover(
    a: FailoverBenchArgs,
    exe: &std::path::Path,
    dir: &std::path::Path,
) -> Result<FailoverBenchResult, ClusterError> {
    let start = Instant::now();
    let mut cluster = ProcessCluster::start(exe, 3, dir, &[])?;
    let eps = cluster.endpoints().to_vec();
    cluster.wait_healthy(Duration::from_secs(20)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let mut pubs = Vec::new();
    for _ in 0..a.clients {
        let client = Client::new(ClientConfig::new(eps.clone()))?;
        let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
        let batch = a.batch;
        pubs.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let evs: Vec<Event> = (0..batch)
                    .map(|i| {
                        Event::new("failover", Priority::High, Bytes::from(format!("e{i}")))
                            .with_id(client.next_id().0)
                    })
                    .collect();
                let ids: Vec<u64> = evs.iter().map(|e| e.id.0).collect();
                match client.publish(evs).await {
                    Ok(offs) => acked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(ids.into_iter().zip(offs)),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Probes: a tiny publish started every 5 ms, each independent, so the first one
    // acknowledged after a kill marks when the new leader accepted writes.
    let probe_client = Arc::new(Client::new(ClientConfig::new(eps.clone()))?);
    let probe_acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    {
        let (stop, probe_acks, acked) = (stop.clone(), probe_acks.clone(), acked.clone());
        let client = probe_client.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (client, probe_acks, acked) =
                    (client.clone(), probe_acks.clone(), acked.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let id = client.next_id().0;
                    if let Ok(o) = client
                        .publish(vec![Event::new(
                            "probe",
                            Priority::Critical,
                            Bytes::from_static(b"p"),
                        )
                        .with_id(id)])
                        .await
                    {
                        probe_acks
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((sent, Instant::now()));
                        acked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((id, o[0]));
                    }
                });
            }
        });
    }
    let mut failovers = Vec::new();
    for k in 0..a.kills {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leader = cluster.wait_healthy(Duration::from_secs(30)).await?;
        let killed_at = Instant::now();
        cluster.kill(leader);
        let deadline = killed_at + Duration::from_secs(30);
        let took = loop {
            let first = probe_acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(sent, _)| *sent > killed_at)
                .map(|(_, at)| *at)
                .min();
            if let Some(at) = first {
                break at.duration_since(killed_at);
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout(format!(
                    "no write acknowledged 30 s after kill {k}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        failovers.push(took.as_secs_f64() * 1e3);
        if !a.json {
            eprintln!(
                "kill {}/{}: leader {leader} killed, writes acknowledged again after {:.1} ms",
                k + 1,
                a.kills,
                took.as_secs_f64() * 1e3
            );
        }
        cluster.restart(leader)?;
    }
    stop.store(true, Ordering::Relaxed);
    for p in pubs {
        let _ = p.await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.wait_healthy(Duration::from_secs(30)).await?;
    let acked: Vec<(u64, u64)> = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (lost, duplicated, diverged) = verify_acked(&eps, &acked).await?;
    drop(cluster);
    let mut sorted = failovers.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(FailoverBenchResult {
        kills: failovers.len(),
        failover_p50_ms: percentile(&sorted, 0.5),
        failover_p99_ms: percentile(&sorted, 0.99),
        failover_max_ms: sorted.last().copied().unwrap_or(0.0),
        failover_ms: failovers,
        acked: acked.len() as u64,
        lost,
        duplicated,
        diverged_nodes: diverged,
        failed_requests: failed.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Reads the whole committed stream from every endpoint and checks every acknowledged
/// `(id, offset)`: present exactly once, at its offset, and every node's stream identical.
/// Returns `(lost, duplicated, diverged nodes)`.
pub async fn verify_acked(
    eps: &[String],
    acked: &[(u64, u64)],
) -> Result<(u64, u64, u64), ClusterError> {
    let mut streams = Vec::new();
    for ep in eps {
        let client = Client::new(ClientConfig::new(vec![ep.clone()]))?;
        let mut sub = client.subscribe(SubscribeBody::default());
        let mut ids = Vec::new();
        while let Some((off, e)) = sub.next_timeout(Duration::from_millis(1500)).await? {
            if off != ids.len() as u64 {
                return Err(ClusterError::Timeout(format!(
                    "{ep}: offset {off} after {} events",
                    ids.len()
                )));
            }
            ids.push(e.id.0);
        }
        streams.push(ids);
    }
    let reference = &streams[0];
    let diverged = streams[1..].iter().filter(|s| *s != reference).count() as u64;
    let mut count: HashMap<u64, Vec<u64>> = HashMap::with_capacity(reference.len());
    for (off, id) in reference.iter().enumerate() {
        count.entry(*id).or_default().push(off as u64);
    }
    let mut lost = 0;
    let mut dup = 0;
    for (id, off) in acked {
        match count.get(id) {
            None => lost += 1,
            Some(offs) if offs.len() > 1 => dup += 1,
            Some(offs) if *off != OFFSET_UNKNOWN && offs[0] != *off => lost += 1,
            Some(_) => {}
        }
    }
    Ok((lost, dup, diverged))
}
