//! Node configuration: one struct, [`NodeConfig`], in sections (`raft`, `storage`,
//! `retention`, `limits`, `engine`, `tls`, `admin`, `http`), with one source of defaults
//! (each section's `Default`, which [`crate::ReplicaConfig::new`] uses too).
//!
//! Every setting is reachable three ways, all derived from the struct: the TOML file
//! (`raft.tick_ms` is `tick_ms` in `[raft]`), the environment (`EVENTSTREAM_RAFT_TICK_MS`)
//! and a flag (`--raft-tick-ms`). [`NodeConfig::settings`] lists them (key, flag, variable,
//! help, kind) for the binary to turn into flags; [`NodeConfig::load`] applies a file and
//! then `(key, value)` overrides (environment, then flags) and validates. Errors name the
//! field, the value and the allowed range.
//!
//! Invariants:
//! * The settings list is generated from the struct definitions by [`settings!`]: a field
//!   added to a section is a TOML key, a flag and a variable at once, and cannot be forgotten
//!   in one of them.
//! * Unknown keys are refused (`deny_unknown_fields`), in the file as in overrides.

use crate::error::NodeError;
use crate::replica::ReplicaConfig;
use eventstream_proto::{check_addr, Member};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What kind of value a setting takes (how a flag's or variable's text becomes TOML).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// An unsigned integer.
    Int,
    /// `true` or `false` (a flag given without a value means `true`).
    Bool,
    /// Text (also paths and names of choices).
    Str,
    /// A comma-separated list of text.
    List,
    /// A section of settings.
    Section(&'static [FieldDoc]),
}

impl Kind {
    /// The TOML value `raw` stands for, or why it does not fit.
    pub fn parse(self, raw: &str) -> Result<toml::Value, String> {
        match self {
            Kind::Int => raw
                .trim()
                .parse::<u64>()
                .map_err(|e| format!("`{raw}` is not an unsigned integer ({e})"))
                .and_then(|v| {
                    i64::try_from(v)
                        .map(toml::Value::Integer)
                        .map_err(|_| format!("`{raw}` is too large"))
                }),
            Kind::Bool => match raw.trim() {
                "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
                "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
                other => Err(format!("`{other}` is not true or false")),
            },
            Kind::Str => Ok(toml::Value::String(raw.to_owned())),
            Kind::List => Ok(toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            )),
            Kind::Section(_) => Err("is a section, not a setting".into()),
        }
    }

    /// How `--help` names the value.
    pub fn value_name(self) -> &'static str {
        match self {
            Kind::Int => "N",
            Kind::Bool => "BOOL",
            Kind::Str => "TEXT",
            Kind::List => "LIST",
            Kind::Section(_) => "SECTION",
        }
    }
}

/// A field of a configuration section, as [`settings!`] records it.
#[derive(Debug, Clone, Copy)]
pub struct FieldDoc {
    /// The field (TOML key within its section).
    pub name: &'static str,
    /// Its doc comment.
    pub help: &'static str,
    /// Its kind.
    pub kind: Kind,
}

/// A type a setting can have.
pub trait ConfigValue {
    /// How its text form is read.
    const KIND: Kind;
}

macro_rules! config_value {
    ($kind:ident: $($t:ty),*) => { $(impl ConfigValue for $t { const KIND: Kind = Kind::$kind; })* };
}
config_value!(Int: u16, u32, u64, usize);
config_value!(Bool: bool);
config_value!(Str: String, PathBuf, OverloadPolicy);
config_value!(List: Vec<String>);

impl<T: ConfigValue> ConfigValue for Option<T> {
    const KIND: Kind = T::KIND;
}

/// Defines a configuration section: the struct (serde, unknown keys refused, missing keys
/// defaulted), its `Default` from the `= default` of every field, and `FIELDS`, the list the
/// flags and variables are made from.
macro_rules! settings {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                pub $field:ident : $ty:ty = $default:expr,
            )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            /// Every field of this section: name, help, kind.
            pub const FIELDS: &'static [FieldDoc] = &[
                $( FieldDoc {
                    name: stringify!($field),
                    help: concat!($($doc),*),
                    kind: <$ty as ConfigValue>::KIND,
                }, )*
            ];
        }

        impl ConfigValue for $name {
            const KIND: Kind = Kind::Section($name::FIELDS);
        }
    };
}

settings! {
    /// Everything a node needs to start.
    pub struct NodeConfig {
        /// This node's raft id (non-zero, listed in `peers`).
        pub id: u64 = 0,
        /// Every member, this node included: `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT][+KAFKA_HOST:KAFKA_PORT]`.
        pub peers: Vec<String> = Vec::new(),
        /// Address to bind for peers and clients (default: this node's address in `peers`).
        pub listen: Option<String> = None,
        /// Directory of the durable log.
        pub data_dir: PathBuf = PathBuf::from("data"),
        /// Join a running cluster: with an empty data directory, fetch the configuration the
        /// cluster's log starts from (from the other members in `peers`) instead of
        /// bootstrapping a new cluster from `peers`. Ignored once the data directory holds a
        /// log. Add the node first (`eventstream member add ID=... --learner`).
        pub join: bool = false,
        /// Raft timing and message sizes.
        pub raft: RaftConfig = RaftConfig::default(),
        /// The log on disk: segments, snapshots, compaction.
        pub storage: StorageConfig = StorageConfig::default(),
        /// How much of the stream to keep.
        pub retention: RetentionConfig = RetentionConfig::default(),
        /// Bounds on what clients and peers may send and hold in flight.
        pub limits: LimitsConfig = LimitsConfig::default(),
        /// The embedded engine and the node's I/O threads.
        pub engine: EngineSettings = EngineSettings::default(),
        /// TLS for the node's port (see `docs/security.md`).
        pub tls: TlsConfig = TlsConfig::default(),
        /// Administrative operations.
        pub admin: AdminConfig = AdminConfig::default(),
        /// The HTTP exporter (metrics, API, status page), served by the binary.
        pub http: HttpConfig = HttpConfig::default(),
        /// The Kafka-protocol listener, served by the binary (see `docs/kafka.md`).
        pub kafka: KafkaConfig = KafkaConfig::default(),
    }
}

settings! {
    /// Raft timing and message sizes.
    pub struct RaftConfig {
        /// Length of one raft tick in milliseconds.
        pub tick_ms: u64 = 20,
        /// Ticks before a follower without a leader campaigns (randomised up to 2×).
        pub election_ticks: u64 = 15,
        /// Ticks between heartbeats.
        pub heartbeat_ticks: u64 = 3,
        /// Largest raft entry (many events per entry), bytes.
        pub max_entry_bytes: u64 = 1 << 20,
        /// Largest append message, bytes.
        pub max_msg_bytes: u64 = 4 << 20,
        /// Append messages in flight per follower.
        pub max_inflight_msgs: u64 = 64,
        /// Uncommitted bytes before the leader refuses proposals (bounded memory).
        pub max_uncommitted_bytes: u64 = 128 << 20,
        /// Persist on a separate WAL thread (raft-rs asynchronous Ready, group commit);
        /// `false` fsyncs inline in the driver loop.
        pub async_persist: bool = true,
    }
}

settings! {
    /// The log on disk: segments, snapshots, compaction.
    pub struct StorageConfig {
        /// Log segment size before rotation, bytes.
        pub segment_bytes: u64 = 64 << 20,
        /// Entries applied since the last snapshot before the next snapshot + log compaction.
        pub snapshot_entries: u64 = 20_000,
        /// Bytes of entries applied since the last snapshot before the next one, whichever of
        /// this and `snapshot_entries` comes first (0 = count only). The in-memory log holds
        /// everything since the last compaction, and at high load an entry is up to
        /// `raft.max_entry_bytes`, so a count alone does not bound memory.
        pub snapshot_bytes: u64 = 256 << 20,
        /// Entries kept in the log below the applied index at compaction, so a follower
        /// slightly behind catches up from the log instead of by snapshot (≥ 1).
        pub log_keep_entries: u64 = 5_000,
        /// At most this many bytes of those entries are kept (at least one entry is; 0 = count
        /// only). The in-memory log is trimmed to it at every compaction check, snapshot or not.
        pub log_keep_bytes: u64 = 64 << 20,
        /// How often retention and compaction run, milliseconds.
        pub compaction_interval_ms: u64 = 5_000,
        /// Stream log segment size before a new one is started, bytes (retention deletes whole
        /// segments).
        pub stream_segment_bytes: u64 = 64 << 20,
        /// Newest stream bytes kept in memory for subscribers that are caught up; older reads
        /// go to the segment files (through the page cache).
        pub read_cache_bytes: u64 = 64 << 20,
        /// Pace of copying stream offsets from another member after a snapshot took this node
        /// past what it held, bytes per second (0 = as fast as the network and disks go).
        pub copy_bytes_per_sec: u64 = 128 << 20,
    }
}

settings! {
    /// How much of the stream to keep (0 = no limit). The stream is on disk in segments and
    /// retention deletes whole segments from the front, so a node keeps between a limit and
    /// the limit plus one `storage.stream_segment_bytes`. Memory does not depend on it.
    pub struct RetentionConfig {
        /// Keep at most this many events.
        pub max_events: u64 = 0,
        /// Keep at most this many bytes of stream segments.
        pub max_bytes: u64 = 0,
        /// Drop segments whose newest event was committed more than this many seconds ago.
        pub max_age_secs: u64 = 0,
    }
}

settings! {
    /// Bounds on what clients and peers may send and hold in flight.
    pub struct LimitsConfig {
        /// Largest frame body accepted on a client connection, bytes.
        pub max_frame_bytes: u64 = eventstream_proto::frame::DEFAULT_MAX_FRAME as u64,
        /// Largest frame accepted on a peer connection (snapshots travel as one raft message).
        pub max_peer_frame_bytes: u64 = 1 << 30,
        /// Largest event payload, bytes.
        pub max_event_bytes: u64 = 512 << 10,
        /// Messages queued per peer before sends fail (bounded memory).
        pub peer_queue: u64 = 8192,
        /// Time a publish may wait for commit before it is answered with `Timeout`.
        pub request_timeout_ms: u64 = 5_000,
        /// What a publish gets when the in-flight limits below are reached: `reject` (answered
        /// `Busy` at once) or `block` (the connection is not read until a slot frees: TCP
        /// back-pressure).
        pub overload_policy: OverloadPolicy = OverloadPolicy::Reject,
        /// Publish requests one client connection may have in flight (accepted, not answered).
        pub max_inflight_per_connection: u64 = 1024,
        /// Events in flight on this node over all connections (bounded memory under overload).
        pub max_inflight_events: u64 = 1 << 18,
    }
}

settings! {
    /// The embedded engine and the node's I/O threads.
    pub struct EngineSettings {
        /// Event ids remembered for dedup (0 disables dedup).
        pub dedup_window: u64 = 1 << 18,
        /// Capacity of each tier ring of the embedded engine (power of two).
        pub ring_capacity: u64 = 1 << 16,
        /// tokio worker threads of the node's client-facing runtime.
        pub io_threads: u64 = 2,
    }
}

settings! {
    /// TLS for the node's one port: on when `cert`, `key` and `ca` are set.
    pub struct TlsConfig {
        /// PEM certificate chain of this node. Needs SANs for this node's host and both the
        /// serverAuth and clientAuth key usages (it is also presented to peers).
        pub cert: Option<PathBuf> = None,
        /// PEM private key of `cert`.
        pub key: Option<PathBuf> = None,
        /// PEM CA certificate(s) that peers' and (with `client_auth`) clients' certificates
        /// must chain to.
        pub ca: Option<PathBuf> = None,
        /// Require a client certificate from clients too (mutual TLS); peers always need one.
        pub client_auth: bool = false,
        /// Name checked in peers' certificates instead of the host of each member's address.
        pub server_name: Option<String> = None,
    }
}

settings! {
    /// Administrative operations (membership, leader transfer, backups).
    pub struct AdminConfig {
        /// File holding the bearer token that mutating admin operations require (none: open).
        pub token_file: Option<PathBuf> = None,
    }
}

settings! {
    /// The HTTP exporter (metrics, API, status page), served by the binary.
    pub struct HttpConfig {
        /// HTTP port on all interfaces; 0 turns HTTP off.
        pub port: u16 = 0,
    }
}

settings! {
    /// The Kafka-protocol listener, served by the binary (see `docs/kafka.md`).
    pub struct KafkaConfig {
        /// Address to bind for Kafka clients (default: this node's Kafka address in `peers`,
        /// its `+HOST:PORT` part); with neither, the node has no Kafka listener.
        pub listen: Option<String> = None,
        /// Address Kafka clients are told to connect to for this node, Kafka's advertised
        /// listener (default: its Kafka address in `peers`, else `listen`). Other members are
        /// advertised by their Kafka addresses in `peers`.
        pub advertised: Option<String> = None,
        /// Priority of records without a `priority` header: critical, high, medium or low.
        pub default_priority: String = "medium".to_owned(),
        /// Largest Kafka request accepted, bytes; a larger one closes its connection.
        pub max_request_bytes: u64 = 16 << 20,
        /// Serve Kafka clients over TLS with the node's certificate (`tls.cert`, `tls.key`,
        /// `tls.ca`; Kafka's `security.protocol=SSL`); with `tls.client_auth` clients must
        /// present a certificate that chains to `tls.ca`.
        pub tls: bool = false,
        /// File of `USER:PASSWORD` lines: Kafka clients must authenticate as one of these
        /// users with SASL (SCRAM-SHA-256 or PLAIN) before any request but ApiVersions.
        pub sasl_users_file: Option<PathBuf> = None,
    }
}

impl NodeConfig {
    /// Where this node's Kafka listener binds and what it advertises (`None`: no listener).
    pub fn kafka_addresses(&self, members: &[Member]) -> Option<(String, String)> {
        let own = self.me(members).kafka_addr;
        let listen = self.kafka.listen.clone().or_else(|| own.clone())?;
        let advertised = self
            .kafka
            .advertised
            .clone()
            .or(own)
            .unwrap_or_else(|| listen.clone());
        Some((listen, advertised))
    }

    fn validate_kafka(&self) -> Result<(), NodeError> {
        let k = &self.kafka;
        for (field, v) in [
            ("kafka.listen", &k.listen),
            ("kafka.advertised", &k.advertised),
        ] {
            if let Some(a) = v {
                eventstream_proto::check_addr(a).map_err(|why| NodeError::config(field, why))?;
            }
        }
        k.default_priority
            .parse::<eventstream_core::Priority>()
            .map_err(|_| {
                NodeError::config(
                    "kafka.default_priority",
                    format!(
                        "`{}` is not critical, high, medium or low",
                        k.default_priority
                    ),
                )
            })?;
        if k.tls && (self.tls.cert.is_none() || self.tls.key.is_none() || self.tls.ca.is_none()) {
            return Err(NodeError::config(
                "kafka.tls",
                "needs the node's TLS: set tls.cert, tls.key and tls.ca",
            ));
        }
        range(
            "kafka.max_request_bytes",
            k.max_request_bytes,
            1 << 20,
            1 << 30,
        )
    }
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

impl std::fmt::Display for OverloadPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OverloadPolicy::Reject => "reject",
            OverloadPolicy::Block => "block",
        })
    }
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

/// One setting as the outside world names it.
#[derive(Debug, Clone)]
pub struct Setting {
    /// Dotted TOML key (`raft.tick_ms`).
    pub key: String,
    /// The flag without its dashes (`raft-tick-ms`).
    pub flag: String,
    /// The environment variable (`EVENTSTREAM_RAFT_TICK_MS`).
    pub env: String,
    /// What it does.
    pub help: &'static str,
    /// Its kind.
    pub kind: Kind,
}

/// Where an override came from, for its error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An `EVENTSTREAM_*` variable.
    Env,
    /// A command-line flag.
    Flag,
}

/// Parses one `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT]` member; the error names `peers`.
pub fn parse_member(s: &str) -> Result<Member, NodeError> {
    eventstream_proto::parse_member(s).map_err(|e| match e {
        eventstream_proto::DecodeError::Invalid { reason, .. } => {
            NodeError::config("peers", reason)
        }
        other => NodeError::config("peers", other.to_string()),
    })
}

fn collect_settings(prefix: &str, fields: &[FieldDoc], out: &mut Vec<Setting>) {
    for f in fields {
        let key = if prefix.is_empty() {
            f.name.to_owned()
        } else {
            format!("{prefix}.{}", f.name)
        };
        match f.kind {
            Kind::Section(inner) => collect_settings(&key, inner, out),
            kind => out.push(Setting {
                flag: key.replace(['.', '_'], "-"),
                env: format!("EVENTSTREAM_{}", key.replace('.', "_").to_uppercase()),
                key,
                help: f.help,
                kind,
            }),
        }
    }
}

fn range(field: &str, v: u64, lo: u64, hi: u64) -> Result<(), NodeError> {
    if v < lo || v > hi {
        Err(NodeError::config(
            field,
            format!("{v} is outside {lo}..={hi}"),
        ))
    } else {
        Ok(())
    }
}

/// Sets `value` at the dotted `key` in `table`, creating section tables on the way.
fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or("empty key")?;
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a section"))?;
    }
    t.insert(last.to_owned(), value);
    Ok(())
}

impl NodeConfig {
    /// Every setting, in definition order, with its key, flag, variable, help and kind.
    pub fn settings() -> Vec<Setting> {
        let mut out = Vec::new();
        collect_settings("", Self::FIELDS, &mut out);
        out
    }

    /// [`merge`](Self::merge), then [`validate`](Self::validate).
    pub fn load(
        text: Option<&str>,
        overrides: &[(String, String, Source)],
    ) -> Result<NodeConfig, NodeError> {
        let cfg = Self::merge(text, overrides)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads the TOML `text` (`None`: all defaults) and applies `overrides` in order (later
    /// ones win: give the environment's before the flags'). An override's key is a dotted
    /// setting key; its value is text as a flag or variable carries it. Not validated.
    pub fn merge(
        text: Option<&str>,
        overrides: &[(String, String, Source)],
    ) -> Result<NodeConfig, NodeError> {
        let mut table: toml::Table = match text {
            Some(t) => {
                // Parsed as a configuration first, so a wrong type or an unknown key is
                // reported with its line.
                toml::from_str::<NodeConfig>(t)
                    .map_err(|e| NodeError::config("config file", e.to_string()))?;
                toml::from_str(t).map_err(|e| NodeError::config("config file", e.to_string()))?
            }
            None => toml::Table::new(),
        };
        let settings = Self::settings();
        for (key, raw, source) in overrides {
            let Some(s) = settings.iter().find(|s| &s.key == key) else {
                return Err(NodeError::config(key, "no such setting"));
            };
            let named = match source {
                Source::Env => s.env.clone(),
                Source::Flag => format!("--{}", s.flag),
            };
            let value = s
                .kind
                .parse(raw)
                .map_err(|why| NodeError::config(&s.key, format!("{named}: {why}")))?;
            set_path(&mut table, key, value).map_err(|why| NodeError::config(&s.key, why))?;
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| NodeError::config("configuration", e.to_string()))
    }

    /// The default of every setting as text, by key (for `--help`).
    pub fn defaults() -> std::collections::BTreeMap<String, String> {
        let table: toml::Table =
            toml::from_str(&NodeConfig::default().to_toml()).unwrap_or_default();
        let mut out = std::collections::BTreeMap::new();
        for_each_leaf("", &table, &mut |key, v| {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(a) => {
                    let items: Vec<String> = a
                        .iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                        .collect();
                    items.join(",")
                }
                other => other.to_string(),
            };
            out.insert(key, text);
        });
        out
    }

    /// Reads a TOML file (no overrides; not validated).
    pub fn from_toml_file(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| NodeError::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| NodeError::config("config file", format!("{}: {e}", path.display())))
    }

    /// The configuration as TOML (what `eventstream node --print-config` shows).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The members, parsed.
    pub fn members(&self) -> Result<Vec<Member>, NodeError> {
        self.peers.iter().map(|p| parse_member(p)).collect()
    }

    /// Checks every field; the error names the first bad one, its value and the allowed range.
    pub fn validate(&self) -> Result<Vec<Member>, NodeError> {
        let members = self.validate_identity()?;
        self.validate_raft()?;
        self.validate_storage()?;
        self.validate_limits()?;
        self.validate_engine()?;
        self.validate_kafka()?;
        crate::tls::NodeTls::from_config(self)?;
        self.admin_token()?;
        Ok(members)
    }

    fn validate_identity(&self) -> Result<Vec<Member>, NodeError> {
        if self.id == 0 {
            return Err(NodeError::config("id", "must be a non-zero integer"));
        }
        let members = self.members()?;
        if members.is_empty() {
            return Err(NodeError::config(
                "peers",
                "at least one member (this node) is required",
            ));
        }
        let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(NodeError::config("peers", "duplicate member id"));
        }
        if !ids.contains(&self.id) {
            return Err(NodeError::config(
                "peers",
                format!("does not list this node's id {}", self.id),
            ));
        }
        if let Some(l) = &self.listen {
            check_addr(l).map_err(|r| NodeError::config("listen", r))?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(NodeError::config("data_dir", "must not be empty"));
        }
        Ok(members)
    }

    fn validate_raft(&self) -> Result<(), NodeError> {
        let r = &self.raft;
        range("raft.tick_ms", r.tick_ms, 1, 10_000)?;
        range("raft.election_ticks", r.election_ticks, 3, 1_000)?;
        range(
            "raft.heartbeat_ticks",
            r.heartbeat_ticks,
            1,
            r.election_ticks - 1,
        )?;
        range("raft.max_entry_bytes", r.max_entry_bytes, 1 << 10, 64 << 20)?;
        range(
            "raft.max_msg_bytes",
            r.max_msg_bytes,
            r.max_entry_bytes,
            256 << 20,
        )?;
        range("raft.max_inflight_msgs", r.max_inflight_msgs, 1, 4096)?;
        range(
            "raft.max_uncommitted_bytes",
            r.max_uncommitted_bytes,
            r.max_entry_bytes,
            16 << 30,
        )
    }

    fn validate_storage(&self) -> Result<(), NodeError> {
        let s = &self.storage;
        range("storage.segment_bytes", s.segment_bytes, 1 << 16, 1 << 34)?;
        range("storage.snapshot_entries", s.snapshot_entries, 1, 1 << 40)?;
        if s.snapshot_bytes != 0 {
            range("storage.snapshot_bytes", s.snapshot_bytes, 1 << 20, 1 << 40)?;
        }
        range("storage.log_keep_entries", s.log_keep_entries, 1, 1 << 40)?;
        range("storage.log_keep_bytes", s.log_keep_bytes, 0, 1 << 40)?;
        range(
            "storage.compaction_interval_ms",
            s.compaction_interval_ms,
            10,
            86_400_000,
        )?;
        range(
            "storage.stream_segment_bytes",
            s.stream_segment_bytes,
            1 << 16,
            2 << 30,
        )?;
        range("storage.read_cache_bytes", s.read_cache_bytes, 0, 64 << 30)?;
        range(
            "storage.copy_bytes_per_sec",
            s.copy_bytes_per_sec,
            0,
            1 << 40,
        )?;
        range(
            "retention.max_age_secs",
            self.retention.max_age_secs,
            0,
            100 * 365 * 86_400,
        )
    }

    fn validate_limits(&self) -> Result<(), NodeError> {
        let l = &self.limits;
        range(
            "limits.max_frame_bytes",
            l.max_frame_bytes,
            (self.raft.max_msg_bytes + (1 << 20)).min(1 << 30),
            1 << 30,
        )?;
        range(
            "limits.max_peer_frame_bytes",
            l.max_peer_frame_bytes,
            l.max_frame_bytes,
            u32::MAX as u64,
        )?;
        range(
            "limits.max_event_bytes",
            l.max_event_bytes,
            1,
            self.raft.max_entry_bytes - 64,
        )?;
        range("limits.peer_queue", l.peer_queue, 16, 1 << 20)?;
        range(
            "limits.request_timeout_ms",
            l.request_timeout_ms,
            10,
            600_000,
        )?;
        range(
            "limits.max_inflight_per_connection",
            l.max_inflight_per_connection,
            1,
            1 << 20,
        )?;
        range(
            "limits.max_inflight_events",
            l.max_inflight_events,
            1,
            1 << 30,
        )
    }

    fn validate_engine(&self) -> Result<(), NodeError> {
        let e = &self.engine;
        range(
            "engine.dedup_window",
            e.dedup_window,
            0,
            eventstream_core::MAX_DEDUP_WINDOW as u64,
        )?;
        if !e.ring_capacity.is_power_of_two() {
            return Err(NodeError::config(
                "engine.ring_capacity",
                format!("{} is not a power of two", e.ring_capacity),
            ));
        }
        range(
            "engine.ring_capacity",
            e.ring_capacity,
            64,
            eventstream_core::MAX_RING_CAPACITY as u64,
        )?;
        range("engine.io_threads", e.io_threads, 1, 64)
    }

    /// This node's own member entry.
    pub fn me(&self, members: &[Member]) -> Member {
        members
            .iter()
            .find(|m| m.id == self.id)
            .cloned()
            .expect("validate checked that peers lists this node")
    }

    /// How the node lays out and caches its stream.
    pub fn stream_settings(&self) -> crate::stream::StreamSettings {
        crate::stream::StreamSettings {
            segment_bytes: self.storage.stream_segment_bytes,
            cache_bytes: self.storage.read_cache_bytes,
        }
    }

    /// The raft/storage part.
    pub fn replica_config(&self, members: &[Member]) -> ReplicaConfig {
        ReplicaConfig::from_sections(
            self.id,
            members.iter().map(|m| m.id).collect(),
            &self.data_dir,
            &self.raft,
            &self.storage,
            &self.retention,
        )
    }

    /// The admin bearer token, read from `admin.token_file` (`None` when not configured).
    pub fn admin_token(&self) -> Result<Option<Vec<u8>>, NodeError> {
        self.admin
            .token_file
            .as_deref()
            .map(crate::tls::read_token_file)
            .transpose()
    }

    /// One tick.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.raft.tick_ms)
    }
}

/// Calls `leaf` with the dotted key (below `prefix`) and the value of every setting in `t`,
/// the leaves of its nested tables.
fn for_each_leaf(prefix: &str, t: &toml::Table, leaf: &mut impl FnMut(String, &toml::Value)) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => for_each_leaf(&key, inner, leaf),
            _ => leaf(key, v),
        }
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

    fn field(c: NodeConfig) -> String {
        match c.validate().unwrap_err() {
            NodeError::InvalidConfig { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn valid_config_passes_and_bad_fields_are_named() {
        let m = ok().validate().unwrap();
        assert_eq!(m[1].http_addr.as_deref(), Some("127.0.0.1:9002"));
        assert_eq!(field(NodeConfig { id: 0, ..ok() }), "id");
        assert_eq!(field(NodeConfig { id: 3, ..ok() }), "peers");
        let peers = |p: &str| NodeConfig {
            peers: vec![p.into()],
            ..ok()
        };
        assert_eq!(field(peers("x")), "peers");
        assert_eq!(field(peers("2=host")), "peers");
        // One setting out of range at a time, and the field it is named by.
        type OutOfRange = (fn(&mut NodeConfig), &'static str);
        let cases: [OutOfRange; 12] = [
            (|c| c.kafka.listen = Some("nohost".into()), "kafka.listen"),
            (|c| c.kafka.tls = true, "kafka.tls"),
            (
                |c| c.kafka.advertised = Some("h:99999".into()),
                "kafka.advertised",
            ),
            (
                |c| c.kafka.default_priority = "urgent".into(),
                "kafka.default_priority",
            ),
            (
                |c| c.kafka.max_request_bytes = 1000,
                "kafka.max_request_bytes",
            ),
            (|c| c.raft.tick_ms = 0, "raft.tick_ms"),
            (|c| c.engine.ring_capacity = 1000, "engine.ring_capacity"),
            (|c| c.raft.heartbeat_ticks = 20, "raft.heartbeat_ticks"),
            (
                |c| c.storage.log_keep_entries = 0,
                "storage.log_keep_entries",
            ),
            (
                |c| c.storage.snapshot_entries = 0,
                "storage.snapshot_entries",
            ),
            // 0 turns the byte trigger off (below); a tiny one would snapshot on every
            // compaction check.
            (
                |c| c.storage.snapshot_bytes = 4096,
                "storage.snapshot_bytes",
            ),
            (
                |c| c.limits.max_peer_frame_bytes = 1 << 20,
                "limits.max_peer_frame_bytes",
            ),
        ];
        for (set, name) in cases {
            let mut c = ok();
            set(&mut c);
            assert_eq!(field(c), name);
        }
        let mut c = ok();
        c.storage.snapshot_bytes = 0;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn the_kafka_listener_binds_and_advertises_the_members_kafka_address_unless_set() {
        let mut c = ok();
        let members = c.validate().unwrap();
        assert_eq!(
            c.kafka_addresses(&members),
            None,
            "no Kafka address: no listener"
        );
        c.peers[1].push_str("+kafka-1.example:9092");
        let members = c.validate().unwrap();
        let pair = |l: &str, a: &str| Some((l.to_owned(), a.to_owned()));
        assert_eq!(
            c.kafka_addresses(&members),
            pair("kafka-1.example:9092", "kafka-1.example:9092")
        );
        c.kafka.listen = Some("0.0.0.0:9092".into());
        assert_eq!(
            c.kafka_addresses(&members),
            pair("0.0.0.0:9092", "kafka-1.example:9092")
        );
        c.kafka.advertised = Some("lb.example:19092".into());
        assert_eq!(
            c.kafka_addresses(&members),
            pair("0.0.0.0:9092", "lb.example:19092")
        );
    }

    #[test]
    fn errors_name_the_value_and_the_range() {
        let mut c = ok();
        c.raft.election_ticks = 2;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("raft.election_ticks") && err.contains('2') && err.contains("3..=1000"),
            "{err}"
        );
    }

    #[test]
    fn toml_round_trip_rejects_unknown_fields() {
        let text =
            "id = 1\npeers = [\"1=127.0.0.1:1\"]\ndata_dir = \"/tmp/x\"\n[raft]\ntick_ms = 5\n";
        let c: NodeConfig = toml::from_str(text).unwrap();
        assert_eq!((c.id, c.raft.tick_ms), (1, 5));
        assert_eq!(toml::from_str::<NodeConfig>(&c.to_toml()).unwrap(), c);
        assert!(toml::from_str::<NodeConfig>("idd = 1").is_err());
        assert!(toml::from_str::<NodeConfig>("[raft]\ntickms = 1").is_err());
    }

    #[test]
    fn every_field_is_a_setting_with_a_flag_and_a_variable() {
        let s = NodeConfig::settings();
        let find = |k: &str| {
            s.iter()
                .find(|x| x.key == k)
                .unwrap_or_else(|| panic!("{k}"))
        };
        assert_eq!(find("raft.tick_ms").flag, "raft-tick-ms");
        assert_eq!(find("raft.tick_ms").env, "EVENTSTREAM_RAFT_TICK_MS");
        assert_eq!(find("engine.dedup_window").flag, "engine-dedup-window");
        assert_eq!(find("http.port").flag, "http-port");
        assert_eq!(find("id").env, "EVENTSTREAM_ID");
        assert!(find("tls.client_auth").help.contains("mutual TLS"));
        // Every leaf of the serialized defaults is a setting, and nothing else is.
        let mut cfg = NodeConfig {
            listen: Some("x:1".into()),
            ..NodeConfig::default()
        };
        cfg.tls.cert = Some("c".into());
        cfg.tls.key = Some("k".into());
        cfg.tls.ca = Some("a".into());
        cfg.tls.server_name = Some("n".into());
        cfg.admin.token_file = Some("t".into());
        cfg.kafka.listen = Some("l:1".into());
        cfg.kafka.advertised = Some("a:1".into());
        cfg.kafka.sasl_users_file = Some("u".into());
        let table: toml::Table = toml::from_str(&cfg.to_toml()).unwrap();
        let mut leaves = Vec::new();
        for_each_leaf("", &table, &mut |key, _| leaves.push(key));
        let mut keys: Vec<String> = s.iter().map(|x| x.key.clone()).collect();
        leaves.sort();
        keys.sort();
        assert_eq!(leaves, keys);
        // Distinct flags and variables.
        let mut flags: Vec<&str> = s.iter().map(|x| x.flag.as_str()).collect();
        flags.sort_unstable();
        flags.dedup();
        assert_eq!(flags.len(), s.len());
    }

    #[test]
    fn overrides_apply_in_order_and_name_the_flag_or_variable() {
        let base = "id = 1\npeers = [\"1=127.0.0.1:7001\"]\n[raft]\ntick_ms = 7\n";
        let o = |k: &str, v: &str, s| (k.to_owned(), v.to_owned(), s);
        let c = NodeConfig::load(
            Some(base),
            &[
                o("raft.tick_ms", "9", Source::Env),
                o("raft.tick_ms", "11", Source::Flag),
                o("engine.dedup_window", "1024", Source::Flag),
                o("tls.client_auth", "false", Source::Env),
                o("peers", "1=127.0.0.1:7001, 2=127.0.0.1:7002", Source::Flag),
                o("limits.overload_policy", "block", Source::Flag),
            ],
        )
        .unwrap();
        assert_eq!(c.raft.tick_ms, 11);
        assert_eq!(c.engine.dedup_window, 1024);
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.limits.overload_policy, OverloadPolicy::Block);
        let err = |k: &str, v: &str, s| {
            NodeConfig::load(Some(base), &[o(k, v, s)])
                .unwrap_err()
                .to_string()
        };
        let e = err("raft.tick_ms", "fast", Source::Flag);
        assert!(
            e.contains("raft.tick_ms") && e.contains("--raft-tick-ms") && e.contains("fast"),
            "{e}"
        );
        let e = err("raft.tick_ms", "0", Source::Env);
        assert!(e.contains("raft.tick_ms") && e.contains("1..=10000"), "{e}");
        let e = err("engine.ring_capacity", "-1", Source::Env);
        assert!(e.contains("EVENTSTREAM_ENGINE_RING_CAPACITY"), "{e}");
        let e = err("raft.nope", "1", Source::Flag);
        assert!(
            e.contains("raft.nope") && e.contains("no such setting"),
            "{e}"
        );
        let e = err("limits.overload_policy", "drop", Source::Flag);
        assert!(e.contains("drop"), "{e}");
    }

    #[test]
    fn replica_defaults_come_from_the_sections() {
        let r = ReplicaConfig::new(1, vec![1], "/tmp/x");
        let d = NodeConfig::default();
        assert_eq!(r.election_tick as u64, d.raft.election_ticks);
        assert_eq!(r.heartbeat_tick as u64, d.raft.heartbeat_ticks);
        assert_eq!(r.max_uncommitted_size, d.raft.max_uncommitted_bytes);
        assert_eq!(r.snapshot_entries, d.storage.snapshot_entries);
    }

    #[test]
    fn the_shipped_kubernetes_config_is_valid_and_bounds_memory_apart_from_retention() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/config/eventstream.toml");
        let mut c = NodeConfig::from_toml_file(&path).unwrap();
        // The pod's entrypoint passes --id.
        c.id = 2;
        c.validate().unwrap();
        let (r, s) = (&c.retention, &c.storage);
        assert!(r.max_bytes > 0 && s.snapshot_bytes > 0 && s.log_keep_bytes > 0);
        // Memory does not depend on retention (the stream is on disk): the read cache, the
        // kept log and the log between compaction checks stay well under the pod's 2 GiB
        // limit (docs/cluster.md, "Storage and memory"); k8s/check.py checks the disk budget
        // against the volume claim.
        assert!(s.read_cache_bytes + s.log_keep_bytes + s.snapshot_bytes <= 1 << 30);
        assert!(
            r.max_bytes > 8 * s.stream_segment_bytes,
            "retention spans many segments"
        );
    }
}
