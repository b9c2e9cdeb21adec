//! Integration tests of the embedded engine through its public API.

use eventstream_core::{
    Engine, EngineConfig, Error, Event, IdleStrategy, OverflowPolicy, Priority, PublishError,
    Published, Tier,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

fn test_config() -> EngineConfig {
    EngineConfig {
        pin_workers: false,
        ..EngineConfig::default()
    }
}

/// A gate handlers wait on, so tests can fill rings deterministically.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<(bool, u64)>, std::sync::Condvar)>);

impl Gate {
    /// Called by a handler: blocks until the gate opens.
    fn wait(&self) {
        let (m, cv) = &*self.0;
        let mut state = m.lock().unwrap();
        state.1 += 1;
        cv.notify_all();
        while !state.0 {
            state = cv.wait(state).unwrap();
        }
    }
    /// Blocks until a handler is waiting at the gate: the worker holds its first batch, so
    /// everything published now is queued before the worker's next pass.
    fn wait_entered(&self) {
        let (m, cv) = &*self.0;
        let mut state = m.lock().unwrap();
        while state.1 == 0 {
            state = cv.wait(state).unwrap();
        }
    }
    fn open(&self) {
        let (m, cv) = &*self.0;
        m.lock().unwrap().0 = true;
        cv.notify_all();
    }
}

/// An engine whose handler waits at the returned gate before each batch, then records the
/// priorities it was handed, in the order it was handed them.
fn ordered_behind_gate(cfg: EngineConfig) -> (Gate, Arc<Mutex<Vec<Priority>>>, Engine) {
    let gate = Gate::default();
    let g = gate.clone();
    let order: Arc<Mutex<Vec<Priority>>> = Arc::default();
    let o = order.clone();
    let engine = Engine::builder()
        .config(cfg)
        .on_any(move |b: &[Event]| {
            g.wait();
            o.lock().unwrap().extend(b.iter().map(|e| e.priority));
            Ok(())
        })
        .start()
        .unwrap();
    (gate, order, engine)
}

/// `n` events of one priority, with automatic ids.
fn events(n: usize, priority: Priority) -> Vec<Event> {
    (0..n)
        .map(|_| Event::new("x", priority, &b""[..]))
        .collect()
}

#[test]
fn many_producers_nothing_lost_nothing_duplicated_per_producer_order_per_tier() {
    const PRODUCERS: u64 = 4;
    const PER: u64 = 50_000;
    let seen: Arc<Mutex<Vec<(u64, Priority)>>> = Arc::default();
    let s = seen.clone();
    let mut cfg = test_config();
    cfg.workers = 2;
    cfg.max_batch = 64;
    for t in [
        &mut cfg.tiers.realtime,
        &mut cfg.tiers.transactional,
        &mut cfg.tiers.batch,
    ] {
        t.capacity = 256; // small rings: producers block often
        t.overflow = OverflowPolicy::Block;
    }
    let engine = Engine::builder()
        .config(cfg)
        .on_any(move |batch: &[Event]| {
            s.lock()
                .unwrap()
                .extend(batch.iter().map(|e| (e.id.0, e.priority)));
            Ok(())
        })
        .start()
        .unwrap();
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let publisher = engine.publisher();
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                for i in 0..PER {
                    let priority = Priority::ALL[(i % 4) as usize];
                    let e = Event::new("t", priority, &b""[..]).with_id((p + 1) << 32 | i);
                    if i % 3 == 0 {
                        // Flush the pending batch first, so publish order is id order.
                        let out = publisher.publish_batch(&mut batch);
                        assert!(out.rejected.is_empty() && out.dropped == 0);
                        assert_eq!(publisher.publish(e).unwrap(), Published::Accepted);
                    } else {
                        batch.push(e);
                        if batch.len() == 16 {
                            let out = publisher.publish_batch(&mut batch);
                            assert_eq!(out.accepted, 16);
                        }
                    }
                }
                let out = publisher.publish_batch(&mut batch);
                assert!(out.rejected.is_empty() && out.dropped == 0);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = engine.shutdown().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, PRODUCERS * PER);
    assert_eq!(stats.processed, PRODUCERS * PER);
    assert_eq!(stats.accepted, PRODUCERS * PER);
    assert_eq!(stats.dedup_hits, 0);
    // Per producer and tier, ids arrive in publish order.
    let tier_of = |p: Priority| EngineConfig::default().tier_map.tier(p);
    let mut last: HashMap<(u64, Tier), u64> = HashMap::new();
    let mut unique = std::collections::HashSet::new();
    for &(id, prio) in seen.iter() {
        assert!(unique.insert(id), "id {id:x} delivered twice");
        let key = (id >> 32, tier_of(prio));
        let seq = id & 0xffff_ffff;
        if let Some(prev) = last.insert(key, seq) {
            assert!(
                prev < seq,
                "producer {} tier {:?}: {prev} then {seq}",
                key.0,
                key.1
            );
        }
    }
}

#[test]
fn graceful_shutdown_delivers_every_accepted_event() {
    let processed = Arc::new(AtomicU64::new(0));
    let p = processed.clone();
    let engine = Engine::builder()
        .config(test_config())
        .on_any(move |batch: &[Event]| {
            std::thread::sleep(Duration::from_micros(200)); // slow handler: rings stay full
            p.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        })
        .start()
        .unwrap();
    let publisher = engine.publisher();
    let mut accepted = 0;
    for i in 0..20_000u64 {
        let prio = if i % 2 == 0 {
            Priority::High
        } else {
            Priority::Medium
        };
        if publisher
            .publish(Event::new("x", prio, &b""[..]).with_id(i + 1))
            .unwrap()
            == Published::Accepted
        {
            accepted += 1;
        }
    }
    let stats = engine.shutdown().unwrap();
    assert_eq!(accepted, 20_000);
    assert_eq!(processed.load(Ordering::Relaxed), 20_000);
    assert_eq!(stats.processed, 20_000);
    assert_eq!(stats.in_flight(), 0);
    assert!(!stats.running);
    // The publisher outlives the engine and is told it is closed; the event comes back.
    let back = publisher
        .publish(Event::new("x", Priority::High, &b"late"[..]))
        .unwrap_err();
    assert!(matches!(back, PublishError::Closed(ref e) if e.payload == "late"));
}

#[test]
fn hard_stop_counts_what_it_leaves_behind() {
    let gate = Gate::default();
    let g = gate.clone();
    let engine = Engine::builder()
        .config(test_config())
        .on_any(move |_: &[Event]| {
            g.wait();
            Ok(())
        })
        .start()
        .unwrap();
    let publisher = engine.publisher();
    for i in 0..5_000u64 {
        let _ = publisher
            .publish(Event::new("x", Priority::Medium, &b""[..]).with_id(i + 1))
            .unwrap();
    }
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            gate.open();
        })
    };
    let stats = engine.stop().unwrap();
    opener.join().unwrap();
    assert_eq!(stats.accepted, 5_000);
    assert!(stats.dropped.hard_stop > 0, "{stats:?}");
    assert_eq!(
        stats.processed + stats.dropped.hard_stop,
        5_000,
        "every accepted event is either processed or counted as dropped: {stats:?}"
    );
}

#[test]
fn overflow_policies_reject_drop_and_block() {
    let gate = Gate::default();
    let g = gate.clone();
    let entered = Arc::new(Barrier::new(2));
    let e2 = entered.clone();
    let first = Arc::new(AtomicBool::new(true));
    let mut cfg = test_config();
    cfg.max_batch = 1;
    cfg.tiers.realtime.capacity = 4;
    cfg.tiers.realtime.overflow = OverflowPolicy::Reject;
    cfg.tiers.transactional.capacity = 4;
    cfg.tiers.transactional.overflow = OverflowPolicy::Block;
    cfg.tiers.batch.capacity = 4;
    cfg.tiers.batch.overflow = OverflowPolicy::DropNewest;
    let engine = Engine::builder()
        .config(cfg)
        .on_any(move |_: &[Event]| {
            if first.swap(false, Ordering::SeqCst) {
                e2.wait(); // tell the test the worker is stuck in here
            }
            g.wait();
            Ok(())
        })
        .start()
        .unwrap();
    let publisher = engine.publisher();
    let ev = |p, id| Event::new("x", p, &b""[..]).with_id(id);
    // One event occupies the worker (it is inside the handler, gated).
    let _ = publisher.publish(ev(Priority::High, 1)).unwrap();
    entered.wait();
    // Realtime (Reject): 4 fit, the 5th comes back.
    for id in 2..6 {
        assert_eq!(
            publisher.publish(ev(Priority::High, id)).unwrap(),
            Published::Accepted
        );
    }
    let back = publisher.publish(ev(Priority::Critical, 6)).unwrap_err();
    assert!(matches!(back, PublishError::Full(ref e) if e.id.0 == 6));
    // try_publish never blocks, whatever the policy.
    for id in 10..14 {
        publisher.try_publish(ev(Priority::Medium, id)).unwrap();
    }
    assert!(matches!(
        publisher.try_publish(ev(Priority::Medium, 14)),
        Err(PublishError::Full(_))
    ));
    // Batch (DropNewest): 4 fit, the rest are dropped and counted.
    for id in 20..24 {
        assert_eq!(
            publisher.publish(ev(Priority::Low, id)).unwrap(),
            Published::Accepted
        );
    }
    assert_eq!(
        publisher.publish(ev(Priority::Low, 24)).unwrap(),
        Published::Dropped
    );
    let mut batch = vec![ev(Priority::Low, 25), ev(Priority::Low, 26)];
    assert_eq!(publisher.publish_batch(&mut batch).dropped, 2);
    // Transactional (Block): the publish waits until the worker frees a slot.
    let blocked = std::thread::spawn(move || {
        let r = publisher.publish(ev(Priority::Medium, 30)).unwrap();
        (r, publisher)
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !blocked.is_finished(),
        "Block policy returned while the ring was full"
    );
    gate.open();
    let (r, _publisher) = blocked.join().unwrap();
    assert_eq!(r, Published::Accepted);
    let stats = engine.shutdown().unwrap();
    assert_eq!(stats.dropped.queue_full, 3);
    assert_eq!(stats.tier(Tier::Batch).dropped, 3);
    assert_eq!(stats.rejected, 2);
    assert!(stats.tier(Tier::Realtime).full >= 1);
    assert!(stats.tier(Tier::Transactional).full >= 1);
    // received = accepted + dropped + handed back
    assert_eq!(stats.received, stats.accepted + 3 + 2);
    assert_eq!(stats.processed, stats.accepted);
}

#[test]
fn publish_batch_of_mixed_tiers_hands_back_what_does_not_fit_in_order() {
    let gate = Gate::default();
    let g = gate.clone();
    let entered = Arc::new(Barrier::new(2));
    let e2 = entered.clone();
    let first = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let mut cfg = test_config();
    cfg.tiers.realtime.capacity = 4;
    cfg.tiers.realtime.overflow = OverflowPolicy::Reject;
    cfg.tiers.batch.capacity = 4;
    cfg.tiers.batch.overflow = OverflowPolicy::Reject;
    let engine = Engine::builder()
        .config(cfg)
        .on_any(move |evs: &[Event]| {
            if first.swap(false, Ordering::SeqCst) {
                e2.wait(); // the worker is stuck in here until the gate opens
                g.wait();
            }
            s.lock().unwrap().extend(evs.iter().map(|e| e.id.0));
            Ok(())
        })
        .start()
        .unwrap();
    let publisher = engine.publisher();
    let ev = |p, id| Event::new("x", p, &b""[..]).with_id(id);
    assert_eq!(
        publisher.publish(ev(Priority::High, 1)).unwrap(),
        Published::Accepted
    );
    entered.wait();
    // Runs: H2 H3 | L20 L21 | H4 H5 H6 | L22 L23 L24 | auto-id H; rings of 4 each.
    let mut batch = vec![
        ev(Priority::High, 2),
        ev(Priority::High, 3),
        ev(Priority::Low, 20),
        ev(Priority::Low, 21),
        ev(Priority::High, 4),
        ev(Priority::High, 5),
        ev(Priority::High, 6),
        ev(Priority::Low, 22),
        ev(Priority::Low, 23),
        ev(Priority::Low, 24),
        Event::new("x", Priority::Critical, &b""[..]),
    ];
    let out = publisher.publish_batch(&mut batch);
    assert!(batch.is_empty());
    assert_eq!(out.accepted, 8);
    assert_eq!(out.dropped, 0);
    let back: Vec<u64> = out.rejected.iter().map(|e| e.id.0).collect();
    assert_eq!(&back[..2], &[6, 24]);
    assert_eq!(back.len(), 3);
    // Refused events come back stamped, like a refused `publish`: an id and an ingest time.
    assert!(out.rejected.iter().all(|e| e.ingest_ns != 0 && e.id.0 != 0));
    gate.open();
    let stats = engine.shutdown().unwrap();
    assert_eq!(stats.processed, 9);
    assert_eq!(stats.rejected, 3);
    let seen = seen.lock().unwrap().clone();
    let high: Vec<u64> = seen.iter().copied().filter(|&i| i < 20).collect();
    let low: Vec<u64> = seen.iter().copied().filter(|&i| i >= 20).collect();
    assert_eq!(high, vec![1, 2, 3, 4, 5]);
    assert_eq!(low, vec![20, 21, 22, 23]);
}

#[test]
fn a_panicking_handler_is_counted_and_contained() {
    let good = Arc::new(AtomicU64::new(0));
    let g = good.clone();
    let engine = Engine::builder()
        .config(test_config())
        .on(
            "bad",
            |_: &[Event]| -> Result<(), eventstream_core::HandlerError> { panic!("handler bug") },
        )
        .on("good", move |b: &[Event]| {
            g.fetch_add(b.len() as u64, Ordering::Relaxed);
            Ok(())
        })
        .start()
        .unwrap();
    let publisher = engine.publisher();
    for i in 0..1000u64 {
        let topic = if i % 2 == 0 { "bad" } else { "good" };
        let _ = publisher
            .publish(Event::new(topic, Priority::High, &b""[..]).with_id(i + 1))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(engine.workers_alive());
    let stats = engine.shutdown().unwrap();
    assert_eq!(good.load(Ordering::Relaxed), 500);
    assert_eq!(stats.processed, 1000);
    assert!(stats.handler_panics >= 1);
    assert!(stats.workers.iter().all(|w| !w.alive));
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let engine = Engine::builder()
        .config(test_config())
        .on_any(move |b: &[Event]| {
            s.fetch_add(b.len() as u64, Ordering::Relaxed);
            Ok(())
        })
        .start()
        .unwrap();
    let publisher = engine.publisher();
    for id in [1u64, 2, 1, 3, 2, 1] {
        let _ = publisher
            .publish(Event::new("x", Priority::High, &b""[..]).with_id(id))
            .unwrap();
    }
    // Automatic ids are unique.
    for _ in 0..10 {
        let _ = publisher
            .publish(Event::new("x", Priority::High, &b""[..]))
            .unwrap();
    }
    let stats = engine.shutdown().unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 13);
    assert_eq!(stats.dedup_hits, 3);
    assert_eq!(stats.dedup_misses, 13);
    assert_eq!(stats.latency.count, 13);
}

#[test]
fn low_priority_is_not_starved() {
    let mut cfg = test_config();
    cfg.max_batch = 8;
    cfg.starvation_rounds = 4;
    let (gate, order, engine) = ordered_behind_gate(cfg);
    let publisher = engine.publisher();
    // The worker takes the first event and waits at the gate; then both tiers fill up, so its
    // next pass sees both (without this, a pass that looked at an empty realtime ring just
    // before the publishes could find the low events first).
    let _ = publisher
        .publish(Event::new("x", Priority::High, &b""[..]))
        .unwrap();
    gate.wait_entered();
    let mut batch = events(2000, Priority::High);
    let _ = publisher.publish_batch(&mut batch);
    let mut low = events(16, Priority::Low);
    let _ = publisher.publish_batch(&mut low);
    gate.open();
    let stats = engine.shutdown().unwrap();
    assert_eq!(stats.processed, 2017);
    let order = order.lock().unwrap();
    let first_low = order.iter().position(|p| *p == Priority::Low).unwrap();
    // Realtime keeps priority (most of it goes first) but low gets a batch every few rounds,
    // long before 2000 realtime events are done.
    assert!(first_low >= 8, "low went first at {first_low}");
    assert!(first_low <= 8 * 8, "low starved until {first_low}");
}

#[test]
fn strict_priority_drains_realtime_before_batch() {
    let mut cfg = test_config();
    cfg.max_batch = 1024;
    let (gate, order, engine) = ordered_behind_gate(cfg);
    let publisher = engine.publisher();
    // While the worker is blocked on its first event, queue low then critical.
    let _ = publisher
        .publish(Event::new("x", Priority::Medium, &b""[..]))
        .unwrap();
    gate.wait_entered();
    let mut low = events(10, Priority::Low);
    let _ = publisher.publish_batch(&mut low);
    let mut crit = events(10, Priority::Critical);
    let _ = publisher.publish_batch(&mut crit);
    gate.open();
    engine.shutdown().unwrap();
    let order = order.lock().unwrap();
    assert_eq!(order[0], Priority::Medium);
    assert!(
        order[1..11].iter().all(|p| *p == Priority::Critical),
        "{order:?}"
    );
    assert!(order[11..].iter().all(|p| *p == Priority::Low));
}

#[test]
fn invalid_configuration_is_refused_with_the_field_named() {
    let err = Engine::builder()
        .configure(|c| c.tiers.transactional.capacity = 3000)
        .start()
        .unwrap_err();
    match err {
        Error::InvalidConfig { field, .. } => assert_eq!(field, "tiers.transactional.capacity"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_parked_worker_is_woken_by_a_publish_not_by_its_park_timeout() {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let engine = Engine::builder()
        .configure(|c| {
            c.pin_workers = false;
            c.idle = IdleStrategy::SpinThenPark {
                spin_iters: 100,
                yield_iters: 1,
                park_timeout_us: TIMEOUT.as_micros() as u64,
            };
        })
        .on_any(move |batch: &[Event]| {
            for _ in batch {
                tx.lock().unwrap().send(std::time::Instant::now()).unwrap();
            }
            Ok(())
        })
        .start()
        .unwrap();
    let publisher = engine.publisher();
    for i in 1..=3u64 {
        // Long enough for the worker to spin, yield and park.
        std::thread::sleep(Duration::from_millis(50));
        let sent = std::time::Instant::now();
        let published = publisher.publish(Event::new("x", Priority::High, &b""[..]).with_id(i));
        assert_eq!(published, Ok(Published::Accepted));
        let handled = rx
            .recv_timeout(TIMEOUT / 2)
            .expect("a parked worker was not woken");
        assert!(handled - sent < TIMEOUT / 2);
    }
    let stats = engine.shutdown().unwrap();
    assert_eq!(stats.processed, 3);
    assert!(stats.workers[0].parks >= 1, "{:?}", stats.workers);
    assert_eq!(stats.parks_timed_out_with_work, 0);
    assert_eq!(stats.longest_timed_out_park_ns, 0);
}
