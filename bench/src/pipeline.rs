//! `bench pipeline`: end-to-end publish → ring → worker → dedup → dispatch, closed
//! loop (as fast as possible) or open loop (`--rate`, latency measured from each event's
//! intended send time, so it is corrected for coordinated omission). `--compare` runs the same
//! work built plainly on crossbeam-channel in the same process, right after, for a ratio.

use crate::error::BenchError;
use crate::hiccups::{GapMeter, GapReport};
use bytes::Bytes;
use eventstream_core::{
    clock, new_latency_histogram, DedupConfig, DedupWindow, Engine, Event, EventId, IdleStrategy,
    LatencySummary, Priority,
};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the worker waits when its rings are empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idle {
    /// The engine's default: spin, then yield, then park.
    #[default]
    Park,
    /// Busy-spin.
    Spin,
}

impl std::fmt::Display for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Idle::Park => "park",
            Idle::Spin => "spin",
        })
    }
}

impl std::str::FromStr for Idle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "park" => Ok(Idle::Park),
            "spin" => Ok(Idle::Spin),
            other => Err(format!("`{other}` is not `park` or `spin`")),
        }
    }
}

/// Options of `bench pipeline`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOptions {
    /// Events to publish in total.
    pub events: u64,
    /// Producer threads.
    pub producers: usize,
    /// Worker threads (one lane each).
    pub workers: usize,
    /// Payload size in bytes (a static buffer: payload creation is not what is measured).
    pub payload_bytes: usize,
    /// Offered rate in events/s over all producers (open loop); 0 = as fast as possible.
    pub rate: u64,
    /// Events per producer publish call.
    pub batch: usize,
    /// Worker idle strategy.
    pub idle: Idle,
    /// Do not pin workers and producers to cores.
    pub no_pin: bool,
    /// Disable dedup (it is on by default, as in production).
    pub no_dedup: bool,
    /// Also run the same work on crossbeam-channel and report the ratio.
    pub compare: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            events: 20_000_000,
            producers: 1,
            workers: 1,
            payload_bytes: 0,
            rate: 0,
            batch: 64,
            idle: Idle::Park,
            no_pin: false,
            no_dedup: false,
            compare: false,
        }
    }
}

/// Result of `bench pipeline`.
#[derive(Debug, Serialize)]
#[allow(missing_docs)] // field names say what they are; the non-obvious ones are documented
pub struct PipelineReport {
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
    /// Worker parks that ended by their timeout although an event was waiting in the lane (a
    /// lost wake-up, or a publisher preempted between its claim and its wake-up check): there
    /// should be none under load.
    parks_timed_out_with_work: u64,
    /// The longest such park, ns (0 if none).
    longest_timed_out_park_ns: u64,
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

/// The crossbeam-channel baseline of `--compare`.
#[derive(Debug, Serialize)]
#[allow(missing_docs)] // as in PipelineReport
pub struct BaselineReport {
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

fn validate(args: &PipelineOptions) -> Result<(), BenchError> {
    if args.events == 0 {
        return Err(BenchError::option("events", "must be at least 1"));
    }
    if args.producers == 0 || args.producers > 64 {
        return Err(BenchError::option(
            "producers",
            format!("must be 1 to 64, got {}", args.producers),
        ));
    }
    if args.batch == 0 || args.batch > 65_536 {
        return Err(BenchError::option(
            "batch",
            format!("must be 1 to 65536, got {}", args.batch),
        ));
    }
    if args.payload_bytes > PAYLOAD.len() {
        return Err(BenchError::option(
            "payload-bytes",
            format!(
                "must be at most {}, got {}",
                PAYLOAD.len(),
                args.payload_bytes
            ),
        ));
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

/// Runs `bench pipeline`.
pub fn run(args: &PipelineOptions) -> Result<PipelineReport, BenchError> {
    validate(args)?;
    // Read the allowed-core mask before anything is pinned (it is per thread).
    let allowed = core_affinity::get_core_ids().unwrap_or_default();
    let engine = Engine::builder()
        .configure(|c| {
            c.workers = args.workers;
            c.pin_workers = !args.no_pin;
            if args.idle == Idle::Spin {
                c.idle = IdleStrategy::BusySpin;
            }
            if args.no_dedup {
                c.dedup.window = 0;
            }
        })
        .on_any(|_: &[Event]| Ok(()))
        .start()?;
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
                meta: None,
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
        let (r, stalls) = h
            .join()
            .map_err(|_| BenchError::Failed("a producer panicked".into()))?;
        rejected += r;
        // With several producers, report the one that lost the most time.
        if let Some(s) = stalls {
            if producer_stalls.is_none_or(|p| s.stalled_ms > p.stalled_ms) {
                producer_stalls = Some(s);
            }
        }
    }
    let stats = engine.shutdown()?;
    let seconds = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    reporter.thread().unpark();
    let _ = reporter.join();
    if rejected > 0 {
        return Err(BenchError::Failed(format!(
            "{rejected} events were handed back by the engine"
        )));
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
        parks_timed_out_with_work: stats.parks_timed_out_with_work,
        longest_timed_out_park_ns: stats.longest_timed_out_park_ns,
        producer_stalls,
        baseline_crossbeam: None,
        speedup_vs_crossbeam: None,
    };
    if stats.processed + stats.dedup_hits + stats.dropped.total() != args.events {
        return Err(BenchError::Failed(format!(
            "accounting mismatch: published {} but processed {} + duplicates {} + dropped {}",
            args.events,
            stats.processed,
            stats.dedup_hits,
            stats.dropped.total()
        )));
    }
    if args.compare {
        let base = crossbeam_baseline(args, &allowed, payload)?;
        report.speedup_vs_crossbeam = Some(report.events_per_sec / base.events_per_sec);
        report.baseline_crossbeam = Some(base);
    }
    Ok(report)
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

impl std::fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(f, "eventstream bench pipeline")?;
        writeln!(f, "  events          {:>14}", r.events)?;
        writeln!(
            f,
            "  producers       {:>14}   workers {}   batch {}   payload {} B",
            r.producers, r.workers, r.batch, r.payload_bytes
        )?;
        if r.offered_rate > 0 {
            writeln!(
                f,
                "  offered rate    {:>14} events/s (open loop)",
                r.offered_rate
            )?;
        }
        writeln!(f, "  seconds         {:>14.3}", r.seconds)?;
        writeln!(f, "  throughput      {:>14.0} events/s", r.events_per_sec)?;
        writeln!(
            f,
            "  latency (ns)    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            r.p50_ns, r.p90_ns, r.p99_ns, r.p999_ns, r.max_ns
        )?;
        writeln!(
            f,
            "  processed {}  dropped {}  dedup hits {}  worker batches {} (mean {:.1} events)",
            r.processed,
            r.dropped,
            r.dedup_hits,
            r.worker_batches,
            r.processed as f64 / r.worker_batches.max(1) as f64
        )?;
        writeln!(
            f,
            "  worker parks ended by timeout with work waiting: {} (longest {:.1} ms)",
            r.parks_timed_out_with_work,
            r.longest_timed_out_park_ns as f64 / 1e6
        )?;
        if let Some(s) = &r.producer_stalls {
            writeln!(
                f,
            "  producer stalls {} gaps > 5 µs, {:.1} ms in all ({:.2} % of the run), longest {:.0} µs",
            s.gaps, s.stalled_ms, s.stalled_pct, s.max_gap_us
        )?;
        }
        if let (Some(b), Some(x)) = (&r.baseline_crossbeam, r.speedup_vs_crossbeam) {
            writeln!(
                f,
            "  crossbeam-channel baseline: {:.0} events/s (p50 {} ns, p99 {} ns) -> eventstream is {:.2}x",
            b.events_per_sec, b.p50_ns, b.p99_ns, x
        )?;
        }
        Ok(())
    }
}

/// The same work on crossbeam-channel: producers send events one by one into a bounded channel
/// (the realtime tier's capacity); one consumer thread takes them one by one, runs the same
/// dedup window, records the same latency histogram and calls a no-op handler per event.
fn crossbeam_baseline(
    args: &PipelineOptions,
    allowed: &[core_affinity::CoreId],
    payload: Bytes,
) -> Result<BaselineReport, BenchError> {
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
                    meta: None,
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
            .map_err(|_| BenchError::Failed("a baseline producer panicked".into()))?;
    }
    let (n, hist) = consumer
        .join()
        .map_err(|_| BenchError::Failed("the baseline consumer panicked".into()))?;
    let seconds = start.elapsed().as_secs_f64();
    if n != total {
        return Err(BenchError::Failed(format!(
            "the baseline lost events: {n} of {total}"
        )));
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
