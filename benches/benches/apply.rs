//! The apply stage alone (dedup → dispatch → latency record), single-threaded: the worker-side
//! cost per batch and per event, for batches of 1 (what a lightly loaded worker sees) and 64.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventstream_core::{
    clock, Applier, DedupConfig, Dispatcher, Event, EventId, Priority, StatsHandle, Topic,
};
use std::sync::Arc;
use std::time::Duration;

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    for batch in [1usize, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch_{batch}"), |b| {
            let mut d = Dispatcher::new();
            d.on("bench", |_: &[Event]| Ok(()));
            let stats = StatsHandle::detached();
            let mut applier = Applier::new(
                DedupConfig::default(),
                Arc::new(d),
                stats.register("bench"),
                Duration::from_millis(100),
            );
            let topic = Topic::new_inline("bench");
            let mut id = 0u64;
            let mut buf = Vec::with_capacity(batch);
            b.iter(|| {
                let now = clock::now_ns();
                for _ in 0..batch {
                    id += 1;
                    buf.push(Event {
                        id: EventId(id),
                        topic: topic.clone(),
                        priority: Priority::High,
                        payload: bytes::Bytes::new(),
                        ingest_ns: now,
                    });
                }
                applier.apply(&mut buf);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
