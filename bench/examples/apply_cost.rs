//! Fixed-work driver for `perf stat`: applies `EVENTS` events in batches of `BATCH` (args), so
//! instructions and cycles per event can be compared between builds on a busy machine.
use eventstream_core::{
    clock, Applier, DedupConfig, Dispatcher, Event, EventId, Priority, StatsHandle, Topic,
};
use std::sync::Arc;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().map_or(10_000_000, |a| a.parse().unwrap());
    let batch: usize = args.next().map_or(64, |a| a.parse().unwrap());
    let mut d = Dispatcher::new();
    d.on("bench", |_: &[Event]| Ok(()));
    let stats = StatsHandle::detached();
    let mut applier = Applier::new(
        DedupConfig::default(),
        Arc::new(d),
        stats.register("b"),
        Duration::from_millis(100),
    );
    let topic = Topic::new_inline("bench");
    let mut buf = Vec::with_capacity(batch);
    let mut id = 0u64;
    while id < events {
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
    }
    applier.flush();
    assert_eq!(stats.stats().processed, id);
}
