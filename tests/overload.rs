//! Producers faster than the cluster (the CI-sized run of `eventstream bench overload`; the
//! multi-minute soak is `eventstream bench overload --duration 180`, see docs/reliability.md).
//! Three node processes with small in-flight limits and a small retention limit (so that
//! retention trims and compaction runs within the run), 2x the measured capacity offered for
//! 20 s: the producers must get back-pressure (`Busy` at the in-flight limit), every request
//! exactly one answer, every acknowledged event at or above a node's earliest retained offset
//! exactly once on that node at its offset, the trimmed ones accounted for, nothing refused
//! stored, the leader's counters equal to what the clients saw, and bounded memory.

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
            "--retention-max-events",
            "10000",
            // Retention deletes whole segments: 1 MiB ones roll many times within the run
            // whatever the machine's speed (64 MiB ones need ~500 k events first).
            "--stream-segment-bytes",
            "1048576",
            "--snapshot-entries",
            "50",
            "--log-keep-entries",
            "20",
            "--compaction-interval-ms",
            "1000",
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
    // Retention: the stream's next offset counts every distinct acknowledged event plus
    // stored indeterminate ones; once far more than the limit was acknowledged, every node
    // trimmed, answers a subscription from 0 with `Compacted`, and the acknowledged events
    // below its earliest offset are exactly the trimmed ones (no indeterminate requests) or
    // at most all but the indeterminate ones.
    let acked = pair("total", "acked").1;
    assert_eq!(num("acked_distinct_events"), acked, "{r}");
    assert_eq!(num("acked_offsets_invalid"), 0, "{r}");
    assert!(
        num("stored_not_acked") <= num("indeterminate_offered_events"),
        "{r}"
    );
    let nodes = r["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{r}");
    for n in nodes {
        let earliest = n["earliest_offset"].as_u64().unwrap();
        let trimmed = n["acked_trimmed"].as_u64().unwrap();
        assert_eq!(n["acked_missing"].as_u64(), Some(0), "{n}");
        assert_eq!(
            n["compacted_from_zero"].as_bool(),
            Some(earliest > 0),
            "{n}"
        );
        assert!(trimmed <= earliest, "{n}");
        if num("indeterminate_offered_events") == 0 {
            assert_eq!(trimmed, earliest, "{n}");
        }
        if acked > 30_000 {
            assert!(earliest > 0, "retention never trimmed: {n}");
        }
        // Memory: retention keeps ~10 000 events (~1.5 MB) plus the raft log tail and a
        // served snapshot; the in-flight limits allow 2048 queued events. 128 MiB of growth
        // leaves room for allocator arenas and runtime noise on a loaded machine (without
        // retention the log alone would grow ~150 bytes per acknowledged event).
        let growth =
            n["rss_max_kib"].as_u64().unwrap() as i64 - n["rss_start_kib"].as_u64().unwrap() as i64;
        assert!(growth < 128 << 10, "RSS grew {growth} KiB: {n}");
    }
    assert!(out.status.success(), "{stderr}");
}
