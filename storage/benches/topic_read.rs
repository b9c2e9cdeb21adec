//! Reading one topic that is 1 % of the stream: through the segments' topic indexes
//! (`read_topic`) against reading every batch and keeping that topic's events (`read` +
//! filter). 200 000 events of 100-byte payloads in batches of 64, 4 MiB segments (all but the
//! newest sealed, so their topic indexes are read from `BASE.topics`), page cache warm.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventstream_core::{Event, Priority};
use eventstream_proto::codec;
use eventstream_storage::stream::{StreamConfig, StreamLog};
use std::hint::black_box;

const EVENTS: u64 = 200_000;
const BATCH: u64 = 64;

/// A log where about one event in a hundred is of topic "rare" (the rest "bulk"); returns how
/// many "rare" events it holds.
fn build(dir: &std::path::Path) -> (StreamLog, usize) {
    let cfg = StreamConfig {
        segment_bytes: 4 << 20,
        ..StreamConfig::default()
    };
    let (log, _) = StreamLog::open(dir, cfg, 0).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut rare = 0;
    for b in 0..EVENTS / BATCH {
        let mut buf = BytesMut::new();
        for i in 0..BATCH {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let topic = if rng % 100 == 0 { "rare" } else { "bulk" };
            rare += usize::from(topic == "rare");
            let e = Event::new(topic, Priority::Medium, vec![7u8; 100]).with_id(b * BATCH + i);
            codec::put_event(&mut buf, &e);
        }
        log.append(BATCH as u32, 1_000 + b, &buf).unwrap();
    }
    log.sync().unwrap();
    (log, rare)
}

fn by_index(log: &StreamLog) -> usize {
    let mut n = 0;
    let mut next = log.first_offset();
    while next < log.next_offset() {
        let r = log
            .read_topic("rare", next, 1_000, 1 << 20)
            .unwrap()
            .unwrap();
        n += r.events.len();
        next = r.next;
    }
    n
}

fn by_scan(log: &StreamLog) -> usize {
    let mut n = 0;
    let mut next = log.first_offset();
    while next < log.next_offset() {
        let batches = log.read(next, 1 << 20).unwrap().unwrap();
        for b in batches {
            for (off, e) in b.events().unwrap() {
                if off >= next && e.topic == "rare" {
                    n += 1;
                }
            }
            next = b.next_offset();
        }
    }
    n
}

fn topic_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (log, rare) = build(dir.path());
    assert_eq!(by_index(&log), rare);
    assert_eq!(by_scan(&log), rare);
    let mut g = c.benchmark_group("topic_read_1pct");
    g.throughput(Throughput::Elements(rare as u64));
    g.bench_function("read_topic", |b| b.iter(|| black_box(by_index(&log))));
    g.bench_function("read_and_filter", |b| b.iter(|| black_box(by_scan(&log))));
    g.finish();
}

criterion_group!(benches, topic_read);
criterion_main!(benches);
