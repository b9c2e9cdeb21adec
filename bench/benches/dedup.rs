//! The dedup window with the default window of 65 536 ids, full: a fresh id (insert + evict the
//! oldest) and a duplicate (lookup only), one `check` at a time; then batches of 64 fresh ids,
//! checked one by one (`check`) and with `check_batch` (which prefetches ahead).
//!
//! Ids come two ways: consecutive, as the engine hands them out (each publisher takes blocks of
//! 4096), and scattered (a 64-bit mixer: ids chosen by clients, with no pattern).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventstream_core::{DedupConfig, DedupWindow};

/// SplitMix64's finaliser: a bijection on u64, so scattered ids never repeat.
fn scatter(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn full_window(id_of: fn(u64) -> u64, next: &mut u64) -> DedupWindow {
    let mut w = DedupWindow::new(DedupConfig::default());
    for _ in 0..DedupConfig::default().window {
        *next += 1;
        w.check(id_of(*next), 0);
    }
    w
}

fn dedup(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(1));
    for (name, id_of) in [
        ("consecutive", (|n| n) as fn(u64) -> u64),
        ("scattered", scatter as fn(u64) -> u64),
    ] {
        g.bench_function(format!("fresh_id_full_window/{name}"), |b| {
            let mut n = 0u64;
            let mut w = full_window(id_of, &mut n);
            b.iter(|| {
                n += 1;
                std::hint::black_box(w.check(id_of(n), 0))
            })
        });
    }
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

    const BATCH: usize = 64;
    let mut g = c.benchmark_group("dedup_batch_64");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, id_of) in [
        ("consecutive", (|n| n) as fn(u64) -> u64),
        ("scattered", scatter as fn(u64) -> u64),
    ] {
        g.bench_function(format!("check/{name}"), |b| {
            let mut n = 0u64;
            let mut w = full_window(id_of, &mut n);
            let mut ids = [0u64; BATCH];
            b.iter(|| {
                for id in ids.iter_mut() {
                    n += 1;
                    *id = id_of(n);
                }
                for &id in &ids {
                    std::hint::black_box(w.check(id, 0));
                }
            })
        });
        g.bench_function(format!("check_batch/{name}"), |b| {
            let mut n = 0u64;
            let mut w = full_window(id_of, &mut n);
            let mut ids = [0u64; BATCH];
            let mut out = Vec::with_capacity(BATCH);
            b.iter(|| {
                for id in ids.iter_mut() {
                    n += 1;
                    *id = id_of(n);
                }
                w.check_batch(&ids, |&id| (id, 0), &mut out);
                std::hint::black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, dedup);
criterion_main!(benches);
