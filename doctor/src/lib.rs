//! # eventstream-doctor
//!
//! `eventstream doctor` reads each node's `/metrics` twice (an interval apart), applies **the
//! same thresholds as the alert rules** in `alerts/eventstream.rules.yml`, and prints a graded
//! report — ok / warning / critical per [`Area`] (latency, queues and drops, handlers, dedup,
//! replication and elections, disk fsync, resources) — naming the likely bottleneck with its
//! evidence and a recommendation, each linked to a runbook.
//!
//! Main types: [`diagnose`] (collect + evaluate), [`evaluate`] (pure: scrapes in, [`Report`]
//! out — what the tests drive), [`Thresholds`] (the alert rules' numbers), [`Report`] /
//! [`Finding`] / [`Area`] / [`Grade`].
//!
//! Modules: [`prom`] (the Prometheus text-format parser and `histogram_quantile`) and [`http`]
//! (the minimal `GET`) are public, since the live tests read nodes with them too; the checks,
//! one function per area, are private (`checks.rs`).
//!
//! The thresholds are constants here and in the rules file; `tests/thresholds.rs` checks that
//! the two agree, so they cannot drift apart silently.

mod checks;
pub mod http;
pub mod prom;

use prom::Sample;
use serde::Serialize;
use std::fmt::{self, Write as _};
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
    /// EventStreamDiskFilling: free / size of the data volume below this (a warning).
    pub disk_free_warning_ratio: f64,
    /// EventStreamDiskAlmostFull: free / size of the data volume below this (critical).
    pub disk_free_critical_ratio: f64,
    /// EventStreamConsumerGroupLagGrowing: a group this many offsets behind a topic's end
    /// (and further behind than at the first scrape).
    pub group_lag_offsets: f64,
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
            disk_free_warning_ratio: 0.15,
            disk_free_critical_ratio: 0.05,
            group_lag_offsets: 1000.0,
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

/// The areas a report grades. [`Area::ALL`] is the display order; [`Area::as_str`] is the name
/// the text and JSON reports use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// Event latency (p99).
    Latency,
    /// Queue fill and dropped events.
    QueuesAndDrops,
    /// Handler panics and dead workers.
    Handlers,
    /// The share of duplicate publishes.
    Dedup,
    /// Leadership, quorum, follower and apply lag, failed proposals, nodes down.
    ReplicationAndElections,
    /// Log storage failure, fsync latency and the data volume's free space.
    DiskFsync,
    /// File descriptors, memory, CPU.
    Resources,
}

impl Area {
    /// Every area, in display order.
    pub const ALL: [Area; 7] = [
        Area::Latency,
        Area::QueuesAndDrops,
        Area::Handlers,
        Area::Dedup,
        Area::ReplicationAndElections,
        Area::DiskFsync,
        Area::Resources,
    ];

    /// The area's name in the reports (text and JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Latency => "latency",
            Area::QueuesAndDrops => "queues and drops",
            Area::Handlers => "handlers",
            Area::Dedup => "dedup",
            Area::ReplicationAndElections => "replication and elections",
            Area::DiskFsync => "disk fsync",
            Area::Resources => "resources",
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Serialised as its name ([`Area::as_str`]).
impl Serialize for Area {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One observation.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Which area it belongs to.
    pub area: Area,
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
    /// The area.
    pub area: Area,
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

/// What one endpoint gave: two `/metrics` scrapes (`None` if unreachable).
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

/// Evaluates scrapes taken `interval_seconds` apart. Pure: no I/O.
pub fn evaluate(nodes: &[NodeScrape], interval_seconds: f64, t: Thresholds) -> Report {
    let dt = interval_seconds.max(1e-3);
    let mut findings = Vec::new();
    let mut leaders = Vec::new();
    for n in nodes {
        match (&n.first, &n.second) {
            (Some(a), Some(b)) => {
                if checks::claims_leadership(b) {
                    leaders.push(n.endpoint.clone());
                }
                checks::node(&n.endpoint, a, b, dt, &t, &mut findings);
            }
            _ => findings.push(checks::node_down(n)),
        }
    }
    findings.extend(checks::multiple_leaders(&leaders));
    let areas = area_grades(&findings);
    let overall = areas.iter().map(|a| a.grade).max().unwrap_or(Grade::Ok);
    let bottleneck = bottleneck(&findings);
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

/// Every area, in display order, graded by the worst of its findings.
fn area_grades(findings: &[Finding]) -> Vec<AreaGrade> {
    Area::ALL
        .into_iter()
        .map(|area| AreaGrade {
            area,
            grade: findings
                .iter()
                .filter(|f| f.area == area)
                .map(|f| f.grade)
                .max()
                .unwrap_or(Grade::Ok),
        })
        .collect()
}

/// How far upstream a finding's alert is in the order an event travels (lower is further up):
/// a full queue explains high latency, not the other way round.
fn upstream_rank(f: &Finding) -> u8 {
    match f.alert {
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
    }
}

/// The likely bottleneck: the most severe finding; among equals, the one furthest upstream
/// ([`upstream_rank`]); among those, the first.
fn bottleneck(findings: &[Finding]) -> Option<Finding> {
    findings
        .iter()
        .filter(|f| f.grade > Grade::Ok)
        .min_by_key(|f| (std::cmp::Reverse(f.grade), upstream_rank(f)))
        .cloned()
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

    /// The area names are part of the output (text and JSON), which scripts, the live tests and
    /// the docs read: they must not change with the enum.
    #[test]
    fn areas_keep_their_names_and_order() {
        let names: Vec<&str> = Area::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            names,
            [
                "latency",
                "queues and drops",
                "handlers",
                "dedup",
                "replication and elections",
                "disk fsync",
                "resources",
            ]
        );
        for a in Area::ALL {
            assert_eq!(a.to_string(), a.as_str());
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        assert_eq!(format!("[{:<8}]", Area::Dedup), "[dedup   ]");
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
            assert!(r.findings.iter().any(|f| f.area.as_str() == area), "{area}");
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

    /// A healthy node whose data volume (100 GiB) has `free_gib` free.
    fn with_volume(k: f64, free_gib: f64) -> String {
        format!(
            "{}eventstream_storage_volume_size_bytes 107374182400\n\
             eventstream_storage_volume_free_bytes {}\n",
            healthy(k, 0.0, true),
            free_gib * 1073741824.0
        )
    }

    /// The disk-space finding of a node (there is at most one per node).
    fn disk_space(r: &Report) -> Vec<&Finding> {
        r.findings
            .iter()
            .filter(|f| f.summary.starts_with("data volume"))
            .collect()
    }

    #[test]
    fn the_data_volume_warns_below_15_percent_free_and_is_critical_below_5() {
        let grade = |free_gib: f64| {
            let r = evaluate(
                &[node(
                    "http://a:1",
                    &with_volume(1.0, free_gib),
                    &with_volume(2.0, free_gib),
                )],
                1.0,
                Thresholds::default(),
            );
            let found = disk_space(&r);
            assert_eq!(found.len(), 1, "{}", r.render());
            (found[0].grade, found[0].alert, r.overall)
        };
        assert_eq!(grade(40.0), (Grade::Ok, None, Grade::Ok));
        assert_eq!(grade(15.0), (Grade::Ok, None, Grade::Ok));
        assert_eq!(
            grade(10.0),
            (
                Grade::Warning,
                Some("EventStreamDiskFilling"),
                Grade::Warning
            )
        );
        assert_eq!(
            grade(3.0),
            (
                Grade::Critical,
                Some("EventStreamDiskAlmostFull"),
                Grade::Critical
            )
        );
        // A volume of unknown size (0) is not graded, as the rules leave it out.
        let unknown = healthy(2.0, 0.0, true)
            + "eventstream_storage_volume_size_bytes 0\neventstream_storage_volume_free_bytes 0\n";
        let r = evaluate(
            &[node("http://a:1", &unknown, &unknown)],
            1.0,
            Thresholds::default(),
        );
        assert!(disk_space(&r).is_empty(), "{}", r.render());
        assert_eq!(r.overall, Grade::Ok);
    }

    #[test]
    fn missing_stream_events_warn_only_while_nothing_is_copied() {
        let copying = |k: f64, missing: f64, copied: f64| {
            format!(
                "{}eventstream_stream_missing_events {missing}\n\
                 eventstream_stream_copied_bytes_total {copied}\n\
                 eventstream_stream_copy_failures_total {}\n",
                healthy(k, 0.0, true),
                k * 2.0
            )
        };
        let copy_findings = |first: &str, second: &str| {
            let r = evaluate(
                &[node("http://a:1", first, second)],
                1.0,
                Thresholds::default(),
            );
            let found: Vec<Finding> = r
                .findings
                .iter()
                .filter(|f| {
                    f.summary.contains("missing stream events")
                        || f.summary.contains("stream events missing")
                })
                .cloned()
                .collect();
            (found, r.overall)
        };
        // Stuck: 500 missing, the copy counter did not move.
        let (found, overall) =
            copy_findings(&copying(1.0, 500.0, 4096.0), &copying(2.0, 500.0, 4096.0));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].grade, Grade::Warning);
        assert_eq!(found[0].alert, Some("EventStreamStreamCopyStuck"));
        assert_eq!(
            found[0].runbook.as_deref(),
            Some("alerts/runbooks/EventStreamStreamCopyStuck.md")
        );
        assert!(found[0].evidence.contains("2 copy failures"), "{found:?}");
        assert_eq!(overall, Grade::Warning);
        // Copying: bytes arrived in the interval.
        let (found, overall) =
            copy_findings(&copying(1.0, 500.0, 4096.0), &copying(2.0, 400.0, 8192.0));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].grade, found[0].alert), (Grade::Ok, None));
        assert_eq!(overall, Grade::Ok);
        // Whole: nothing to report.
        let (found, overall) =
            copy_findings(&copying(1.0, 0.0, 8192.0), &copying(2.0, 0.0, 8192.0));
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(overall, Grade::Ok);
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

    #[test]
    fn a_consumer_group_falling_behind_is_a_warning_and_one_catching_up_is_not() {
        let lag = |t: f64, stalled: u64, catching_up: u64| {
            format!(
                "{}eventstream_kafka_group_lag_offsets{{group=\"stalled\",topic=\"orders\"}} {stalled}\n\
                 eventstream_kafka_group_lag_offsets{{group=\"catching-up\",topic=\"orders\"}} {catching_up}\n",
                healthy(t, 0.0, true)
            )
        };
        let groups = |first: &str, second: &str| -> Vec<Finding> {
            evaluate(
                &[node("http://a:1", first, second)],
                1.0,
                Thresholds::default(),
            )
            .findings
            .into_iter()
            .filter(|f| f.summary.contains("consumer group"))
            .collect()
        };
        let found = groups(&lag(1.0, 5000, 90000), &lag(2.0, 5100, 80000));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].grade, Grade::Warning);
        assert_eq!(found[0].alert, Some("EventStreamConsumerGroupLagGrowing"));
        assert!(
            found[0]
                .summary
                .contains("stalled lags 5100 offsets on orders (+100"),
            "{found:?}"
        );
        assert_eq!(
            found[0].runbook.as_deref(),
            Some("alerts/runbooks/EventStreamConsumerGroupLagGrowing.md")
        );
        // Both catching up (or under the threshold): one ok finding naming the largest lag.
        let found = groups(&lag(1.0, 900, 90000), &lag(2.0, 950, 80000));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].grade, found[0].alert), (Grade::Ok, None));
        assert!(
            found[0]
                .summary
                .contains("largest lag 80000 (catching-up on orders)"),
            "{found:?}"
        );
        // No groups (a follower, or none committed): nothing.
        assert!(groups(&healthy(1.0, 0.0, true), &healthy(2.0, 0.0, true)).is_empty());
    }
}
