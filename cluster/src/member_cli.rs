//! Command-line pieces for membership and leadership: `member add|remove|list`,
//! `leader transfer`, and `bench restart` (write unavailability during graceful leader
//! restarts). The binary only parses and delegates.

use crate::admin::{MemberList, PROMOTE_MAX_LAG};
use crate::cli::{percentile, runtime, split_endpoints, ClientTlsArgs};
use crate::client::{status_with, Client, ClientConfig};
use crate::config::parse_member;
use crate::error::ClusterError;
use crate::procs::ProcessCluster;
use bytes::Bytes;
use clap::{Args, Subcommand};
use eventstream_core::replication::RaftRole;
use eventstream_core::{Event, Priority};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Parses `500ms`, `15s`, `2m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 15s, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        other => return Err(format!("unknown unit `{other}` in `{s}` (ms, s, m)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn client(
    endpoints: &[String],
    timeout: Duration,
    tls: &ClientTlsArgs,
) -> Result<Client, ClusterError> {
    let mut cfg = tls.client_config(split_endpoints(endpoints))?;
    cfg.deadline = cfg.deadline.max(timeout + Duration::from_secs(5));
    Client::new(cfg)
}

/// Where and how long (shared by the admin commands).
#[derive(Debug, Args, Clone)]
pub struct AdminTarget {
    /// Node addresses (any member; requests are redirected to the leader).
    #[arg(
        long,
        env = "EVENTSTREAM_ENDPOINTS",
        required = true,
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Give up after this long (e.g. 500ms, 15s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// TLS and the admin bearer token (`--token` / `EVENTSTREAM_TOKEN`).
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// `eventstream member ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum MemberCommand {
    /// Add a node: it joins as a learner, catches up, and is promoted to a voter (with
    /// `--learner` it stays a learner; run `member add` again without it to promote).
    Add(MemberAddArgs),
    /// Remove a node (moving leadership away first if it is the leader).
    Remove(MemberRemoveArgs),
    /// List the members as the leader sees them.
    List(AdminTarget),
}

/// `eventstream member add`.
#[derive(Debug, Args, Clone)]
pub struct MemberAddArgs {
    /// `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT]`.
    pub member: String,
    /// Only add it as a learner (non-voting); do not wait for it or promote it.
    #[arg(long)]
    pub learner: bool,
    /// Cluster, timeout, output.
    #[command(flatten)]
    pub target: AdminTarget,
}

/// `eventstream member remove`.
#[derive(Debug, Args, Clone)]
pub struct MemberRemoveArgs {
    /// Raft id of the member to remove.
    pub id: u64,
    /// Cluster, timeout, output.
    #[command(flatten)]
    pub target: AdminTarget,
}

/// `eventstream leader ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum LeaderCommand {
    /// Hand leadership to another voter and wait until it leads.
    Transfer(LeaderTransferArgs),
}

/// `eventstream leader transfer`.
#[derive(Debug, Args, Clone)]
pub struct LeaderTransferArgs {
    /// Target voter (default: the most caught-up one).
    #[arg(long)]
    pub to: Option<u64>,
    /// Only if the (first) endpoint is the leader; otherwise do nothing and exit 0. For a
    /// pre-stop hook against the local node (`--endpoints 127.0.0.1:7000`).
    #[arg(long)]
    pub if_leader: bool,
    /// Node addresses (with `--if-leader`: the node to check, usually the local one).
    #[arg(
        long,
        env = "EVENTSTREAM_ENDPOINTS",
        required = true,
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Give up after this long.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// TLS and the admin bearer token (`--token` / `EVENTSTREAM_TOKEN`).
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// Renders a member list as a table.
pub fn member_table(l: &MemberList) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "ADDRESS".into(),
        "HTTP".into(),
        "ROLE".into(),
        "MATCH".into(),
        "LAG".into(),
    ]];
    for m in &l.members {
        let role = if m.id == l.leader_id {
            "leader"
        } else if m.learner {
            "learner"
        } else {
            "voter"
        };
        rows.push([
            m.id.to_string(),
            m.address.clone(),
            m.http_address.clone().unwrap_or_else(|| "-".into()),
            role.into(),
            m.match_index.map_or("-".into(), |x| x.to_string()),
            m.lag_entries.map_or("-".into(), |x| x.to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "term {}; {} voters, {} learners{}\n",
        l.term,
        l.members.iter().filter(|m| !m.learner).count(),
        l.members.iter().filter(|m| m.learner).count(),
        if l.joint { "; joint configuration" } else { "" }
    ));
    out
}

fn print_list(l: &MemberList, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(l).unwrap_or_default());
    } else {
        print!("{}", member_table(l));
    }
}

/// Runs `eventstream member ...`.
pub fn run_member(cmd: MemberCommand) -> Result<(), ClusterError> {
    let rt = runtime()?;
    match cmd {
        MemberCommand::List(t) => {
            let c = client(&t.endpoints, t.timeout, &t.tls)?;
            let l = rt.block_on(c.member_list())?;
            print_list(&l, t.json);
        }
        MemberCommand::Add(a) => {
            let member = parse_member(&a.member).map_err(|e| match e {
                ClusterError::InvalidConfig { reason, .. } => {
                    ClusterError::config("member", reason)
                }
                other => other,
            })?;
            let c = client(&a.target.endpoints, a.target.timeout, &a.target.tls)?;
            let l = rt.block_on(add_member(&c, member, a.learner, a.target.timeout))?;
            print_list(&l, a.target.json);
        }
        MemberCommand::Remove(a) => {
            let c = client(&a.target.endpoints, a.target.timeout, &a.target.tls)?;
            let l = rt.block_on(remove_member(&c, a.id, a.target.timeout))?;
            print_list(&l, a.target.json);
        }
    }
    Ok(())
}

/// How long the CLI waits out `ConfChangeInProgress` (a new leader refuses changes until its
/// first entry is applied; a previous change may still be committing) before reporting it.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(5);

/// Runs `f` again while it fails with `ConfChangeInProgress`, for up to [`IN_PROGRESS_WAIT`].
async fn when_settled<T, F, Fut>(mut f: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let deadline = Instant::now() + IN_PROGRESS_WAIT;
    loop {
        match f().await {
            Err(ClusterError::Server {
                code: crate::frame::ErrorCode::ConfChangeInProgress,
                ..
            }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r,
        }
    }
}

/// `member add`: learner first (unless it is one already), then — without `learner_only` —
/// wait until it is within [`PROMOTE_MAX_LAG`] entries and promote it.
pub async fn add_member(
    c: &Client,
    member: crate::Member,
    learner_only: bool,
    timeout: Duration,
) -> Result<MemberList, ClusterError> {
    let id = member.id;
    let list = c.member_list().await?;
    let existing = list.members.iter().find(|m| m.id == id);
    let mut l = match existing {
        Some(m) if m.learner && !learner_only => list.clone(),
        // A voter, or a learner added again with --learner: the leader explains the refusal.
        Some(m) => {
            c.member_add(member.clone(), learner_only || m.learner)
                .await?
        }
        None => {
            let l = c.member_add(member.clone(), true).await?;
            eprintln!("member {id} added as a learner");
            l
        }
    };
    if learner_only {
        return Ok(l);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let lag = l
            .members
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.lag_entries);
        if lag.is_some_and(|x| x <= PROMOTE_MAX_LAG) {
            match when_settled(|| c.member_add(member.clone(), false)).await {
                Ok(l) => {
                    eprintln!("member {id} promoted to voter");
                    return Ok(l);
                }
                // It fell behind again between the list and the request: keep waiting.
                Err(ClusterError::Server {
                    code: crate::frame::ErrorCode::Refused,
                    ..
                }) if Instant::now() < deadline => {}
                Err(e) => return Err(e),
            }
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::Timeout(format!(
                "learner {id} did not catch up within {timeout:?} (lag {lag:?} entries); it stays a learner — is the node running with --join?"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        l = c.member_list().await?;
    }
}

/// `member remove`: moves leadership away first if `id` leads.
pub async fn remove_member(
    c: &Client,
    id: u64,
    timeout: Duration,
) -> Result<MemberList, ClusterError> {
    let list = c.member_list().await?;
    if list.leader_id == id && list.members.iter().any(|m| m.id == id) {
        let (leader, term) = when_settled(|| c.transfer_leader(None, timeout)).await?;
        eprintln!("member {id} was the leader; leadership moved to {leader} (term {term})");
    }
    when_settled(|| c.member_remove(id)).await
}

/// Runs `eventstream leader transfer`.
pub fn run_leader(cmd: LeaderCommand) -> Result<(), ClusterError> {
    let LeaderCommand::Transfer(a) = cmd;
    let rt = runtime()?;
    let eps = split_endpoints(&a.endpoints);
    if a.if_leader {
        let first = eps.first().cloned().unwrap_or_default();
        let probe = a.tls.client_config(Vec::new())?;
        let st = rt.block_on(status_with(&probe, &first, Duration::from_secs(2)))?;
        if st.role != RaftRole::Leader {
            println!(
                "node {} at {first} is not the leader (leader: {}); nothing to do",
                st.node_id,
                st.leader_id.map_or("none".into(), |l| l.to_string())
            );
            return Ok(());
        }
        // The status above may be up to 50 ms old: the request itself is conditional, so a
        // node that has just lost leadership does not have it moved off the new leader.
        let c = client(std::slice::from_ref(&first), a.timeout, &a.tls)?;
        let moved = rt.block_on(when_settled(|| {
            c.transfer_leader_from(Some(st.node_id), a.to, a.timeout)
        }));
        match moved {
            Ok((leader, term)) => println!(
                "leadership moved from {} to {leader} (term {term})",
                st.node_id
            ),
            Err(ClusterError::Server {
                code: crate::frame::ErrorCode::Refused,
                message,
            }) if message.contains("nothing to do") => {
                println!("node {} at {first}: {message}", st.node_id)
            }
            Err(e) => return Err(e),
        }
        return Ok(());
    }
    let c = client(&eps, a.timeout, &a.tls)?;
    let (leader, term) = rt.block_on(when_settled(|| c.transfer_leader(a.to, a.timeout)))?;
    println!("leadership moved to {leader} (term {term})");
    Ok(())
}

/// `eventstream bench restart`.
#[derive(Debug, Args, Clone)]
pub struct RestartBenchArgs {
    /// Graceful leader restarts (SIGTERM, wait for exit, start again).
    #[arg(long, default_value_t = 10)]
    pub restarts: usize,
    /// Concurrent publishing clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Events per publish request.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Data directory (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Result of `bench restart`.
#[derive(Debug, Serialize)]
pub struct RestartBenchResult {
    /// Graceful leader restarts done.
    pub restarts: usize,
    /// Per restart: the longest gap between consecutive acknowledged writes from just before
    /// the SIGTERM until the restarted node is back and caught up, ms.
    pub gap_ms: Vec<f64>,
    /// Median gap.
    pub gap_p50_ms: f64,
    /// 99th percentile gap.
    pub gap_p99_ms: f64,
    /// Largest gap.
    pub gap_max_ms: f64,
    /// Target: every gap ≤ 300 ms.
    pub target_ms: f64,
    /// Per restart: did leadership move before the old leader exited (term + 1, no election)?
    pub handed_off: Vec<bool>,
    /// Events acknowledged.
    pub acked: u64,
    /// Acknowledged events not readable afterwards (must be 0).
    pub lost: u64,
    /// Acknowledged events stored twice (must be 0).
    pub duplicated: u64,
    /// Nodes whose stream differs from node 1's (must be 0).
    pub diverged_nodes: u64,
    /// Publish requests that failed after all retries.
    pub failed_requests: u64,
    /// Wall time, s.
    pub seconds: f64,
}

/// Longest gap between consecutive instants of `acks` (sorted) in `[from, to]`, counting from
/// the last acknowledgement at or before `from`.
pub fn longest_gap(acks: &[Instant], from: Instant, to: Instant) -> Duration {
    let start = acks.partition_point(|t| *t <= from);
    let mut prev = if start > 0 { acks[start - 1] } else { from };
    let mut gap = Duration::ZERO;
    for t in acks[start..].iter().take_while(|t| **t <= to) {
        gap = gap.max(t.duration_since(prev));
        prev = *t;
    }
    // A window that ends without a further acknowledgement counts up to its end.
    gap.max(to.saturating_duration_since(prev))
}

/// Runs `bench restart` with `exe` as the node binary.
pub fn run_bench_restart(
    a: RestartBenchArgs,
    exe: &std::path::Path,
) -> Result<RestartBenchResult, ClusterError> {
    let (_tmp, dir) = crate::cli::bench_dir(a.data_dir.as_deref(), "eventstream-restart-")?;
    runtime()?.block_on(restart_bench(a, exe, &dir))
}

async fn restart_bench(
    a: RestartBenchArgs,
    exe: &std::path::Path,
    dir: &std::path::Path,
) -> Result<RestartBenchResult, ClusterError> {
    let start = Instant::now();
    let mut cluster = ProcessCluster::start(exe, 3, dir, &[])?;
    let eps = cluster.endpoints().to_vec();
    cluster.wait_healthy(Duration::from_secs(20)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let ack_times: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let mut pubs = Vec::new();
    for _ in 0..a.clients {
        let client = Client::new(ClientConfig::new(eps.clone()))?;
        let (stop, acked, failed, times) = (
            stop.clone(),
            acked.clone(),
            failed.clone(),
            ack_times.clone(),
        );
        let batch = a.batch;
        pubs.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let evs: Vec<Event> = (0..batch)
                    .map(|i| {
                        Event::new("restart", Priority::High, Bytes::from(format!("e{i}")))
                            .with_id(client.next_id().0)
                    })
                    .collect();
                let ids: Vec<u64> = evs.iter().map(|e| e.id.0).collect();
                match client.publish(evs).await {
                    Ok(offs) => {
                        times
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Instant::now());
                        acked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend(ids.into_iter().zip(offs));
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut gaps = Vec::new();
    let mut handed_off = Vec::new();
    for k in 0..a.restarts {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let leader = cluster.wait_healthy(Duration::from_secs(30)).await?;
        let term_before = cluster
            .statuses()
            .await
            .into_iter()
            .find_map(|(id, s)| s.filter(|_| id == leader).map(|s| s.term))
            .unwrap_or(0);
        let t0 = Instant::now();
        cluster.terminate(leader, Duration::from_secs(20))?;
        cluster.restart(leader)?;
        let new_leader = cluster.wait_healthy(Duration::from_secs(30)).await?;
        let t1 = Instant::now();
        let term_after = cluster
            .statuses()
            .await
            .into_iter()
            .find_map(|(id, s)| s.filter(|_| id == new_leader).map(|s| s.term))
            .unwrap_or(0);
        let mut times = ack_times.lock().unwrap_or_else(|p| p.into_inner()).clone();
        times.sort_unstable();
        let gap = longest_gap(&times, t0, t1).as_secs_f64() * 1e3;
        let moved = new_leader != leader && term_after == term_before + 1;
        if !a.json {
            eprintln!(
                "restart {}/{}: leader {leader} → {new_leader} (term {term_before} → {term_after}), longest write gap {gap:.1} ms",
                k + 1,
                a.restarts
            );
        }
        gaps.push(gap);
        handed_off.push(moved);
    }
    stop.store(true, Ordering::Relaxed);
    for p in pubs {
        let _ = p.await;
    }
    cluster.wait_healthy(Duration::from_secs(30)).await?;
    let acked: Vec<(u64, u64)> = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (lost, duplicated, diverged) = crate::cli::verify_acked(&eps, &acked).await?;
    drop(cluster);
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(RestartBenchResult {
        restarts: gaps.len(),
        gap_p50_ms: percentile(&sorted, 0.5),
        gap_p99_ms: percentile(&sorted, 0.99),
        gap_max_ms: sorted.last().copied().unwrap_or(0.0),
        target_ms: 300.0,
        gap_ms: gaps,
        handed_off,
        acked: acked.len() as u64,
        lost,
        duplicated,
        diverged_nodes: diverged,
        failed_requests: failed.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_are_explained() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3h").unwrap_err().contains("unit"));
        assert!(parse_duration("abc")
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn longest_gap_counts_from_the_last_ack_before_the_window() {
        let t = Instant::now();
        let ms = |x: u64| t + Duration::from_millis(x);
        let acks = [ms(0), ms(10), ms(20), ms(150), ms(160)];
        assert_eq!(
            longest_gap(&acks, ms(15), ms(170)),
            Duration::from_millis(130)
        );
        assert_eq!(
            longest_gap(&acks, ms(155), ms(300)),
            Duration::from_millis(140)
        );
    }
}
