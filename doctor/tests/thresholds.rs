//! The doctor applies the alert rules' thresholds: check that the numbers in
//! `alerts/eventstream.rules.yml` are the ones in [`Thresholds::default`].

use eventstream_doctor::Thresholds;

/// The rules file's text.
fn rules() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../alerts/eventstream.rules.yml"
    );
    std::fs::read_to_string(path).expect("alerts/eventstream.rules.yml")
}

fn rule_expr(rules: &str, alert: &str) -> String {
    let start = rules
        .find(&format!("alert: {alert}\n"))
        .unwrap_or_else(|| panic!("alert {alert} not in the rules file"));
    let rest = &rules[start..];
    let end = rest[1..].find("- alert:").map_or(rest.len(), |e| e + 1);
    let block = &rest[..end];
    let expr = block.find("expr:").expect("alert has an expr");
    let tail = &block[expr..];
    tail[..tail
        .find("for:")
        .or_else(|| tail.find("labels:"))
        .unwrap_or(tail.len())]
        .to_owned()
}

fn has_threshold(expr: &str, value: f64) -> bool {
    expr.split(|c: char| c.is_whitespace() || c == ')' || c == '(')
        .filter_map(|w| w.parse::<f64>().ok())
        .any(|v| (v - value).abs() < 1e-12)
}

#[test]
fn doctor_thresholds_match_the_alert_rules() {
    let rules = rules();
    let t = Thresholds::default();
    for (alert, value) in [
        ("EventStreamHighLatency", t.latency_p99_seconds),
        ("EventStreamQueueFull", t.queue_fill_ratio),
        ("EventStreamReplicationLag", t.replication_lag_entries),
        ("EventStreamFollowerApplyLag", t.apply_lag_entries),
        ("EventStreamHighFsyncLatency", t.fsync_p99_seconds),
        ("EventStreamHighLeaderChanges", t.leader_changes_per_hour),
        ("EventStreamDiskFilling", t.disk_free_warning_ratio),
        ("EventStreamDiskAlmostFull", t.disk_free_critical_ratio),
        ("EventStreamConsumerGroupLagGrowing", t.group_lag_offsets),
    ] {
        let expr = rule_expr(&rules, alert);
        assert!(
            has_threshold(&expr, value),
            "{alert}: doctor uses {value}, the rule says: {expr}"
        );
    }
}

#[test]
fn doctor_storage_check_matches_the_alert_rule() {
    let rules = rules();
    // The doctor grades `eventstream_raft_storage_failed >= 1` critical; the rule must test
    // the same flag against 1.
    let expr = rule_expr(&rules, "EventStreamStorageFailed");
    assert!(
        expr.contains("eventstream_raft_storage_failed") && has_threshold(&expr, 1.0),
        "the rule says: {expr}"
    );
}

#[test]
fn doctor_disk_and_copy_checks_read_the_alert_rules_metrics() {
    let rules = rules();
    // The doctor grades free / size of the data volume; the rules divide the same two series.
    for alert in ["EventStreamDiskFilling", "EventStreamDiskAlmostFull"] {
        let expr = rule_expr(&rules, alert);
        assert!(
            expr.contains(
                "eventstream_storage_volume_free_bytes / eventstream_storage_volume_size_bytes <"
            ),
            "{alert}: the rule says: {expr}"
        );
    }
    // The doctor warns on missing events with no copied bytes; so does the rule.
    let expr = rule_expr(&rules, "EventStreamStreamCopyStuck");
    assert!(
        expr.contains("eventstream_stream_missing_events > 0")
            && expr.contains("eventstream_stream_copied_bytes_total"),
        "the rule says: {expr}"
    );
}
