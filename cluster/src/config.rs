//! Node configuration: TOML file, overridden by `EVENTSTREAM_*` environment variables and
//! command-line flags (see `cli`), checked by [`NodeConfig::validate`], which names the field.

use crate::error::ClusterError;
use crate::metrics::Member;
use crate::replica::ReplicaConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Everything a node needs to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's raft id (non-zero, listed in `peers`).
    pub id: u64,
    /// Every member, this node included: `ID=HOST:PORT` or `ID=HOST:PORT@HTTP_HOST:HTTP_PORT`.
    pub peers: Vec<String>,
    /// Address to bind for peers and clients (default: this node's address in `peers`).
    pub listen: Option<String>,
    /// Directory of the durable log.
    pub data_dir: PathBuf,
    /// HTTP (metrics / API / status page) port; 0 disables it. Served by the binary.
    pub http_port: u16,
    /// Length of one raft tick in milliseconds.
    pub tick_ms: u64,
    /// Ticks before a follower without a leader campaigns (randomised up to 2×).
    pub election_ticks: usize,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: usize,
    /// Largest raft entry (many events per entry), bytes.
    pub max_entry_bytes: usize,
    /// Largest append message, bytes.
    pub max_msg_bytes: u64,
    /// Append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Uncommitted bytes before the leader refuses proposals (bounded memory).
    pub max_uncommitted_bytes: u64,
    /// Largest frame body accepted on any connection, bytes.
    pub max_frame_bytes: usize,
    /// Largest event payload, bytes.
    pub max_event_bytes: usize,
    /// Messages queued per peer before sends fail (bounded memory).
    pub peer_queue: usize,
    /// Time a publish may wait for commit before it is answered with `Timeout`.
    pub request_timeout_ms: u64,
    /// Event ids remembered for dedup (0 disables dedup).
    pub dedup_window: usize,
    /// Capacity of each tier ring of the embedded engine (power of two).
    pub ring_capacity: usize,
    /// Log segment size before rotation, bytes.
    pub segment_bytes: u64,
    /// tokio worker threads of the node's runtime.
    pub io_threads: usize,
    /// Persist on a separate WAL thread (raft-rs asynchronous Ready, group commit); `false`
    /// fsyncs inline in the driver loop.
    pub async_persist: bool,
    /// PEM certificate chain of this node (TLS on when `tls_cert`, `tls_key`, `tls_ca` are
    /// set; see `docs/security.md`). Needs SANs for this node's host and both the serverAuth
    /// and clientAuth key usages (it is also presented to peers).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that peers' and (with `tls_client_auth`) clients' certificates
    /// must chain to.
    pub tls_ca: Option<PathBuf>,
    /// Require a client certificate from clients too (mutual TLS); peers always need one.
    pub tls_client_auth: bool,
    /// Name checked in peers' certificates instead of the host of each member's address.
    pub tls_server_name: Option<String>,
    /// File holding the bearer token that mutating admin operations require (none: open).
    pub admin_token_file: Option<PathBuf>,
    /// Join a running cluster: with an empty data directory, fetch the configuration the
    /// cluster's log starts from (from the other members in `peers`) instead of bootstrapping
    /// a new cluster from `peers`. Ignored once the data directory holds a log. The node must
    /// have been added first (`eventstream member add ID=... --learner`).
    pub join: bool,
    /// Retention: keep at most this many events in the stream (0 = no limit).
    pub retention_max_events: u64,
    /// Retention: keep at most this many bytes of event data in the stream (0 = no limit).
    /// The stream is held in memory and every snapshot carries it: set this (and
    /// `snapshot_bytes`) to bound a node's memory under sustained load (k8s/config does).
    pub retention_max_bytes: u64,
    /// Retention: drop events applied more than this many seconds ago (0 = no limit).
    pub retention_max_age_secs: u64,
    /// Entries applied since the last snapshot before the next snapshot + log compaction.
    pub snapshot_entries: u64,
    /// Bytes of entries applied since the last snapshot before the next one, whichever of
    /// this and `snapshot_entries` comes first (0 = count only). The in-memory log holds
    /// everything since the last compaction, and at high load an entry is up to
    /// `max_entry_bytes`, so a count alone does not bound memory.
    pub snapshot_bytes: u64,
    /// Entries kept in the log below the applied index at compaction, so a follower slightly
    /// behind catches up from the log instead of by snapshot (≥ 1).
    pub log_keep_entries: u64,
    /// At most this many bytes of those entries are kept (at least one entry is; 0 = count
    /// only). The in-memory log is trimmed to it at every compaction check, snapshot or not.
    pub log_keep_bytes: u64,
    /// How often retention and compaction run, milliseconds.
    pub compaction_interval_ms: u64,
    /// Largest frame accepted on a peer connection (snapshots travel as one raft message).
    pub max_peer_frame_bytes: u64,
    /// What a publish gets when the in-flight limits below are reached: `reject` (answered
    /// `Busy` at once) or `block` (the connection is not read until a slot frees: TCP
    /// back-pressure).
    pub overload_policy: OverloadPolicy,
    /// Publish requests one client connection may have in flight (accepted, not yet answered).
    pub max_inflight_per_connection: usize,
    /// Events in flight on this node over all connections (bounded memory under overload).
    pub max_inflight_events: usize,
}

/// What a publish gets when the node's in-flight limits are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverloadPolicy {
    /// Answer `Busy` at once; the client retries (with the same ids) later.
    #[default]
    Reject,
    /// Stop reading the connection until a slot frees (TCP back-pressure on the producer).
    Block,
}

impl std::str::FromStr for OverloadPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reject" => Ok(OverloadPolicy::Reject),
            "block" => Ok(OverloadPolicy::Block),
            other => Err(format!("`{other}` is not `reject` or `block`")),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 0,
            peers: Vec::new(),
            listen: None,
            data_dir: PathBuf::from("data"),
            http_port: 0,
            tick_ms: 20,
            election_ticks: 15,
            heartbeat_ticks: 3,
            max_entry_bytes: 1 << 20,
            max_msg_bytes: 4 << 20,
            max_inflight_msgs: 64,
            max_uncommitted_bytes: 128 << 20,
            max_frame_bytes: crate::frame::DEFAULT_MAX_FRAME,
            max_event_bytes: 512 << 10,
            peer_queue: 8192,
            request_timeout_ms: 5_000,
            dedup_window: 1 << 18,
            ring_capacity: 1 << 16,
            segment_bytes: 64 << 20,
            io_threads: 2,
            async_persist: true,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_client_auth: false,
            tls_server_name: None,
            admin_token_file: None,
            join: false,
            retention_max_events: 0,
            retention_max_bytes: 0,
            retention_max_age_secs: 0,
            snapshot_entries: 20_000,
            snapshot_bytes: 0,
            log_keep_entries: 5_000,
            log_keep_bytes: 0,
            compaction_interval_ms: 5_000,
            max_peer_frame_bytes: 1 << 30,
            overload_policy: OverloadPolicy::Reject,
            max_inflight_per_connection: 1024,
            max_inflight_events: 1 << 18,
        }
    }
}

/// Parses one `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT]` member.
pub fn parse_member(s: &str) -> Result<Member, ClusterError> {
    let bad = |reason: String| ClusterError::config("peers", format!("`{s}`: {reason}"));
    let (id, rest) = s
        .split_once('=')
        .ok_or_else(|| bad("expected ID=HOST:PORT".into()))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|e| bad(format!("id is not a number ({e})")))?;
    if id == 0 {
        return Err(bad("id 0 is reserved".into()));
    }
    let (addr, http) = match rest.split_once('@') {
        Some((a, h)) => (a.trim(), Some(h.trim().to_owned())),
        None => (rest.trim(), None),
    };
    check_addr(addr).map_err(bad)?;
    if let Some(h) = &http {
        check_addr(h).map_err(bad)?;
    }
    Ok(Member {
        id,
        addr: addr.to_owned(),
        http_addr: http,
    })
}

fn check_addr(a: &str) -> Result<(), String> {
    let (host, port) = a
        .rsplit_once(':')
        .ok_or_else(|| format!("address `{a}` has no port"))?;
    if host.is_empty() {
        return Err(format!("address `{a}` has no host"));
    }
    port.parse::<u16>()
        .map_err(|e| format!("port of `{a}`: {e}"))?;
    Ok(())
}

impl NodeConfig {
    /// Reads a TOML file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|e| ClusterError::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| ClusterError::config("config file", format!("{}: {e}", path.display())))
    }

    /// The members, parsed.
    pub fn members(&self) -> Result<Vec<Member>, ClusterError> {
        self.peers.iter().map(|p| parse_member(p)).collect()
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<Vec<Member>, ClusterError> {
        if self.id == 0 {
            return Err(ClusterError::config("id", "must be a non-zero integer"));
        }
        let members = self.members()?;
        if members.is_empty() {
            return Err(ClusterError::config(
                "peers",
                "at least one member (this node) is required",
            ));
        }
        let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(ClusterError::config("peers", "duplicate member id"));
        }
        if !ids.contains(&self.id) {
            return Err(ClusterError::config(
                "peers",
                format!("does not list this node's id {}", self.id),
            ));
        }
        if let Some(l) = &self.listen {
            check_addr(l).map_err(|r| ClusterError::config("listen", r))?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ClusterError::config("data_dir", "must not be empty"));
        }
        let range = |field: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(ClusterError::config(
                    field,
                    format!("{v} is outside {lo}..={hi}"),
                ))
            } else {
                Ok(())
            }
        };
        range("tick_ms", self.tick_ms, 1, 10_000)?;
        range("election_ticks", self.election_ticks as u64, 3, 1_000)?;
        range(
            "heartbeat_ticks",
            self.heartbeat_ticks as u64,
            1,
            self.election_ticks as u64 - 1,
        )?;
        range(
            "max_entry_bytes",
            self.max_entry_bytes as u64,
            1 << 10,
            64 << 20,
        )?;
        range(
            "max_msg_bytes",
            self.max_msg_bytes,
            self.max_entry_bytes as u64,
            256 << 20,
        )?;
        range("max_inflight_msgs", self.max_inflight_msgs as u64, 1, 4096)?;
        range(
            "max_uncommitted_bytes",
            self.max_uncommitted_bytes,
            self.max_entry_bytes as u64,
            16 << 30,
        )?;
        range(
            "max_frame_bytes",
            self.max_frame_bytes as u64,
            (self.max_msg_bytes + (1 << 20)).min(1 << 30),
            1 << 30,
        )?;
        range(
            "max_event_bytes",
            self.max_event_bytes as u64,
            1,
            self.max_entry_bytes as u64 - 64,
        )?;
        range("peer_queue", self.peer_queue as u64, 16, 1 << 20)?;
        range("request_timeout_ms", self.request_timeout_ms, 10, 600_000)?;
        range(
            "dedup_window",
            self.dedup_window as u64,
            0,
            eventstream_core::MAX_DEDUP_WINDOW as u64,
        )?;
        if !self.ring_capacity.is_power_of_two() {
            return Err(ClusterError::config(
                "ring_capacity",
                format!("{} is not a power of two", self.ring_capacity),
            ));
        }
        range(
            "ring_capacity",
            self.ring_capacity as u64,
            64,
            eventstream_core::MAX_RING_CAPACITY as u64,
        )?;
        range("segment_bytes", self.segment_bytes, 1 << 16, 1 << 34)?;
        range("io_threads", self.io_threads as u64, 1, 64)?;
        crate::tls::NodeTls::from_config(self)?;
        self.admin_token()?;
        range(
            "retention_max_age_secs",
            self.retention_max_age_secs,
            0,
            100 * 365 * 86_400,
        )?;
        range("snapshot_entries", self.snapshot_entries, 1, 1 << 40)?;
        if self.snapshot_bytes != 0 {
            range("snapshot_bytes", self.snapshot_bytes, 1 << 20, 1 << 40)?;
        }
        range("log_keep_entries", self.log_keep_entries, 1, 1 << 40)?;
        range("log_keep_bytes", self.log_keep_bytes, 0, 1 << 40)?;
        range(
            "compaction_interval_ms",
            self.compaction_interval_ms,
            10,
            86_400_000,
        )?;
        range(
            "max_peer_frame_bytes",
            self.max_peer_frame_bytes,
            self.max_frame_bytes as u64,
            u32::MAX as u64,
        )?;
        range(
            "max_inflight_per_connection",
            self.max_inflight_per_connection as u64,
            1,
            1 << 20,
        )?;
        range(
            "max_inflight_events",
            self.max_inflight_events as u64,
            1,
            1 << 30,
        )?;
        Ok(members)
    }

    /// This node's own member entry.
    pub fn me(&self, members: &[Member]) -> Member {
        members
            .iter()
            .find(|m| m.id == self.id)
            .cloned()
            .expect("validate checked that peers lists this node")
    }

    /// The raft/storage part.
    pub fn replica_config(&self, members: &[Member]) -> ReplicaConfig {
        let mut rc = ReplicaConfig::new(
            self.id,
            members.iter().map(|m| m.id).collect(),
            &self.data_dir,
        );
        rc.election_tick = self.election_ticks;
        rc.heartbeat_tick = self.heartbeat_ticks;
        rc.max_size_per_msg = self.max_msg_bytes;
        rc.max_inflight_msgs = self.max_inflight_msgs;
        rc.max_uncommitted_size = self.max_uncommitted_bytes;
        // Two of the largest entries per Ready: big enough that applying keeps up, small
        // enough that one iteration of the driver stays short.
        rc.max_apply_bytes_per_ready = 2 * self.max_entry_bytes as u64;
        rc.segment_bytes = self.segment_bytes;
        rc.retention = crate::stream::Retention {
            max_events: self.retention_max_events,
            max_bytes: self.retention_max_bytes,
            max_age_ms: self.retention_max_age_secs.saturating_mul(1000),
        };
        rc.snapshot_entries = self.snapshot_entries;
        rc.log_keep_entries = self.log_keep_entries;
        rc.snapshot_bytes = self.snapshot_bytes;
        rc.log_keep_bytes = self.log_keep_bytes;
        rc
    }

    /// The admin bearer token, read from `admin_token_file` (`None` when not configured).
    pub fn admin_token(&self) -> Result<Option<Vec<u8>>, ClusterError> {
        self.admin_token_file
            .as_deref()
            .map(crate::tls::read_token_file)
            .transpose()
    }

    /// One tick.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> NodeConfig {
        NodeConfig {
            id: 2,
            peers: vec![
                "1=127.0.0.1:7001".into(),
                "2=127.0.0.1:7002@127.0.0.1:9002".into(),
            ],
            ..NodeConfig::default()
        }
    }

    #[test]
    fn valid_config_passes_and_bad_fields_are_named() {
        let m = ok().validate().unwrap();
        assert_eq!(m[1].http_addr.as_deref(), Some("127.0.0.1:9002"));
        let field = |c: NodeConfig| match c.validate().unwrap_err() {
            ClusterError::InvalidConfig { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(field(NodeConfig { id: 0, ..ok() }), "id");
        assert_eq!(field(NodeConfig { id: 3, ..ok() }), "peers");
        assert_eq!(
            field(NodeConfig {
                peers: vec!["x".into()],
                ..ok()
            }),
            "peers"
        );
        assert_eq!(
            field(NodeConfig {
                peers: vec!["2=host".into()],
                ..ok()
            }),
            "peers"
        );
        assert_eq!(field(NodeConfig { tick_ms: 0, ..ok() }), "tick_ms");
        assert_eq!(
            field(NodeConfig {
                ring_capacity: 1000,
                ..ok()
            }),
            "ring_capacity"
        );
        assert_eq!(
            field(NodeConfig {
                heartbeat_ticks: 20,
                ..ok()
            }),
            "heartbeat_ticks"
        );
        assert_eq!(
            field(NodeConfig {
                log_keep_entries: 0,
                ..ok()
            }),
            "log_keep_entries"
        );
        assert_eq!(
            field(NodeConfig {
                snapshot_entries: 0,
                ..ok()
            }),
            "snapshot_entries"
        );
        // 0 turns the byte trigger off; a tiny one would snapshot on every compaction check.
        assert_eq!(
            field(NodeConfig {
                snapshot_bytes: 4096,
                ..ok()
            }),
            "snapshot_bytes"
        );
        assert!(NodeConfig {
            snapshot_bytes: 0,
            ..ok()
        }
        .validate()
        .is_ok());
        assert_eq!(
            field(NodeConfig {
                max_peer_frame_bytes: 1 << 20,
                ..ok()
            }),
            "max_peer_frame_bytes"
        );
    }

    #[test]
    fn toml_round_trip_rejects_unknown_fields() {
        let text = "id = 1\npeers = [\"1=127.0.0.1:1\"]\ndata_dir = \"/tmp/x\"\n";
        let c: NodeConfig = toml::from_str(text).unwrap();
        assert_eq!(c.id, 1);
        assert!(toml::from_str::<NodeConfig>("idd = 1").is_err());
    }

    #[test]
    fn the_shipped_kubernetes_config_is_valid_and_bounds_memory() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/config/eventstream.toml");
        let mut c = NodeConfig::from_toml_file(&path).unwrap();
        // The pod's entrypoint passes --id.
        c.id = 2;
        c.validate().unwrap();
        assert!(c.retention_max_bytes > 0 && c.snapshot_bytes > 0 && c.log_keep_bytes > 0);
        // Peak memory (stream, kept log, one snapshot being written) stays well under the
        // pod's 2 GiB limit, and snapshots rewrite the stream at most once per 4× its size of
        // log (docs/cluster.md, "Memory").
        assert!(2 * c.retention_max_bytes + c.log_keep_bytes <= 1 << 30);
        assert!(c.snapshot_bytes >= 4 * c.retention_max_bytes);
    }
}
