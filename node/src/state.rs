//! The replicated state machine: committed entries → dedup → offsets → committed stream →
//! core's [`Applier`] (dispatch to this node's handlers) → publish acknowledgements.
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

use crate::acks::AckRegistry;
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
    events: Vec<Event>,
    positions: Vec<u32>,
    resolved: Vec<(u64, u64)>,
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
            events: Vec::new(),
            positions: Vec::new(),
            resolved: Vec::new(),
        }
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
    pub fn replay<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) {
        for e in entries {
            self.apply_inner(e, false);
        }
    }

    /// Fills the state-machine part of a snapshot at [`applied`](Self::applied): stream
    /// metadata and retained events, the dedup window and the offset index (in order).
    pub fn export_into(&self, s: &mut SnapshotData) {
        let (first, next, chunks) = self.stream.export();
        s.index = self.applied;
        s.first_offset = first;
        s.next_offset = next;
        s.chunks = chunks;
        s.dedup_window = self.dedup.window as u64;
        s.dedup_max_age_ns = self.dedup.max_age.map_or(0, |d| d.as_nanos() as u64);
        s.dedup = self.decisions.entries().collect();
        s.offsets = self.decisions.tags().collect();
    }

    /// Replaces the whole state with a snapshot's (a leader's snapshot installed, or the
    /// node's own at start-up): stream, dedup window, offset index, applied index. The window
    /// is rebuilt with this node's dedup configuration by replaying the snapshot's ids in
    /// order, so with the same configuration every decision after it is identical to the
    /// snapshotting node's.
    pub fn restore(&mut self, s: &SnapshotData) {
        self.decisions = DedupWindow::restore_tagged(
            self.dedup,
            s.dedup.iter().copied(),
            s.offsets.iter().copied(),
            OFFSET_UNKNOWN,
        );
        self.stream
            .reset(s.first_offset, s.next_offset, s.chunks.clone());
        self.applied = s.index;
    }

    /// Applies one committed entry: dedup, offsets, stream, handlers, acknowledgements.
    pub fn apply(&mut self, entry: &Entry) -> EntryOutcome {
        self.apply_inner(entry, true)
    }

    fn apply_inner(&mut self, entry: &Entry, dispatch: bool) -> EntryOutcome {
        debug_assert!(
            entry.index == self.applied + 1 || self.applied == 0,
            "apply out of order"
        );
        self.applied = entry.index;
        let mut out = EntryOutcome::default();
        if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
            return out;
        }
        out.proposal = true;
        self.events.clear();
        self.positions.clear();
        if let Err(e) =
            codec::decode_blocks_with_positions(&entry.data, &mut self.events, &mut self.positions)
        {
            // Only this crate's encoder writes entries, so this is a bug or disk corruption
            // that slipped past the checksum. Every replica skips the same entry: they stay
            // identical, and the error is loud.
            tracing::error!(index = entry.index, error = %e, "undecodable log entry skipped");
            return out;
        }
        let mut fresh_pos = Vec::with_capacity(self.events.len());
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
            let (id, ts) = (self.events[i].id.0, self.events[i].ingest_ns);
            match self.decisions.check_tagged(id, ts, next) {
                Tagged::Fresh => {
                    self.resolved.push((id, next));
                    next += 1;
                    fresh_pos.push(self.positions[i]);
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
        out.fresh = fresh_pos.len();
        self.stream.append(entry.data.clone(), fresh_pos);
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
        out
    }

    /// Publishes the applier's statistics (call when idle).
    pub fn flush(&mut self) {
        self.applier.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstream_core::{Dispatcher, Priority, StatsHandle};
    use eventstream_storage::snapshot;
    use proptest::prelude::*;
    use std::time::Duration;

    fn machine(window: usize) -> StateMachine {
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
        StateMachine::new(dedup, applier, CommittedStream::new(), AckRegistry::new())
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

    fn stream_of(sm: &StateMachine) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        sm.stream().read(0, usize::MAX, |_| true, &mut out);
        out.into_iter().map(|(o, e)| (o, e.id.0)).collect()
    }

    proptest! {
        /// Model test of export/import: a machine restored from another's snapshot (through the
        /// encoded format) makes exactly the decisions the original makes for the rest of the
        /// log — dedup, offsets, and the offsets a retry is acknowledged with.
        #[test]
        fn restored_machine_decides_like_the_original(
            window in 1usize..12,
            batches in proptest::collection::vec(proptest::collection::vec(0u64..30, 1..6), 1..25),
            split in 0usize..25,
        ) {
            let split = split.min(batches.len());
            let mut original = machine(window);
            let mut before = machine(window);
            for (i, ids) in batches[..split].iter().enumerate() {
                let e = entry(i as u64 + 1, ids);
                original.apply(&e);
                before.apply(&e);
            }
            let mut data = snapshot::SnapshotData::default();
            before.export_into(&mut data);
            let decoded = snapshot::decode(&snapshot::encode(&data)).unwrap();
            prop_assert_eq!(&decoded, &data);
            let mut restored = machine(window);
            restored.restore(&decoded);
            prop_assert_eq!(restored.applied(), split as u64);
            prop_assert_eq!(stream_of(&restored), stream_of(&before));
            for (i, ids) in batches[split..].iter().enumerate() {
                let e = entry((split + i) as u64 + 1, ids);
                prop_assert_eq!(original.apply(&e), restored.apply(&e));
            }
            prop_assert_eq!(stream_of(&restored), stream_of(&original));
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
