//! The durable raft log: a segmented write-ahead log with a CRC32 per record.
//!
//! # Layout
//! `DIR/NNNNNNNNNNNNNNNN.wal` segments (hex sequence numbers), read in order. A record is
//! `u32 body_len | u32 crc32(body) | body`, little-endian, where the body is
//! * `1 | u32 n | n × (u64 index | u64 term | u8 type | u32 len | data | u32 len | context)` —
//!   entries; entries at index `i` replace any earlier entries at `>= i` (raft's conflict
//!   truncation), so replay keeps the last word;
//! * `2 | u64 term | u64 vote | u64 commit` — hard state;
//! * `3 | u32 n | n × u64 voter | u32 m | m × u64 learner` — conf state.
//!
//! # Invariants
//! * [`Wal::sync`] returns only after the bytes are written and `fdatasync`ed: nothing is
//!   acknowledged (raft-persisted) before that.
//! * One `sync` writes one contiguous buffer, so a crash leaves at most a torn tail in the last
//!   segment; recovery truncates it. A bad record anywhere else is reported as corruption.
//! * [`decode_record`] is a pure function over a byte slice.

use crate::codec::Reader;
use crate::error::{ClusterError, DecodeError};
use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState};
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
}

impl Recovered {
    /// Applies one record; an entries record that is not contiguous in itself or would leave a
    /// gap after the log so far is refused (as a corrupt record: the writer never produces one;
    /// found by the `wal-replay` fuzz target).
    fn apply(&mut self, rec: Record) -> Result<(), String> {
        match rec {
            Record::HardState(hs) => self.hard_state = Some(hs),
            Record::ConfState(cs) => self.conf_state = Some(cs),
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
    /// Set by the first failed write or fsync; every later `sync` fails (see `sync`).
    failed: Option<String>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, replays it, truncates a torn tail, and
    /// returns the log ready for appending after it.
    pub fn open(dir: &Path, segment_max: u64) -> Result<(Wal, Recovered), ClusterError> {
        fs::create_dir_all(dir).map_err(|e| ClusterError::io(dir, e))?;
        let mut seqs = Vec::new();
        for ent in fs::read_dir(dir).map_err(|e| ClusterError::io(dir, e))? {
            let ent = ent.map_err(|e| ClusterError::io(dir, e))?;
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
        for (i, &seq) in seqs.iter().enumerate() {
            let path = segment_path(dir, seq);
            let data = fs::read(&path).map_err(|e| ClusterError::io(&path, e))?;
            let is_last = i + 1 == seqs.len();
            let mut pos = 0usize;
            loop {
                let decoded = decode_record(&data[pos..]).and_then(|r| match r {
                    Some((r, used)) => match rec.apply(r) {
                        Ok(()) => Ok(Some(used)),
                        Err(reason) => Err(DecodeError::Invalid {
                            field: "entries",
                            reason,
                        }),
                    },
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
                            return Err(ClusterError::CorruptLog {
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
                            .map_err(|e| ClusterError::io(&path, e))?;
                        f.set_len(pos as u64)
                            .map_err(|e| ClusterError::io(&path, e))?;
                        f.sync_all().map_err(|e| ClusterError::io(&path, e))?;
                        rec.truncated_bytes = cut;
                        break;
                    }
                }
            }
            total += pos as u64;
            last_len = pos as u64;
        }
        let seq = seqs.last().copied().unwrap_or(0);
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ClusterError::io(&path, e))?;
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
                failed: None,
            },
            rec,
        ))
    }

    /// Buffers entries (written by the next [`sync`](Self::sync)).
    pub fn append_entries(&mut self, entries: &[Entry]) {
        if !entries.is_empty() {
            put_entries_record(&mut self.buf, entries);
        }
    }

    /// Buffers a hard state.
    pub fn set_hard_state(&mut self, hs: &HardState) {
        put_hard_state_record(&mut self.buf, hs);
    }

    /// Buffers a conf state.
    pub fn set_conf_state(&mut self, cs: &ConfState) {
        put_conf_state_record(&mut self.buf, cs);
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
    pub fn sync(&mut self) -> Result<Option<Duration>, ClusterError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let path = segment_path(&self.dir, self.seq);
        if let Some(why) = &self.failed {
            // After a failed write or fsync the file's state is unknown (the kernel may have
            // dropped the dirty pages): never write or fsync again, never report success.
            return Err(ClusterError::io(
                &path,
                std::io::Error::other(format!("log failed earlier: {why}")),
            ));
        }
        let written = match crate::fault::check(&self.dir, crate::fault::WalOp::Write) {
            Some(e) => {
                // A short write, as a full disk produces: half the buffer, then the error.
                let _ = self.file.write_all(&self.buf[..self.buf.len() / 2]);
                Err(e)
            }
            None => self.file.write_all(&self.buf),
        };
        if let Err(e) = written {
            self.failed = Some(format!("write: {e}"));
            return Err(ClusterError::io(&path, e));
        }
        let t = Instant::now();
        let synced = match crate::fault::check(&self.dir, crate::fault::WalOp::Fsync) {
            Some(e) => Err(e),
            None => self.file.sync_data(),
        };
        if let Err(e) = synced {
            self.failed = Some(format!("fsync: {e}"));
            return Err(ClusterError::io(&path, e));
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

    fn rotate(&mut self) -> Result<(), ClusterError> {
        self.seq += 1;
        let path = segment_path(&self.dir, self.seq);
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ClusterError::io(&path, e))?;
        self.segment_len = 0;
        sync_dir(&self.dir)
    }
}

fn sync_dir(dir: &Path) -> Result<(), ClusterError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ClusterError::io(dir, e))
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
        assert!(matches!(err, ClusterError::CorruptLog { .. }), "{err}");
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
