//! The dedup window: a fresh id (insert + evict the oldest) and a duplicate (lookup only), with
//! the default window of 65 536 ids, full.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventstream_core::{DedupConfig, DedupWindow};

fn dedup(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fresh_id_full_window", |b| {
        let mut w = DedupWindow::new(DedupConfig::default());
        let mut id = 0u64;
        for _ in 0..DedupConfig::default().window {
            id += 1;
            w.check(id, 0);
        }
        b.iter(|| {
            id += 1;
            std::hint::black_box(w.check(id, 0))
        })
    });
    g.bench_function("duplicate_id_full_window", |b| {
        let mut w = DedupWindow::new(DedupConfig::default());
        for id in 1..=DedupConfig::default().window as u64 {
            w.check(id, 0);
        }
        let mut id = 0u64;
        b.iter(|| {
            id = id % 60_000 + 1;
            std::hint::black_box(w.check(id + 5_000, 0))
        })
    });
    g.finish();
}

criterion_group!(benches, dedup);
criterion_main!(benches);
