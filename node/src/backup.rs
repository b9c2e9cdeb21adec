//! Backups: save a running node's snapshot to a file, verify a file, and seed the data
//! directory of a member of a new cluster from one (`eventstream snapshot save | status |
//! restore`). A backup is the snapshot format of `eventstream-storage`, checksummed as a
//! whole and per section.
//!
//! Invariant: restore only ever writes into a data directory that holds no log and no
//! snapshot, and writes its snapshot atomically (a crash leaves nothing or all of it).

use crate::error::NodeError;
use eventstream_client::{snapshot_of, ClientConfig};
use eventstream_proto::Member;
use eventstream_storage::snapshot::{self, SnapshotData, SnapshotMember};
use eventstream_storage::StorageError;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

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

/// Downloads a consistent snapshot of the node at `endpoint` (any member; a caught-up
/// follower spares the leader), verifies it, and writes it to `file` atomically. `base` gives
/// the TLS settings and the admin token (a backup is an admin operation).
pub async fn save(
    base: &ClientConfig,
    endpoint: &str,
    file: &Path,
    timeout: Duration,
) -> Result<SnapshotSummary, NodeError> {
    let bytes = snapshot_of(base, endpoint, timeout).await?;
    let data = snapshot::decode(&bytes).map_err(|e| StorageError::CorruptSnapshot {
        path: format!("snapshot from {endpoint}"),
        reason: e.to_string(),
    })?;
    snapshot::write_atomic(file, &bytes)?;
    Ok(summary(file, &bytes, &data))
}

/// Verifies a snapshot file and returns its summary.
pub fn verify(file: &Path) -> Result<SnapshotSummary, NodeError> {
    let (bytes, data) = snapshot::read_file(file)?;
    Ok(summary(file, &bytes, &data))
}

/// Seeds `data_dir` from the snapshot in `file` with the membership of `initial_cluster`
/// (`ID=HOST:PORT[@HTTP]` each, the same list as the new nodes' `peers`).
pub fn restore(
    file: &Path,
    data_dir: &Path,
    initial_cluster: &[String],
) -> Result<SnapshotSummary, NodeError> {
    let (_, mut data) = snapshot::read_file(file)?;
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
    std::fs::create_dir_all(data_dir).map_err(|e| NodeError::io(data_dir, e))?;
    let existing = std::fs::read_dir(data_dir)
        .map_err(|e| NodeError::io(data_dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".wal") || n == snapshot::DATA_DIR_FILE);
    if let Some(name) = existing {
        return Err(NodeError::config(
            "data_dir",
            format!(
                "{} already holds a node's data ({name}): restore into an empty directory",
                data_dir.display()
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
    let target = data_dir.join(snapshot::DATA_DIR_FILE);
    snapshot::write_atomic(&target, &bytes)?;
    Ok(summary(&target, &bytes, &data))
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
