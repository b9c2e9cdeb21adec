//! Consumer groups' committed offsets: replicated state, like the dedup window.
//!
//! A commit is an event of the reserved topic [`GROUP_OFFSETS_TOPIC`] (key: the group id;
//! payload: JSON `{"group": G, "offsets": [{"topic", "partition", "offset", "metadata"}]}`),
//! published through the tier rings like any other event, so it is committed on a quorum and
//! fsynced before the committer is answered. Every replica's state machine applies it to its
//! [`GroupOffsets`] table when the event gets its offset, so any member that becomes leader
//! (the group coordinator) knows every acknowledged commit.
//!
//! Invariants:
//! * The table is a function of the log: replicas that applied the same entries hold the same
//!   table, and a restart rebuilds it (snapshot, then the log replayed after it).
//! * It is carried in the snapshot (section 6), not read back from the stream: retention may
//!   delete the commit events' segments without losing a commit.
//! * A commit event that does not decode changes nothing, on every replica alike, and is
//!   logged. Clients cannot publish to the reserved topic (the node refuses it), so only
//!   [`crate::Producer::commit_offsets`] writes such events.

use eventstream_core::{Event, Priority};
use eventstream_storage::SnapshotGroupOffset;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::RwLock;

/// The reserved topic consumer-group commits are events of (Kafka's name for its own).
pub const GROUP_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Longest group id accepted, bytes.
pub const MAX_GROUP_ID_BYTES: usize = 255;

/// Longest metadata string a commit may carry, bytes (Kafka's `offset.metadata.max.bytes`).
pub const MAX_COMMIT_METADATA_BYTES: usize = 4096;

/// One partition's offset in a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    /// The topic.
    pub topic: String,
    /// The partition (0: every topic has one partition).
    pub partition: i32,
    /// The next offset the group reads.
    pub offset: i64,
    /// The client's metadata string.
    #[serde(default)]
    pub metadata: String,
}

/// A committed offset as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommittedOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset the group reads.
    pub offset: i64,
    /// The client's metadata string.
    pub metadata: String,
    /// Stream time of the commit, ms since the epoch.
    pub commit_unix_ms: u64,
}

/// A commit event's payload.
#[derive(Debug, Serialize, Deserialize)]
struct CommitRecord {
    group: String,
    offsets: Vec<OffsetCommit>,
}

/// The event that commits `offsets` for `group`.
pub(crate) fn commit_event(group: &str, offsets: Vec<OffsetCommit>) -> Event {
    let record = CommitRecord {
        group: group.to_owned(),
        offsets,
    };
    // A struct of strings and integers always serializes.
    let payload = serde_json::to_vec(&record).unwrap_or_default();
    Event::new(GROUP_OFFSETS_TOPIC, Priority::High, payload).with_key(group.as_bytes().to_vec())
}

#[derive(Debug, Clone)]
struct Committed {
    offset: i64,
    metadata: String,
    commit_unix_ms: u64,
}

/// Every group's committed offsets, by group and then (topic, partition).
type Table = BTreeMap<String, BTreeMap<(String, i32), Committed>>;

/// The committed-offsets table (see the module's invariants). Written only by the state
/// machine; read by any front end.
#[derive(Debug, Default)]
pub struct GroupOffsets {
    table: RwLock<Table>,
}

impl GroupOffsets {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one commit event's payload at stream time `time_ms`.
    pub(crate) fn apply(&self, payload: &[u8], time_ms: u64) {
        let record: CommitRecord = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "undecodable consumer-group commit skipped");
                return;
            }
        };
        let mut table = self.write();
        let group = table.entry(record.group).or_default();
        for o in record.offsets {
            group.insert(
                (o.topic, o.partition),
                Committed {
                    offset: o.offset,
                    metadata: o.metadata,
                    commit_unix_ms: time_ms,
                },
            );
        }
    }

    /// The groups that committed offsets, in name order.
    pub fn groups(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// `group`'s committed offsets, by topic and partition (empty for an unknown group).
    pub fn group(&self, group: &str) -> Vec<CommittedOffset> {
        self.read().get(group).map_or_else(Vec::new, |g| {
            g.iter()
                .map(|((topic, partition), c)| CommittedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: c.offset,
                    metadata: c.metadata.clone(),
                    commit_unix_ms: c.commit_unix_ms,
                })
                .collect()
        })
    }

    /// The table as a snapshot records it (sorted by group, topic, partition).
    pub(crate) fn export(&self) -> Vec<SnapshotGroupOffset> {
        let table = self.read();
        let mut out = Vec::new();
        for (group, offsets) in table.iter() {
            for ((topic, partition), c) in offsets {
                out.push(SnapshotGroupOffset {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    offset: c.offset,
                    commit_unix_ms: c.commit_unix_ms,
                    metadata: c.metadata.clone(),
                });
            }
        }
        out
    }

    /// Replaces the table with a snapshot's.
    pub(crate) fn restore(&self, offsets: &[SnapshotGroupOffset]) {
        let mut table = Table::new();
        for o in offsets {
            table.entry(o.group.clone()).or_default().insert(
                (o.topic.clone(), o.partition),
                Committed {
                    offset: o.offset,
                    metadata: o.metadata.clone(),
                    commit_unix_ms: o.commit_unix_ms,
                },
            );
        }
        *self.write() = table;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(topic: &str, offset: i64) -> OffsetCommit {
        OffsetCommit {
            topic: topic.into(),
            partition: 0,
            offset,
            metadata: String::new(),
        }
    }

    #[test]
    fn commits_apply_in_order_and_survive_export_and_restore() {
        let t = GroupOffsets::default();
        let e = commit_event("billing", vec![commit("orders", 5), commit("refunds", 2)]);
        assert_eq!(e.topic, GROUP_OFFSETS_TOPIC);
        assert_eq!(e.key().map(|k| &k[..]), Some(&b"billing"[..]));
        t.apply(&e.payload, 100);
        t.apply(
            &commit_event("billing", vec![commit("orders", 9)]).payload,
            200,
        );
        t.apply(
            &commit_event("audit", vec![commit("orders", 1)]).payload,
            300,
        );
        assert_eq!(t.groups(), ["audit", "billing"]);
        let billing = t.group("billing");
        assert_eq!(
            billing
                .iter()
                .map(|c| (c.topic.as_str(), c.offset, c.commit_unix_ms))
                .collect::<Vec<_>>(),
            [("orders", 9, 200), ("refunds", 2, 100)]
        );
        assert!(t.group("nobody").is_empty());
        let exported = t.export();
        let restored = GroupOffsets::default();
        restored.restore(&exported);
        assert_eq!(restored.export(), exported);
        assert_eq!(restored.group("billing"), billing);
    }

    #[test]
    fn an_undecodable_commit_changes_nothing() {
        let t = GroupOffsets::default();
        t.apply(&commit_event("g", vec![commit("a", 3)]).payload, 1);
        let before = t.export();
        for bad in [&b""[..], b"{", b"{\"group\":1}", b"[]"] {
            t.apply(bad, 2);
        }
        assert_eq!(t.export(), before);
    }
}
