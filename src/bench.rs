//! `eventstream bench pipeline`: end-to-end publish → ring → worker → dedup → dispatch, closed
//! loop (as fast as possible) or open loop (`--rate`, latency measured from each event's
//! intended send time, so it is corrected for coordinated omission). `--compare` runs the same
//! work built plainly on crossbeam-channel in the same process, right after, for a ratio.

use crate::hiccups::{GapMeter, GapReport};
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use eventstream_core::{
    clock, new_latency_histogram, DedupConfig, DedupWindow, Engine, Event, EventId, IdleStrategy,
    LatencySummary, Priority,
};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// End-to-end pipeline throughput and latency of the embedded engine.
    Pipeline(PipelineArgs),
    /// Replicated publish throughput and commit latency (in-process cluster or --endpoints).
    Replication(crate::cluster_cmd::ReplicationBenchArgs),
    /// kill -9 the leader of a 3-process cluster repeatedly; failover time and lost acks.
    Failover(crate::cluster_cmd::FailoverBenchArgs),
    /// SIGTERM (graceful restart) the leader of a 3-process cluster repeatedly; longest gap
    /// between acknowledged writes around each restart.
    Restart(crate::cluster_cmd::RestartBenchArgs),
    /// Producers at 2x the cluster's capacity: back-pressure, RSS, exact accounting.
    Overload(eventstream_cluster::overload::OverloadBenchArgs),
    /// The machine's own floor under tail latency: time taken from a pinned spinning thread.
    Hiccups(crate::hiccups::HiccupArgs),
}

#[derive(Debug, Args, Clone)]
pub struct PipelineArgs {
    /// Events to publish in total.
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// Producer threads.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Worker threads (one lane each).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Payload size in bytes (a static buffer: payload creation is not what is measured).
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Offered rate in events/s over all producers (open loop); 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Events per producer publish call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Worker idle strategy: `park` (the default: spin, then yield, then park) or `spin`.
    #[arg(long, default_value = "park")]
    idle: String,
    /// Do not pin workers and producers to cores.
    #[arg(long)]
    no_pin: bool,
    /// Disable dedup (it is on by default, as in production).
    #[arg(long)]
    no_dedup: bool,
    /// Also run the same work on crossbeam-channel and report the ratio.
    #[arg(long)]
    compare: bool,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PipelineReport {
    events: u64,
    producers: usize,
    workers: usize,
    payload_bytes: usize,
    batch: usize,
    offered_rate: u64,
    seconds: f64,
    events_per_sec: f64,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    latency_samples: u64,
    dropped: u64,
    dedup_hits: u64,
    processed: u64,
    /// Batches the workers handed to their stage: `processed / worker_batches` is the mean
    /// batch, which shows how close the worker is to saturation (1 = it keeps up event by event).
    worker_batches: u64,
    /// Open loop only: time the producers were not running (gaps of more than 5 µs between
    /// two clock reads of their schedule loop; see `bench hiccups`). Events due during a stall
    /// wait for it, so a p99 below the typical stall needs stalls under 1 % of the time.
    #[serde(skip_serializing_if = "Option::is_none")]
    producer_stalls: Option<GapReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_crossbeam: Option<BaselineReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speedup_vs_crossbeam: Option<f64>,
}

#[derive(Debug, Serialize)]
struct BaselineReport {
    seconds: f64,
    events_per_sec: f64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
}

static PAYLOAD: [u8; 65_536] = [0x5a; 65_536];

/// A gap longer than this in the open-loop producer's schedule loop (one iteration is well
/// under 1 µs, a publish of a full batch a few µs) is time it was not running.
const STALL_THRESHOLD_NS: u64 = 5_000;

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Pipeline(args) => pipeline(args),
        BenchCommand::Hiccups(args) => crate::hiccups::run(args),
        BenchCommand::Replication(args) => crate::cluster_cmd::bench_replication(args),
        BenchCommand::Failover(args) => crate::cluster_cmd::bench_failover(args),
        BenchCommand::Restart(args) => crate::cluster_cmd::bench_restart(args),
        BenchCommand::Overload(args) => {
            let r = eventstream_cluster::overload::run(&args)?;
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eventstream_cluster::overload::print(&r);
            }
            if !r.valid {
                anyhow::bail!("overload checks failed (see the report)");
            }
            Ok(())
        }
    }
}

fn validate(args: &PipelineArgs) -> anyhow::Result<()> {
    if args.events == 0 {
        bail!("--events must be at least 1");
    }
    if args.producers == 0 || args.producers > 64 {
        bail!("--producers must be 1 to 64, got {}", args.producers);
    }
    if args.batch == 0 || args.batch > 65_536 {
        bail!("--batch must be 1 to 65536, got {}", args.batch);
    }
    if args.payload_bytes > PAYLOAD.len() {
        bail!(
            "--payload-bytes must be at most {}, got {}",
            PAYLOAD.len(),
            args.payload_bytes
        );
    }
    if !matches!(args.idle.as_str(), "park" | "spin") {
        bail!("--idle must be `park` or `spin`, got `{}`", args.idle);
    }
    Ok(())
}

/// Cores for producers: those no worker is pinned to, else all of them.
fn producer_cores(
    allowed: &[core_affinity::CoreId],
    worker_cores: &[usize],
) -> Vec<core_affinity::CoreId> {
    let free: Vec<_> = allowed
        .iter()
        .copied()
        .filter(|c| !worker_cores.contains(&c.id))
        .collect();
    if free.is_empty() {
        allowed.to_vec()
    } else {
        free
    }
}

fn pipeline(args: PipelineArgs) -> anyhow::Result<()> {
    validate(&args)?;
    // Read the allowed-core mask before anything is pinned (it is per thread).
    let allowed = core_affinity::get_core_ids().unwrap_or_default();
    let engine = Engine::builder()
        .configure(|c| {
            c.workers = args.workers;
            c.pin_workers = !args.no_pin;
            if args.idle == "spin" {
                c.idle = IdleStrategy::BusySpin;
            }
            if args.no_dedup {
                c.dedup.window = 0;
            }
        })
        .on_any(|_: &[Event]| Ok(()))
        .start()
        .context("starting the engine")?;
    // Wait until workers report their pinned cores.
    std::thread::sleep(Duration::from_millis(20));
    let worker_cores: Vec<usize> = engine
        .stats()
        .workers
        .iter()
        .filter_map(|w| w.core)
        .collect();
    let cores = if args.no_pin {
        Vec::new()
    } else {
        producer_cores(&allowed, &worker_cores)
    };

    // Padded: producers bump it on every publish; it must not share a cache line with anything
    // the worker reads (it is a small heap allocation, like the engine's own flags).
    let progress = Arc::new(Padded(AtomicU64::new(0)));
    let done = Arc::new(AtomicBool::new(false));
    let reporter = spawn_progress(progress.clone(), done.clone(), args.events);
    let payload = Bytes::from_static(&PAYLOAD[..args.payload_bytes]);
    let per_producer = args.events / args.producers as u64;
    let extra = args.events % args.producers as u64;
    // Every producer pins itself and waits here; then the clock starts for all of them at once
    // (the open-loop schedule's first intended send time is `t0`, shared by every producer).
    let ready = Arc::new(std::sync::Barrier::new(args.producers + 1));
    let go = Arc::new(std::sync::Barrier::new(args.producers + 1));
    let t0_shared = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for p in 0..args.producers {
        let publisher = engine.publisher();
        let n = per_producer + u64::from((p as u64) < extra);
        let core = (!cores.is_empty()).then(|| cores[p % cores.len()]);
        let progress = progress.clone();
        let payload = payload.clone();
        let (batch, rate) = (args.batch, args.rate / args.producers as u64);
        let (ready, go, t0_shared) = (ready.clone(), go.clone(), t0_shared.clone());
        handles.push(std::thread::spawn(move || {
            if let Some(c) = core {
                core_affinity::set_for_current(c);
            }
            ready.wait();
            go.wait();
            let t0 = t0_shared.load(Ordering::Relaxed);
            let mut buf: Vec<Event> = Vec::with_capacity(batch);
            let topic = eventstream_core::Topic::new_inline("bench");
            let make = |ingest_ns| Event {
                id: EventId::AUTO,
                topic: topic.clone(),
                priority: Priority::High,
                payload: payload.clone(),
                ingest_ns,
            };
            let mut sent = 0u64;
            let mut rejected = 0u64;
            let mut stalls = None;
            if rate == 0 {
                while sent < n {
                    let k = (n - sent).min(batch as u64);
                    buf.extend((0..k).map(|_| make(0)));
                    let out = publisher.publish_batch(&mut buf);
                    rejected += out.rejected.len() as u64;
                    sent += k;
                    progress.0.fetch_add(k, Ordering::Relaxed);
                }
            } else {
                let interval = 1e9 / rate as f64;
                let due_at = |i: u64| t0 + (i as f64 * interval) as u64;
                let mut meter = GapMeter::new(STALL_THRESHOLD_NS, clock::now_ns());
                while sent < n {
                    let now = clock::now_ns();
                    meter.observe(now);
                    if now < due_at(sent) {
                        std::hint::spin_loop();
                        continue;
                    }
                    let mut k = 0;
                    while sent + k < n && k < batch as u64 && due_at(sent + k) <= now {
                        buf.push(make(due_at(sent + k)));
                        k += 1;
                    }
                    let out = publisher.publish_batch_with_timestamps(&mut buf);
                    rejected += out.rejected.len() as u64;
                    sent += k;
                    progress.0.fetch_add(k, Ordering::Relaxed);
                }
                let end = clock::now_ns();
                meter.observe(end);
                stalls = Some(meter.report(end.saturating_sub(t0)));
            }
            (rejected, stalls)
        }));
    }
    ready.wait();
    let start = Instant::now();
    // The schedule starts 100 µs from now, once every producer has left the barrier.
    // Relaxed: the `go` barrier orders this store before every producer's load.
    t0_shared.store(clock::now_ns() + 100_000, Ordering::Relaxed);
    go.wait();
    let mut rejected = 0;
    let mut producer_stalls: Option<GapReport> = None;
    for h in handles {
        let (r, stalls) = h.join().map_err(|_| anyhow::anyhow!("producer panicked"))?;
        rejected += r;
        // With several producers, report the one that lost the most time.
        if let Some(s) = stalls {
            if producer_stalls.is_none_or(|p| s.stalled_ms > p.stalled_ms) {
                producer_stalls = Some(s);
            }
        }
    }
    let stats = engine.shutdown().context("shutting down")?;
    let seconds = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    reporter.thread().unpark();
    let _ = reporter.join();
    if rejected > 0 {
        bail!("{rejected} events were handed back by the engine");
    }
    let lat = stats.latency;
    let mut report = PipelineReport {
        events: args.events,
        producers: args.producers,
        workers: args.workers,
        payload_bytes: args.payload_bytes,
        batch: args.batch,
        offered_rate: args.rate,
        seconds,
        events_per_sec: args.events as f64 / seconds,
        p50_ns: lat.p50_ns,
        p90_ns: lat.p90_ns,
        p99_ns: lat.p99_ns,
        p999_ns: lat.p999_ns,
        max_ns: lat.max_ns,
        latency_samples: lat.count,
        dropped: stats.dropped.total(),
        dedup_hits: stats.dedup_hits,
        processed: stats.processed,
        worker_batches: stats.workers.iter().map(|w| w.batches).sum(),
        producer_stalls,
        baseline_crossbeam: None,
        speedup_vs_crossbeam: None,
    };
    if stats.processed + stats.dedup_hits + stats.dropped.total() != args.events {
        bail!(
            "accounting mismatch: published {} but processed {} + duplicates {} + dropped {}",
            args.events,
            stats.processed,
            stats.dedup_hits,
            stats.dropped.total()
        );
    }
    if args.compare {
        let base = crossbeam_baseline(&args, &allowed, payload)?;
        report.speedup_vs_crossbeam = Some(report.events_per_sec / base.events_per_sec);
        report.baseline_crossbeam = Some(base);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn spawn_progress(
    progress: Arc<Padded<AtomicU64>>,
    done: Arc<AtomicBool>,
    total: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut last = 0;
        let mut next = Duration::from_secs(1);
        // Wakes once a second (and when unparked at the end), not more often: on two cores every
        // wake-up of this thread preempts a producer or the worker and shows up in the tail.
        loop {
            let elapsed = start.elapsed();
            if done.load(Ordering::Relaxed) {
                return;
            }
            if elapsed < next {
                std::thread::park_timeout(next - elapsed);
                continue;
            }
            next += Duration::from_secs(1);
            let now = progress.0.load(Ordering::Relaxed);
            eprintln!(
                "[{:>5.1}s] published {:>12} / {} ({:>5.1}%), {:>8.2} M events/s",
                elapsed.as_secs_f64(),
                now,
                total,
                now as f64 * 100.0 / total as f64,
                (now - last) as f64 / 1e6
            );
            last = now;
        }
    })
}

/// Keeps a hot shared counter on its own cache lines.
#[repr(align(128))]
struct Padded<T>(T);

fn print_table(r: &PipelineReport) {
    println!("eventstream bench pipeline");
    println!("  events          {:>14}", r.events);
    println!(
        "  producers       {:>14}   workers {}   batch {}   payload {} B",
        r.producers, r.workers, r.batch, r.payload_bytes
    );
    if r.offered_rate > 0 {
        println!(
            "  offered rate    {:>14} events/s (open loop)",
            r.offered_rate
        );
    }
    println!("  seconds         {:>14.3}", r.seconds);
    println!("  throughput      {:>14.0} events/s", r.events_per_sec);
    println!(
        "  latency (ns)    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        r.p50_ns, r.p90_ns, r.p99_ns, r.p999_ns, r.max_ns
    );
    println!(
        "  processed {}  dropped {}  dedup hits {}  worker batches {} (mean {:.1} events)",
        r.processed,
        r.dropped,
        r.dedup_hits,
        r.worker_batches,
        r.processed as f64 / r.worker_batches.max(1) as f64
    );
    if let Some(s) = &r.producer_stalls {
        println!(
            "  producer stalls {} gaps > 5 µs, {:.1} ms in all ({:.2} % of the run), longest {:.0} µs",
            s.gaps, s.stalled_ms, s.stalled_pct, s.max_gap_us
        );
    }
    if let (Some(b), Some(x)) = (&r.baseline_crossbeam, r.speedup_vs_crossbeam) {
        println!(
            "  crossbeam-channel baseline: {:.0} events/s (p50 {} ns, p99 {} ns) -> eventstream is {:.2}x",
            b.events_per_sec, b.p50_ns, b.p99_ns, x
        );
    }
}

/// The same work on crossbeam-channel: producers send events one by one into a bounded channel
/// (the realtime tier's capacity); one consumer thread takes them one by one, runs the same
/// dedup window, records the same latency histogram and calls a no-op handler per event.
fn crossbeam_baseline(
    args: &PipelineArgs,
    allowed: &[core_affinity::CoreId],
    payload: Bytes,
) -> anyhow::Result<BaselineReport> {
    let (tx, rx) = crossbeam_channel::bounded::<Event>(16_384);
    let pin = !args.no_pin && !allowed.is_empty();
    let consumer_core = pin.then(|| allowed[0]);
    let dedup = if args.no_dedup {
        DedupConfig {
            window: 0,
            max_age: None,
        }
    } else {
        DedupConfig::default()
    };
    let total = args.events;
    let handler = |e: &Event| std::hint::black_box(e.payload.len());
    let consumer = std::thread::spawn(move || {
        if let Some(c) = consumer_core {
            core_affinity::set_for_current(c);
        }
        let mut window = DedupWindow::new(dedup);
        let mut hist = new_latency_histogram();
        let mut n = 0;
        while let Ok(e) = rx.recv() {
            if window.check(e.id.0, e.ingest_ns) == eventstream_core::Decision::Fresh {
                let now = clock::now_ns();
                hist.saturating_record(now.saturating_sub(e.ingest_ns).max(1));
                handler(&e);
            }
            n += 1;
        }
        (n, hist)
    });
    let start = Instant::now();
    let per = total / args.producers as u64;
    let extra = total % args.producers as u64;
    let mut producers = Vec::new();
    for p in 0..args.producers {
        let tx = tx.clone();
        let payload = payload.clone();
        let n = per + u64::from((p as u64) < extra);
        let core = pin.then(|| allowed[(p + 1) % allowed.len()]);
        producers.push(std::thread::spawn(move || {
            if let Some(c) = core {
                core_affinity::set_for_current(c);
            }
            let topic = eventstream_core::Topic::new_inline("bench");
            let first = ((p as u64) << 48) + 1;
            for id in first..first + n {
                let e = Event {
                    id: EventId(id),
                    topic: topic.clone(),
                    priority: Priority::High,
                    payload: payload.clone(),
                    ingest_ns: clock::now_ns(),
                };
                if tx.send(e).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    for p in producers {
        p.join()
            .map_err(|_| anyhow::anyhow!("baseline producer panicked"))?;
    }
    let (n, hist) = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("baseline consumer panicked"))?;
    let seconds = start.elapsed().as_secs_f64();
    if n != total {
        bail!("baseline lost events: {n} of {total}");
    }
    let lat = LatencySummary::of(&hist);
    Ok(BaselineReport {
        seconds,
        events_per_sec: total as f64 / seconds,
        p50_ns: lat.p50_ns,
        p99_ns: lat.p99_ns,
        p999_ns: lat.p999_ns,
    })
}
