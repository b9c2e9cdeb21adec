//! Recording one latency sample, as every dispatched event does, and reading the engine clock.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventstream_core::{clock, new_latency_histogram};

fn histogram(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram");
    g.throughput(Throughput::Elements(1));
    g.bench_function("record_latency", |b| {
        let mut h = new_latency_histogram();
        let mut v = 1u64;
        b.iter(|| {
            v = (v * 7 + 13) % 100_000 + 1;
            h.saturating_record(std::hint::black_box(v));
        })
    });
    g.bench_function("engine_clock_now_ns", |b| b.iter(clock::now_ns));
    g.bench_function("std_instant_now", |b| b.iter(std::time::Instant::now));
    g.finish();
}

criterion_group!(benches, histogram);
criterion_main!(benches);
