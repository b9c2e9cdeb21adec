//! The per-topic index of a segment: for each topic, its *runs* — consecutive events of that
//! topic within one batch — with where their encodings lie in the segment file, so reading one
//! topic reads only that topic's bytes.
//!
//! # File `BASE.topics` (little-endian)
//! ```text
//! b"ESTP" | u32 version (1) | u64 base | u64 log_len | u32 n_topics | u32 dir_len
//! directory (dir_len bytes) = n_topics × (u16 name_len | name | u64 events | u64 first_offset
//!     | u64 last_offset | u64 runs_pos | u32 n_runs | u32 crc32(the topic's runs))
//! u32 crc32(header and directory)
//! runs, topic after topic: n_runs × (u32 rel_offset | u32 position | u32 count | u32 bytes
//!     | u64 timestamp_ms)
//! ```
//! A run is events `base + rel_offset ..+count`, encoded back to back in `bytes` bytes at file
//! position `position` of `BASE.log`, all with the batch's stream time. The directory is
//! sorted by name and read alone; a topic's runs are read by one `pread` and checked by their
//! own checksum. The file is valid only while the log is exactly `log_len` bytes.
//!
//! # Invariants
//! * Runs of a topic are increasing in offset and position and never overlap; every event of
//!   the segment is in exactly one run.
//! * The active segment's index lives in memory and grows with each append; a sealed one is
//!   on disk only (written at the seal, after the records are durable, like `BASE.index`),
//!   and rebuilt by a scan of the segment when missing, stale or corrupt.
//! * Reading a run decodes its events with the protocol codec but does not check the batch
//!   checksum (it covers the whole record, which a topic read does not touch). The index is
//!   built only from records whose checksum was checked — computed when appended, verified
//!   when copied from a peer or recovered by a scan — so the bytes a run names are those the
//!   checksum vouched for; damage to the file afterwards is still caught by the codec's own
//!   checks where it breaks the structure, and by every whole-batch read (copies, backups).

use super::batch::{self, Batch};
use eventstream_core::{Event, Topic};
use eventstream_proto::codec;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"ESTP";
const VERSION: u32 = 1;
const HEADER: usize = 4 + 4 + 8 + 8 + 4 + 4;
/// Bytes of one run, on disk and (about) in memory.
pub(crate) const RUN_BYTES: usize = 4 + 4 + 4 + 4 + 8;
/// Directory bytes per topic besides its name.
const SUMMARY_BYTES: usize = 2 + 8 + 8 + 8 + 8 + 4 + 4;

pub(crate) fn topics_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.topics"))
}

/// Consecutive events of one topic within one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub rel_offset: u32,
    pub position: u32,
    pub count: u32,
    pub bytes: u32,
    pub timestamp_ms: u64,
}

/// One topic's runs in a segment.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopicRuns {
    pub events: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub runs: Vec<Run>,
}

/// A topic's counts in one segment (what the directory holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicSummary {
    pub name: Topic,
    pub events: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    runs_pos: u64,
    n_runs: u32,
    runs_crc: u32,
}

/// A segment's whole topic index, in memory (the active segment's, or one being written).
#[derive(Debug, Clone, Default)]
pub(crate) struct TopicIndex {
    pub topics: BTreeMap<Topic, TopicRuns>,
}

impl TopicIndex {
    /// Accounts for `b`, whose record is at file position `position` of the segment based at
    /// `base`, and its decoded `events` ([`Batch::events`]: the codec gives each one's topic
    /// and encoded length).
    pub fn note_events(&mut self, base: u64, b: &Batch, position: u64, events: Vec<(u64, Event)>) {
        let mut pos = position + (batch::RECORD_HEADER + batch::BODY_HEADER) as u64;
        for (off, e) in events {
            let len = codec::encoded_len(&e) as u32;
            let t = self.topics.entry(e.topic).or_default();
            if t.events == 0 {
                t.first_offset = off;
            }
            t.events += 1;
            t.last_offset = off;
            match t.runs.last_mut() {
                Some(r)
                    if base + u64::from(r.rel_offset) + u64::from(r.count) == off
                        && u64::from(r.position) + u64::from(r.bytes) == pos =>
                {
                    r.count += 1;
                    r.bytes += len;
                }
                _ => t.runs.push(Run {
                    rel_offset: (off - base) as u32,
                    position: pos as u32,
                    count: 1,
                    bytes: len,
                    timestamp_ms: b.timestamp_ms,
                }),
            }
            pos += u64::from(len);
        }
    }

    /// The file holding this index of the segment at `base` whose log is `log_len` bytes.
    pub fn encode(&self, base: u64, log_len: u64) -> Vec<u8> {
        let dir_len: usize = self.topics.keys().map(|n| SUMMARY_BYTES + n.len()).sum();
        let runs_start = (HEADER + dir_len + 4) as u64;
        let mut out = Vec::with_capacity(runs_start as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&log_len.to_le_bytes());
        out.extend_from_slice(&(self.topics.len() as u32).to_le_bytes());
        out.extend_from_slice(&(dir_len as u32).to_le_bytes());
        let mut runs = Vec::new();
        for (name, t) in &self.topics {
            let start = runs.len();
            for r in &t.runs {
                for v in [r.rel_offset, r.position, r.count, r.bytes] {
                    runs.extend_from_slice(&v.to_le_bytes());
                }
                runs.extend_from_slice(&r.timestamp_ms.to_le_bytes());
            }
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            for v in [
                t.events,
                t.first_offset,
                t.last_offset,
                runs_start + start as u64,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(t.runs.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&runs[start..]).to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&runs);
        out
    }

    /// The summaries of this index (as its file's directory would list them).
    pub fn summaries(&self) -> Vec<TopicSummary> {
        self.topics
            .iter()
            .map(|(name, t)| TopicSummary {
                name: name.clone(),
                events: t.events,
                first_offset: t.first_offset,
                last_offset: t.last_offset,
                runs_pos: 0,
                n_runs: t.runs.len() as u32,
                runs_crc: 0,
            })
            .collect()
    }

    /// Bytes the index takes in memory, about.
    pub fn memory_bytes(&self) -> usize {
        self.topics
            .iter()
            .map(|(n, t)| n.len() + SUMMARY_BYTES + t.runs.capacity() * RUN_BYTES)
            .sum()
    }
}

/// The directory of a sealed segment's topic file: what is cached, never the runs.
#[derive(Debug, Clone)]
pub(crate) struct TopicDirectory {
    pub path: PathBuf,
    pub topics: Vec<TopicSummary>,
}

impl TopicDirectory {
    /// Reads the directory of `path` if the file is valid for the segment at `base` whose log
    /// is `log_len` bytes.
    pub fn read(path: &Path, base: u64, log_len: u64) -> Option<TopicDirectory> {
        let f = File::open(path).ok()?;
        let mut head = [0u8; HEADER];
        f.read_exact_at(&mut head, 0).ok()?;
        let mut r = codec::Reader::new(&head);
        if r.take(4).ok()? != MAGIC || r.u32().ok()? != VERSION {
            return None;
        }
        let (b, len, n, dir_len) = (r.u64().ok()?, r.u64().ok()?, r.u32().ok()?, r.u32().ok()?);
        let file_len = f.metadata().ok()?.len();
        if b != base || len != log_len || (HEADER + dir_len as usize + 4) as u64 > file_len {
            return None;
        }
        let mut body = vec![0u8; HEADER + dir_len as usize + 4];
        f.read_exact_at(&mut body, 0).ok()?;
        let (covered, crc) = body.split_at(HEADER + dir_len as usize);
        if crc32fast::hash(covered) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = codec::Reader::new(&covered[HEADER..]);
        let mut topics = Vec::with_capacity((n as usize).min(dir_len as usize / SUMMARY_BYTES));
        for _ in 0..n {
            let name = Topic::from(r.str16("topic").ok()?);
            let (events, first_offset, last_offset, runs_pos) =
                (r.u64().ok()?, r.u64().ok()?, r.u64().ok()?, r.u64().ok()?);
            let (n_runs, runs_crc) = (r.u32().ok()?, r.u32().ok()?);
            if runs_pos + u64::from(n_runs) * RUN_BYTES as u64 > file_len {
                return None;
            }
            topics.push(TopicSummary {
                name,
                events,
                first_offset,
                last_offset,
                runs_pos,
                n_runs,
                runs_crc,
            });
        }
        if r.remaining() != 0 || topics.windows(2).any(|w| w[0].name >= w[1].name) {
            return None;
        }
        Some(TopicDirectory {
            path: path.to_path_buf(),
            topics,
        })
    }

    /// The summary of `topic`, if the segment holds any of its events.
    pub fn get(&self, topic: &str) -> Option<&TopicSummary> {
        self.topics
            .binary_search_by(|s| s.name.as_str().cmp(topic))
            .ok()
            .map(|i| &self.topics[i])
    }

    /// `topic`'s runs read from the file, or `None` if they are unreadable or fail their
    /// checksum (the file is then rebuilt).
    pub fn runs(&self, s: &TopicSummary) -> Option<Vec<Run>> {
        let f = File::open(&self.path).ok()?;
        let mut buf = vec![0u8; s.n_runs as usize * RUN_BYTES];
        f.read_exact_at(&mut buf, s.runs_pos).ok()?;
        if crc32fast::hash(&buf) != s.runs_crc {
            return None;
        }
        let mut r = codec::Reader::new(&buf);
        let mut runs = Vec::with_capacity(s.n_runs as usize);
        for _ in 0..s.n_runs {
            runs.push(Run {
                rel_offset: r.u32().ok()?,
                position: r.u32().ok()?,
                count: r.u32().ok()?,
                bytes: r.u32().ok()?,
                timestamp_ms: r.u64().ok()?,
            });
        }
        Some(runs)
    }

    /// Bytes the directory takes in memory, about.
    pub fn memory_bytes(&self) -> usize {
        self.path.as_os_str().len()
            + self
                .topics
                .iter()
                .map(|s| s.name.len() + SUMMARY_BYTES + 8)
                .sum::<usize>()
    }
}

/// Directories of sealed segments recently read, by `(base, log_len)`, up to a byte limit
/// (the oldest read is dropped first).
#[derive(Debug, Default)]
pub(crate) struct DirectoryCache {
    entries: Vec<((u64, u64), std::sync::Arc<TopicDirectory>)>,
    bytes: usize,
    limit: usize,
}

impl DirectoryCache {
    pub fn new(limit: usize) -> Self {
        DirectoryCache {
            limit,
            ..DirectoryCache::default()
        }
    }

    pub fn get(&mut self, key: (u64, u64)) -> Option<std::sync::Arc<TopicDirectory>> {
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        let e = self.entries.remove(i);
        let d = e.1.clone();
        self.entries.push(e);
        Some(d)
    }

    pub fn insert(&mut self, key: (u64, u64), d: std::sync::Arc<TopicDirectory>) {
        self.remove(key.0);
        self.bytes += d.memory_bytes();
        self.entries.push((key, d));
        while self.bytes > self.limit && !self.entries.is_empty() {
            let (_, old) = self.entries.remove(0);
            self.bytes -= old.memory_bytes();
        }
    }

    /// Forgets the segment at `base` (deleted, cut or rewritten).
    pub fn remove(&mut self, base: u64) {
        let bytes = &mut self.bytes;
        self.entries.retain(|((b, _), d)| {
            let keep = *b != base;
            if !keep {
                *bytes -= d.memory_bytes();
            }
            keep
        });
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use eventstream_core::Priority;

    fn batch(base: u64, topics: &[&str]) -> Batch {
        let mut ev = BytesMut::new();
        for (i, t) in topics.iter().enumerate() {
            codec::put_event(
                &mut ev,
                &Event::new(*t, Priority::Low, vec![7u8; i]).with_id(i as u64),
            );
        }
        let mut rec = BytesMut::new();
        batch::put(&mut rec, base, topics.len() as u32, 5, &ev);
        batch::decode(&rec.freeze()).unwrap().unwrap()
    }

    #[test]
    fn runs_group_consecutive_events_of_a_topic_and_the_file_round_trips() {
        let mut idx = TopicIndex::default();
        let a = batch(100, &["a", "a", "b", "a"]);
        idx.note_events(100, &a, 0, a.events().unwrap());
        let b = batch(104, &["a", "c"]);
        idx.note_events(100, &b, a.record.len() as u64, b.events().unwrap());
        let runs: Vec<(u32, u32)> = idx.topics["a"]
            .runs
            .iter()
            .map(|r| (r.rel_offset, r.count))
            .collect();
        // The run of "a" at 3 does not continue into the next batch: a record header is between.
        assert_eq!(runs, [(0, 2), (3, 1), (4, 1)]);
        assert_eq!(
            (idx.topics["a"].events, idx.topics["a"].last_offset),
            (4, 104)
        );

        let dir = tempfile::tempdir().unwrap();
        let path = topics_path(dir.path(), 100);
        std::fs::write(&path, idx.encode(100, 999)).unwrap();
        assert!(TopicDirectory::read(&path, 100, 998).is_none(), "stale");
        let d = TopicDirectory::read(&path, 100, 999).unwrap();
        assert_eq!(
            d.topics.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        let s = d.get("a").unwrap();
        assert_eq!(d.runs(s).unwrap(), idx.topics["a"].runs);
        assert!(d.get("z").is_none());

        // A flipped byte in the runs fails their checksum; in the directory, the directory's.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let d = TopicDirectory::read(&path, 100, 999).unwrap();
        assert!(d.runs(d.get("c").unwrap()).is_none());
        bytes[HEADER + 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(TopicDirectory::read(&path, 100, 999).is_none());
    }

    #[test]
    fn the_directory_cache_stays_under_its_byte_limit() {
        let d = std::sync::Arc::new(TopicDirectory {
            path: PathBuf::from("x"),
            topics: Vec::new(),
        });
        let one = d.memory_bytes();
        let mut c = DirectoryCache::new(one * 3);
        for base in 0..10 {
            c.insert((base, 1), d.clone());
            assert!(c.bytes() <= one * 3);
        }
        assert!(c.get((9, 1)).is_some() && c.get((0, 1)).is_none());
        c.remove(9);
        assert!(c.get((9, 1)).is_none());
        assert_eq!(c.bytes(), one * 2);
    }
}
