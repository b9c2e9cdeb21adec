//! Fixed-work driver for `perf stat`: applies `EVENTS` events in batches of `BATCH` (args), so
//! instructions and cycles per event can be compared between builds on a busy machine.
use eventstream_bench::apply::ApplyLoop;

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().map_or(10_000_000, |a| a.parse().unwrap());
    let batch: usize = args.next().map_or(64, |a| a.parse().unwrap());
    let mut apply = ApplyLoop::new(batch);
    while apply.events() < events {
        apply.apply_batch();
    }
    assert_eq!(apply.processed(), apply.events());
}
