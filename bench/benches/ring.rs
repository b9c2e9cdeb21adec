//! The tier ring on its own: one thread push+pop (the cost of the operations), and 1 or 2
//! producer threads against one consumer thread (the cost under cross-core traffic).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use eventstream_core::Ring;
use std::time::{Duration, Instant};

const N: u64 = 1 << 20;

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/single_thread");
    g.throughput(Throughput::Elements(1024));
    g.bench_function("push_pop_1024_one_by_one", |b| {
        let (ring, mut consumer) = Ring::<u64>::with_capacity(1024);
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            for i in 0..1024 {
                let _ = ring.push(i);
            }
            out.clear();
            consumer.pop_batch(&mut out, 1024);
            std::hint::black_box(&out);
        })
    });
    g.bench_function("push_pop_1024_batch_64", |b| {
        let (ring, mut consumer) = Ring::<u64>::with_capacity(1024);
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            for chunk in 0..16u64 {
                let mut v = chunk * 64;
                let _ = ring.push_with(64, || {
                    v += 1;
                    v
                });
            }
            out.clear();
            consumer.pop_batch(&mut out, 1024);
            std::hint::black_box(&out);
        })
    });
    g.finish();
}

/// `producers` threads push N values in total (singly or in batches of `batch`); the calling
/// thread drains them in batches of 256. Returns the elapsed time.
fn run_threads(producers: u64, batch: usize) -> Duration {
    let (ring, mut consumer) = Ring::<u64>::with_capacity(16_384);
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|_| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let mut sent = 0;
                let per = N / producers;
                while sent < per {
                    if batch == 1 {
                        if ring.push(sent).is_ok() {
                            sent += 1;
                        } else {
                            std::hint::spin_loop();
                        }
                    } else {
                        let want = ((per - sent) as usize).min(batch);
                        let mut v = sent;
                        let n = ring
                            .push_with(want, || {
                                v += 1;
                                v
                            })
                            .unwrap_or(0);
                        sent += n as u64;
                        if n == 0 {
                            std::hint::spin_loop();
                        }
                    }
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(256);
    let mut got = 0;
    while got < N / producers * producers {
        out.clear();
        got += consumer.pop_batch(&mut out, 256) as u64;
    }
    let elapsed = start.elapsed();
    for h in handles {
        h.join().unwrap();
    }
    elapsed
}

fn threaded(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/threads");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    for producers in [1u64, 2] {
        for batch in [1usize, 64] {
            g.bench_with_input(
                BenchmarkId::new(format!("{producers}_producer_batch_{batch}"), N),
                &(producers, batch),
                |b, &(p, batch)| {
                    b.iter_custom(|iters| (0..iters).map(|_| run_threads(p, batch)).sum())
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, single_thread, threaded);
criterion_main!(benches);
