//! Producers faster than the cluster (the CI-sized run of `eventstream bench overload`; the
//! multi-minute soak is `eventstream bench overload --duration 180`, see docs/reliability.md).
//! Three node processes with small in-flight limits, 2x the measured capacity offered for
//! 20 s: the producers must get back-pressure (`Busy` at the in-flight limit), every request
//! exactly one answer, every acknowledged event exactly once on every node at its offset,
//! nothing refused stored, the leader's counters equal to what the clients saw, and no memory
//! growth beyond the retained log.

use std::process::Command;

#[test]
fn twice_capacity_gets_back_pressure_with_exact_accounting_and_bounded_memory() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventstream"))
        .args([
            "bench",
            "overload",
            "--duration",
            "20",
            "--capacity-seconds",
            "3",
            "--clients",
            "4",
            "--max-inflight-events",
            "2048",
            "--max-inflight-per-connection",
            "16",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {stdout}\n{stderr}"));
    eprintln!("{}", serde_json::to_string_pretty(&r["soak"]).unwrap());
    let flag = |k: &str| r[k].as_bool().unwrap_or_else(|| panic!("{k} missing: {r}"));
    let num = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {r}"));
    let pair = |a: &str, b: &str| {
        let v = &r[a][b];
        (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
    };
    assert!(flag("accounting_exact"), "{r}");
    assert!(flag("node_counters_match"), "{r}");
    assert!(flag("acked_found_on_every_node"), "{r}");
    assert!(flag("nodes_agree"), "{r}");
    assert_eq!(num("refused_but_stored"), 0, "{r}");
    assert_eq!(num("unexpected_in_stream"), 0, "{r}");
    assert_eq!(pair("total", "unanswered"), (0, 0), "{r}");
    assert!(
        pair("soak", "acked").1 > 0,
        "nothing acknowledged under overload: {r}"
    );
    assert!(
        pair("soak", "rejected_inflight").0 > 0,
        "2x capacity never reached the in-flight limit: {r}"
    );
    let (offered, _) = pair("soak", "offered");
    assert!(offered > 0);
    // Memory: what the node keeps beyond its (uncompacted) log stays small. The in-flight
    // limits allow at most 2048 events of ~150 bytes queued; 64 MiB leaves room for allocator
    // and runtime noise on a loaded machine.
    let growth =
        num("rss_max_kib") as i64 - num("rss_start_kib") as i64 - num("log_growth_kib") as i64;
    assert!(
        growth < 64 << 10,
        "RSS grew {growth} KiB beyond the retained log: {r}"
    );
    assert!(out.status.success(), "{stderr}");
}
