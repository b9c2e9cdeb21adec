//! `/metrics` render cost with every series present: engine (a real engine with a populated
//! latency histogram), process, HTTP (every route with several statuses) and cluster (a fake
//! `ReplicationSource` leading a 4-member cluster).
//!
//! * `render/render_prometheus` — what the `/metrics` handler does per scrape.
//! * `render/publish` — one snapshot → recorder update (runs every publish interval, off the
//!   request path).
//! * `render/http_get_metrics` — a whole `GET /metrics` over loopback TCP.
//!
//! Criterion reports means; the target is a p99 (≤ 2 ms), so after the criterion groups a
//! plain loop times 2 000 individual renders into an HDR histogram and prints p50/p99/max, and
//! writes them to `target/artifacts/render-bench.json`.

#[path = "../tests/common/fake_cluster.rs"]
mod fake_cluster;

use criterion::{criterion_group, Criterion};
use eventstream_core::{Engine, Event, Priority};
use eventstream_exporter::{Exporter, ExporterConfig, ExporterHandle};
use fake_cluster::FakeCluster;
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Fixture {
    _engine: Engine,
    exporter: ExporterHandle,
}

fn http_get(addr: SocketAddr, path: &str, method: &str) -> usize {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("write");
    let mut buf = Vec::with_capacity(64 * 1024);
    s.read_to_end(&mut buf).expect("read");
    buf.len()
}

fn fixture() -> Fixture {
    let engine = Engine::builder()
        .configure(|c| {
            c.pin_workers = false;
            c.workers = 2;
        })
        .on_any(|_: &[Event]| Ok(()))
        .start()
        .expect("engine");
    // Populate every counter and a latency histogram spread over many buckets.
    let publisher = engine.publisher();
    for i in 0..200_000u64 {
        let prio = Priority::ALL[(i % 4) as usize];
        let id = if i % 10 == 0 { i } else { i + 1 };
        let _ = publisher.publish(Event::new("orders", prio, &b"{}"[..]).with_id(id));
        if i % 20_000 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let exporter = Exporter::builder(
        ExporterConfig {
            publish_interval: Duration::from_secs(60), // the bench publishes explicitly
            ..ExporterConfig::listening_on("127.0.0.1:0".parse().unwrap())
        },
        engine.stats_handle(),
    )
    .replication(Arc::new(FakeCluster::leader()))
    .start()
    .expect("exporter");
    let addr = exporter.local_addr();
    for path in eventstream_exporter::ROUTES {
        http_get(addr, path, "GET");
        http_get(addr, path, "POST");
    }
    http_get(addr, "/unknown", "GET");
    exporter.telemetry().publish();
    let text = exporter.telemetry().render_prometheus();
    for must in [
        "eventstream_event_latency_seconds_bucket",
        "eventstream_raft_fsync_duration_seconds_bucket",
        "eventstream_raft_replication_lag_entries",
        "eventstream_http_request_duration_seconds_bucket",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(must), "fixture lacks {must}");
    }
    eprintln!(
        "fixture: /metrics is {} bytes, {} sample lines",
        text.len(),
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count()
    );
    Fixture {
        _engine: engine,
        exporter,
    }
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let t = f.exporter.telemetry().clone();
    let addr = f.exporter.local_addr();
    let mut g = c.benchmark_group("render");
    g.bench_function("render_prometheus", |b| {
        b.iter(|| black_box(t.render_prometheus()))
    });
    g.bench_function("publish", |b| b.iter(|| t.publish()));
    g.bench_function("http_get_metrics", |b| {
        b.iter(|| black_box(http_get(addr, "/metrics", "GET")))
    });
    g.finish();
    render_percentiles(&f);
}

fn render_percentiles(f: &Fixture) {
    let t = f.exporter.telemetry();
    let mut h =
        eventstream_core::hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)
            .expect("bounds");
    for _ in 0..200 {
        black_box(t.render_prometheus()); // warm-up
    }
    for i in 0..2_000 {
        if i % 250 == 0 {
            t.publish(); // fresh snapshots, as in production
        }
        let start = Instant::now();
        black_box(t.render_prometheus());
        h.record(start.elapsed().as_nanos() as u64)
            .expect("in range");
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    let line = format!(
        "{{\"bench\":\"exporter_render\",\"renders\":{},\"p50_ms\":{:.4},\"p99_ms\":{:.4},\"p999_ms\":{:.4},\"max_ms\":{:.4},\"target_p99_ms\":2.0}}",
        h.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1e6
    );
    println!("{line}");
    println!(
        "render p99 {:.3} ms vs target 2 ms: {}",
        ms(0.99),
        if ms(0.99) <= 2.0 { "MET" } else { "MISSED" }
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("render-bench.json"), format!("{line}\n"));
    }
}

criterion_group! {
    name = render;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}

fn main() {
    render();
    Criterion::default().configure_from_args().final_summary();
}
