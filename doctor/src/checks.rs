//! The checks, one function per area of the report, in the order the report lists them.
//!
//! Each check reads a node's two scrapes (through [`Ctx`]) and adds findings. A check that
//! corresponds to an alert rule grades with that rule's threshold from [`Thresholds`] and names
//! the rule (its runbook follows from the name), so the report and the alerts agree; the test in
//! `tests/thresholds.rs` holds the numbers to `alerts/eventstream.rules.yml`.

use crate::prom::{self, Sample};
use crate::{Area, Finding, Grade, NodeScrape, Thresholds};
use std::collections::BTreeMap;

/// The runbook of an alert, as a path in the repository.
fn runbook(alert: &str) -> String {
    format!("alerts/runbooks/{alert}.md")
}

/// Sum of every sample of `name` whose labels include `filter`.
fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    let mut found = false;
    let mut total = 0.0;
    for s in samples.iter().filter(|s| s.name == name) {
        if filter
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        {
            found = true;
            total += s.value;
        }
    }
    found.then_some(total)
}

/// Distinct values of `label` among samples of `name`.
fn label_values(samples: &[Sample], name: &str, label: &str) -> Vec<String> {
    let mut v: Vec<String> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter_map(|s| s.labels.get(label).cloned())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Cumulative buckets `(le, count)` of histogram `base`, summed over other labels.
fn buckets(samples: &[Sample], base: &str) -> BTreeMap<String, (f64, f64)> {
    let name = format!("{base}_bucket");
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        if let Some(le) = s.labels.get("le") {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            if bound.is_nan() {
                continue;
            }
            let e = out.entry(le.clone()).or_insert((bound, 0.0));
            e.1 += s.value;
        }
    }
    out
}

/// p99 of histogram `base` over the interval (second − first); falls back to since-start when
/// nothing was observed in the interval. Returns `(p99 seconds, observations, over interval?)`.
fn p99(first: &[Sample], second: &[Sample], base: &str) -> Option<(f64, f64, bool)> {
    let a = buckets(first, base);
    let b = buckets(second, base);
    let delta: Vec<(f64, f64)> = b
        .iter()
        .map(|(le, &(bound, c))| (bound, c - a.get(le).map_or(0.0, |x| x.1)))
        .collect();
    let n = delta.iter().map(|x| x.1).fold(0.0, f64::max);
    if n > 0.0 {
        return prom::histogram_quantile(0.99, &delta).map(|q| (q, n, true));
    }
    let total: Vec<(f64, f64)> = b.values().copied().collect();
    let n = total.iter().map(|x| x.1).fold(0.0, f64::max);
    prom::histogram_quantile(0.99, &total).map(|q| (q, n, false))
}

fn fmt_seconds(s: f64) -> String {
    if s < 1e-6 {
        format!("{:.0} ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// One node's scrapes and the findings being collected about it.
struct Ctx<'a> {
    endpoint: &'a str,
    first: &'a [Sample],
    second: &'a [Sample],
    dt: f64,
    t: &'a Thresholds,
    out: &'a mut Vec<Finding>,
}

impl Ctx<'_> {
    /// Increase of a counter between the two scrapes (`None`: absent from the second).
    fn delta(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        Some(sum(self.second, name, filter)? - sum(self.first, name, filter).unwrap_or(0.0))
    }

    /// A gauge's value in the second scrape.
    fn now(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        sum(self.second, name, filter)
    }

    #[allow(clippy::too_many_arguments)] // a finding has this many parts; a builder would be noise
    fn add(
        &mut self,
        area: Area,
        grade: Grade,
        summary: String,
        evidence: String,
        recommendation: &str,
        alert: Option<&'static str>,
    ) {
        self.out.push(Finding {
            area,
            grade,
            endpoint: Some(self.endpoint.to_owned()),
            summary,
            evidence,
            recommendation: recommendation.to_owned(),
            alert,
            runbook: alert.map(runbook),
        });
    }
}

/// A threshold's grade: a warning when it is crossed.
fn warning_if(over: bool) -> Grade {
    if over {
        Grade::Warning
    } else {
        Grade::Ok
    }
}

/// The alert a finding names: only when it is not ok (an ok finding fires nothing).
fn alert_if(grade: Grade, alert: &'static str) -> Option<&'static str> {
    (grade > Grade::Ok).then_some(alert)
}

/// Whether a node's scrape says it is the raft leader.
pub(crate) fn claims_leadership(samples: &[Sample]) -> bool {
    sum(samples, "eventstream_raft_is_leader", &[]).unwrap_or(0.0) >= 1.0
}

/// Every check of one node whose two scrapes were read, area by area, in report order.
pub(crate) fn node(
    endpoint: &str,
    first: &[Sample],
    second: &[Sample],
    dt: f64,
    t: &Thresholds,
    out: &mut Vec<Finding>,
) {
    let c = &mut Ctx {
        endpoint,
        first,
        second,
        dt,
        t,
        out,
    };
    latency(c);
    queues_and_drops(c);
    handlers(c);
    dedup(c);
    replication_and_elections(c);
    disk_fsync(c);
    resources(c);
}

/// Latency: p99 event latency against `latency_p99_seconds` (EventStreamHighLatency).
fn latency(c: &mut Ctx<'_>) {
    let Some((q, n, interval)) = p99(c.first, c.second, "eventstream_event_latency_seconds") else {
        return;
    };
    let limit = c.t.latency_p99_seconds;
    let over = if interval {
        format!("over the last {:.1} s ({n:.0} events)", c.dt)
    } else {
        format!("since start ({n:.0} events; none in the interval)")
    };
    let (grade, summary) = if q > limit {
        (
            Grade::Warning,
            format!(
                "p99 latency {} is above {}",
                fmt_seconds(q),
                fmt_seconds(limit)
            ),
        )
    } else {
        (Grade::Ok, format!("p99 latency {}", fmt_seconds(q)))
    };
    c.add(
        Area::Latency,
        grade,
        summary,
        format!("p99 {} {over}", fmt_seconds(q)),
        "Look at queue fill and handler time first: latency grows when the rings hold a backlog.",
        alert_if(grade, "EventStreamHighLatency"),
    );
}

/// Queues and drops: each queue's fill against `queue_fill_ratio` (EventStreamQueueFull), then
/// any dropped events, per reason (EventStreamEventsDropped).
fn queues_and_drops(c: &mut Ctx<'_>) {
    queue_fill(c);
    dropped_events(c);
}

fn queue_fill(c: &mut Ctx<'_>) {
    for queue in label_values(c.second, "eventstream_queue_capacity", "queue") {
        let f = [("queue", queue.as_str())];
        let (Some(depth), Some(cap)) = (
            c.now("eventstream_queue_depth", &f),
            c.now("eventstream_queue_capacity", &f),
        ) else {
            continue;
        };
        let fill = if cap > 0.0 { depth / cap } else { 0.0 };
        let full = c.delta("eventstream_queue_full_total", &f).unwrap_or(0.0);
        let grade = warning_if(fill > c.t.queue_fill_ratio);
        c.add(
            Area::QueuesAndDrops,
            grade,
            format!("{queue} queue {:.0} % full", fill * 100.0),
            format!(
                "depth {depth:.0} of {cap:.0}; {full:.0} publishes found it full in {:.1} s",
                c.dt
            ),
            "Workers cannot keep up: speed up the handler, add workers (cores), or lower the offered rate; check the tier's overflow policy.",
            alert_if(grade, "EventStreamQueueFull"),
        );
    }
}

fn dropped_events(c: &mut Ctx<'_>) {
    for reason in label_values(c.second, "eventstream_events_dropped_total", "reason") {
        let d = c
            .delta(
                "eventstream_events_dropped_total",
                &[("reason", reason.as_str())],
            )
            .unwrap_or(0.0);
        if d > 0.0 {
            c.add(
                Area::QueuesAndDrops,
                Grade::Warning,
                format!("events dropped ({reason})"),
                format!("{d:.0} dropped in {:.1} s ({:.0}/s)", c.dt, d / c.dt),
                "A DropNewest tier overflowed: the consumer side is the bottleneck or the tier is too small.",
                Some("EventStreamEventsDropped"),
            );
        }
    }
}

/// Handlers: panics in the interval (EventStreamHandlerPanics) and dead worker threads
/// (EventStreamWorkersDown).
fn handlers(c: &mut Ctx<'_>) {
    handler_panics(c);
    dead_workers(c);
}

fn handler_panics(c: &mut Ctx<'_>) {
    let Some(p) = c.delta("eventstream_handler_panics_total", &[]) else {
        return;
    };
    let grade = warning_if(p > 0.0);
    c.add(
        Area::Handlers,
        grade,
        if p > 0.0 { format!("{p:.0} handler panics") } else { "no handler panics".into() },
        format!("{p:.0} panics, {:.0} errors in {:.1} s", c.delta("eventstream_handler_errors_total", &[]).unwrap_or(0.0), c.dt),
        "A handler is panicking: its events are counted as processed but the handler did not finish them.",
        alert_if(grade, "EventStreamHandlerPanics"),
    );
}

fn dead_workers(c: &mut Ctx<'_>) {
    let (Some(alive), Some(total)) = (
        c.now("eventstream_workers_alive", &[]),
        c.now("eventstream_workers", &[]),
    ) else {
        return;
    };
    if alive < total {
        c.add(
            Area::Handlers,
            Grade::Critical,
            format!("{} of {total:.0} workers are dead", total - alive),
            format!("eventstream_workers_alive {alive:.0}"),
            "A worker thread died outside a handler: restart the node and report the bug with its log.",
            Some("EventStreamWorkersDown"),
        );
    }
}

/// Dedup: the share of duplicates in the interval against `dedup_hit_ratio` (no alert).
fn dedup(c: &mut Ctx<'_>) {
    let (Some(h), Some(m)) = (
        c.delta("eventstream_dedup_hits_total", &[]),
        c.delta("eventstream_dedup_misses_total", &[]),
    ) else {
        return;
    };
    let ratio = if h + m > 0.0 { h / (h + m) } else { 0.0 };
    let grade = warning_if(ratio > c.t.dedup_hit_ratio);
    c.add(
        Area::Dedup,
        grade,
        format!("{:.1} % of events were duplicates", ratio * 100.0),
        format!("{h:.0} duplicates, {m:.0} fresh in {:.1} s", c.dt),
        "Producers are retrying a lot: look for publish timeouts or a failover on the producer side.",
        None,
    );
}

/// Replication and elections (present only on cluster nodes): no leader, leader changes,
/// follower lag, apply lag, failed proposals, lost quorum, and how far consumer groups trail
/// the replicated stream. The cluster-wide findings of this
/// area are [`node_down`] and [`multiple_leaders`].
fn replication_and_elections(c: &mut Ctx<'_>) {
    let Some(has_leader) = c.now("eventstream_raft_has_leader", &[]) else {
        return;
    };
    let term = c.now("eventstream_raft_term", &[]).unwrap_or(0.0);
    no_leader(c, has_leader, term);
    leader_changes(c, term);
    follower_lag(c);
    apply_lag(c);
    proposals_failed(c);
    quorum(c);
    stream_copy(c);
    group_lag(c);
}

/// Consumer groups against `group_lag_offsets` (EventStreamConsumerGroupLagGrowing): a group
/// far behind a topic's end and further behind than at the first scrape is lagging; only the
/// leader reports groups. One finding per lagging group and topic, else one for them all.
fn group_lag(c: &mut Ctx<'_>) {
    const NAME: &str = "eventstream_kafka_group_lag_offsets";
    let label = |s: &Sample, k: &str| s.labels.get(k).cloned().unwrap_or_default();
    let groups: Vec<(String, String, f64, f64)> = c
        .second
        .iter()
        .filter(|s| s.name == NAME)
        .map(|s| {
            let before = c
                .first
                .iter()
                .find(|f| f.name == NAME && f.labels == s.labels)
                .map_or(s.value, |f| f.value);
            (
                label(s, "group"),
                label(s, "topic"),
                s.value,
                s.value - before,
            )
        })
        .collect();
    if groups.is_empty() {
        return;
    }
    let lagging: Vec<_> = groups
        .iter()
        .filter(|(_, _, lag, growth)| *lag > c.t.group_lag_offsets && *growth > 0.0)
        .cloned()
        .collect();
    if lagging.is_empty() {
        let (group, topic, lag, _) = groups
            .iter()
            .cloned()
            .fold(None::<(String, String, f64, f64)>, |m, x| match m {
                Some(m) if m.2 >= x.2 => Some(m),
                _ => Some(x),
            })
            .expect("not empty");
        c.add(
            Area::ReplicationAndElections,
            Grade::Ok,
            format!(
                "{} consumer group offsets, largest lag {lag:.0} ({group} on {topic})",
                groups.len()
            ),
            format!("{NAME}{{group=\"{group}\",topic=\"{topic}\"}} {lag:.0}"),
            "",
            None,
        );
        return;
    }
    for (group, topic, lag, growth) in lagging {
        c.add(
            Area::ReplicationAndElections,
            Grade::Warning,
            format!("consumer group {group} lags {lag:.0} offsets on {topic} (+{growth:.0} during the check)"),
            format!("{NAME}{{group=\"{group}\",topic=\"{topic}\"}} {lag:.0}"),
            "The group falls further behind: are its consumers up, in the group, and fast enough? `eventstream groups describe` shows its offsets.",
            Some("EventStreamConsumerGroupLagGrowing"),
        );
    }
}

/// EventStreamNoLeader.
fn no_leader(c: &mut Ctx<'_>, has_leader: f64, term: f64) {
    if has_leader < 1.0 {
        c.add(
            Area::ReplicationAndElections,
            Grade::Critical,
            "node has no leader".into(),
            format!("eventstream_raft_has_leader 0 at term {term:.0}"),
            "No quorum can be formed from this node: check that a majority of members is up and connected.",
            Some("EventStreamNoLeader"),
        );
    }
}

/// EventStreamHighLeaderChanges: any change in the interval is noted.
fn leader_changes(c: &mut Ctx<'_>, term: f64) {
    let changes = c
        .delta("eventstream_raft_leader_changes_total", &[])
        .unwrap_or(0.0);
    if changes > 0.0 {
        c.add(
            Area::ReplicationAndElections,
            Grade::Warning,
            format!("{changes:.0} leader change(s) during the sample"),
            format!("term {term:.0}"),
            "Leadership is unstable: look for a paused or overloaded node, slow fsync or a flaky network.",
            Some("EventStreamHighLeaderChanges"),
        );
    }
}

/// The most lagging follower against `replication_lag_entries` (EventStreamReplicationLag);
/// only a leader reports followers.
fn follower_lag(c: &mut Ctx<'_>) {
    let lag = c
        .second
        .iter()
        .filter(|s| s.name == "eventstream_raft_replication_lag_entries")
        .map(|s| (s.labels.get("peer").cloned().unwrap_or_default(), s.value))
        .fold(None::<(String, f64)>, |m, x| match m {
            Some(m) if m.1 >= x.1 => Some(m),
            _ => Some(x),
        });
    let Some((peer, lag)) = lag else {
        return;
    };
    let grade = warning_if(lag > c.t.replication_lag_entries);
    c.add(
        Area::ReplicationAndElections,
        grade,
        format!("largest follower lag {lag:.0} entries (peer {peer})"),
        format!("eventstream_raft_replication_lag_entries{{peer=\"{peer}\"}} {lag:.0}"),
        "A follower is far behind: check that it is up, its disk (fsync) and its network.",
        alert_if(grade, "EventStreamReplicationLag"),
    );
}

/// Commit − applied against `apply_lag_entries` (EventStreamFollowerApplyLag).
fn apply_lag(c: &mut Ctx<'_>) {
    let (Some(commit), Some(applied)) = (
        c.now("eventstream_raft_commit_index", &[]),
        c.now("eventstream_raft_applied_index", &[]),
    ) else {
        return;
    };
    let lag = commit - applied;
    let grade = warning_if(lag > c.t.apply_lag_entries);
    c.add(
        Area::ReplicationAndElections,
        grade,
        format!("apply lag {lag:.0} entries"),
        format!("commit {commit:.0}, applied {applied:.0}"),
        "The apply path (dedup + handlers) is slower than commits: speed up handlers.",
        alert_if(grade, "EventStreamFollowerApplyLag"),
    );
}

/// EventStreamProposalsFailing: any failed proposal in the interval.
fn proposals_failed(c: &mut Ctx<'_>) {
    let Some(f) = c.delta("eventstream_raft_proposals_failed_total", &[]) else {
        return;
    };
    if f > 0.0 {
        c.add(
            Area::ReplicationAndElections,
            Grade::Warning,
            format!("{f:.0} proposals failed"),
            format!("{:.1}/s", f / c.dt),
            "Proposals are being dropped (no leader, or too much uncommitted data): check leadership and disk.",
            Some("EventStreamProposalsFailing"),
        );
    }
}

/// EventStreamQuorumLost: this node and its connected peers are fewer than a majority.
fn quorum(c: &mut Ctx<'_>) {
    let (Some(members), Some(connected)) = (
        c.now("eventstream_raft_members", &[]),
        c.now("eventstream_raft_peers_connected", &[]),
    ) else {
        return;
    };
    let majority = (members / 2.0).floor() + 1.0;
    if connected + 1.0 < majority {
        c.add(
            Area::ReplicationAndElections,
            Grade::Critical,
            format!(
                "connected to {connected:.0} of {:.0} peers: below a majority",
                members - 1.0
            ),
            format!("members {members:.0}, majority {majority:.0}"),
            "This node cannot reach a quorum: check the other nodes and the network between them.",
            Some("EventStreamQuorumLost"),
        );
    }
}

/// Stream offsets this node lacks and copies from another member (EventStreamStreamCopyStuck):
/// a warning when some are missing and no byte was copied between the two scrapes. The rule
/// waits 15 minutes without progress; the doctor sees only its interval, so its warning says
/// "not copying now" and the alert says "stuck".
fn stream_copy(c: &mut Ctx<'_>) {
    let Some(missing) = c.now("eventstream_stream_missing_events", &[]) else {
        return;
    };
    if missing <= 0.0 {
        return;
    }
    let copied = c
        .delta("eventstream_stream_copied_bytes_total", &[])
        .unwrap_or(0.0);
    let failures = c
        .delta("eventstream_stream_copy_failures_total", &[])
        .unwrap_or(0.0);
    let grade = warning_if(copied <= 0.0);
    let summary = if copied > 0.0 {
        format!("copying {missing:.0} missing stream events")
    } else {
        format!("{missing:.0} stream events missing, none copied")
    };
    c.add(
        Area::ReplicationAndElections,
        grade,
        summary,
        format!(
            "eventstream_stream_missing_events {missing:.0}; copied {:.0} B/s, {failures:.0} copy failures in the interval",
            copied / c.dt
        ),
        "The node copies the offsets it lacks from the leader or another member: check the peer network to them and the node's log for failed copies.",
        alert_if(grade, "EventStreamStreamCopyStuck"),
    );
}

/// Disk fsync: failed log storage (EventStreamStorageFailed), p99 fsync against
/// `fsync_p99_seconds` (EventStreamHighFsyncLatency), then the data volume's free space.
fn disk_fsync(c: &mut Ctx<'_>) {
    storage_failed(c);
    fsync_latency(c);
    disk_space(c);
}

/// Free / size of the data volume against `disk_free_critical_ratio`
/// (EventStreamDiskAlmostFull) and `disk_free_warning_ratio` (EventStreamDiskFilling). A
/// volume of unknown size (0) is skipped, as the rules' division leaves it out.
fn disk_space(c: &mut Ctx<'_>) {
    let (Some(size), Some(free)) = (
        c.now("eventstream_storage_volume_size_bytes", &[]),
        c.now("eventstream_storage_volume_free_bytes", &[]),
    ) else {
        return;
    };
    if size <= 0.0 {
        return;
    }
    let ratio = free / size;
    let (grade, alert) = if ratio < c.t.disk_free_critical_ratio {
        (Grade::Critical, Some("EventStreamDiskAlmostFull"))
    } else if ratio < c.t.disk_free_warning_ratio {
        (Grade::Warning, Some("EventStreamDiskFilling"))
    } else {
        (Grade::Ok, None)
    };
    const GIB: f64 = (1u64 << 30) as f64;
    c.add(
        Area::DiskFsync,
        grade,
        format!("data volume {:.1} % free", ratio * 100.0),
        format!(
            "{:.1} GiB free of {:.1} GiB (warning below {:.0} %, critical below {:.0} %)",
            free / GIB,
            size / GIB,
            c.t.disk_free_warning_ratio * 100.0,
            c.t.disk_free_critical_ratio * 100.0
        ),
        "Grow the volume, or lower retention.max_bytes to fit it; look for another process writing there.",
        alert,
    );
}

/// A failed log write or fsync is latched until restart (alert EventStreamStorageFailed fires
/// on `== 1` without a `for`), so one scrape saying so is enough.
fn storage_failed(c: &mut Ctx<'_>) {
    if c.now("eventstream_raft_storage_failed", &[]) >= Some(1.0) {
        c.add(
            Area::DiskFsync,
            Grade::Critical,
            "log storage failed: this node accepts no writes".into(),
            "eventstream_raft_storage_failed 1 (the reason is in /ready and the status)".into(),
            "Free the disk or replace the volume, then restart the node: it truncates a torn tail and catches up from the leader.",
            Some("EventStreamStorageFailed"),
        );
    }
}

fn fsync_latency(c: &mut Ctx<'_>) {
    let Some((q, n, _)) = p99(c.first, c.second, "eventstream_raft_fsync_duration_seconds") else {
        return;
    };
    let grade = warning_if(q > c.t.fsync_p99_seconds);
    c.add(
        Area::DiskFsync,
        grade,
        format!("p99 fsync {}", fmt_seconds(q)),
        format!("{n:.0} fsyncs observed"),
        "The log disk is slow: move the data dir to a faster (SSD/NVMe) volume, or check for a noisy neighbour.",
        alert_if(grade, "EventStreamHighFsyncLatency"),
    );
}

/// Resources: open file descriptors against `fd_ratio` (no alert), with RSS and CPU.
fn resources(c: &mut Ctx<'_>) {
    let (Some(fds), Some(max)) = (
        c.now("process_open_fds", &[]),
        c.now("process_max_fds", &[]),
    ) else {
        return;
    };
    let ratio = if max > 0.0 { fds / max } else { 0.0 };
    let grade = warning_if(ratio > c.t.fd_ratio);
    let rss = c.now("process_resident_memory_bytes", &[]).unwrap_or(0.0);
    let cpu = c.delta("process_cpu_seconds_total", &[]).unwrap_or(0.0) / c.dt;
    c.add(
        Area::Resources,
        grade,
        format!(
            "{fds:.0} of {max:.0} file descriptors; RSS {:.0} MiB; CPU {:.2} cores",
            rss / 1048576.0,
            cpu
        ),
        format!("open fds {:.0} %", ratio * 100.0),
        "Raise the file-descriptor limit or look for leaked connections.",
        None,
    );
}

/// A node whose metrics could not be read (EventStreamNodeDown).
pub(crate) fn node_down(n: &NodeScrape) -> Finding {
    Finding {
        area: Area::ReplicationAndElections,
        grade: Grade::Critical,
        endpoint: Some(n.endpoint.clone()),
        summary: "node is down or unreachable".into(),
        evidence: n.error.clone().unwrap_or_else(|| "no metrics".into()),
        recommendation:
            "Check the process, its logs and its network; a cluster tolerates a minority down."
                .into(),
        alert: Some("EventStreamNodeDown"),
        runbook: Some(runbook("EventStreamNodeDown")),
    }
}

/// More than one node claiming leadership (EventStreamMultipleLeaders): cluster-wide.
pub(crate) fn multiple_leaders(leaders: &[String]) -> Option<Finding> {
    (leaders.len() > 1).then(|| Finding {
        area: Area::ReplicationAndElections,
        grade: Grade::Critical,
        endpoint: None,
        summary: format!("{} nodes claim to be leader", leaders.len()),
        evidence: leaders.join(", "),
        recommendation: "A partition or a stale leader: check the network and clocks; only one leader can commit.".into(),
        alert: Some("EventStreamMultipleLeaders"),
        runbook: Some(runbook("EventStreamMultipleLeaders")),
    })
}
