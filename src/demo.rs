//! `eventstream demo`: the embedded engine with synthetic producers at a moderate rate, mixed
//! priorities and a sprinkling of retried (duplicate) ids, and a one-line summary per second.

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use eventstream_core::{Engine, Event, Priority, Stats, Tier};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Offered events per second over all producers.
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    /// Producer threads.
    #[arg(long, default_value_t = 2)]
    producers: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// HTTP address for /metrics, the JSON API and the status page.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: std::net::SocketAddr,
}

const TOPICS: [&str; 3] = ["orders", "payments", "clicks"];

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.producers >= 1, "--producers must be at least 1");
    anyhow::ensure!(
        (1..=50_000_000).contains(&args.rate),
        "--rate must be 1 to 50000000"
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    let mut builder = Engine::builder().configure(|c| c.workers = args.workers);
    for topic in TOPICS {
        builder = builder.on(topic, |batch: &[Event]| {
            // A handler that looks at every payload, like a real one would.
            let bytes: usize = batch.iter().map(|e| e.payload.len()).sum();
            std::hint::black_box(bytes);
            Ok(())
        });
    }
    let engine = builder.start().context("starting the engine")?;
    let exporter = eventstream_exporter::Exporter::builder(
        eventstream_exporter::ExporterConfig::listening_on(args.http),
        engine.stats_handle(),
    )
    .start()
    .context("starting the HTTP exporter")?;
    println!(
        "eventstream demo: {} producers at {} events/s total, {} worker(s); Ctrl-C to stop",
        args.producers, args.rate, args.workers
    );
    for (what, url) in exporter.urls() {
        println!("  {what:<24} {url}");
    }

    let mut producers = Vec::new();
    for p in 0..args.producers {
        let publisher = engine.publisher();
        let stop = stop.clone();
        let rate = (args.rate / args.producers as u64).max(1);
        producers.push(std::thread::spawn(move || {
            // 1 ms ticks: publish the events due in each tick as one batch.
            let per_tick = (rate as f64 / 1000.0).max(1.0);
            let mut owed = 0.0;
            let mut seq: u64 = 0;
            let mut recent: Vec<u64> = Vec::with_capacity(64);
            let payload = Bytes::from(vec![b'x'; 100]);
            let mut buf = Vec::new();
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                owed += per_tick;
                let n = owed as u64;
                owed -= n as f64;
                for _ in 0..n {
                    seq = seq.wrapping_add(1);
                    // Deterministic mix: 5 % critical, 15 % high, 50 % medium, 30 % low.
                    let priority = match seq % 20 {
                        0 => Priority::Critical,
                        1..=3 => Priority::High,
                        4..=13 => Priority::Medium,
                        _ => Priority::Low,
                    };
                    // 1 in 50 is a producer retry of a recent id: dedup must catch it.
                    let id = if seq % 50 == 0 && !recent.is_empty() {
                        recent[(seq as usize / 50) % recent.len()]
                    } else {
                        ((p as u64) << 56) | seq
                    };
                    if recent.len() < 64 {
                        recent.push(id);
                    } else {
                        recent[(seq % 64) as usize] = id;
                    }
                    buf.push(
                        Event::new(TOPICS[(seq % 3) as usize], priority, payload.clone())
                            .with_id(id),
                    );
                }
                let _ = publisher.publish_batch(&mut buf);
                next += Duration::from_millis(1);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else if now - next > Duration::from_millis(100) {
                    next = now; // fell far behind (machine busy): do not burst to catch up
                }
            }
        }));
    }

    let started = Instant::now();
    let stats = engine.stats_handle();
    let mut prev = stats.stats();
    let mut prev_hist = stats.latency_histogram();
    let mut tick = Instant::now();
    loop {
        tick += Duration::from_secs(1);
        while Instant::now() < tick {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = stats.stats();
        let hist = stats.latency_histogram();
        println!(
            "{}",
            summary_line(started.elapsed(), &prev, &now, &prev_hist, &hist)
        );
        prev = now;
        prev_hist = hist;
        if let Some(d) = args.duration {
            if started.elapsed() >= Duration::from_secs(d) {
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
    for p in producers {
        let _ = p.join();
    }
    let fin = engine.shutdown().context("shutting down")?;
    exporter.shutdown();
    println!(
        "shutdown: received {}  processed {}  dedup hits {}  dropped {}  handler panics {}",
        fin.received,
        fin.processed,
        fin.dedup_hits,
        fin.dropped.total(),
        fin.handler_panics
    );
    Ok(())
}

fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}ns"),
        10_000..=9_999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        _ => format!("{:.1}ms", ns as f64 / 1e6),
    }
}

fn summary_line(
    elapsed: Duration,
    prev: &Stats,
    now: &Stats,
    prev_hist: &eventstream_core::hdrhistogram::Histogram<u64>,
    hist: &eventstream_core::hdrhistogram::Histogram<u64>,
) -> String {
    let secs = (now.uptime.as_secs_f64() - prev.uptime.as_secs_f64()).max(1e-3);
    let rate = (now.processed - prev.processed) as f64 / secs;
    // Latency of this interval only: the cumulative histogram minus the previous one.
    let mut interval = hist.clone();
    let _ = interval.subtract(prev_hist);
    let (p50, p99) = if interval.is_empty() {
        (0, 0)
    } else {
        (
            interval.value_at_quantile(0.5),
            interval.value_at_quantile(0.99),
        )
    };
    let fill = |t: Tier| {
        let s = now.tier(t);
        100.0 * s.depth as f64 / s.capacity.max(1) as f64
    };
    format!(
        "t={:>4}s  events/s={:>9.0}  p50={:>7} p99={:>7}  fill realtime={:>5.1}% transactional={:>5.1}% batch={:>5.1}%  drops={}  dedup_hits={}",
        elapsed.as_secs(),
        rate,
        fmt_ns(p50),
        fmt_ns(p99),
        fill(Tier::Realtime),
        fill(Tier::Transactional),
        fill(Tier::Batch),
        now.dropped.total(),
        now.dedup_hits
    )
}
