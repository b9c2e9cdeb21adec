//! # eventstream-doctor
//!
//! `eventstream doctor` reads each node's `/metrics` twice (an interval apart) and its
//! `/api/v1/cluster/status`, applies **the same thresholds as the alert rules** in
//! `alerts/eventstream.rules.yml`, and prints a graded report — ok / warning / critical per
//! area (latency, queues and drops, handlers, dedup, replication and elections, disk fsync,
//! resources) — naming the likely bottleneck with its evidence and a recommendation, each linked
//! to a runbook.
//!
//! Main types: [`diagnose`] (collect + evaluate), [`evaluate`] (pure: scrapes in, [`Report`]
//! out — what the tests drive), [`Thresholds`] (the alert rules' numbers), [`Report`] /
//! [`Finding`] / [`Grade`].
//!
//! The thresholds are constants here and in the rules file; `tests/thresholds.rs` checks that
//! the two agree, so they cannot drift apart silently.

pub mod http;
pub mod prom;

use prom::Sample;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Why the doctor itself could not do its job (problems *found* are findings, not errors).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The endpoint is not a usable `http://host:port`.
    #[error("bad endpoint `{0}`: {1}")]
    BadEndpoint(String, String),
    /// Could not connect or read.
    #[error("{0} is unreachable: {1}")]
    Unreachable(String, String),
    /// The answer was not HTTP, or not what was expected.
    #[error("bad response from {0}: {1}")]
    BadResponse(String, String),
    /// `/metrics` did not parse.
    #[error("metrics from {0} do not parse: {1}")]
    BadMetrics(String, prom::ParseError),
    /// No endpoint given.
    #[error("no endpoint given (use --endpoint http://HOST:PORT, repeatable)")]
    NoEndpoints,
}

/// The alert rules' thresholds (see `alerts/eventstream.rules.yml`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Thresholds {
    /// EventStreamHighLatency: p99 event latency above this (seconds).
    pub latency_p99_seconds: f64,
    /// EventStreamQueueFull: depth / capacity above this.
    pub queue_fill_ratio: f64,
    /// EventStreamReplicationLag: a follower this many entries behind the leader.
    pub replication_lag_entries: f64,
    /// EventStreamFollowerApplyLag: commit − applied above this.
    pub apply_lag_entries: f64,
    /// EventStreamHighFsyncLatency: p99 fsync above this (seconds).
    pub fsync_p99_seconds: f64,
    /// EventStreamHighLeaderChanges: more leader changes than this in an hour.
    pub leader_changes_per_hour: f64,
    /// Open file descriptors above this fraction of the limit.
    pub fd_ratio: f64,
    /// Duplicate share above which producers are retrying unusually often.
    pub dedup_hit_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            latency_p99_seconds: 0.001,
            queue_fill_ratio: 0.8,
            replication_lag_entries: 1000.0,
            apply_lag_entries: 1000.0,
            fsync_p99_seconds: 0.05,
            leader_changes_per_hour: 3.0,
            fd_ratio: 0.8,
            dedup_hit_ratio: 0.05,
        }
    }
}

/// Severity, ordered: `Ok < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    /// Within thresholds.
    Ok,
    /// An alert of severity warning would fire (given its `for:` duration).
    Warning,
    /// An alert of severity critical would fire.
    Critical,
}

impl Grade {
    fn label(self) -> &'static str {
        match self {
            Grade::Ok => "OK",
            Grade::Warning => "WARNING",
            Grade::Critical => "CRITICAL",
        }
    }
}

/// The areas a report grades, in display order.
pub const AREAS: [&str; 7] = [
    "latency",
    "queues and drops",
    "handlers",
    "dedup",
    "replication and elections",
    "disk fsync",
    "resources",
];

/// One observation.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// One of [`AREAS`].
    pub area: &'static str,
    /// How bad.
    pub grade: Grade,
    /// The endpoint it concerns (`None` for cluster-wide findings).
    pub endpoint: Option<String>,
    /// What is wrong (or right), in one line.
    pub summary: String,
    /// The numbers behind it.
    pub evidence: String,
    /// What to do.
    pub recommendation: String,
    /// The alert this corresponds to, if any.
    pub alert: Option<&'static str>,
    /// Runbook path in the repository.
    pub runbook: Option<String>,
}

/// An area's grade: the worst of its findings.
#[derive(Debug, Clone, Serialize)]
pub struct AreaGrade {
    /// Area name.
    pub area: &'static str,
    /// Worst grade among its findings (`Ok` if none).
    pub grade: Grade,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Endpoints examined.
    pub endpoints: Vec<String>,
    /// Seconds between the two scrapes.
    pub interval_seconds: f64,
    /// Worst grade overall.
    pub overall: Grade,
    /// Per area.
    pub areas: Vec<AreaGrade>,
    /// The most severe finding, if anything is not ok: the likely bottleneck.
    pub bottleneck: Option<Finding>,
    /// Everything observed.
    pub findings: Vec<Finding>,
    /// Thresholds used.
    pub thresholds: Thresholds,
}

/// What one endpoint gave: two scrapes (`None` if unreachable) and the status JSON.
#[derive(Debug, Clone)]
pub struct NodeScrape {
    /// The endpoint.
    pub endpoint: String,
    /// First `/metrics` scrape.
    pub first: Option<Vec<Sample>>,
    /// Second `/metrics` scrape.
    pub second: Option<Vec<Sample>>,
    /// Why it could not be read, if it could not.
    pub error: Option<String>,
}

fn runbook(alert: &str) -> String {
    format!("alerts/runbooks/{alert}.md")
}

/// Scrapes every endpoint twice, `interval` apart, and evaluates.
pub fn diagnose(
    endpoints: &[String],
    interval: Duration,
    thresholds: Thresholds,
) -> Result<Report, DoctorError> {
    if endpoints.is_empty() {
        return Err(DoctorError::NoEndpoints);
    }
    let timeout = Duration::from_secs(5);
    let scrape = |e: &str| -> Result<Vec<Sample>, DoctorError> {
        let (code, body) = http::get(e, "/metrics", timeout)?;
        if code != 200 {
            return Err(DoctorError::BadResponse(
                e.to_owned(),
                format!("/metrics answered {code}"),
            ));
        }
        prom::parse(&body).map_err(|p| DoctorError::BadMetrics(e.to_owned(), p))
    };
    let mut nodes: Vec<NodeScrape> = endpoints
        .iter()
        .map(|e| {
            // Validate the address up front: a typo is an error, not a "node down".
            http::authority(e).map(|_| NodeScrape {
                endpoint: e.clone(),
                first: None,
                second: None,
                error: None,
            })
        })
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    for n in &mut nodes {
        match scrape(&n.endpoint) {
            Ok(s) => n.first = Some(s),
            Err(e) => n.error = Some(e.to_string()),
        }
    }
    std::thread::sleep(interval);
    let elapsed = start.elapsed().as_secs_f64();
    for n in &mut nodes {
        if n.error.is_none() {
            match scrape(&n.endpoint) {
                Ok(s) => n.second = Some(s),
                Err(e) => n.error = Some(e.to_string()),
            }
        }
    }
    Ok(evaluate(&nodes, elapsed, thresholds))
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

struct Ctx<'a> {
    endpoint: &'a str,
    first: &'a [Sample],
    second: &'a [Sample],
    dt: f64,
    t: &'a Thresholds,
    out: &'a mut Vec<Finding>,
}

impl Ctx<'_> {
    fn delta(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        Some(sum(self.second, name, filter)? - sum(self.first, name, filter).unwrap_or(0.0))
    }

    fn now(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        sum(self.second, name, filter)
    }

    #[allow(clippy::too_many_arguments)] // a finding has this many parts; a builder would be noise
    fn add(
        &mut self,
        area: &'static str,
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

fn check_node(c: &mut Ctx<'_>) {
    let t = *c.t;
    // Latency.
    if let Some((q, n, interval)) = p99(c.first, c.second, "eventstream_event_latency_seconds") {
        let over = if interval {
            format!("over the last {:.1} s ({n:.0} events)", c.dt)
        } else {
            format!("since start ({n:.0} events; none in the interval)")
        };
        let (grade, summary) = if q > t.latency_p99_seconds {
            (
                Grade::Warning,
                format!(
                    "p99 latency {} is above {}",
                    fmt_seconds(q),
                    fmt_seconds(t.latency_p99_seconds)
                ),
            )
        } else {
            (Grade::Ok, format!("p99 latency {}", fmt_seconds(q)))
        };
        c.add(
            "latency",
            grade,
            summary,
            format!("p99 {} {over}", fmt_seconds(q)),
            "Look at queue fill and handler time first: latency grows when the rings hold a backlog.",
            (grade > Grade::Ok).then_some("EventStreamHighLatency"),
        );
    }
    // Queues and drops.
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
        let grade = if fill > t.queue_fill_ratio {
            Grade::Warning
        } else {
            Grade::Ok
        };
        c.add(
            "queues and drops",
            grade,
            format!("{queue} queue {:.0} % full", fill * 100.0),
            format!(
                "depth {depth:.0} of {cap:.0}; {full:.0} publishes found it full in {:.1} s",
                c.dt
            ),
            "Workers cannot keep up: speed up the handler, add workers (cores), or lower the offered rate; check the tier's overflow policy.",
            (grade > Grade::Ok).then_some("EventStreamQueueFull"),
        );
    }
    for reason in label_values(c.second, "eventstream_events_dropped_total", "reason") {
        let d = c
            .delta(
                "eventstream_events_dropped_total",
                &[("reason", reason.as_str())],
            )
            .unwrap_or(0.0);
        if d > 0.0 {
            c.add(
                "queues and drops",
                Grade::Warning,
                format!("events dropped ({reason})"),
                format!("{d:.0} dropped in {:.1} s ({:.0}/s)", c.dt, d / c.dt),
                "A DropNewest tier overflowed: the consumer side is the bottleneck or the tier is too small.",
                Some("EventStreamEventsDropped"),
            );
        }
    }
    // Handlers.
    if let Some(p) = c.delta("eventstream_handler_panics_total", &[]) {
        let grade = if p > 0.0 { Grade::Warning } else { Grade::Ok };
        c.add(
            "handlers",
            grade,
            if p > 0.0 { format!("{p:.0} handler panics") } else { "no handler panics".into() },
            format!("{p:.0} panics, {:.0} errors in {:.1} s", c.delta("eventstream_handler_errors_total", &[]).unwrap_or(0.0), c.dt),
            "A handler is panicking: its events are counted as processed but the handler did not finish them.",
            (grade > Grade::Ok).then_some("EventStreamHandlerPanics"),
        );
    }
    if let (Some(alive), Some(total)) = (
        c.now("eventstream_workers_alive", &[]),
        c.now("eventstream_workers", &[]),
    ) {
        if alive < total {
            c.add(
                "handlers",
                Grade::Critical,
                format!("{} of {total:.0} workers are dead", total - alive),
                format!("eventstream_workers_alive {alive:.0}"),
                "A worker thread died outside a handler: restart the node and report the bug with its log.",
                Some("EventStreamWorkersDown"),
            );
        }
    }
    // Dedup.
    if let (Some(h), Some(m)) = (
        c.delta("eventstream_dedup_hits_total", &[]),
        c.delta("eventstream_dedup_misses_total", &[]),
    ) {
        let ratio = if h + m > 0.0 { h / (h + m) } else { 0.0 };
        let grade = if ratio > t.dedup_hit_ratio {
            Grade::Warning
        } else {
            Grade::Ok
        };
        c.add(
            "dedup",
            grade,
            format!("{:.1} % of events were duplicates", ratio * 100.0),
            format!("{h:.0} duplicates, {m:.0} fresh in {:.1} s", c.dt),
            "Producers are retrying a lot: look for publish timeouts or a failover on the producer side.",
            None,
        );
    }
    // Replication (present only on cluster nodes).
    if let Some(has_leader) = c.now("eventstream_raft_has_leader", &[]) {
        let term = c.now("eventstream_raft_term", &[]).unwrap_or(0.0);
        if has_leader < 1.0 {
            c.add(
                "replication and elections",
                Grade::Critical,
                "node has no leader".into(),
                format!("eventstream_raft_has_leader 0 at term {term:.0}"),
                "No quorum can be formed from this node: check that a majority of members is up and connected.",
                Some("EventStreamNoLeader"),
            );
        }
        let changes = c
            .delta("eventstream_raft_leader_changes_total", &[])
            .unwrap_or(0.0);
        if changes > 0.0 {
            c.add(
                "replication and elections",
                Grade::Warning,
                format!("{changes:.0} leader change(s) during the sample"),
                format!("term {term:.0}"),
                "Leadership is unstable: look for a paused or overloaded node, slow fsync or a flaky network.",
                Some("EventStreamHighLeaderChanges"),
            );
        }
        let lag = c
            .second
            .iter()
            .filter(|s| s.name == "eventstream_raft_replication_lag_entries")
            .map(|s| (s.labels.get("peer").cloned().unwrap_or_default(), s.value))
            .fold(None::<(String, f64)>, |m, x| match m {
                Some(m) if m.1 >= x.1 => Some(m),
                _ => Some(x),
            });
        if let Some((peer, lag)) = lag {
            let grade = if lag > t.replication_lag_entries {
                Grade::Warning
            } else {
                Grade::Ok
            };
            c.add(
                "replication and elections",
                grade,
                format!("largest follower lag {lag:.0} entries (peer {peer})"),
                format!("eventstream_raft_replication_lag_entries{{peer=\"{peer}\"}} {lag:.0}"),
                "A follower is far behind: check that it is up, its disk (fsync) and its network.",
                (grade > Grade::Ok).then_some("EventStreamReplicationLag"),
            );
        }
        if let (Some(commit), Some(applied)) = (
            c.now("eventstream_raft_commit_index", &[]),
            c.now("eventstream_raft_applied_index", &[]),
        ) {
            let lag = commit - applied;
            let grade = if lag > t.apply_lag_entries {
                Grade::Warning
            } else {
                Grade::Ok
            };
            c.add(
                "replication and elections",
                grade,
                format!("apply lag {lag:.0} entries"),
                format!("commit {commit:.0}, applied {applied:.0}"),
                "The apply path (dedup + handlers) is slower than commits: speed up handlers.",
                (grade > Grade::Ok).then_some("EventStreamFollowerApplyLag"),
            );
        }
        if let Some(f) = c.delta("eventstream_raft_proposals_failed_total", &[]) {
            if f > 0.0 {
                c.add(
                    "replication and elections",
                    Grade::Warning,
                    format!("{f:.0} proposals failed"),
                    format!("{:.1}/s", f / c.dt),
                    "Proposals are being dropped (no leader, or too much uncommitted data): check leadership and disk.",
                    Some("EventStreamProposalsFailing"),
                );
            }
        }
        if let (Some(members), Some(connected)) = (
            c.now("eventstream_raft_members", &[]),
            c.now("eventstream_raft_peers_connected", &[]),
        ) {
            let majority = (members / 2.0).floor() + 1.0;
            if connected + 1.0 < majority {
                c.add(
                    "replication and elections",
                    Grade::Critical,
                    format!("connected to {connected:.0} of {:.0} peers: below a majority", members - 1.0),
                    format!("members {members:.0}, majority {majority:.0}"),
                    "This node cannot reach a quorum: check the other nodes and the network between them.",
                    Some("EventStreamQuorumLost"),
                );
            }
        }
    }
    // Disk. A failed log write or fsync is latched until restart (alert EventStreamStorageFailed
    // fires on `== 1` without a `for`), so one scrape saying so is enough.
    if c.now("eventstream_raft_storage_failed", &[]) >= Some(1.0) {
        c.add(
            "disk fsync",
            Grade::Critical,
            "log storage failed: this node accepts no writes".into(),
            "eventstream_raft_storage_failed 1 (the reason is in /ready and the status)".into(),
            "Free the disk or replace the volume, then restart the node: it truncates a torn tail and catches up from the leader.",
            Some("EventStreamStorageFailed"),
        );
    }
    if let Some((q, n, _)) = p99(c.first, c.second, "eventstream_raft_fsync_duration_seconds") {
        let grade = if q > t.fsync_p99_seconds {
            Grade::Warning
        } else {
            Grade::Ok
        };
        c.add(
            "disk fsync",
            grade,
            format!("p99 fsync {}", fmt_seconds(q)),
            format!("{n:.0} fsyncs observed"),
            "The log disk is slow: move the data dir to a faster (SSD/NVMe) volume, or check for a noisy neighbour.",
            (grade > Grade::Ok).then_some("EventStreamHighFsyncLatency"),
        );
    }
    // Resources.
    if let (Some(fds), Some(max)) = (
        c.now("process_open_fds", &[]),
        c.now("process_max_fds", &[]),
    ) {
        let ratio = if max > 0.0 { fds / max } else { 0.0 };
        let grade = if ratio > t.fd_ratio {
            Grade::Warning
        } else {
            Grade::Ok
        };
        let rss = c.now("process_resident_memory_bytes", &[]).unwrap_or(0.0);
        let cpu = c.delta("process_cpu_seconds_total", &[]).unwrap_or(0.0) / c.dt;
        c.add(
            "resources",
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
}

/// Evaluates scrapes taken `interval_seconds` apart. Pure: no I/O.
pub fn evaluate(nodes: &[NodeScrape], interval_seconds: f64, t: Thresholds) -> Report {
    let dt = interval_seconds.max(1e-3);
    let mut findings = Vec::new();
    let mut leaders = Vec::new();
    for n in nodes {
        match (&n.first, &n.second) {
            (Some(a), Some(b)) => {
                if sum(b, "eventstream_raft_is_leader", &[]).unwrap_or(0.0) >= 1.0 {
                    leaders.push(n.endpoint.clone());
                }
                check_node(&mut Ctx {
                    endpoint: &n.endpoint,
                    first: a,
                    second: b,
                    dt,
                    t: &t,
                    out: &mut findings,
                });
            }
            _ => findings.push(Finding {
                area: "replication and elections",
                grade: Grade::Critical,
                endpoint: Some(n.endpoint.clone()),
                summary: "node is down or unreachable".into(),
                evidence: n.error.clone().unwrap_or_else(|| "no metrics".into()),
                recommendation: "Check the process, its logs and its network; a cluster tolerates a minority down.".into(),
                alert: Some("EventStreamNodeDown"),
                runbook: Some(runbook("EventStreamNodeDown")),
            }),
        }
    }
    if leaders.len() > 1 {
        findings.push(Finding {
            area: "replication and elections",
            grade: Grade::Critical,
            endpoint: None,
            summary: format!("{} nodes claim to be leader", leaders.len()),
            evidence: leaders.join(", "),
            recommendation: "A partition or a stale leader: check the network and clocks; only one leader can commit.".into(),
            alert: Some("EventStreamMultipleLeaders"),
            runbook: Some(runbook("EventStreamMultipleLeaders")),
        });
    }
    let areas: Vec<AreaGrade> = AREAS
        .iter()
        .map(|&area| AreaGrade {
            area,
            grade: findings
                .iter()
                .filter(|f| f.area == area)
                .map(|f| f.grade)
                .max()
                .unwrap_or(Grade::Ok),
        })
        .collect();
    let overall = areas.iter().map(|a| a.grade).max().unwrap_or(Grade::Ok);
    // The likely bottleneck: the most severe finding; among equals, the one furthest upstream in
    // the order an event travels (a full queue explains high latency, not the other way round).
    let upstream = |f: &Finding| match f.alert {
        Some(
            "EventStreamNodeDown"
            | "EventStreamQuorumLost"
            | "EventStreamNoLeader"
            | "EventStreamMultipleLeaders",
        ) => 0,
        Some("EventStreamWorkersDown") => 1,
        Some("EventStreamHighFsyncLatency") => 2,
        Some("EventStreamReplicationLag") => 3,
        Some("EventStreamQueueFull" | "EventStreamEventsDropped") => 4,
        Some("EventStreamFollowerApplyLag" | "EventStreamHandlerPanics") => 5,
        Some(_) => 6,
        None => 7,
    };
    let bottleneck = findings
        .iter()
        .filter(|f| f.grade > Grade::Ok)
        .min_by_key(|f| (std::cmp::Reverse(f.grade), upstream(f)))
        .cloned();
    Report {
        endpoints: nodes.iter().map(|n| n.endpoint.clone()).collect(),
        interval_seconds: dt,
        overall,
        areas,
        bottleneck,
        findings,
        thresholds: t,
    }
}

impl Report {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "eventstream doctor — {} endpoint(s), sampled over {:.1} s: {}",
            self.endpoints.len(),
            self.interval_seconds,
            self.overall.label()
        );
        for a in &self.areas {
            let _ = writeln!(s, "\n[{:<8}] {}", a.grade.label(), a.area);
            for f in self.findings.iter().filter(|f| f.area == a.area) {
                let who = f.endpoint.as_deref().unwrap_or("cluster");
                let _ = writeln!(
                    s,
                    "  {:<8} {who}: {} ({})",
                    f.grade.label(),
                    f.summary,
                    f.evidence
                );
            }
        }
        match &self.bottleneck {
            Some(b) => {
                let _ = writeln!(s, "\nLikely bottleneck: {} — {}", b.area, b.summary);
                let _ = writeln!(
                    s,
                    "  where:          {}",
                    b.endpoint.as_deref().unwrap_or("cluster")
                );
                let _ = writeln!(s, "  evidence:       {}", b.evidence);
                let _ = writeln!(s, "  recommendation: {}", b.recommendation);
                if let Some(r) = &b.runbook {
                    let _ = writeln!(s, "  runbook:        {r}");
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "\nNo bottleneck: every area is within the alert thresholds."
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(endpoint: &str, first: &str, second: &str) -> NodeScrape {
        NodeScrape {
            endpoint: endpoint.into(),
            first: Some(prom::parse(first).unwrap()),
            second: Some(prom::parse(second).unwrap()),
            error: None,
        }
    }

    /// A healthy node's metrics at a point in time: `k` scales the counters.
    fn healthy(k: f64, depth: f64, is_leader: bool) -> String {
        format!(
            "eventstream_queue_depth{{queue=\"realtime\"}} {depth}\n\
             eventstream_queue_capacity{{queue=\"realtime\"}} 16384\n\
             eventstream_queue_full_total{{queue=\"realtime\"}} 0\n\
             eventstream_events_dropped_total{{reason=\"queue_full\"}} 0\n\
             eventstream_events_dropped_total{{reason=\"hard_stop\"}} 0\n\
             eventstream_handler_panics_total 0\n\
             eventstream_handler_errors_total 0\n\
             eventstream_workers_alive 1\n\
             eventstream_workers 1\n\
             eventstream_dedup_hits_total {}\n\
             eventstream_dedup_misses_total {}\n\
             eventstream_event_latency_seconds_bucket{{le=\"1e-6\"}} {}\n\
             eventstream_event_latency_seconds_bucket{{le=\"0.001\"}} {}\n\
             eventstream_event_latency_seconds_bucket{{le=\"0.01\"}} {}\n\
             eventstream_event_latency_seconds_bucket{{le=\"+Inf\"}} {}\n\
             eventstream_raft_has_leader 1\n\
             eventstream_raft_is_leader {}\n\
             eventstream_raft_term 3\n\
             eventstream_raft_leader_changes_total 1\n\
             eventstream_raft_commit_index {}\n\
             eventstream_raft_applied_index {}\n\
             eventstream_raft_members 3\n\
             eventstream_raft_peers_connected 2\n\
             eventstream_raft_proposals_failed_total 0\n\
             eventstream_raft_fsync_duration_seconds_bucket{{le=\"0.001\"}} {}\n\
             eventstream_raft_fsync_duration_seconds_bucket{{le=\"0.1\"}} {}\n\
             eventstream_raft_fsync_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             process_open_fds 20\nprocess_max_fds 1024\nprocess_resident_memory_bytes 1e7\nprocess_cpu_seconds_total {}\n",
            k * 10.0,
            k * 1000.0,
            k * 990.0,
            k * 1000.0,
            k * 1000.0,
            k * 1000.0,
            u8::from(is_leader),
            k * 100.0,
            k * 100.0,
            k * 50.0,
            k * 50.0,
            k * 50.0,
            k,
        )
    }

    #[test]
    fn a_healthy_cluster_is_ok_everywhere() {
        let nodes = vec![
            node(
                "http://a:1",
                &healthy(1.0, 10.0, true),
                &healthy(2.0, 12.0, true),
            ),
            node(
                "http://b:1",
                &healthy(1.0, 0.0, false),
                &healthy(2.0, 0.0, false),
            ),
        ];
        let r = evaluate(&nodes, 2.0, Thresholds::default());
        assert_eq!(r.overall, Grade::Ok, "{}", r.render());
        assert!(r.bottleneck.is_none());
        assert!(r.areas.iter().all(|a| a.grade == Grade::Ok));
        assert!(r.render().contains("No bottleneck"));
        // Every area that has data produced a finding.
        for area in [
            "latency",
            "queues and drops",
            "dedup",
            "replication and elections",
            "disk fsync",
            "resources",
        ] {
            assert!(r.findings.iter().any(|f| f.area == area), "{area}");
        }
    }

    #[test]
    fn a_full_queue_with_high_latency_names_the_queue_as_bottleneck() {
        let first = healthy(1.0, 15_000.0, true);
        let mut second = healthy(2.0, 15_500.0, true);
        // Most events in the interval took more than 1 ms.
        for (le, count) in [("1e-6", "1000"), ("0.001", "1100")] {
            second = second.replace(
                &format!(
                    "eventstream_event_latency_seconds_bucket{{le=\"{le}\"}} {}",
                    if le == "1e-6" { "1980" } else { "2000" }
                ),
                &format!("eventstream_event_latency_seconds_bucket{{le=\"{le}\"}} {count}"),
            );
        }
        second = second.replace(
            "eventstream_queue_full_total{queue=\"realtime\"} 0",
            "eventstream_queue_full_total{queue=\"realtime\"} 42",
        );
        let r = evaluate(
            &[node("http://a:1", &first, &second)],
            2.0,
            Thresholds::default(),
        );
        assert_eq!(r.overall, Grade::Warning, "{}", r.render());
        let b = r.bottleneck.as_ref().unwrap();
        assert_eq!(b.alert, Some("EventStreamQueueFull"));
        assert!(b.summary.contains("realtime"), "{}", b.summary);
        assert_eq!(
            b.runbook.as_deref(),
            Some("alerts/runbooks/EventStreamQueueFull.md")
        );
        assert!(r
            .findings
            .iter()
            .any(|f| f.alert == Some("EventStreamHighLatency")));
        let text = r.render();
        assert!(
            text.contains("Likely bottleneck: queues and drops"),
            "{text}"
        );
    }

    #[test]
    fn a_failed_log_storage_is_critical_on_that_node_only() {
        let failed = |k: f64| {
            format!(
                "{}eventstream_raft_storage_failed 1\n",
                healthy(k, 0.0, false)
            )
        };
        let fine = |k: f64| {
            format!(
                "{}eventstream_raft_storage_failed 0\n",
                healthy(k, 0.0, true)
            )
        };
        let nodes = vec![
            node("http://a:1", &fine(1.0), &fine(2.0)),
            node("http://b:1", &failed(1.0), &failed(2.0)),
        ];
        let r = evaluate(&nodes, 1.0, Thresholds::default());
        assert_eq!(r.overall, Grade::Critical);
        let storage: Vec<_> = r
            .findings
            .iter()
            .filter(|f| f.alert == Some("EventStreamStorageFailed"))
            .collect();
        assert_eq!(storage.len(), 1, "{:?}", r.findings);
        assert_eq!(storage[0].endpoint.as_deref(), Some("http://b:1"));
        assert_eq!(storage[0].grade, Grade::Critical);
        assert!(storage[0]
            .runbook
            .as_deref()
            .is_some_and(|u| u.ends_with("EventStreamStorageFailed.md")));
    }

    #[test]
    fn a_down_node_and_two_leaders_are_critical() {
        let down = NodeScrape {
            endpoint: "http://c:1".into(),
            first: None,
            second: None,
            error: Some("connection refused".into()),
        };
        let nodes = vec![
            node(
                "http://a:1",
                &healthy(1.0, 0.0, true),
                &healthy(2.0, 0.0, true),
            ),
            node(
                "http://b:1",
                &healthy(1.0, 0.0, true),
                &healthy(2.0, 0.0, true),
            ),
            down,
        ];
        let r = evaluate(&nodes, 1.0, Thresholds::default());
        assert_eq!(r.overall, Grade::Critical);
        let alerts: Vec<_> = r.findings.iter().filter_map(|f| f.alert).collect();
        assert!(alerts.contains(&"EventStreamNodeDown"));
        assert!(alerts.contains(&"EventStreamMultipleLeaders"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["overall"], "critical");
    }

    #[test]
    fn a_lagging_follower_and_slow_fsync_are_warnings() {
        let first = healthy(1.0, 0.0, true);
        let second = format!(
            "{}eventstream_raft_replication_lag_entries{{peer=\"3\"}} 5000\n",
            healthy(2.0, 0.0, true)
        )
        .replace(
            "eventstream_raft_fsync_duration_seconds_bucket{le=\"0.001\"} 100",
            "eventstream_raft_fsync_duration_seconds_bucket{le=\"0.001\"} 50",
        );
        let r = evaluate(
            &[node("http://a:1", &first, &second)],
            1.0,
            Thresholds::default(),
        );
        let alerts: Vec<_> = r.findings.iter().filter_map(|f| f.alert).collect();
        assert!(
            alerts.contains(&"EventStreamReplicationLag"),
            "{}",
            r.render()
        );
        assert!(
            alerts.contains(&"EventStreamHighFsyncLatency"),
            "{}",
            r.render()
        );
        // fsync is upstream of replication lag: it is named first.
        assert_eq!(
            r.bottleneck.unwrap().alert,
            Some("EventStreamHighFsyncLatency")
        );
    }
}
