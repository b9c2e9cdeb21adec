//! The replicated state machine: committed entries → stream time → dedup → offsets →
//! committed stream (the on-disk stream log) → core's [`Applier`] (dispatch to this node's
//! handlers) → publish acknowledgements.
//!
//! # Invariants
//! * Entries are applied strictly in log order, each exactly once per process.
//! * Decisions depend only on the log: the offset of an event, and whether it is a duplicate,
//!   are the same on every replica and after a restart (the window is deterministic and is
//!   rebuilt by replaying the log; see [`StateMachine::replay`]).
//! * Dedup decisions are made here, with core's deterministic [`DedupWindow`], because offsets
//!   need per-event decisions ([`Applier::apply`] reports counts only). The applier then gets
//!   only the fresh events; a node builds it with dedup disabled so no event pays for two
//!   windows (with the same window configuration it would also find nothing to drop).
//! * `applied` is only ever the index of the last entry whose effects are in the stream; after
//!   a restart it is the persisted commit index the log was replayed to.
//! * Consumer-group commits (events of [`GROUP_OFFSETS_TOPIC`]) change the group table when
//!   they get their offset, so a deduplicated retry of a commit changes nothing twice; so do
//!   idempotent producers' sequence events ([`PRODUCER_STATE_TOPIC`]) to the producer table.
//! * Stream time never goes back: an entry's time is the leader's wall clock when it proposed
//!   it, raised to the previous entry's time if that was later (a new leader whose clock is
//!   behind); entries without a time (older logs) get the previous time. Every replica
//!   computes the same times, and age-based dedup and retention use them.

use crate::acks::AckRegistry;
use crate::error::NodeError;
use crate::groups::{GroupOffsets, GROUP_OFFSETS_TOPIC};
use crate::producers::{ProducerSequences, PRODUCER_STATE_TOPIC};
use crate::stream::CommittedStream;
use eventstream_core::{Applier, DedupConfig, DedupWindow, Event, Tagged};
use eventstream_proto::codec;
use eventstream_proto::frame::OFFSET_UNKNOWN;
use eventstream_storage::snapshot::SnapshotData;
use raft::eraftpb::{Entry, EntryType};
use std::hash::Hasher;
use std::sync::Arc;

/// A hasher for event ids (already well mixed, or sequential): one multiply.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// How many events ahead the apply loop prefetches the dedup window's lines.
const PREFETCH_DISTANCE: usize = 8;

/// What applying one entry did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EntryOutcome {
    /// Events that got an offset.
    pub fresh: usize,
    /// Events dropped as duplicates.
    pub duplicates: usize,
    /// True when the entry carried data (a proposal, not a leader's empty entry).
    pub proposal: bool,
}

/// Applies committed entries.
#[derive(Debug)]
pub struct StateMachine {
    applier: Applier,
    dedup: DedupConfig,
    /// Dedup decisions, each fresh id tagged with its stream offset: a deduplicated retry is
    /// acknowledged with the offset its event really has.
    decisions: DedupWindow,
    stream: Arc<CommittedStream>,
    acks: Arc<AckRegistry>,
    applied: u64,
    /// The newest stream time applied (ms since the epoch).
    last_time_ms: u64,
    events: Vec<Event>,
    positions: Vec<u32>,
    resolved: Vec<(u64, u64)>,
    /// The fresh events' encodings of the entry being applied (one stream batch).
    batch: Vec<u8>,
    /// Consumer groups' committed offsets (commit events applied in stream order).
    groups: Arc<GroupOffsets>,
    /// Idempotent producers' last sequences (state events applied in stream order).
    producers: Arc<ProducerSequences>,
}

impl StateMachine {
    /// A state machine feeding `applier` (from `Engine::new_applier`) and `stream`.
    pub fn new(
        dedup: DedupConfig,
        applier: Applier,
        stream: Arc<CommittedStream>,
        acks: Arc<AckRegistry>,
    ) -> Self {
        StateMachine {
            applier,
            dedup,
            decisions: DedupWindow::new_tagged(dedup),
            stream,
            acks,
            applied: 0,
            last_time_ms: 0,
            events: Vec::new(),
            positions: Vec::new(),
            resolved: Vec::new(),
            batch: Vec::new(),
            groups: Arc::new(GroupOffsets::default()),
            producers: Arc::new(ProducerSequences::default()),
        }
    }

    /// Idempotent producers' last sequences, as the applied log left them.
    pub fn producer_sequences(&self) -> &Arc<ProducerSequences> {
        &self.producers
    }

    /// A fresh event of a reserved topic changes its table (a byte compare for the others).
    fn apply_internal(&self, i: usize) {
        let e = &self.events[i];
        if !e.topic.starts_with("__") {
            return;
        }
        if e.topic == GROUP_OFFSETS_TOPIC {
            self.groups.apply(&e.payload, self.last_time_ms);
        } else if e.topic == PRODUCER_STATE_TOPIC {
            self.producers.apply(&e.payload, self.last_time_ms);
        }
    }

    /// Consumer groups' committed offsets, as the applied log left them.
    pub fn group_offsets(&self) -> &Arc<GroupOffsets> {
        &self.groups
    }

    /// Index of the last applied entry.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The stream this state machine appends to.
    pub fn stream(&self) -> &Arc<CommittedStream> {
        &self.stream
    }

    /// Rebuilds state from already-applied entries after a restart: offsets, dedup window and
    /// stream, without calling handlers again (they saw these events before the restart, or
    /// belong to a process that no longer exists).
    pub fn replay<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<(), NodeError> {
        for e in entries {
            self.apply_inner(e, false)?;
        }
        Ok(())
    }

    /// A start without a snapshot: the stream holds nothing the log's replay will not
    /// append again.
    pub fn start_empty(&mut self) -> Result<(), NodeError> {
        self.stream.align(0, 0)
    }

    /// Fills the state-machine part of a snapshot at [`applied`](Self::applied): stream
    /// metadata (offsets, newest time, segment manifest), the dedup window and the offset
    /// index (in order). The stream's events are synced to disk first: once the snapshot is
    /// durable the WAL may drop the entries they came from.
    pub fn export_into(&self, s: &mut SnapshotData) -> Result<(), NodeError> {
        self.stream.sync()?;
        s.index = self.applied;
        s.first_offset = self.stream.contiguous_first();
        s.next_offset = self.stream.next_offset();
        s.last_timestamp_ms = self.last_time_ms;
        s.segments = self.stream.log().segments();
        s.dedup_window = self.dedup.window as u64;
        s.dedup_max_age_ns = self.dedup.max_age.map_or(0, |d| d.as_nanos() as u64);
        s.dedup = self.decisions.entries().collect();
        s.offsets = self.decisions.tags().collect();
        s.group_offsets = self.groups.export();
        s.producers = self.producers.export();
        Ok(())
    }

    /// Replaces the whole state with a snapshot's (a leader's snapshot installed, or the
    /// node's own at start-up): dedup window, offset index, stream time, applied index, and the
    /// stream aligned to end at the snapshot's next offset ([`CommittedStream::align`]: a
    /// far-behind node then lacks the offsets between what it held and the snapshot, and
    /// copies them from another member). The window is rebuilt with this node's dedup
    /// configuration by replaying the snapshot's ids in order, so with the same configuration
    /// every decision after it is identical to the snapshotting node's.
    pub fn restore(&mut self, s: &SnapshotData) -> Result<(), NodeError> {
        self.decisions = DedupWindow::restore_tagged(
            self.dedup,
            s.dedup.iter().copied(),
            s.offsets.iter().copied(),
            OFFSET_UNKNOWN,
        );
        self.applied = s.index;
        self.last_time_ms = s.last_timestamp_ms;
        self.groups.restore(&s.group_offsets);
        self.producers.restore(&s.producers);
        if s.chunks.is_empty() {
            self.stream.align(s.first_offset, s.next_offset)
        } else {
            self.move_chunks_into_stream(s)
        }
    }

    /// A format-1 snapshot carried the retained events: they become the stream log.
    fn move_chunks_into_stream(&mut self, s: &SnapshotData) -> Result<(), NodeError> {
        self.stream.reset(s.first_offset)?;
        for c in &s.chunks {
            let mut events = Vec::new();
            codec::decode_blocks(&c.data, &mut events)?;
            let mut bytes = Vec::new();
            for p in &c.positions {
                let e = codec::decode_event_at(&c.data, *p as usize)?;
                let at = *p as usize;
                bytes.extend_from_slice(&c.data[at..at + codec::encoded_len(&e)]);
            }
            self.stream
                .append(c.positions.len() as u32, c.appended_unix_ms, &bytes)?;
        }
        Ok(())
    }

    /// Applies one committed entry: stream time, dedup, offsets, stream, handlers,
    /// acknowledgements. An error is the stream log failing to write (the node stops).
    pub fn apply(&mut self, entry: &Entry) -> Result<EntryOutcome, NodeError> {
        self.apply_inner(entry, true)
    }

    fn apply_inner(&mut self, entry: &Entry, dispatch: bool) -> Result<EntryOutcome, NodeError> {
        debug_assert!(
            entry.index == self.applied + 1 || self.applied == 0,
            "apply out of order"
        );
        self.applied = entry.index;
        let mut out = EntryOutcome::default();
        if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
            return Ok(out);
        }
        out.proposal = true;
        self.events.clear();
        self.positions.clear();
        let time = match codec::decode_entry_with_positions(
            &entry.data,
            &mut self.events,
            &mut self.positions,
        ) {
            Ok(t) => t,
            Err(e) => {
                // Only this crate's encoder writes entries, so this is a bug or disk corruption
                // that slipped past the checksum. Every replica skips the same entry: they stay
                // identical, and the error is loud.
                tracing::error!(index = entry.index, error = %e, "undecodable log entry skipped");
                return Ok(out);
            }
        };
        self.last_time_ms = time.unwrap_or(0).max(self.last_time_ms);
        let time_ns = self.last_time_ms.saturating_mul(1_000_000);
        self.batch.clear();
        let mut next = self.stream.next_offset();
        self.resolved.clear();
        // Fresh events are compacted to the front of `events` in place (a swap only after a
        // duplicate), the duplicates truncated: moving every event out into a second vector
        // showed in profiles of the leader's driver (80-byte copies through the stack).
        let mut kept = 0;
        for i in 0..self.events.len() {
            // The window's tables are several MB (the default window is 2^18 ids): start the
            // cache misses of a later event now so they overlap (with in-place compaction of
            // the fresh events, commit p50 at 540 k/s fell from 3.6-4.3 to 2.8-3.6 ms:
            // docs/benchmarks.md, replication).
            if let Some(later) = self.events.get(i + PREFETCH_DISTANCE) {
                self.decisions.prefetch_ahead(later.id.0, PREFETCH_DISTANCE);
            }
            let id = self.events[i].id.0;
            match self.decisions.check_tagged(id, time_ns, next) {
                Tagged::Fresh => {
                    self.resolved.push((id, next));
                    next += 1;
                    let at = self.positions[i] as usize;
                    let len = codec::encoded_len(&self.events[i]);
                    self.batch.extend_from_slice(&entry.data[at..at + len]);
                    self.apply_internal(i);
                    if kept != i {
                        self.events.swap(kept, i);
                    }
                    kept += 1;
                }
                Tagged::Duplicate(off) => {
                    self.resolved.push((id, off));
                    out.duplicates += 1;
                }
            }
        }
        self.events.truncate(kept);
        out.fresh = kept;
        self.stream
            .append(kept as u32, self.last_time_ms, &self.batch)?;
        if dispatch {
            self.applier
                .count_dedup(out.duplicates as u64, out.fresh as u64);
            // Latency of this node's own stage, from the moment the entry is applied here: the
            // events' `ingest_ns` comes from the publishing node's clock (another process).
            self.applier
                .apply_received_at(&mut self.events, eventstream_core::clock::now_ns());
            self.acks.resolve(&self.resolved);
        }
        self.events.clear();
        Ok(out)
    }

    /// Publishes the applier's statistics (call when idle).
    pub fn flush(&mut self) {
        self.applier.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamSettings;
    use eventstream_core::{Dispatcher, Priority, StatsHandle};
    use eventstream_storage::snapshot;
    use proptest::prelude::*;
    use std::time::Duration;

    /// A machine whose stream lives in `dir`.
    fn machine_in(window: usize, dir: &std::path::Path) -> StateMachine {
        let dedup = DedupConfig {
            window,
            max_age: None,
        };
        let applier = Applier::new(
            dedup,
            Arc::new(Dispatcher::new()),
            StatsHandle::detached().register("test"),
            Duration::from_millis(10),
        );
        let stream = CommittedStream::open(dir, StreamSettings::default()).unwrap();
        StateMachine::new(dedup, applier, stream, AckRegistry::new())
    }

    fn machine(window: usize) -> (StateMachine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (machine_in(window, dir.path()), dir)
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for ent in std::fs::read_dir(from).unwrap().flatten() {
            let target = to.join(ent.file_name());
            if ent.file_type().unwrap().is_dir() {
                copy_dir(&ent.path(), &target);
            } else {
                std::fs::copy(ent.path(), target).unwrap();
            }
        }
    }

    fn entry(index: u64, ids: &[u64]) -> Entry {
        let evs: Vec<Event> = ids
            .iter()
            .map(|&id| Event::new("t", Priority::Low, id.to_le_bytes().to_vec()).with_id(id))
            .collect();
        Entry {
            index,
            term: 1,
            data: codec::encode_block(&evs),
            ..Entry::default()
        }
    }

    /// The stream's (offset, id) pairs from `from` on.
    fn stream_of(sm: &StateMachine, from: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        sm.stream().read(from, usize::MAX, |_| true, &mut out);
        out.into_iter().map(|(o, e)| (o, e.id.0)).collect()
    }

    #[test]
    fn group_commits_apply_once_and_survive_snapshot_and_replay() {
        use crate::groups::{commit_event, OffsetCommit};
        let commit = |offset| {
            commit_event(
                "billing",
                vec![OffsetCommit {
                    topic: "orders".into(),
                    partition: 0,
                    offset,
                    metadata: "m".into(),
                }],
            )
        };
        let first = commit(5).with_id(1_000);
        let entries = [
            Entry {
                index: 1,
                term: 1,
                data: codec::encode_block(std::slice::from_ref(&first)),
                ..Entry::default()
            },
            // A retry of the first commit after a later one: a duplicate, so it must not
            // move the group back to offset 5.
            Entry {
                index: 2,
                term: 1,
                data: codec::encode_block(&[commit(9).with_id(1_001), first]),
                ..Entry::default()
            },
        ];
        let (mut sm, _d) = machine(64);
        for e in &entries {
            sm.apply(e).unwrap();
        }
        let offsets = |sm: &StateMachine| -> Vec<(String, i64)> {
            sm.group_offsets()
                .group("billing")
                .into_iter()
                .map(|c| (c.topic, c.offset))
                .collect()
        };
        assert_eq!(offsets(&sm), [("orders".to_string(), 9)]);
        let mut data = snapshot::SnapshotData::default();
        sm.export_into(&mut data).unwrap();
        let decoded = snapshot::decode(&snapshot::encode(&data)).unwrap();
        let (mut restored, _r) = machine(64);
        restored.restore(&decoded).unwrap();
        assert_eq!(offsets(&restored), offsets(&sm));
        let (mut replayed, _p) = machine(64);
        replayed.replay(&entries).unwrap();
        assert_eq!(offsets(&replayed), offsets(&sm));
    }

    proptest! {
        /// Model test of export/import: a machine restored from another's snapshot (through the
        /// encoded format) makes exactly the decisions the original makes for the rest of the
        /// log — dedup, offsets, and the offsets a retry is acknowledged with. Restored over
        /// a copy of the snapshotting node's files (a restart, with more entries applied after
        /// the snapshot) its stream is the original's; restored on an empty directory (a new
        /// member) it lacks exactly the offsets below the snapshot.
        #[test]
        fn restored_machine_decides_like_the_original(
            window in 1usize..12,
            batches in proptest::collection::vec(proptest::collection::vec(0u64..30, 1..6), 1..25),
            split in 0usize..25,
            applied_past in 0usize..4,
            on_own_files in any::<bool>(),
        ) {
            let split = split.min(batches.len());
            let (mut original, _o) = machine(window);
            let (mut before, before_dir) = machine(window);
            for (i, ids) in batches[..split].iter().enumerate() {
                let e = entry(i as u64 + 1, ids);
                original.apply(&e).unwrap();
                before.apply(&e).unwrap();
            }
            let mut data = snapshot::SnapshotData::default();
            before.export_into(&mut data).unwrap();
            let decoded = snapshot::decode(&snapshot::encode(&data)).unwrap();
            prop_assert_eq!(&decoded, &data);
            // The snapshotting node went on applying before it stopped.
            for (i, ids) in batches[split..].iter().take(applied_past).enumerate() {
                before.apply(&entry((split + i) as u64 + 1, ids)).unwrap();
            }
            let restored_dir = tempfile::tempdir().unwrap();
            if on_own_files {
                copy_dir(before_dir.path(), restored_dir.path());
            }
            let mut restored = machine_in(window, restored_dir.path());
            restored.restore(&decoded).unwrap();
            prop_assert_eq!(restored.applied(), split as u64);
            prop_assert_eq!(restored.stream().next_offset(), data.next_offset);
            let lacking = (!on_own_files && data.next_offset > 0).then_some(0..data.next_offset);
            prop_assert_eq!(restored.stream().missing(), lacking.clone());
            for (i, ids) in batches[split..].iter().enumerate() {
                let e = entry((split + i) as u64 + 1, ids);
                prop_assert_eq!(original.apply(&e).unwrap(), restored.apply(&e).unwrap());
            }
            let below = lacking.map_or(0, |r| r.end);
            prop_assert_eq!(stream_of(&restored, below), stream_of(&original, below));
            prop_assert_eq!(
                restored.decisions.tags().collect::<Vec<_>>(),
                original.decisions.tags().collect::<Vec<_>>()
            );
            prop_assert_eq!(
                restored.decisions.entries().collect::<Vec<_>>(),
                original.decisions.entries().collect::<Vec<_>>()
            );
        }
    }
}
