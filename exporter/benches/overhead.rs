//! Pipeline throughput with the exporter running vs without (target: < 1 % difference).
//!
//! One engine (1 unpinned worker) and one producer publishing batches as fast as back-pressure
//! allows saturate this 2-core machine — the worst case for an exporter competing for CPU.
//! Rounds alternate A (no exporter) and B (exporter started for the round, default 250 ms
//! publish interval, plus a scraper fetching `/metrics` and `/api/v1/metrics/current` every
//! second — more often than Prometheus would), so drift in machine load hits both sides. Prints
//! one JSON line (also written to `target/artifacts/exporter-overhead.json`).
//!
//! The machine is shared and noisy, so it also reports the CPU the exporter's own threads used
//! (from `/proc/self/task`), which bounds its cost independently of other load.
//!
//! `cargo bench -p eventstream-exporter --bench overhead` (≈ 40 s). Environment:
//! `OVERHEAD_ROUNDS` (pairs, default 12), `OVERHEAD_ROUND_MS` (default 1500).

use eventstream_core::{Engine, Event, Priority};
use eventstream_exporter::{Exporter, ExporterConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn http_get(addr: SocketAddr, path: &str) {
    if let Ok(mut s) = TcpStream::connect(addr) {
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

/// Runs the producer for `round`; returns events processed per second during it.
fn round(engine: &Engine, processed: &AtomicU64, round: Duration) -> f64 {
    let publisher = engine.publisher();
    let payload = bytes::Bytes::from_static(&[b'x'; 64]);
    let mut batch = Vec::with_capacity(256);
    let start_count = processed.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut seq = 0u64;
    while start.elapsed() < round {
        for _ in 0..256 {
            seq += 1;
            let prio = if seq % 4 == 0 {
                Priority::High
            } else {
                Priority::Medium
            };
            batch.push(Event::new("orders", prio, payload.clone()));
        }
        let _ = publisher.publish_batch(&mut batch);
        batch.clear();
    }
    let elapsed = start.elapsed().as_secs_f64();
    (processed.load(Ordering::Relaxed) - start_count) as f64 / elapsed
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// CPU seconds used so far by the exporter's own threads (`es-exporter-*`): the first field
/// of `/proc/self/task/<tid>/schedstat` is on-CPU time in nanoseconds (tick-based `stat` times
/// are too coarse for a cost this small). Threads that already exited are not counted, so this
/// is sampled while the exporter runs.
fn exporter_cpu_seconds() -> f64 {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.starts_with("es-exporter") {
                let sched = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
                ns += sched
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns as f64 / 1e9
}

/// Runs one round with the exporter (and a scraper) running; returns (events/s, exporter CPU
/// seconds during the round).
fn round_with_exporter(engine: &Engine, processed: &AtomicU64, len: Duration) -> (f64, f64) {
    let exporter = Exporter::builder(
        ExporterConfig::listening_on("127.0.0.1:0".parse().unwrap()),
        engine.stats_handle(),
    )
    .start()
    .expect("exporter");
    let addr = exporter.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let scraper = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            http_get(addr, "/metrics");
            http_get(addr, "/api/v1/metrics/current");
            for _ in 0..20 {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let cpu0 = exporter_cpu_seconds();
    let eps = round(engine, processed, len);
    let cpu = exporter_cpu_seconds() - cpu0;
    stop.store(true, Ordering::Relaxed);
    scraper.join().unwrap();
    exporter.shutdown();
    (eps, cpu)
}

fn main() {
    // `cargo test --benches` runs this without `--bench`; keep that run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let pairs = if quick {
        1
    } else {
        env_u64("OVERHEAD_ROUNDS", 12)
    };
    let round_len = Duration::from_millis(if quick {
        200
    } else {
        env_u64("OVERHEAD_ROUND_MS", 1500)
    });
    let processed = Arc::new(AtomicU64::new(0));
    let counter = processed.clone();
    let engine = Engine::builder()
        .configure(|c| {
            c.pin_workers = false;
            c.workers = 1;
        })
        .on("orders", move |batch: &[Event]| {
            counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        })
        .start()
        .expect("engine");
    round(&engine, &processed, round_len / 2); // warm-up

    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut paired_pct = Vec::new();
    let mut cpu_seconds = 0.0;
    for i in 0..pairs {
        // Alternate the order inside each pair so a load trend does not favour one side.
        let (a, (b, cpu)) = if i % 2 == 0 {
            let a = round(&engine, &processed, round_len);
            (a, round_with_exporter(&engine, &processed, round_len))
        } else {
            let b = round_with_exporter(&engine, &processed, round_len);
            (round(&engine, &processed, round_len), b)
        };
        cpu_seconds += cpu;
        without.push(a);
        with.push(b);
        paired_pct.push((a - b) / a * 100.0);
    }
    engine.shutdown().expect("shutdown");

    let a = median(&mut without.clone());
    let b = median(&mut with.clone());
    let paired = median(&mut paired_pct.clone());
    let exporter_core_pct = cpu_seconds / (pairs as f64 * round_len.as_secs_f64()) * 100.0;
    let line = format!(
        "{{\"bench\":\"exporter_overhead\",\"pairs\":{pairs},\"round_ms\":{},\"without_eps_median\":{a:.0},\"with_eps_median\":{b:.0},\"overhead_pct_median_of_pairs\":{paired:.2},\"exporter_cpu_pct_of_one_core\":{exporter_core_pct:.3},\"paired_pct\":{paired_pct:.2?},\"target_pct\":1.0}}",
        round_len.as_millis()
    );
    println!("{line}");
    println!(
        "throughput without exporter {a:.0} ev/s, with {b:.0} ev/s; median paired difference {paired:.2} % (target < 1 %); \
         exporter threads used {exporter_core_pct:.3} % of one core"
    );
    if !quick {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join("exporter-overhead.json"), format!("{line}\n"));
        }
    }
}
