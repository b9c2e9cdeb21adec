//! Reading one topic through the segments' topic indexes against a simple model (every event
//! with its offset and topic): appends over a few topics, random segment sizes, reads from
//! random offsets with random limits, retention, truncation, and reopening with the topic
//! files present, deleted or corrupted.

use bytes::BytesMut;
use eventstream_core::{Event, Priority};
use eventstream_proto::codec;
use eventstream_storage::stream::{RetentionPolicy, StreamConfig, StreamLog};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

const TOPICS: [&str; 3] = ["orders", "rare", "clicks"];

/// The model: `(offset, topic, id)` of every retained event.
type Model = Vec<(u64, &'static str, u64)>;

fn encode(events: &[(&str, u64)]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for (t, id) in events {
        codec::put_event(
            &mut b,
            &Event::new(*t, Priority::Medium, vec![*id as u8; (*id % 13) as usize]).with_id(*id),
        );
    }
    b.to_vec()
}

/// Every event of `topic` from `from` on, paging with the given limits; checks each page
/// moves forward.
fn read_topic_all(
    log: &StreamLog,
    topic: &str,
    from: u64,
    max_events: usize,
    max_bytes: usize,
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.next_offset() {
        let r = log
            .read_topic(topic, next, max_events, max_bytes)
            .unwrap()
            .unwrap();
        assert!(r.events.len() <= max_events);
        assert!(
            r.next > next || !r.events.is_empty(),
            "no progress at {next}"
        );
        for e in &r.events {
            assert!(e.offset >= next && e.offset < r.next);
            assert_eq!(e.event.topic, topic);
            out.push((e.offset, e.event.id.0));
        }
        next = r.next;
    }
    out
}

fn model_topic(m: &Model, topic: &str, from: u64) -> Vec<(u64, u64)> {
    m.iter()
        .filter(|(o, t, _)| *t == topic && *o >= from)
        .map(|(o, _, id)| (*o, *id))
        .collect()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn base_of(p: &Path) -> u64 {
    p.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Every topic file belongs to a segment the log holds.
fn no_orphan_topic_files(log: &StreamLog) {
    let bases: Vec<u64> = log.segments().iter().map(|s| s.base_offset).collect();
    for p in files(log.dir(), "topics") {
        assert!(
            bases.contains(&base_of(&p)),
            "{} outlived its segment",
            p.display()
        );
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Events whose topics are picked by the bytes (mod the topic count, "rare" seldom).
    Append(Vec<u8>),
    Read {
        topic: usize,
        from_frac: f64,
        max_events: usize,
        max_bytes: usize,
    },
    Retain(u64),
    Truncate(f64),
    /// 0 = keep the topic files, 1 = delete them, 2 = flip a byte in each; then reopen
    /// (checkpointed first when `clean`).
    Reopen {
        files: u8,
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 1..12).prop_map(Op::Append),
        3 => (0..3usize, 0.0..1.0f64, 1..8usize, 1..400usize).prop_map(
            |(topic, from_frac, max_events, max_bytes)| Op::Read { topic, from_frac, max_events, max_bytes }
        ),
        1 => (5..60u64).prop_map(Op::Retain),
        1 => (0.0..1.0f64).prop_map(Op::Truncate),
        1 => (0..3u8, any::<bool>()).prop_map(|(files, clean)| Op::Reopen { files, clean }),
    ]
}

fn pick(b: u8) -> &'static str {
    match b % 16 {
        0 => "rare",
        x if x % 2 == 0 => "orders",
        _ => "clicks",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn reading_a_topic_equals_filtering_the_model(
        segment_bytes in 200..2_000u64,
        ops in proptest::collection::vec(op(), 1..50),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StreamConfig { segment_bytes, index_interval_bytes: 120, ..StreamConfig::default() };
        let (mut log, _) = StreamLog::open(dir.path(), cfg, 0).unwrap();
        let mut model: Model = Vec::new();
        // Batch boundaries, for truncation.
        let mut bounds: Vec<u64> = vec![0];
        let mut next_id = 1u64;
        for op in ops {
            match op {
                Op::Append(picks) => {
                    let evs: Vec<(&'static str, u64)> = picks
                        .iter()
                        .map(|b| { next_id += 1; (pick(*b), next_id) })
                        .collect();
                    let base = log.next_offset();
                    log.append(evs.len() as u32, 1_000 + base, &encode(&evs)).unwrap();
                    for (i, (t, id)) in evs.iter().enumerate() {
                        model.push((base + i as u64, t, *id));
                    }
                    bounds.push(log.next_offset());
                }
                Op::Read { topic, from_frac, max_events, max_bytes } => {
                    let first = log.first_offset();
                    let span = log.next_offset() - first;
                    let from = first + (span as f64 * from_frac) as u64;
                    let t = TOPICS[topic];
                    prop_assert_eq!(
                        read_topic_all(&log, t, from, max_events, max_bytes),
                        model_topic(&model, t, from)
                    );
                    if first > 0 {
                        let c = log.read_topic(t, first - 1, 10, 1000).unwrap().unwrap_err();
                        prop_assert_eq!(c.earliest, first);
                    }
                }
                Op::Retain(max_events) => {
                    log.retain(RetentionPolicy { max_events, ..RetentionPolicy::default() }, 0).unwrap();
                    let first = log.first_offset();
                    model.retain(|(o, _, _)| *o >= first);
                    no_orphan_topic_files(&log);
                }
                Op::Truncate(frac) => {
                    let first = log.first_offset();
                    let cands: Vec<u64> = bounds.iter().copied().filter(|b| *b >= first).collect();
                    let to = cands[((cands.len() - 1) as f64 * frac) as usize];
                    log.truncate_to(to).unwrap();
                    model.retain(|(o, _, _)| *o < to);
                    bounds.retain(|b| *b <= to);
                    no_orphan_topic_files(&log);
                }
                Op::Reopen { files: how, clean } => {
                    if clean {
                        log.checkpoint().unwrap();
                    }
                    let first = log.first_offset();
                    drop(log);
                    for p in files(dir.path(), "topics") {
                        match how {
                            1 => std::fs::remove_file(&p).unwrap(),
                            2 => {
                                let mut b = std::fs::read(&p).unwrap();
                                let i = b.len() / 2;
                                b[i] ^= 0x40;
                                std::fs::write(&p, b).unwrap();
                            }
                            _ => {}
                        }
                    }
                    log = StreamLog::open(dir.path(), cfg, 0).unwrap().0;
                    prop_assert_eq!(log.first_offset(), first);
                }
            }
            // The topic list agrees with the model.
            let listed: Vec<(String, u64, u64, u64)> = log
                .topics()
                .unwrap()
                .into_iter()
                .map(|t| (t.name.to_string(), t.events, t.first_offset, t.last_offset))
                .collect();
            let mut expected = Vec::new();
            for t in { let mut ts = TOPICS; ts.sort(); ts } {
                let evs = model_topic(&model, t, 0);
                if let (Some(f), Some(l)) = (evs.first(), evs.last()) {
                    expected.push((t.to_string(), evs.len() as u64, f.0, l.0));
                }
            }
            prop_assert_eq!(listed, expected);
        }
        let first = log.first_offset();
        for t in TOPICS {
            prop_assert_eq!(read_topic_all(&log, t, first, 5, 300), model_topic(&model, t, 0));
        }
    }
}

/// A log of `segments` sealed segments plus the newest, events of "a" and "b" alternating.
fn sealed_log(dir: &Path, segments: usize) -> StreamLog {
    let cfg = StreamConfig {
        segment_bytes: 400,
        ..StreamConfig::default()
    };
    let (log, _) = StreamLog::open(dir, cfg, 0).unwrap();
    let mut id = 0;
    while log.segments().len() <= segments {
        id += 2;
        log.append(2, 5, &encode(&[("a", id), ("b", id + 1)]))
            .unwrap();
    }
    log.sync().unwrap();
    log
}

#[test]
fn a_sealed_segment_writes_its_topic_file_and_a_corrupt_one_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = sealed_log(dir.path(), 3);
    let sealed: Vec<u64> = log
        .segments()
        .iter()
        .rev()
        .skip(1)
        .map(|s| s.base_offset)
        .collect();
    let with_file: Vec<u64> = files(dir.path(), "topics")
        .iter()
        .map(|p| base_of(p))
        .collect();
    // Every sealed segment has its file; the newest keeps its index in memory only.
    let mut expect = sealed.clone();
    expect.sort();
    assert_eq!(with_file, expect);
    let want: Vec<u64> = read_topic_all(&log, "b", 0, 1000, 1 << 20)
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        want,
        (0..log.next_offset())
            .filter(|o| o % 2 == 1)
            .collect::<Vec<_>>()
    );

    // A file with the wrong contents under a valid-looking name is detected and rewritten.
    let victim = topic_file(dir.path(), expect[1]);
    let good = std::fs::read(&victim).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0xff;
    std::fs::write(&victim, &bad).unwrap();
    drop(log);
    let cfg = StreamConfig {
        segment_bytes: 400,
        ..StreamConfig::default()
    };
    let (log, _) = StreamLog::open(dir.path(), cfg, 0).unwrap();
    let again: Vec<u64> = read_topic_all(&log, "b", 0, 1000, 1 << 20)
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(again, want);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        good,
        "rebuilt as written at the seal"
    );

    // Missing: rebuilt on the first read of the segment.
    std::fs::remove_file(&victim).unwrap();
    drop(log);
    let (log, _) = StreamLog::open(dir.path(), cfg, 0).unwrap();
    let s = log.segments()[1].clone();
    let got = log
        .read_topic("a", s.base_offset, 1000, 1 << 20)
        .unwrap()
        .unwrap();
    assert_eq!(got.events.first().map(|e| e.offset), Some(s.base_offset));
    assert_eq!(std::fs::read(&victim).unwrap(), good);
}

fn topic_file(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.topics"))
}

#[test]
fn a_topic_absent_from_a_long_range_is_skipped_in_one_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = sealed_log(dir.path(), 4);
    let end = log.next_offset();
    log.append(1, 9, &encode(&[("late", 1)])).unwrap();
    let r = log.read_topic("late", 0, 10, 1 << 20).unwrap().unwrap();
    assert_eq!(r.events.iter().map(|e| e.offset).collect::<Vec<_>>(), [end]);
    assert_eq!(r.next, end + 1);
    let none = log.read_topic("never", 0, 10, 1 << 20).unwrap().unwrap();
    assert_eq!((none.events.len(), none.next), (0, end + 1));
    // The stream time of the batch comes with each event.
    assert_eq!(r.events[0].timestamp_ms, 9);
}

#[test]
fn memory_is_the_active_index_and_a_bounded_directory_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StreamConfig {
        segment_bytes: 400,
        topic_cache_bytes: 1_000,
        ..StreamConfig::default()
    };
    let (log, _) = StreamLog::open(dir.path(), cfg, 0).unwrap();
    for id in 0..2_000u64 {
        let t = ["a", "b", "c", "d"][(id % 4) as usize];
        log.append(1, 5, &encode(&[(t, id)])).unwrap();
    }
    log.sync().unwrap();
    assert!(log.segments().len() > 50);
    assert_eq!(read_topic_all(&log, "c", 0, 100, 1 << 20).len(), 500);
    assert_eq!(log.topics().unwrap().len(), 4);
    // The newest segment's index (a run per event it holds at most, and a summary per topic,
    // well under twice the segment's bytes) plus the cache's limit, however many segments.
    assert!(
        log.topic_index_memory_bytes() <= 1_000 + 2 * 400,
        "{} bytes",
        log.topic_index_memory_bytes()
    );
}

#[test]
fn a_reader_paging_while_events_are_appended_sees_each_event_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StreamConfig {
        segment_bytes: 500,
        ..StreamConfig::default()
    };
    let log = std::sync::Arc::new(StreamLog::open(dir.path(), cfg, 0).unwrap().0);
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for id in 0..3_000u64 {
                let t = if id % 3 == 0 { "x" } else { "y" };
                log.append(1, 5, &encode(&[(t, id)])).unwrap();
            }
        })
    };
    let mut got = Vec::new();
    let mut next = 0;
    while !writer.is_finished() || next < log.next_offset() {
        let r = log.read_topic("x", next, 7, 1 << 20).unwrap().unwrap();
        for e in &r.events {
            assert!(
                e.offset >= next && e.offset < r.next,
                "{} after {next}",
                e.offset
            );
            got.push(e.event.id.0);
        }
        next = r.next;
    }
    writer.join().unwrap();
    assert_eq!(got, (0..3_000).step_by(3).collect::<Vec<u64>>());
}
