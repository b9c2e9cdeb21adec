//! A short chaos run against real node processes of the binary under test: every fault kind
//! once (kill -9 leader, kill -9 follower, pause, partition a minority, partition the leader,
//! restart everything), then the history checker must find nothing. `CHAOS_CYCLES` and
//! `CHAOS_SEED` lengthen or vary the run.

use eventstream_chaos::ChaosConfig;

#[test]
fn six_fault_cycles_on_three_nodes_lose_nothing() {
    let mut cfg = ChaosConfig::new(env!("CARGO_BIN_EXE_eventstream"));
    cfg.nodes = 3;
    cfg.cycles = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    cfg.seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261122);
    cfg.fault_ms = 700;
    cfg.progress = true;
    cfg.keep_dir = std::env::var_os("CHAOS_KEEP").is_some();
    let o = eventstream_chaos::run(&cfg).expect("the chaos run itself failed");
    let r = &o.report;
    eprintln!("{}", serde_json::to_string_pretty(&o).unwrap());
    assert_eq!(r.cycles, cfg.cycles as usize);
    // Six cycles hold every fault kind once.
    assert_eq!(
        o.faults_by_kind.len(),
        6.min(cfg.cycles as usize),
        "{:?}",
        o.faults_by_kind
    );
    assert!(r.acked > 0, "nothing was acknowledged");
    assert_eq!(r.lost, 0, "lost acknowledged events: {:?}", r.lost_examples);
    assert_eq!(r.duplicates, 0, "duplicates: {:?}", r.duplicate_examples);
    assert_eq!(
        r.divergent_offsets, 0,
        "divergence: {:?}",
        r.divergence_examples
    );
    assert!(o.valid, "anomalies (history kept in {:?})", o.kept_dir);
    assert!(o.unexpected_exits.is_empty(), "{:?}", o.unexpected_exits);
    assert_eq!(r.unrecovered_cycles, 0, "a cycle did not recover");
    // Every consumer saw the whole stream, and the partitions really cut connections.
    assert!(r.delivered as u64 >= 3 * r.final_stream_len as u64);
    assert!(o.proxy_connections["stalled"] + o.proxy_connections["black_holed"] > 0);
    // Sane availability: a fault is held 0.7 s and an election takes 0.3–0.6 s; restarting
    // everything adds process start-up. A gap of more than 15 s means a stall.
    assert!(
        r.max_unavailable_ms < 15_000,
        "max unavailable {} ms ({:?})",
        r.max_unavailable_ms,
        r.max_unavailable_ms_by_fault
    );
}
