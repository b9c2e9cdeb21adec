//! The default idle strategy must not burn a core. Alone in its own test binary (process) so
//! that the process CPU time it measures is this engine's only.

use eventstream_core::{Engine, EngineConfig, Event, IdleStrategy, Priority};
use std::time::Duration;

fn process_cpu_time() -> Duration {
    // utime + stime of this process, from /proc (clock ticks of 10 ms on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[test]
fn idle_workers_do_not_burn_a_core_by_default() {
    let cfg = EngineConfig {
        pin_workers: false,
        workers: 2,
        ..EngineConfig::default()
    };
    assert!(matches!(cfg.idle, IdleStrategy::SpinThenPark { .. }));
    let engine = Engine::builder().config(cfg).start().unwrap();
    let publisher = engine.publisher();
    let _ = publisher
        .publish(Event::new("x", Priority::Low, &b""[..]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100)); // let workers reach the parked state
    let before = process_cpu_time();
    std::thread::sleep(Duration::from_millis(1000));
    let used = process_cpu_time() - before;
    // Two busy-spinning workers would use ~2 s of CPU here; parked ones use next to nothing.
    assert!(
        used < Duration::from_millis(300),
        "idle engine used {used:?} of CPU in 1 s"
    );
    // And a parked worker wakes up for the next event.
    let _ = publisher
        .publish(Event::new("x", Priority::Low, &b""[..]))
        .unwrap();
    let stats = engine.shutdown().unwrap();
    assert_eq!(stats.processed, 2);
}
