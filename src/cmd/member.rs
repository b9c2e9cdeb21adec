//! `member add | remove | list` and `leader transfer`: the administrative commands.

use super::{runtime, ClusterArgs};
use anyhow::Context;
use clap::{Args, Subcommand};
use eventstream_client::{status_with, Client, ClientError};
use eventstream_core::replication::RaftRole;
use eventstream_proto::admin::{MemberList, PROMOTE_MAX_LAG};
use eventstream_proto::{ErrorCode, Member};
use std::time::{Duration, Instant};

/// Where, how long and how to print (shared by the admin commands).
#[derive(Debug, Args, Clone)]
pub struct AdminTarget {
    /// Cluster, TLS, the admin bearer token (`--token` / `EVENTSTREAM_TOKEN`) and timeout.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How long `member add` waits for a learner to catch up, unless `--timeout` says otherwise.
const ADD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `leader transfer` may take, unless `--timeout` says otherwise.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(15);

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
    /// Cluster (with `--if-leader`: the node to check, usually the local one), TLS, token,
    /// and how long the transfer may take.
    #[command(flatten)]
    pub cluster: ClusterArgs,
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
pub fn member(cmd: MemberCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        MemberCommand::List(t) => {
            let c = t
                .cluster
                .client(t.cluster.timeout_or(super::DEFAULT_TIMEOUT))?;
            let l = rt.block_on(c.member_list())?;
            print_list(&l, t.json);
        }
        MemberCommand::Add(a) => {
            let member = eventstream_proto::parse_member(&a.member).context("member")?;
            let timeout = a.target.cluster.timeout_or(ADD_TIMEOUT);
            let c = a.target.cluster.client(timeout)?;
            let l = rt.block_on(add_member(&c, member, a.learner, timeout))?;
            print_list(&l, a.target.json);
        }
        MemberCommand::Remove(a) => {
            let timeout = a.target.cluster.timeout_or(TRANSFER_TIMEOUT);
            let c = a.target.cluster.client(timeout)?;
            let l = rt.block_on(remove_member(&c, a.id, timeout))?;
            print_list(&l, a.target.json);
        }
    }
    Ok(())
}

/// How long the CLI waits out `ConfChangeInProgress` (a new leader refuses changes until its
/// first entry is applied; a previous change may still be committing) before reporting it.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(5);

/// Runs `f` again while it fails with `ConfChangeInProgress`, for up to [`IN_PROGRESS_WAIT`].
async fn when_settled<T, F, Fut>(mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + IN_PROGRESS_WAIT;
    loop {
        match f().await {
            Err(ClientError::Server {
                code: ErrorCode::ConfChangeInProgress,
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
    member: Member,
    learner_only: bool,
    timeout: Duration,
) -> Result<MemberList, ClientError> {
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
                Err(ClientError::Server {
                    code: ErrorCode::Refused,
                    ..
                }) if Instant::now() < deadline => {}
                Err(e) => return Err(e),
            }
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Timeout(format!(
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
) -> Result<MemberList, ClientError> {
    let list = c.member_list().await?;
    if list.leader_id == id && list.members.iter().any(|m| m.id == id) {
        let (leader, term) = when_settled(|| c.transfer_leader(None, timeout)).await?;
        eprintln!("member {id} was the leader; leadership moved to {leader} (term {term})");
    }
    when_settled(|| c.member_remove(id)).await
}

/// Runs `eventstream leader transfer`.
pub fn leader(cmd: LeaderCommand) -> anyhow::Result<()> {
    let LeaderCommand::Transfer(a) = cmd;
    let rt = runtime()?;
    let eps = a.cluster.endpoints();
    let timeout = a.cluster.timeout_or(TRANSFER_TIMEOUT);
    if a.if_leader {
        let first = eps.first().cloned().unwrap_or_default();
        let probe = a.cluster.tls.client_config(Vec::new())?;
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
        let c = ClusterArgs {
            endpoints: vec![first.clone()],
            ..a.cluster.clone()
        }
        .client(timeout + Duration::from_secs(5))?;
        let moved = rt.block_on(when_settled(|| {
            c.transfer_leader_from(Some(st.node_id), a.to, timeout)
        }));
        match moved {
            Ok((leader, term)) => println!(
                "leadership moved from {} to {leader} (term {term})",
                st.node_id
            ),
            Err(ClientError::Server {
                code: ErrorCode::Refused,
                message,
            }) if message.contains("nothing to do") => {
                println!("node {} at {first}: {message}", st.node_id)
            }
            Err(e) => return Err(e.into()),
        }
        return Ok(());
    }
    let c = a.cluster.client(timeout + Duration::from_secs(5))?;
    let (leader, term) = rt.block_on(when_settled(|| c.transfer_leader(a.to, timeout)))?;
    println!("leadership moved to {leader} (term {term})");
    Ok(())
}
