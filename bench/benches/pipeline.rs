//! The end-to-end pipeline, and the same work on two other substrates, in one run:
//!
//! * `eventstream` — `Publisher::publish_batch` (64 events) → realtime tier ring → pinned worker
//!   → dedup window → no-op handler, latency recorded for every event.
//! * `crossbeam_channel` — the same work built plainly: `send` each event into a bounded channel
//!   (16 384, the realtime tier's capacity), one consumer thread `recv`s each, checks the same
//!   dedup window, records the same latency histogram, calls a no-op handler.
//! * `disruptor` — the `disruptor` crate (single producer, busy-spin, 16 384 slots), batch
//!   publication of 64, a processor doing the same per-event work.
//!
//! Producer (the benchmark's own thread) and consumer are pinned to different cores in all three.
//! Each iteration moves `EVENTS` events and waits until the consumer has handled the last one.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventstream_core::hdrhistogram::Histogram;
use eventstream_core::{
    clock, new_latency_histogram, Decision, DedupConfig, DedupWindow, Engine, Event, EventId,
    Priority, Topic,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A multiple of 1024, so the crossbeam consumer's every-1024th progress store lands exactly on
/// the last event (it never needs to ask the channel whether it is empty).
const EVENTS: u64 = 1 << 20;
const BATCH: usize = 64;

fn cores() -> (Option<core_affinity::CoreId>, Option<core_affinity::CoreId>) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.len() {
        0 => (None, None),
        1 => (Some(ids[0]), Some(ids[0])),
        _ => (Some(ids[0]), Some(ids[1])),
    }
}

fn event(id: u64) -> Event {
    Event {
        id: EventId(id),
        topic: Topic::new_inline("bench"),
        priority: Priority::High,
        payload: bytes::Bytes::new(),
        ingest_ns: 0,
        meta: None,
    }
}

/// Spins until `counter` reaches `target`.
fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Acquire) < target {
        std::hint::spin_loop();
    }
}

/// `iters` runs of `EVENTS` fresh ids each: `publish(first)` sends ids `first..first + EVENTS`;
/// a run is timed from its first publish until the consumer's count in `handled` includes its
/// last event.
fn timed_runs(
    iters: u64,
    next_id: &mut u64,
    handled: &AtomicU64,
    mut publish: impl FnMut(u64),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let target = handled.load(Ordering::Acquire) + EVENTS;
        let first = *next_id;
        *next_id += EVENTS;
        let start = Instant::now();
        publish(first);
        wait_for(handled, target);
        total += start.elapsed();
    }
    total
}

/// What the eventstream worker does per event, built plainly for the other substrates: the
/// same dedup window, the same latency histogram, a no-op handler.
struct PlainWork {
    window: DedupWindow,
    hist: Histogram<u64>,
}

impl PlainWork {
    fn new() -> PlainWork {
        PlainWork {
            window: DedupWindow::new(DedupConfig::default()),
            hist: new_latency_histogram(),
        }
    }

    #[inline]
    fn handle(&mut self, e: &Event) {
        if self.window.check(e.id.0, e.ingest_ns) == Decision::Fresh {
            self.hist
                .saturating_record(clock::now_ns().saturating_sub(e.ingest_ns).max(1));
            std::hint::black_box(e.payload.len());
        }
    }
}

/// Lets the calling thread run on any of `cores` (`core_affinity` can only pin to one).
fn set_mask_of_current(cores: &[core_affinity::CoreId]) {
    if cores.is_empty() {
        return;
    }
    // SAFETY: `set` is a plain bitmask owned by this frame; CPU_ZERO/CPU_SET only write into it
    // (ids are below CPU_SETSIZE: they came from this thread's own mask), and
    // sched_setaffinity(0, ..) reads it for the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for c in cores {
            libc::CPU_SET(c.id, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(rc, 0, "sched_setaffinity failed");
}

fn pipeline(c: &mut Criterion) {
    let all_cores = core_affinity::get_core_ids().unwrap_or_default();
    let (consumer_core, producer_core) = cores();
    // The engine reads the allowed-core mask of the thread that starts it: start it before this
    // thread pins itself (its worker then takes the first core, the consumer core).
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let engine = Engine::builder()
        .on_any(move |batch: &[Event]| {
            h.fetch_add(batch.len() as u64, Ordering::Release);
            Ok(())
        })
        .start()
        .expect("engine starts");
    // Every substrate publishes from this thread (as the disruptor's producer must), pinned
    // away from the consumer; no third thread spins while the two work.
    if let Some(c) = producer_core {
        core_affinity::set_for_current(c);
    }
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(6));

    // --- eventstream -----------------------------------------------------------------------
    {
        let mut next_id = 1u64;
        g.bench_function("eventstream", |b| {
            b.iter_custom(|iters| {
                let publisher = engine.publisher();
                timed_runs(iters, &mut next_id, &handled, |first| {
                    let mut buf = Vec::with_capacity(BATCH);
                    let mut id = first;
                    while id < first + EVENTS {
                        let k = (first + EVENTS - id).min(BATCH as u64);
                        buf.extend((id..id + k).map(event));
                        id += k;
                        let _ = publisher.publish_batch(&mut buf);
                    }
                })
            })
        });
        let stats = engine.shutdown().unwrap();
        assert_eq!(stats.dedup_hits, 0);
    }

    // --- crossbeam-channel -------------------------------------------------------------------
    {
        let (tx, rx) = crossbeam_channel::bounded::<Event>(16_384);
        let handled = Arc::new(AtomicU64::new(0));
        let h = handled.clone();
        let consumer = std::thread::spawn(move || {
            if let Some(c) = consumer_core {
                core_affinity::set_for_current(c);
            }
            let mut work = PlainWork::new();
            let mut n = 0u64;
            while let Ok(e) = rx.recv() {
                work.handle(&e);
                n += 1;
                if n % 1024 == 0 {
                    h.store(n, Ordering::Release);
                }
            }
            work.hist.len()
        });
        let mut next_id = 1u64;
        g.bench_function("crossbeam_channel", |b| {
            b.iter_custom(|iters| {
                timed_runs(iters, &mut next_id, &handled, |first| {
                    for id in first..first + EVENTS {
                        let mut e = event(id);
                        e.ingest_ns = clock::now_ns();
                        tx.send(e).unwrap();
                    }
                })
            })
        });
        drop(tx);
        assert!(consumer.join().unwrap() > 0);
    }

    // --- disruptor ---------------------------------------------------------------------------
    {
        use disruptor::{build_single_producer, BusySpin, ProcessorSettings, Producer};
        let handled = Arc::new(AtomicU64::new(0));
        let h = handled.clone();
        let mut work = PlainWork::new();
        let mut n = 0u64;
        let processor = move |e: &Event, _seq: i64, end_of_batch: bool| {
            work.handle(e);
            n += 1;
            if end_of_batch {
                h.store(n, Ordering::Release);
            }
        };
        // `pin_at_core` refuses a core outside the *calling* thread's mask, and this thread is
        // pinned to the producer core: widen its mask while the processor thread is started.
        set_mask_of_current(&all_cores);
        let builder = build_single_producer(16_384, Event::default, BusySpin);
        let builder = match consumer_core {
            Some(c) => builder.pin_at_core(c.id),
            None => builder,
        };
        let mut producer = builder.handle_events_with(processor).build();
        if let Some(c) = producer_core {
            core_affinity::set_for_current(c);
        }
        let mut next_id = 1u64;
        g.bench_function("disruptor", |b| {
            b.iter_custom(|iters| {
                timed_runs(iters, &mut next_id, &handled, |first| {
                    let topic = Topic::new_inline("bench");
                    let mut id = first;
                    while id < first + EVENTS {
                        let k = (first + EVENTS - id).min(BATCH as u64) as usize;
                        let now = clock::now_ns();
                        producer.batch_publish(k, |iter| {
                            for e in iter {
                                e.id = EventId(id);
                                e.topic = topic.clone();
                                e.priority = Priority::High;
                                e.ingest_ns = now;
                                id += 1;
                            }
                        });
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
