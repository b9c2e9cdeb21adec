//! The durable raft log: a segmented write-ahead log with a CRC32 per record.
//!
//! # Layout
//! `DIR/NNNNNNNNNNNNNNNN.wal` segments (hex sequence numbers), read in order. A record is
//! `u32 body_len | u32 crc32(body) | body`, little-endian, where the body is
//! * `1 | u32 n | n × (u64 index | u64 term | u8 type | u32 len | data | u32 len | context)` —
//!   entries; entries at index `i` replace any earlier entries at `>= i` (raft's conflict
//!   truncation), so replay keeps the last word;
//! * `2 | u64 term | u64 vote | u64 commit` — hard state;
//! * `3 | u32 n | n × u64 voter | u32 m | m × u64 learner` — conf state;
//! * `4 | u64 index | u64 term` — a leader's snapshot at `index` was installed (written after
//!   `DATA_DIR/state.snapshot`): every entry before this record is void, entries after it
//!   continue at `index + 1`.
//!
//! # Compaction
//! After a snapshot at index `S` is durable in `DATA_DIR/state.snapshot`, [`Wal::compact`]
//! re-writes the current hard state and conf state into the newest segment, fsyncs, and then
//! deletes the oldest closed segments whose every entry is at or below the compaction index —
//! whole files only, oldest first, never the segment being written. Restart = load the
//! snapshot, then replay the log entries after it (see `Replica::open`).
//!
//! # Invariants
//! * [`Wal::sync`] returns only after the bytes are written and `fdatasync`ed: nothing is
//!   acknowledged (raft-persisted) before that.
//! * One `sync` writes one contiguous buffer, so a crash leaves at most a torn tail in the last
//!   segment; recovery truncates it. A bad record anywhere else is reported as corruption.
//! * [`decode_record`] is a pure function over a byte slice.

use crate::error::StorageError;
use crate::fault::{injected_fault, WalOp};
use bytes::Bytes;
use eventstream_proto::codec::Reader;
use eventstream_proto::DecodeError;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Record header length.
pub const RECORD_HEADER: usize = 8;
/// Largest record body accepted on replay (256 MiB).
pub const MAX_RECORD: usize = 256 << 20;

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Entries appended (replacing any at or after the first one's index).
    Entries(Vec<Entry>),
    /// A new hard state.
    HardState(HardState),
    /// A new conf state.
    ConfState(ConfState),
    /// A leader's snapshot was installed at `(index, term)`.
    SnapshotInstalled {
        /// Snapshot index.
        index: u64,
        /// Snapshot term.
        term: u64,
    },
}

/// Appends a snapshot-installed record.
pub fn put_snapshot_record(buf: &mut Vec<u8>, index: u64, term: u64) {
    let start = begin_record(buf);
    buf.push(4);
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&term.to_le_bytes());
    end_record(buf, start);
}

/// Appends the encoding of `entries` as one record.
pub fn put_entries_record(buf: &mut Vec<u8>, entries: &[Entry]) {
    let start = begin_record(buf);
    buf.push(1);
    buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        buf.extend_from_slice(&e.index.to_le_bytes());
        buf.extend_from_slice(&e.term.to_le_bytes());
        buf.push(e.get_entry_type() as u8);
        buf.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        buf.extend_from_slice(&e.data);
        buf.extend_from_slice(&(e.context.len() as u32).to_le_bytes());
        buf.extend_from_slice(&e.context);
    }
    end_record(buf, start);
}

/// Appends a hard-state record.
pub fn put_hard_state_record(buf: &mut Vec<u8>, hs: &HardState) {
    let start = begin_record(buf);
    buf.push(2);
    for v in [hs.term, hs.vote, hs.commit] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    end_record(buf, start);
}

/// Appends a conf-state record.
pub fn put_conf_state_record(buf: &mut Vec<u8>, cs: &ConfState) {
    let start = begin_record(buf);
    buf.push(3);
    for list in [cs.get_voters(), cs.get_learners()] {
        buf.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for id in list {
            buf.extend_from_slice(&id.to_le_bytes());
        }
    }
    end_record(buf, start);
}

fn begin_record(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER]);
    start
}

fn end_record(buf: &mut [u8], start: usize) {
    let body = &buf[start + RECORD_HEADER..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the front of `buf`: `Ok(None)` when `buf` ends inside the record
/// (a torn tail), otherwise the record and the bytes it took.
pub fn decode_record(buf: &[u8]) -> Result<Option<(Record, usize)>, DecodeError> {
    if buf.len() < RECORD_HEADER {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let stored = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_RECORD {
        return Err(DecodeError::TooLong {
            len,
            max: MAX_RECORD,
        });
    }
    if buf.len() < RECORD_HEADER + len {
        return Ok(None);
    }
    let body = &buf[RECORD_HEADER..RECORD_HEADER + len];
    let computed = crc32fast::hash(body);
    if computed != stored {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let mut r = Reader::new(body);
    let rec = match r.u8()? {
        1 => {
            let n = r.u32()? as usize;
            if n > r.remaining() / 25 {
                return Err(DecodeError::Invalid {
                    field: "entry count",
                    reason: n.to_string(),
                });
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let mut e = Entry {
                    index: r.u64()?,
                    term: r.u64()?,
                    ..Entry::default()
                };
                let t = r.u8()?;
                e.set_entry_type(match t {
                    0 => EntryType::EntryNormal,
                    1 => EntryType::EntryConfChange,
                    2 => EntryType::EntryConfChangeV2,
                    other => {
                        return Err(DecodeError::Invalid {
                            field: "entry type",
                            reason: other.to_string(),
                        })
                    }
                });
                let n = r.u32()? as usize;
                e.data = Bytes::copy_from_slice(r.take(n)?);
                let n = r.u32()? as usize;
                e.context = Bytes::copy_from_slice(r.take(n)?);
                entries.push(e);
            }
            Record::Entries(entries)
        }
        2 => Record::HardState(HardState {
            term: r.u64()?,
            vote: r.u64()?,
            commit: r.u64()?,
            ..HardState::default()
        }),
        3 => {
            let mut lists = [Vec::new(), Vec::new()];
            for list in &mut lists {
                let n = r.u32()? as usize;
                if n > r.remaining() / 8 {
                    return Err(DecodeError::Invalid {
                        field: "member count",
                        reason: n.to_string(),
                    });
                }
                for _ in 0..n {
                    list.push(r.u64()?);
                }
            }
            let [voters, learners] = lists;
            let mut cs = ConfState::default();
            cs.set_voters(voters);
            cs.set_learners(learners);
            Record::ConfState(cs)
        }
        4 => Record::SnapshotInstalled {
            index: r.u64()?,
            term: r.u64()?,
        },
        other => return Err(DecodeError::Kind(other)),
    };
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid {
            field: "record",
            reason: format!("{} trailing bytes", r.remaining()),
        });
    }
    Ok(Some((rec, RECORD_HEADER + len)))
}

/// What replay found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Last hard state written.
    pub hard_state: Option<HardState>,
    /// Last conf state written.
    pub conf_state: Option<ConfState>,
    /// The log, contiguous, after conflict truncation.
    pub entries: Vec<Entry>,
    /// Bytes of a torn tail that were cut off.
    pub truncated_bytes: u64,
    /// The last snapshot-installed record `(index, term)`, if any.
    pub snapshot_installed: Option<(u64, u64)>,
}

impl Recovered {
    /// Highest index a record touches (entries or an installed snapshot), 0 for none.
    fn max_index(rec: &Record) -> u64 {
        match rec {
            Record::Entries(es) => es.last().map_or(0, |e| e.index),
            Record::SnapshotInstalled { index, .. } => *index,
            _ => 0,
        }
    }

    /// Applies one record; an entries record that is not contiguous in itself or would leave a
    /// gap after the log so far is refused (as a corrupt record: the writer never produces one;
    /// found by the `wal-replay` fuzz target).
    fn apply(&mut self, rec: Record) -> Result<(), String> {
        match rec {
            Record::HardState(hs) => self.hard_state = Some(hs),
            Record::ConfState(cs) => self.conf_state = Some(cs),
            Record::SnapshotInstalled { index, term } => {
                self.entries.clear();
                self.snapshot_installed = Some((index, term));
            }
            Record::Entries(es) => {
                let Some(first) = es.first().map(|e| e.index) else {
                    return Ok(());
                };
                if let Some(w) = es
                    .windows(2)
                    .find(|w| w[1].index != w[0].index.wrapping_add(1))
                {
                    return Err(format!(
                        "entries not contiguous: {} after {}",
                        w[1].index, w[0].index
                    ));
                }
                if let Some(last) = self.entries.last().map(|e| e.index) {
                    if first > last.saturating_add(1) {
                        return Err(format!("entries from {first} leave a gap after {last}"));
                    }
                }
                if let Some(base) = self.entries.first().map(|e| e.index) {
                    let keep = first.saturating_sub(base) as usize;
                    self.entries.truncate(keep.min(self.entries.len()));
                }
                self.entries.extend(es);
            }
        }
        Ok(())
    }
}

/// An open write-ahead log.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: File,
    seq: u64,
    segment_len: u64,
    segment_max: u64,
    total_bytes: u64,
    buf: Vec<u8>,
    /// Closed segments, oldest first: `(seq, bytes, highest index)`.
    closed: std::collections::VecDeque<(u64, u64, u64)>,
    /// Highest index written to the current segment.
    current_max_index: u64,
    last_hs: Option<HardState>,
    last_cs: Option<ConfState>,
    /// Index of the snapshot in `state.snapshot` (0 = none).
    snapshot_index: u64,
    /// Set by the first failed write or fsync; every later `sync` fails (see `sync`).
    failed: Option<String>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, replays it, truncates a torn tail, and
    /// returns the log ready for appending after it.
    pub fn open(dir: &Path, segment_max: u64) -> Result<(Wal, Recovered), StorageError> {
        fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let mut seqs = Vec::new();
        for ent in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let ent = ent.map_err(|e| StorageError::io(dir, e))?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_suffix(".wal") {
                if let Ok(seq) = u64::from_str_radix(hex, 16) {
                    seqs.push(seq);
                }
            }
        }
        seqs.sort_unstable();
        let mut rec = Recovered::default();
        let mut total = 0u64;
        let mut last_len = 0u64;
        let mut closed = std::collections::VecDeque::new();
        let mut current_max_index = 0u64;
        for (i, &seq) in seqs.iter().enumerate() {
            let mut seg_max = 0u64;
            let path = segment_path(dir, seq);
            let data = fs::read(&path).map_err(|e| StorageError::io(&path, e))?;
            let is_last = i + 1 == seqs.len();
            let mut pos = 0usize;
            loop {
                let decoded = decode_record(&data[pos..]).and_then(|r| match r {
                    Some((r, used)) => {
                        let max = Recovered::max_index(&r);
                        match rec.apply(r) {
                            Ok(()) => {
                                seg_max = seg_max.max(max);
                                Ok(Some(used))
                            }
                            Err(reason) => Err(DecodeError::Invalid {
                                field: "entries",
                                reason,
                            }),
                        }
                    }
                    None => Ok(None),
                });
                match decoded {
                    Ok(Some(used)) => {
                        pos += used;
                    }
                    Ok(None) if pos == data.len() => break,
                    outcome => {
                        // A torn or garbled tail of the newest segment is a write cut short by a
                        // crash: it was never fsynced, so never acknowledged. Anywhere else it
                        // is real corruption.
                        if !is_last {
                            let reason = match outcome {
                                Err(e) => e.to_string(),
                                _ => "truncated record".into(),
                            };
                            return Err(StorageError::CorruptLog {
                                path: path.display().to_string(),
                                offset: pos as u64,
                                reason,
                            });
                        }
                        let cut = (data.len() - pos) as u64;
                        tracing::warn!(path = %path.display(), offset = pos, bytes = cut, "truncating torn log tail");
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| StorageError::io(&path, e))?;
                        f.set_len(pos as u64)
                            .map_err(|e| StorageError::io(&path, e))?;
                        f.sync_all().map_err(|e| StorageError::io(&path, e))?;
                        rec.truncated_bytes = cut;
                        break;
                    }
                }
            }
            total += pos as u64;
            last_len = pos as u64;
            if i + 1 == seqs.len() {
                current_max_index = seg_max;
            } else {
                closed.push_back((seq, pos as u64, seg_max));
            }
        }
        let seq = seqs.last().copied().unwrap_or(0);
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        if seqs.is_empty() {
            sync_dir(dir)?;
        }
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                file,
                seq,
                segment_len: last_len,
                segment_max: segment_max.max(1 << 16),
                total_bytes: total,
                buf: Vec::with_capacity(1 << 20),
                closed,
                current_max_index,
                last_hs: rec.hard_state.clone(),
                last_cs: rec.conf_state.clone(),
                snapshot_index: 0,
                failed: None,
            },
            rec,
        ))
    }

    /// Buffers entries (written by the next [`sync`](Self::sync)).
    pub fn append_entries(&mut self, entries: &[Entry]) {
        if let Some(last) = entries.last() {
            put_entries_record(&mut self.buf, entries);
            self.current_max_index = self.current_max_index.max(last.index);
        }
    }

    /// Buffers a hard state.
    pub fn set_hard_state(&mut self, hs: &HardState) {
        put_hard_state_record(&mut self.buf, hs);
        self.last_hs = Some(hs.clone());
    }

    /// Buffers a conf state.
    pub fn set_conf_state(&mut self, cs: &ConfState) {
        put_conf_state_record(&mut self.buf, cs);
        self.last_cs = Some(cs.clone());
    }

    /// The directory of the log (and of `state.snapshot`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tells the log which snapshot `state.snapshot` holds (at start-up).
    pub fn set_snapshot_index(&mut self, index: u64) {
        self.snapshot_index = index;
    }

    /// Writes a snapshot (encoded, see [`crate::snapshot`]) to `DATA_DIR/state.snapshot`
    /// atomically and durably (temporary file, fsync, rename, directory fsync).
    pub fn save_snapshot(&mut self, bytes: &[u8], index: u64) -> Result<(), StorageError> {
        crate::snapshot::write_atomic(&self.dir.join(crate::snapshot::DATA_DIR_FILE), bytes)?;
        self.snapshot_index = index;
        Ok(())
    }

    /// Makes the fsynced file `tmp` (a snapshot at `index`) the new `state.snapshot`, unless
    /// the current one is at least as new (a leader's snapshot installed meanwhile): then `tmp`
    /// is removed and the answer is `false`.
    pub fn adopt_snapshot_file(&mut self, tmp: &Path, index: u64) -> Result<bool, StorageError> {
        if index <= self.snapshot_index {
            fs::remove_file(tmp).map_err(|e| StorageError::io(tmp, e))?;
            return Ok(false);
        }
        let target = self.dir.join(crate::snapshot::DATA_DIR_FILE);
        fs::rename(tmp, &target).map_err(|e| StorageError::io(&target, e))?;
        sync_dir(&self.dir)?;
        self.snapshot_index = index;
        Ok(true)
    }

    /// Records that a leader's snapshot at `(index, term)` was installed: saves it (durably,
    /// now) and buffers the record that voids every earlier entry. The caller then appends the
    /// entries after it and [`sync`](Self::sync)s.
    pub fn install_snapshot(
        &mut self,
        bytes: &[u8],
        index: u64,
        term: u64,
    ) -> Result<(), StorageError> {
        self.save_snapshot(bytes, index)?;
        put_snapshot_record(&mut self.buf, index, term);
        self.current_max_index = self.current_max_index.max(index);
        Ok(())
    }

    /// Writes one Ready's durable part (a leader's snapshot, entries, hard state) into the
    /// buffer; the caller fsyncs with [`sync`](Self::sync).
    pub fn write_ready(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StorageError> {
        if let Some(snap) = snapshot {
            let m = snap.get_metadata();
            self.install_snapshot(&snap.data, m.index, m.term)?;
        }
        self.append_entries(entries);
        if let Some(hs) = hard_state {
            self.set_hard_state(hs);
        }
        Ok(())
    }

    /// Compaction after a snapshot covering `upto` is durable: re-writes the last hard state
    /// and conf state into the current segment (fsynced), then deletes the oldest closed
    /// segments whose entries are all `<= upto`. Returns the bytes deleted.
    pub fn compact(&mut self, upto: u64) -> Result<u64, StorageError> {
        let deletable = self
            .closed
            .iter()
            .take_while(|(_, _, max)| *max <= upto)
            .count();
        if deletable == 0 {
            return Ok(0);
        }
        if let Some(hs) = self.last_hs.clone() {
            self.set_hard_state(&hs);
        }
        if let Some(cs) = self.last_cs.clone() {
            self.set_conf_state(&cs);
        }
        self.sync()?;
        let mut freed = 0;
        // sync() may have rotated: the segments counted above are still the oldest ones.
        for _ in 0..deletable {
            let Some((seq, bytes, _)) = self.closed.pop_front() else {
                break;
            };
            let path = segment_path(&self.dir, seq);
            fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
            freed += bytes;
        }
        self.total_bytes -= freed;
        sync_dir(&self.dir)?;
        Ok(freed)
    }

    /// True when something is buffered.
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Bytes of all segments.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Writes everything buffered and fsyncs it. Returns how long the fsync took (`None` when
    /// nothing was buffered). After one failed write or fsync the log is poisoned: every later
    /// call fails, so bytes whose fsync failed are never reported durable by a retry.
    pub fn sync(&mut self) -> Result<Option<Duration>, StorageError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let path = segment_path(&self.dir, self.seq);
        if let Some(why) = &self.failed {
            // After a failed write or fsync the file's state is unknown (the kernel may have
            // dropped the dirty pages): never write or fsync again, never report success.
            return Err(StorageError::io(
                &path,
                std::io::Error::other(format!("log failed earlier: {why}")),
            ));
        }
        let written = match injected_fault(&self.dir, WalOp::Write) {
            Some(e) => {
                // A short write, as a full disk produces: half the buffer, then the error.
                let _ = self.file.write_all(&self.buf[..self.buf.len() / 2]);
                Err(e)
            }
            None => self.file.write_all(&self.buf),
        };
        if let Err(e) = written {
            self.failed = Some(format!("write: {e}"));
            return Err(StorageError::io(&path, e));
        }
        let t = Instant::now();
        let synced = match injected_fault(&self.dir, WalOp::Fsync) {
            Some(e) => Err(e),
            None => self.file.sync_data(),
        };
        if let Err(e) = synced {
            self.failed = Some(format!("fsync: {e}"));
            return Err(StorageError::io(&path, e));
        }
        let took = t.elapsed();
        self.segment_len += self.buf.len() as u64;
        self.total_bytes += self.buf.len() as u64;
        self.buf.clear();
        if self.segment_len >= self.segment_max {
            self.rotate()?;
        }
        Ok(Some(took))
    }

    fn rotate(&mut self) -> Result<(), StorageError> {
        self.closed
            .push_back((self.seq, self.segment_len, self.current_max_index));
        self.current_max_index = 0;
        self.seq += 1;
        let path = segment_path(&self.dir, self.seq);
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        self.segment_len = 0;
        sync_dir(&self.dir)
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: Bytes::copy_from_slice(data),
            ..Entry::default()
        }
    }

    #[test]
    fn replay_truncates_conflicts_and_torn_tails_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, rec) = Wal::open(dir.path(), 1 << 16).unwrap();
            assert!(rec.entries.is_empty() && rec.hard_state.is_none());
            wal.append_entries(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")]);
            let hs = HardState {
                term: 1,
                commit: 1,
                ..HardState::default()
            };
            wal.set_hard_state(&hs);
            wal.sync().unwrap();
            // A new leader overwrites index 2.. with term 2.
            wal.append_entries(&[entry(2, 2, b"B")]);
            wal.append_entries(&[entry(3, 2, &vec![7u8; 70_000])]); // forces a rotation
            wal.sync().unwrap();
            wal.append_entries(&[entry(4, 2, b"d")]);
            wal.sync().unwrap();
        }
        let segs = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(segs, 2);
        // Tear the last record of the newest segment.
        let last = segment_path(dir.path(), 1);
        let len = fs::metadata(&last).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (_, rec) = Wal::open(dir.path(), 1 << 16).unwrap();
        let got: Vec<(u64, u64)> = rec.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(got, vec![(1, 1), (2, 2), (3, 2)]);
        assert_eq!(rec.hard_state.unwrap().commit, 1);
        assert!(rec.truncated_bytes > 0);
    }

    #[test]
    fn corruption_in_an_old_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path(), 1 << 16).unwrap();
            wal.append_entries(&[entry(1, 1, &vec![1u8; 70_000])]);
            wal.sync().unwrap();
            wal.append_entries(&[entry(2, 1, b"x")]);
            wal.sync().unwrap();
        }
        let first = segment_path(dir.path(), 0);
        let mut data = fs::read(&first).unwrap();
        data[100] ^= 0xff;
        fs::write(&first, data).unwrap();
        let err = Wal::open(dir.path(), 1 << 16).unwrap_err();
        assert!(matches!(err, StorageError::CorruptLog { .. }), "{err}");
    }

    #[test]
    fn compaction_deletes_old_segments_and_restart_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let hs = |commit| HardState {
            term: 1,
            commit,
            ..HardState::default()
        };
        {
            let (mut wal, _) = Wal::open(dir.path(), 1 << 16).unwrap();
            wal.set_conf_state(&ConfState::from((vec![1, 2, 3], vec![])));
            // 8 entries of 40 KB: a new segment every two entries.
            for i in 1..=8u64 {
                wal.append_entries(&[entry(i, 1, &vec![i as u8; 40_000])]);
                wal.set_hard_state(&hs(i));
                wal.sync().unwrap();
            }
            let before = wal.total_bytes();
            assert_eq!(wal.compact(0).unwrap(), 0, "nothing at or below 0");
            let freed = wal.compact(5).unwrap();
            assert!(freed > 0 && wal.total_bytes() < before);
            wal.append_entries(&[entry(9, 1, b"nine")]);
            wal.sync().unwrap();
        }
        // Segments holding only entries <= 5 are gone; hard and conf state survive in the
        // current segment.
        let (_, rec) = Wal::open(dir.path(), 1 << 16).unwrap();
        let idx: Vec<u64> = rec.entries.iter().map(|e| e.index).collect();
        assert_eq!(idx.first().copied(), Some(5));
        assert_eq!(idx.last().copied(), Some(9));
        assert_eq!(rec.hard_state.unwrap().commit, 8);
        assert_eq!(rec.conf_state.unwrap().get_voters(), &[1, 2, 3]);
        // A torn tail after compaction is still truncated.
        let mut segs: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        let last = segs.last().unwrap();
        let len = fs::metadata(last).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(last)
            .unwrap()
            .set_len(len - 2)
            .unwrap();
        let (_, rec) = Wal::open(dir.path(), 1 << 16).unwrap();
        assert_eq!(rec.entries.last().map(|e| e.index), Some(8));
        assert!(rec.truncated_bytes > 0);
    }

    #[test]
    fn installed_snapshot_voids_older_entries() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path(), 1 << 16).unwrap();
            wal.append_entries(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"stale")]);
            wal.sync().unwrap();
            wal.install_snapshot(b"snapshot bytes", 10, 2).unwrap();
            wal.append_entries(&[entry(11, 2, b"x")]);
            wal.sync().unwrap();
        }
        let (_, rec) = Wal::open(dir.path(), 1 << 16).unwrap();
        assert_eq!(rec.snapshot_installed, Some((10, 2)));
        let idx: Vec<u64> = rec.entries.iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![11]);
        assert_eq!(
            fs::read(dir.path().join(crate::snapshot::DATA_DIR_FILE)).unwrap(),
            b"snapshot bytes"
        );
    }

    #[test]
    fn a_checksummed_record_leaving_a_gap_is_treated_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path(), 1 << 16).unwrap();
            wal.append_entries(&[entry(1, 1, b"a"), entry(2, 1, b"b")]);
            wal.append_entries(&[entry(5, 1, b"e")]);
            wal.sync().unwrap();
        }
        let (_, rec) = Wal::open(dir.path(), 1 << 16).unwrap();
        let got: Vec<u64> = rec.entries.iter().map(|e| e.index).collect();
        assert_eq!(got, vec![1, 2], "the gap record is cut off as a bad tail");
        assert!(rec.truncated_bytes > 0);
    }

    proptest! {
        #[test]
        fn decode_record_never_panics(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_record(&data);
        }
    }
}
