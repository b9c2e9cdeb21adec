//! Backups: save a running node's state and stream to a directory, verify one, and seed the
//! data directory of a member of a new cluster from one (`eventstream snapshot save | status
//! | restore`).
//!
//! A backup directory holds:
//! * `state.snapshot` — the node's snapshot (the snapshot format of `eventstream-storage`,
//!   checksummed as a whole and per section): membership, dedup window, offset index, the
//!   stream's offsets;
//! * `stream/` — the stream's segment files from the snapshot's first offset to its next one,
//!   exactly as a node stores them (whole checksummed batch records);
//! * `MANIFEST.json` — every file's size and CRC32, and the stream's offset range.
//!
//! A single snapshot file (the format before the stream moved to segment files, with the
//! events inside it) is still accepted by `status` and `restore`.
//!
//! Invariants: `save` writes into `DIR.partial` and renames it to `DIR` only once everything
//! is written and synced, so a backup directory is always whole. Restore only ever writes
//! into a data directory that holds no log, no snapshot and no stream, and puts the stream in
//! place before the snapshot (a crash leaves nothing a node would start from, or all of it).

use crate::error::NodeError;
use eventstream_client::{snapshot_of, ClientConfig, RecordReader};
use eventstream_proto::frame::MAX_STREAM_CHUNK_BYTES;
use eventstream_proto::Member;
use eventstream_storage::snapshot::{self, SnapshotData, SnapshotMember};
use eventstream_storage::stream::{batch, StreamConfig, StreamLog};
use eventstream_storage::StorageError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The manifest's file name in a backup directory.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// The stream's directory in a backup directory.
pub const STREAM_DIR: &str = "stream";
const MANIFEST_FORMAT: u32 = 1;

/// A file of a backup: name (relative to the backup directory), size, CRC32.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupFile {
    /// Path relative to the backup directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC32 of the whole file, hex.
    pub crc32: String,
}

/// `MANIFEST.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Manifest format (1).
    pub format: u32,
    /// When the backup was taken (ms since the epoch).
    pub created_unix_ms: u64,
    /// The node it was taken from.
    pub source: String,
    /// First offset of the stream files.
    pub first_offset: u64,
    /// One past the last offset of the stream files (= the snapshot's next offset).
    pub next_offset: u64,
    /// Every file, the snapshot first.
    pub files: Vec<BackupFile>,
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
    /// Stream segment files in the backup (0 for a single snapshot file).
    pub stream_segments: u64,
    /// Bytes of those files.
    pub stream_bytes: u64,
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
        stream_segments: 0,
        stream_bytes: 0,
    }
}

/// Saves a backup of the node at `endpoint` (any member; a caught-up follower spares the
/// leader) into the directory `dir`, which must not exist or be empty: its snapshot, then its
/// stream from the snapshot's first offset to its next one, then the manifest. `base` gives
/// the TLS settings and the admin token (a backup is an admin operation); `timeout` bounds
/// each request, not the whole backup.
pub async fn save(
    base: &ClientConfig,
    endpoint: &str,
    dir: &Path,
    timeout: Duration,
) -> Result<SnapshotSummary, NodeError> {
    refuse_non_empty(dir, "backup directory")?;
    let partial = partial_path(dir);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| NodeError::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| NodeError::io(&partial, e))?;
    let bytes = snapshot_of(base, endpoint, timeout).await?;
    let data = snapshot::decode(&bytes).map_err(|e| StorageError::CorruptSnapshot {
        path: format!("snapshot from {endpoint}"),
        reason: e.to_string(),
    })?;
    let log = StreamLog::open(
        &partial.join(STREAM_DIR),
        StreamConfig::default(),
        data.first_offset,
    )?
    .0;
    if data.chunks.is_empty() {
        copy_stream(base, endpoint, &log, data.next_offset, timeout).await?;
    }
    log.checkpoint()?;
    let (first, next) = (log.first_offset(), log.next_offset());
    drop(log);
    snapshot::write_atomic(&partial.join(snapshot::DATA_DIR_FILE), &bytes)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        created_unix_ms: snapshot::unix_ms(),
        source: endpoint.to_owned(),
        first_offset: first,
        next_offset: next,
        files: list_files(&partial)?,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    snapshot::write_atomic(&partial.join(MANIFEST_FILE), &json)?;
    snapshot::sync_dir(&partial.join(STREAM_DIR))?;
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(|e| NodeError::io(dir, e))?;
    }
    std::fs::rename(&partial, dir).map_err(|e| NodeError::io(dir, e))?;
    snapshot::sync_dir(parent_of(dir))?;
    verify(dir)
}

/// Copies the records of the node at `endpoint` onto `log` until `next`.
async fn copy_stream(
    base: &ClientConfig,
    endpoint: &str,
    log: &StreamLog,
    next: u64,
    timeout: Duration,
) -> Result<(), NodeError> {
    let mut reader = RecordReader::connect(base, endpoint, timeout).await?;
    while log.next_offset() < next {
        let from = log.next_offset();
        let chunk = reader.fetch(from, next, MAX_STREAM_CHUNK_BYTES).await?;
        if chunk.records.is_empty() {
            if chunk.first > from {
                // Retention removed the start meanwhile: the backup starts where the node does.
                log.reset(chunk.first)?;
                continue;
            }
            return Err(NodeError::Timeout(format!(
                "{endpoint} has no stream records from {from} (it holds {}..{})",
                chunk.first, chunk.next
            )));
        }
        append_records(log, chunk.records, next)?;
    }
    Ok(())
}

/// Appends the whole records in `records` that continue `log`, up to offset `to`.
fn append_records(log: &StreamLog, mut records: bytes::Bytes, to: u64) -> Result<(), NodeError> {
    while !records.is_empty() {
        let Some(b) = batch::decode(&records)? else {
            return Err(torn("stream records", records.len()));
        };
        records = records.slice(b.record.len()..);
        if b.next_offset() <= log.next_offset() {
            continue;
        }
        if b.base_offset >= to {
            break;
        }
        log.append_record(&b.record)?;
    }
    Ok(())
}

fn torn(what: &'static str, len: usize) -> NodeError {
    NodeError::Decode(eventstream_proto::DecodeError::Invalid {
        field: what,
        reason: format!("{len} bytes that are not a whole batch record"),
    })
}

/// Verifies a backup (a directory, or a single snapshot file) and returns its summary: every
/// file's size and CRC32 against the manifest, the snapshot's own checksums, and every batch
/// record of the stream by checksum and offset, contiguous from the first offset to the
/// snapshot's next one.
pub fn verify(path: &Path) -> Result<SnapshotSummary, NodeError> {
    if path.is_file() {
        let (bytes, data) = snapshot::read_file(path)?;
        return Ok(summary(path, &bytes, &data));
    }
    let manifest = read_manifest(path)?;
    for f in &manifest.files {
        check_file(path, f)?;
    }
    let state = path.join(snapshot::DATA_DIR_FILE);
    let (bytes, data) = snapshot::read_file(&state)?;
    if manifest.next_offset != data.next_offset || manifest.first_offset < data.first_offset {
        return Err(corrupt(
            path,
            format!(
                "the stream holds {}..{}, the snapshot {}..{}",
                manifest.first_offset, manifest.next_offset, data.first_offset, data.next_offset
            ),
        ));
    }
    let (segments, stream_bytes) = check_records(path, &manifest)?;
    let mut sum = summary(path, &bytes, &data);
    sum.first_offset = manifest.first_offset;
    sum.events = manifest.next_offset - manifest.first_offset;
    sum.stream_segments = segments;
    sum.stream_bytes = stream_bytes;
    Ok(sum)
}

/// Reads every segment of the backup's stream and checks its records: checksums, offsets
/// contiguous from the manifest's first offset to its next one. Returns segments and bytes.
fn check_records(dir: &Path, m: &Manifest) -> Result<(u64, u64), NodeError> {
    let mut logs: Vec<&BackupFile> = m
        .files
        .iter()
        .filter(|f| f.name.starts_with(STREAM_DIR) && f.name.ends_with(".log"))
        .collect();
    logs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut next = m.first_offset;
    let mut bytes = 0;
    for f in &logs {
        let path = dir.join(&f.name);
        let mut data =
            bytes::Bytes::from(std::fs::read(&path).map_err(|e| NodeError::io(&path, e))?);
        bytes += data.len() as u64;
        while !data.is_empty() {
            let b = batch::decode(&data)
                .map_err(|e| corrupt(&path, e.to_string()))?
                .ok_or_else(|| corrupt(&path, format!("{} bytes of a torn record", data.len())))?;
            if b.base_offset != next {
                return Err(corrupt(
                    &path,
                    format!(
                        "a batch at offset {} where {next} comes next",
                        b.base_offset
                    ),
                ));
            }
            next = b.next_offset();
            data = data.slice(b.record.len()..);
        }
    }
    if next != m.next_offset {
        return Err(corrupt(
            dir,
            format!(
                "the stream ends at {next}, the manifest says {}",
                m.next_offset
            ),
        ));
    }
    Ok((logs.len() as u64, bytes))
}

fn read_manifest(dir: &Path) -> Result<Manifest, NodeError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(|e| NodeError::io(&path, e))?;
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| corrupt(&path, e.to_string()))?;
    if m.format != MANIFEST_FORMAT {
        return Err(corrupt(
            &path,
            format!(
                "manifest format {} (this build reads {MANIFEST_FORMAT})",
                m.format
            ),
        ));
    }
    if !m.files.iter().any(|f| f.name == snapshot::DATA_DIR_FILE) {
        return Err(corrupt(
            &path,
            format!("lists no {}", snapshot::DATA_DIR_FILE),
        ));
    }
    Ok(m)
}

fn check_file(dir: &Path, f: &BackupFile) -> Result<(), NodeError> {
    if f.name.contains("..") || Path::new(&f.name).is_absolute() {
        return Err(corrupt(
            dir,
            format!("file name {:?} leaves the backup", f.name),
        ));
    }
    let got = describe(dir, &f.name)?;
    if got != *f {
        return Err(corrupt(
            &dir.join(&f.name),
            format!(
                "{} bytes, crc32 {} where the manifest says {} bytes, crc32 {}",
                got.bytes, got.crc32, f.bytes, f.crc32
            ),
        ));
    }
    Ok(())
}

fn describe(dir: &Path, name: &str) -> Result<BackupFile, NodeError> {
    let path = dir.join(name);
    let data = std::fs::read(&path).map_err(|e| NodeError::io(&path, e))?;
    Ok(BackupFile {
        name: name.to_owned(),
        bytes: data.len() as u64,
        crc32: format!("{:08x}", crc32fast::hash(&data)),
    })
}

/// The snapshot and every stream file of a backup being written, described.
fn list_files(dir: &Path) -> Result<Vec<BackupFile>, NodeError> {
    let mut files = vec![describe(dir, snapshot::DATA_DIR_FILE)?];
    let stream = dir.join(STREAM_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&stream)
        .map_err(|e| NodeError::io(&stream, e))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log") || n.ends_with(".index"))
        .collect();
    names.sort();
    for n in names {
        files.push(describe(dir, &format!("{STREAM_DIR}/{n}"))?);
    }
    Ok(files)
}

fn corrupt(path: &Path, reason: impl Into<String>) -> NodeError {
    NodeError::CorruptBackup {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn partial_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dir.with_file_name(name)
}

fn parent_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `dir` must not exist, or be an empty directory.
fn refuse_non_empty(dir: &Path, what: &str) -> Result<(), NodeError> {
    if dir.is_file() {
        return Err(NodeError::config(
            "dir",
            format!("{} is a file; a {what} is a directory", dir.display()),
        ));
    }
    let occupied = dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| NodeError::io(dir, e))?
            .next()
            .is_some();
    if occupied {
        return Err(NodeError::config(
            "dir",
            format!(
                "{} is not empty: a {what} goes into a new or empty directory",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Seeds `data_dir` from the backup at `path` (a directory, or a single snapshot file) with
/// the membership of `initial_cluster` (`ID=HOST:PORT[@HTTP]` each, the same list as the new
/// nodes' `peers`). The backup is verified first.
pub fn restore(
    path: &Path,
    data_dir: &Path,
    initial_cluster: &[String],
) -> Result<SnapshotSummary, NodeError> {
    let members = parse_initial_cluster(initial_cluster)?;
    let verified = verify(path)?;
    std::fs::create_dir_all(data_dir).map_err(|e| NodeError::io(data_dir, e))?;
    refuse_node_data(data_dir)?;
    let snapshot_file = if path.is_file() {
        path.to_path_buf()
    } else {
        copy_stream_files(&path.join(STREAM_DIR), data_dir)?;
        path.join(snapshot::DATA_DIR_FILE)
    };
    let (_, mut data) = snapshot::read_file(&snapshot_file)?;
    data.voters = members.iter().map(|m| m.id).collect();
    data.voters.sort_unstable();
    data.learners.clear();
    data.members = members
        .iter()
        .map(|m| SnapshotMember {
            id: m.id,
            addr: m.addr.clone(),
            http_addr: m.http_addr.clone(),
            kafka_addr: m.kafka_addr.clone(),
            learner: false,
        })
        .collect();
    let bytes = snapshot::encode(&data);
    let target = data_dir.join(snapshot::DATA_DIR_FILE);
    snapshot::write_atomic(&target, &bytes)?;
    let mut sum = summary(&target, &bytes, &data);
    sum.first_offset = verified.first_offset;
    sum.events = verified.events;
    sum.stream_segments = verified.stream_segments;
    sum.stream_bytes = verified.stream_bytes;
    Ok(sum)
}

fn parse_initial_cluster(initial_cluster: &[String]) -> Result<Vec<Member>, NodeError> {
    let members = initial_cluster
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(eventstream_proto::parse_member)
        .collect::<Result<Vec<Member>, _>>()
        .map_err(|e| NodeError::config("initial_cluster", e.to_string()))?;
    if members.is_empty() {
        return Err(NodeError::config("initial_cluster", "no members given"));
    }
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(NodeError::config("initial_cluster", "duplicate member id"));
    }
    Ok(members)
}

/// A data directory that holds a log, a snapshot or a stream is refused.
fn refuse_node_data(data_dir: &Path) -> Result<(), NodeError> {
    let existing = std::fs::read_dir(data_dir)
        .map_err(|e| NodeError::io(data_dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".wal") || n == snapshot::DATA_DIR_FILE || n == "stream");
    if let Some(name) = existing {
        return Err(NodeError::config(
            "data_dir",
            format!(
                "{} already holds a node's data ({name}): restore into an empty directory",
                data_dir.display()
            ),
        ));
    }
    Ok(())
}

/// Copies the backup's segment files to the node's stream directory (through a temporary
/// directory renamed into place).
fn copy_stream_files(from: &Path, data_dir: &Path) -> Result<(), NodeError> {
    let target = eventstream_storage::stream::partition_dir(data_dir, 0);
    let tmp = partial_path(&target);
    std::fs::create_dir_all(&tmp).map_err(|e| NodeError::io(&tmp, e))?;
    for ent in std::fs::read_dir(from).map_err(|e| NodeError::io(from, e))? {
        let ent = ent.map_err(|e| NodeError::io(from, e))?;
        let to = tmp.join(ent.file_name());
        std::fs::copy(ent.path(), &to).map_err(|e| NodeError::io(&to, e))?;
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(|e| NodeError::io(&to, e))?;
    }
    snapshot::sync_dir(&tmp)?;
    std::fs::rename(&tmp, &target).map_err(|e| NodeError::io(&target, e))?;
    snapshot::sync_dir(parent_of(&target))?;
    Ok(())
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
        let members = vec!["4=127.0.0.1:1,5=127.0.0.1:2@127.0.0.1:3".to_owned()];
        let sum = restore(&file, &dir.path().join("d"), &members).unwrap();
        assert_eq!(
            (sum.index, sum.term, sum.voters.clone()),
            (9, 2, vec![4, 5])
        );
        assert_eq!(sum.members[1].http_addr.as_deref(), Some("127.0.0.1:3"));
        assert_eq!(
            verify(&dir.path().join("d").join(snapshot::DATA_DIR_FILE)).unwrap(),
            sum
        );
        match restore(&file, &dir.path().join("d"), &members).unwrap_err() {
            NodeError::InvalidConfig { field, .. } => assert_eq!(field, "data_dir"),
            other => panic!("{other}"),
        }
        match restore(&file, &dir.path().join("e"), &["x".to_owned()]).unwrap_err() {
            NodeError::InvalidConfig { field, .. } => assert_eq!(field, "initial_cluster"),
            other => panic!("{other}"),
        }
    }
}
