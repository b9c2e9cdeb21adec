//! `eventstream snapshot save | status | restore`: online backups of one node's applied state
//! and seeding a new cluster from one (see `alerts/runbooks/backup-restore.md`).
//!
//! * `save FILE --endpoint HOST:PORT` asks that node for a snapshot of its applied state
//!   (consistent: taken by its driver between two applies), checks it, and writes FILE
//!   atomically (temporary file, fsync, rename).
//! * `status FILE` decodes and verifies a file (every checksum and the stream's structure)
//!   and prints index, term, membership, events, size and checksum.
//! * `restore FILE --data-dir DIR --initial-cluster ID=HOST:PORT[@HTTP],...` seeds an empty
//!   data directory for one member of a NEW cluster: the same stream, offsets and dedup window,
//!   the membership given. Every member restores the same file; a node started on the
//!   directory (`--peers` = the same list) continues at the snapshot's index.

use crate::config::parse_member;
use crate::error::ClusterError;
use crate::snapshot::{self, SnapshotData, SnapshotMember};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `eventstream snapshot ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum SnapshotCommand {
    /// Save a consistent snapshot of a running node's applied state to FILE.
    Save(SaveArgs),
    /// Verify a snapshot file and print what it holds.
    Status(StatusArgs),
    /// Seed an empty data directory for a member of a new cluster from a snapshot file.
    Restore(RestoreArgs),
}

/// `eventstream snapshot save`.
#[derive(Debug, Args, Clone)]
pub struct SaveArgs {
    /// Where to write the snapshot.
    pub file: PathBuf,
    /// The node to take it from (`host:port`, any member; a caught-up follower spares the leader).
    #[arg(long)]
    pub endpoint: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// TLS and the admin bearer token (`--token` / `EVENTSTREAM_TOKEN`).
    #[command(flatten)]
    pub tls: crate::cli::ClientTlsArgs,
}

/// `eventstream snapshot status`.
#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `eventstream snapshot restore`.
#[derive(Debug, Args, Clone)]
pub struct RestoreArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// The (new or empty) data directory of the member being seeded.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Every member of the new cluster: `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT]`, comma-separated
    /// (the same list as the nodes' `--peers`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub initial_cluster: Vec<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a snapshot holds, as `status` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The file.
    pub file: String,
    /// Log index of the state.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Voting members.
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// Member address table.
    pub members: Vec<SnapshotMember>,
    /// Retained events.
    pub events: u64,
    /// First retained offset.
    pub first_offset: u64,
    /// Last retained offset (`None` without events).
    pub last_offset: Option<u64>,
    /// Offset the next event will get.
    pub next_offset: u64,
    /// Ids in the dedup window.
    pub dedup_ids: u64,
    /// Ids with a known offset (a retry is acknowledged with it).
    pub offset_index_ids: u64,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Whole-file checksum (CRC32 of everything before the trailer), hex.
    pub checksum: String,
    /// When it was taken (ms since the epoch).
    pub created_unix_ms: u64,
}

/// Summarises a decoded snapshot.
pub fn summary(file: &Path, bytes: &[u8], s: &SnapshotData) -> SnapshotSummary {
    SnapshotSummary {
        file: file.display().to_string(),
        index: s.index,
        term: s.term,
        voters: s.voters.clone(),
        learners: s.learners.clone(),
        members: s.members.clone(),
        events: s.events(),
        first_offset: s.first_offset,
        last_offset: (s.next_offset > s.first_offset).then(|| s.next_offset - 1),
        next_offset: s.next_offset,
        dedup_ids: s.dedup.len() as u64,
        offset_index_ids: s.offsets.len() as u64,
        size_bytes: bytes.len() as u64,
        checksum: format!("crc32:{:08x}", snapshot::file_checksum(bytes).unwrap_or(0)),
        created_unix_ms: s.created_unix_ms,
    }
}

fn print(sum: &SnapshotSummary, json: bool, verb: &str) -> Result<(), ClusterError> {
    if json {
        let text = serde_json::to_string(sum).map_err(|e| {
            ClusterError::Decode(crate::error::DecodeError::Invalid {
                field: "summary",
                reason: e.to_string(),
            })
        })?;
        println!("{text}");
        return Ok(());
    }
    let members: Vec<String> = sum
        .members
        .iter()
        .map(|m| {
            let http = m
                .http_addr
                .as_deref()
                .map(|h| format!("@{h}"))
                .unwrap_or_default();
            let learner = if m.learner { " (learner)" } else { "" };
            format!("{}={}{http}{learner}", m.id, m.addr)
        })
        .collect();
    let range = match sum.last_offset {
        Some(last) => format!("offsets {}..={last}", sum.first_offset),
        None => "no events".to_owned(),
    };
    println!("{verb} {}", sum.file);
    println!("  index {}  term {}", sum.index, sum.term);
    println!("  voters {:?}  learners {:?}", sum.voters, sum.learners);
    println!("  members {}", members.join(","));
    println!(
        "  events {} ({range}), next offset {}",
        sum.events, sum.next_offset
    );
    println!(
        "  dedup window {} ids, offset index {} ids",
        sum.dedup_ids, sum.offset_index_ids
    );
    println!("  size {} bytes  checksum {}", sum.size_bytes, sum.checksum);
    Ok(())
}

/// Runs `eventstream snapshot save`; returns the summary and how long the transfer took.
pub fn save(a: &SaveArgs) -> Result<(SnapshotSummary, Duration), ClusterError> {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Spawn {
            what: "tokio runtime",
            source: e,
        })?;
    let base = a.tls.client_config(Vec::new())?;
    let bytes = rt.block_on(crate::client::snapshot_of(
        &base,
        &a.endpoint,
        Duration::from_secs(a.timeout_secs.max(1)),
    ))?;
    let data = snapshot::decode(&bytes).map_err(|e| ClusterError::CorruptSnapshot {
        path: format!("snapshot from {}", a.endpoint),
        reason: e.to_string(),
    })?;
    snapshot::write_atomic(&a.file, &bytes)?;
    Ok((summary(&a.file, &bytes, &data), started.elapsed()))
}

/// `eventstream snapshot save`, printing.
pub fn run_save(a: SaveArgs) -> Result<(), ClusterError> {
    let (sum, took) = save(&a)?;
    print(&sum, a.json, "saved")?;
    if !a.json {
        println!("  took {:.3} s", took.as_secs_f64());
    }
    Ok(())
}

/// Verifies a file and returns its summary.
pub fn status(file: &Path) -> Result<SnapshotSummary, ClusterError> {
    let (bytes, data) = snapshot::read_file(file)?;
    Ok(summary(file, &bytes, &data))
}

/// `eventstream snapshot status`, printing.
pub fn run_status(a: StatusArgs) -> Result<(), ClusterError> {
    let sum = status(&a.file)?;
    print(&sum, a.json, "snapshot")
}

/// Seeds `data_dir` from the snapshot with the membership of `initial_cluster`.
pub fn restore(a: &RestoreArgs) -> Result<SnapshotSummary, ClusterError> {
    let (_, mut data) = snapshot::read_file(&a.file)?;
    let members = a
        .initial_cluster
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_member)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            ClusterError::InvalidConfig { reason, .. } => {
                ClusterError::config("initial_cluster", reason)
            }
            other => other,
        })?;
    if members.is_empty() {
        return Err(ClusterError::config("initial_cluster", "no members given"));
    }
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(ClusterError::config(
            "initial_cluster",
            "duplicate member id",
        ));
    }
    std::fs::create_dir_all(&a.data_dir).map_err(|e| ClusterError::io(&a.data_dir, e))?;
    let existing = std::fs::read_dir(&a.data_dir)
        .map_err(|e| ClusterError::io(&a.data_dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".wal") || n == snapshot::DATA_DIR_FILE);
    if let Some(name) = existing {
        return Err(ClusterError::config(
            "data_dir",
            format!(
                "{} already holds a node's data ({name}): restore into an empty directory",
                a.data_dir.display()
            ),
        ));
    }
    data.voters = ids;
    data.learners.clear();
    data.members = members
        .iter()
        .map(|m| SnapshotMember {
            id: m.id,
            addr: m.addr.clone(),
            http_addr: m.http_addr.clone(),
            learner: false,
        })
        .collect();
    let bytes = snapshot::encode(&data);
    let target = a.data_dir.join(snapshot::DATA_DIR_FILE);
    snapshot::write_atomic(&target, &bytes)?;
    Ok(summary(&target, &bytes, &data))
}

/// `eventstream snapshot restore`, printing.
pub fn run_restore(a: RestoreArgs) -> Result<(), ClusterError> {
    let sum = restore(&a)?;
    print(&sum, a.json, "restored")
}

/// Dispatches a `snapshot` subcommand.
pub fn run(cmd: SnapshotCommand) -> Result<(), ClusterError> {
    match cmd {
        SnapshotCommand::Save(a) => run_save(a),
        SnapshotCommand::Status(a) => run_status(a),
        SnapshotCommand::Restore(a) => run_restore(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_rewrites_membership_and_refuses_non_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.snap");
        let s = SnapshotData {
            index: 9,
            term: 2,
            voters: vec![1, 2, 3],
            first_offset: 0,
            next_offset: 0,
            dedup: vec![(5, 0)],
            ..SnapshotData::default()
        };
        snapshot::write_atomic(&file, &snapshot::encode(&s)).unwrap();
        let args = RestoreArgs {
            file: file.clone(),
            data_dir: dir.path().join("d"),
            initial_cluster: vec!["4=127.0.0.1:1,5=127.0.0.1:2@127.0.0.1:3".into()],
            json: false,
        };
        let sum = restore(&args).unwrap();
        assert_eq!(
            (sum.index, sum.term, sum.voters.clone()),
            (9, 2, vec![4, 5])
        );
        assert_eq!(sum.members[1].http_addr.as_deref(), Some("127.0.0.1:3"));
        assert_eq!(
            status(&dir.path().join("d").join(snapshot::DATA_DIR_FILE)).unwrap(),
            sum
        );
        match restore(&args).unwrap_err() {
            ClusterError::InvalidConfig { field, .. } => assert_eq!(field, "data_dir"),
            other => panic!("{other}"),
        }
        let bad = RestoreArgs {
            initial_cluster: vec!["x".into()],
            data_dir: dir.path().join("e"),
            ..args
        };
        match restore(&bad).unwrap_err() {
            ClusterError::InvalidConfig { field, .. } => assert_eq!(field, "initial_cluster"),
            other => panic!("{other}"),
        }
    }
}
