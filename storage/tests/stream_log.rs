//! The stream log against a simple model (a vector of batches): appends, reads from any
//! offset, reads by time, retention by whole segments, truncation, and reopening after a crash
//! that cut the newest segment at any byte or corrupted a byte of it; torn and corrupt
//! sealed-segment and index files.

use bytes::BytesMut;
use eventstream_core::{Event, Priority};
use eventstream_proto::codec;
use eventstream_storage::stream::{RetentionPolicy, StreamConfig, StreamLog};
use proptest::prelude::*;
use std::path::Path;

/// One batch of the model: its first offset, its events' ids and its time.
#[derive(Debug, Clone)]
struct ModelBatch {
    base: u64,
    ids: Vec<u64>,
    ts: u64,
}

fn encode(ids: &[u64], payload: usize) -> Vec<u8> {
    let mut b = BytesMut::new();
    for &id in ids {
        codec::put_event(
            &mut b,
            &Event::new("t", Priority::Medium, vec![id as u8; payload]).with_id(id),
        );
    }
    b.to_vec()
}

/// Every event the log returns reading from `from` to the end.
fn read_all(log: &StreamLog, from: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batches = log.read(next, 700).unwrap().unwrap();
        if batches.is_empty() {
            return out;
        }
        for b in batches {
            for (off, e) in b.events().unwrap() {
                if off >= next {
                    out.push((off, e.id.0));
                    next = off + 1;
                }
            }
        }
    }
}

fn model_events(m: &[ModelBatch], from: u64) -> Vec<(u64, u64)> {
    m.iter()
        .flat_map(|b| {
            b.ids
                .iter()
                .enumerate()
                .map(move |(i, id)| (b.base + i as u64, *id))
        })
        .filter(|(o, _)| *o >= from)
        .collect()
}

fn newest_segment(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Append { n: usize, ts_step: u64 },
    Read { from_frac: f64 },
    ReadTime { frac: f64 },
    Retain { max_events: u64 },
    Truncate { batches_back: usize },
    Reopen,
    CrashCut { frac: f64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..12, 0u64..3).prop_map(|(n, ts_step)| Op::Append { n, ts_step }),
        2 => (0.0f64..1.0).prop_map(|from_frac| Op::Read { from_frac }),
        1 => (0.0f64..1.2).prop_map(|frac| Op::ReadTime { frac }),
        1 => (5u64..60).prop_map(|max_events| Op::Retain { max_events }),
        1 => (0usize..3).prop_map(|batches_back| Op::Truncate { batches_back }),
        1 => Just(Op::Reopen),
        1 => (0.0f64..1.0).prop_map(|frac| Op::CrashCut { frac }),
    ]
}

fn cfg() -> StreamConfig {
    StreamConfig {
        segment_bytes: 600,
        index_interval_bytes: 150,
        ..StreamConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_log_behaves_like_a_vector_of_batches(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
        let mut model: Vec<ModelBatch> = Vec::new();
        let mut first = 0u64;
        let mut next_id = 1u64;
        let mut ts = 1_000u64;
        for op in ops {
            match op {
                Op::Append { n, ts_step } => {
                    ts += ts_step;
                    let ids: Vec<u64> = (next_id..next_id + n as u64).collect();
                    next_id += n as u64;
                    let base = log.next_offset();
                    log.append(n as u32, ts, &encode(&ids, (next_id % 40) as usize)).unwrap();
                    model.push(ModelBatch { base, ids, ts });
                }
                Op::Read { from_frac } => {
                    let next = log.next_offset();
                    let from = first + ((next - first) as f64 * from_frac) as u64;
                    prop_assert_eq!(read_all(&log, from), model_events(&model, from));
                }
                Op::ReadTime { frac } => {
                    let (lo, hi) = (model.first().map_or(0, |b| b.ts), model.last().map_or(0, |b| b.ts));
                    let t = lo + ((hi.saturating_sub(lo)) as f64 * frac) as u64;
                    let expect = model.iter().find(|b| b.ts >= t).map_or(log.next_offset(), |b| b.base);
                    prop_assert_eq!(log.offset_at_time(t).unwrap(), expect);
                }
                Op::Retain { max_events } => {
                    let held_before = log.next_offset() - log.first_offset();
                    log.retain(RetentionPolicy { max_events, ..Default::default() }, 0).unwrap();
                    first = log.first_offset();
                    model.retain(|b| b.base >= first);
                    let held = log.next_offset() - first;
                    // Never below the limit, and no segment more than needed to hold it.
                    prop_assert!(held >= max_events.min(held_before), "{held} < {max_events}");
                    let segs = log.segments();
                    let oldest = segs[0].next_offset - segs[0].base_offset;
                    prop_assert!(segs.len() == 1 || held - oldest < max_events, "{segs:?}");
                    prop_assert!(log.read(first.saturating_sub(1), 10).unwrap().is_err() || first == 0);
                }
                Op::Truncate { batches_back } => {
                    if model.len() > batches_back {
                        let keep = model.len() - batches_back;
                        let to = model.get(keep).map_or(log.next_offset(), |b| b.base);
                        log.truncate_to(to).unwrap();
                        model.truncate(keep);
                        first = log.first_offset();
                        prop_assert_eq!(log.next_offset(), to);
                    }
                }
                Op::Reopen => {
                    log.checkpoint().unwrap();
                    drop(log);
                    let (l, rec) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
                    prop_assert_eq!(rec.truncated_bytes, 0);
                    log = l;
                }
                Op::CrashCut { frac } => {
                    drop(log);
                    let seg = newest_segment(dir.path());
                    let len = std::fs::metadata(&seg).unwrap().len();
                    let cut = (len as f64 * frac) as u64;
                    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();
                    let (l, _) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
                    log = l;
                    // Whole batches before the cut survive, nothing after it.
                    let next = log.next_offset();
                    model.retain(|b| b.base + (b.ids.len() as u64) <= next);
                    prop_assert_eq!(model.last().map_or(first.max(log.first_offset()), |b| b.base + b.ids.len() as u64), next);
                    first = log.first_offset();
                }
            }
            prop_assert_eq!(log.next_offset(), model.last().map_or(log.first_offset(), |b| b.base + b.ids.len() as u64));
        }
        prop_assert_eq!(read_all(&log, first), model_events(&model, first));
    }
}

#[test]
fn a_flipped_byte_in_the_tail_is_cut_and_in_a_sealed_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
    for i in 0..40u64 {
        log.append(2, 1000 + i, &encode(&[2 * i + 1, 2 * i + 2], 20))
            .unwrap();
    }
    let segs = log.segments();
    assert!(segs.len() >= 3, "{segs:?}");
    drop(log);
    // The newest segment: a corrupt byte in its last batch cuts that batch and what follows.
    let seg = newest_segment(dir.path());
    let mut data = std::fs::read(&seg).unwrap();
    let n = data.len();
    data[n - 5] ^= 0x40;
    std::fs::write(&seg, &data).unwrap();
    let (log, rec) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
    assert!(rec.truncated_bytes > 0);
    assert_eq!(log.next_offset(), 78);
    // A stale checkpoint is ignored (the segment is scanned), a missing one rebuilt.
    let first = dir.path().join(format!("{:020}.index", 0));
    assert!(first.exists());
    std::fs::remove_file(&first).unwrap();
    drop(log);
    let (log, rec) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
    assert!(rec.scanned >= 2 && rec.from_checkpoint >= 1, "{rec:?}");
    assert_eq!(read_all(&log, 0).len(), 78);
    drop(log);
    // A corrupt byte in a sealed segment is corruption, reported, not cut.
    let sealed = dir.path().join(format!("{:020}.log", 0));
    let mut data = std::fs::read(&sealed).unwrap();
    data[12] ^= 0x40;
    std::fs::write(&sealed, &data).unwrap();
    std::fs::remove_file(dir.path().join(format!("{:020}.index", 0))).ok();
    let err = StreamLog::open(dir.path(), cfg(), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn records_copy_from_one_log_to_another_and_bad_ones_are_refused() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (a, _) = StreamLog::open(a_dir.path(), cfg(), 0).unwrap();
    for i in 0..30u64 {
        a.append(3, 5_000 + i, &encode(&[i * 3, i * 3 + 1, i * 3 + 2], 10))
            .unwrap();
    }
    let (b, _) = StreamLog::open(b_dir.path(), cfg(), 0).unwrap();
    let mut next = 0;
    while next < a.next_offset() {
        for batch in a.read(next, 256).unwrap().unwrap() {
            b.append_record(&batch.record).unwrap();
            next = batch.next_offset();
        }
    }
    assert_eq!(read_all(&a, 0), read_all(&b, 0));
    // Out of order, torn, or flipped: refused, and nothing changes.
    let batch = a.read(0, 1).unwrap().unwrap().remove(0);
    assert!(b.append_record(&batch.record).is_err());
    let mut bad = batch.record.to_vec();
    bad[20] ^= 1;
    assert!(b.append_record(&bad).is_err());
    assert!(b
        .append_record(&batch.record[..batch.record.len() - 1])
        .is_err());
    assert_eq!(b.next_offset(), 90);
    // Reset starts empty further on (a snapshot far ahead); reads below are refused.
    b.reset(1_000).unwrap();
    assert_eq!((b.first_offset(), b.next_offset()), (1_000, 1_000));
    let c = b.read(5, 10).unwrap().unwrap_err();
    assert_eq!((c.requested, c.earliest), (5, 1_000));
    drop(b);
    let (b, _) = StreamLog::open(b_dir.path(), cfg(), 0).unwrap();
    assert_eq!(b.next_offset(), 1_000);
}

#[test]
fn age_retention_drops_whole_old_segments_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
    for i in 0..50u64 {
        log.append(1, 10_000 + i * 100, &encode(&[i], 30)).unwrap();
    }
    let before = log.segments().len();
    let freed = log
        .retain(
            RetentionPolicy {
                max_age_ms: 1_000,
                ..Default::default()
            },
            10_000 + 50 * 100,
        )
        .unwrap();
    assert!(freed > 0 && log.segments().len() < before);
    // Every kept segment but the newest has an event younger than the limit.
    for s in &log.segments()[..log.segments().len() - 1] {
        assert!(s.max_timestamp_ms + 1_000 >= 15_000, "{s:?}");
    }
    // Everything old: the newest segment stays, so next_offset is kept.
    log.retain(
        RetentionPolicy {
            max_age_ms: 1,
            ..Default::default()
        },
        u64::MAX / 2,
    )
    .unwrap();
    assert_eq!(log.segments().len(), 1);
    assert_eq!(log.next_offset(), 50);
}

/// Appends `n` one-event batches with ids `from..from + n` at time = id.
fn fill(log: &StreamLog, from: u64, n: u64) {
    for id in from..from + n {
        log.append(1, id, &encode(&[id], 20)).unwrap();
    }
}

/// Copies every record of `src` in `from..to` onto the end of `dst`.
fn copy_records(src: &StreamLog, dst: &StreamLog, to: u64) {
    while dst.next_offset() < to {
        for b in src.read(dst.next_offset(), 500).unwrap().unwrap() {
            if b.base_offset >= to {
                return;
            }
            dst.append_record(&b.record).unwrap();
        }
    }
}

#[test]
fn a_log_moved_aside_is_filled_and_spliced_back_in_front() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, _) = StreamLog::open(&dir.path().join("leader"), cfg(), 0).unwrap();
    fill(&leader, 0, 120);
    let main_dir = dir.path().join("p0");
    let (main, _) = StreamLog::open(&main_dir, cfg(), 0).unwrap();
    copy_records(&leader, &main, 40);
    // A snapshot at offset 90 arrives: the 40 held move aside, the log restarts at 90.
    let aside = main.move_to(&dir.path().join("p0.backfill"), 90).unwrap();
    assert_eq!((main.first_offset(), main.next_offset()), (90, 90));
    assert_eq!((aside.first_offset(), aside.next_offset()), (0, 40));
    copy_records(&leader, &main, 120);
    copy_records(&leader, &aside, 90);
    main.adopt_prefix(aside).unwrap();
    assert_eq!(
        read_all(&main, 0),
        (0..120).map(|i| (i, i)).collect::<Vec<_>>()
    );
    assert!(!dir.path().join("p0.backfill").exists());
    drop(main);
    let (reopened, _) = StreamLog::open(&main_dir, cfg(), 0).unwrap();
    assert_eq!(read_all(&reopened, 0).len(), 120);
    assert_eq!(reopened.offset_at_time(55).unwrap(), 55);
}

#[test]
fn a_splice_cut_short_leaves_two_contiguous_logs_that_splice_again() {
    let dir = tempfile::tempdir().unwrap();
    let (main, _) = StreamLog::open(&dir.path().join("p0"), cfg(), 60).unwrap();
    fill(&main, 60, 30);
    let (aside, _) = StreamLog::open(&dir.path().join("aside"), cfg(), 0).unwrap();
    fill(&aside, 0, 60);
    assert!(aside.segments().len() > 2);
    // A crash after the newest segment of the prefix moved: both halves still open whole.
    let newest = aside.segments().last().unwrap().base_offset;
    drop((main, aside));
    for ext in ["index", "log"] {
        let name = format!("{newest:020}.{ext}");
        let from = dir.path().join("aside").join(&name);
        if from.exists() {
            std::fs::rename(&from, dir.path().join("p0").join(&name)).unwrap();
        }
    }
    let (main, _) = StreamLog::open(&dir.path().join("p0"), cfg(), 0).unwrap();
    let (aside, _) = StreamLog::open(&dir.path().join("aside"), cfg(), 0).unwrap();
    assert_eq!((aside.next_offset(), main.first_offset()), (newest, newest));
    main.adopt_prefix(aside).unwrap();
    assert_eq!(
        read_all(&main, 0),
        (0..90).map(|i| (i, i)).collect::<Vec<_>>()
    );
}

#[test]
fn a_prefix_that_does_not_end_where_the_log_starts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (main, _) = StreamLog::open(&dir.path().join("p0"), cfg(), 50).unwrap();
    let (aside, _) = StreamLog::open(&dir.path().join("aside"), cfg(), 0).unwrap();
    fill(&aside, 0, 10);
    let err = main.adopt_prefix(aside).unwrap_err().to_string();
    assert!(
        err.contains("ends at 10") && err.contains("starts at 50"),
        "{err}"
    );
    assert_eq!(read_all(&main, 50), vec![]);
}

/// The `.index` checkpoint files in `dir`, by base offset.
fn checkpoints(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "index").then(|| p.file_stem()?.to_str()?.parse().ok())?
        })
        .collect();
    bases.sort();
    bases
}

/// A log in `dir` with one-event batches (ids from 1) until it has `n` segments; the last id.
fn log_with_segments(dir: &Path, n: usize) -> (StreamLog, u64) {
    let (log, _) = StreamLog::open(dir, cfg(), 0).unwrap();
    let mut id = 0;
    while log.segments().len() < n {
        id += 1;
        fill(&log, id, 1);
    }
    (log, id)
}

/// Cuts the last `bytes` off the file at `path` (a crash that lost them).
fn cut_end(path: &Path, bytes: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(f.metadata().unwrap().len() - bytes).unwrap();
}

#[test]
fn a_full_segment_is_sealed_by_the_next_roll_or_a_sync_never_by_its_own_roll() {
    let dir = tempfile::tempdir().unwrap();
    // Fill the first segment and start the second: the first is not sealed yet.
    let (log, mut id) = log_with_segments(dir.path(), 2);
    let segs: Vec<u64> = log.segments().iter().map(|s| s.base_offset).collect();
    assert!(checkpoints(dir.path()).is_empty(), "sealed at its own roll");
    // The next roll seals it (and only it).
    while log.segments().len() < 3 {
        id += 1;
        fill(&log, id, 1);
    }
    assert_eq!(checkpoints(dir.path()), vec![segs[0]]);
    // A sync seals every full segment.
    log.sync().unwrap();
    let all: Vec<u64> = log.segments().iter().map(|s| s.base_offset).collect();
    assert_eq!(checkpoints(dir.path()), all[..all.len() - 1].to_vec());
    drop(log);
    let (log, rec) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
    assert_eq!(rec.from_checkpoint, all.len() - 1, "{rec:?}");
    assert_eq!(read_all(&log, 0).len() as u64, id);
}

#[test]
fn a_crash_before_a_full_segment_was_sealed_cuts_its_torn_end_and_drops_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with_segments(dir.path(), 4);
    let segs: Vec<u64> = log.segments().iter().map(|s| s.base_offset).collect();
    // Segments 0 and 1 are sealed, 2 is full and waiting for its seal, 3 is the newest.
    assert_eq!(checkpoints(dir.path()), segs[..2].to_vec());
    drop(log);
    // The crash lost the end of segment 2 (its writeback was not done).
    let torn = dir.path().join(format!("{:020}.log", segs[2]));
    cut_end(&torn, 7);
    let (log, rec) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
    assert!(rec.truncated_bytes > 0, "{rec:?}");
    let kept: Vec<u64> = log.segments().iter().map(|s| s.base_offset).collect();
    assert_eq!(
        kept,
        segs[..3].to_vec(),
        "the segment after the torn one stays"
    );
    assert!(!dir.path().join(format!("{:020}.log", segs[3])).exists());
    // Whole batches before the tear survive, in order, and appends continue after them.
    let events = read_all(&log, 0);
    let next = log.next_offset();
    assert!(
        next < segs[3] && next > segs[2],
        "next {next}, segments {segs:?}"
    );
    assert_eq!(events.len() as u64, next);
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.0 == i as u64 && e.1 == i as u64 + 1));
    fill(&log, 1000, 3);
    assert_eq!(log.next_offset(), next + 3);
}

#[test]
fn a_torn_segment_older_than_the_one_before_the_newest_is_an_error_even_without_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with_segments(dir.path(), 4);
    let segs: Vec<u64> = log.segments().iter().map(|s| s.base_offset).collect();
    drop(log);
    let old = dir.path().join(format!("{:020}.log", segs[1]));
    cut_end(&old, 7);
    std::fs::remove_file(dir.path().join(format!("{:020}.index", segs[1]))).unwrap();
    let err = StreamLog::open(dir.path(), cfg(), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("corrupt"), "{err}");
}

/// Events with a record key and headers come back from the segment files with them, also
/// from sealed segments and after the log is reopened.
#[test]
fn keys_and_headers_survive_segments_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (0..40u64)
        .map(|i| {
            let e = Event::new("t", Priority::Medium, vec![i as u8; 20]).with_id(i + 1);
            if i % 2 == 0 {
                e
            } else {
                e.with_key(format!("k{i}"))
                    .with_header("h", Some(bytes::Bytes::from(vec![i as u8; 3])))
                    .with_header("null", None)
            }
        })
        .collect();
    {
        let (log, _) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
        for (i, pair) in events.chunks(2).enumerate() {
            let mut b = BytesMut::new();
            for e in pair {
                codec::put_event(&mut b, e);
            }
            log.append(pair.len() as u32, 1_000 + i as u64, &b).unwrap();
        }
        log.sync().unwrap();
    }
    let (log, _) = StreamLog::open(dir.path(), cfg(), 0).unwrap();
    assert!(log.segments().len() > 2, "the events span sealed segments");
    let mut got = Vec::new();
    let mut next = 0;
    while next < events.len() as u64 {
        for b in log.read(next, 700).unwrap().unwrap() {
            for (off, e) in b.events().unwrap() {
                if off >= next {
                    got.push(e);
                    next = off + 1;
                }
            }
        }
    }
    assert_eq!(got, events);
}
