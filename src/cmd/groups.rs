//! `groups list | describe`: consumer groups' committed offsets and lag, from a node's status
//! (every node holds the same replicated commits; the leader's view is preferred, as it
//! coordinates the groups).

use super::{print_json, render_table, runtime, ClusterArgs};
use clap::{Args, Subcommand};
use eventstream_client::status_with;
use eventstream_core::replication::{ClusterStatus, GroupLag, RaftRole};
use std::collections::BTreeMap;
use std::time::Duration;

/// `eventstream groups ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum GroupsCommand {
    /// Every group with committed offsets: topics, total lag.
    List(GroupsArgs),
    /// One group: committed offset, topic end and lag per topic.
    Describe(DescribeArgs),
}

/// Where and how to print.
#[derive(Debug, Args, Clone)]
pub struct GroupsArgs {
    /// Cluster, TLS, timeout.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `eventstream groups describe`.
#[derive(Debug, Args, Clone)]
pub struct DescribeArgs {
    /// The group id.
    pub group: String,
    /// Cluster, TLS, timeout, output.
    #[command(flatten)]
    pub target: GroupsArgs,
}

/// Runs `eventstream groups ...`.
pub fn run(c: GroupsCommand) -> anyhow::Result<()> {
    match c {
        GroupsCommand::List(a) => {
            let groups = fetch(&a)?;
            if a.json {
                return print_json(&summaries(&groups));
            }
            print!("{}", list_table(&groups));
            Ok(())
        }
        GroupsCommand::Describe(d) => {
            let rows: Vec<GroupLag> = fetch(&d.target)?
                .into_iter()
                .filter(|g| g.group == d.group)
                .collect();
            anyhow::ensure!(
                !rows.is_empty(),
                "group `{}` has no committed offsets",
                d.group
            );
            if d.target.json {
                return print_json(&rows);
            }
            print!("{}", describe_table(&rows));
            Ok(())
        }
    }
}

/// The groups of the leader's status, else of the first node that answers.
fn fetch(a: &GroupsArgs) -> anyhow::Result<Vec<GroupLag>> {
    let eps = a.cluster.endpoints();
    let ccfg = a.cluster.tls.client_config(eps.clone())?;
    let each = a.cluster.timeout_or(Duration::from_secs(2));
    let statuses: Vec<Result<ClusterStatus, String>> = runtime()?.block_on(async {
        let mut out = Vec::new();
        for ep in &eps {
            let st = status_with(&ccfg, ep, each).await;
            out.push(st.map_err(|e| format!("{ep}: {e}")));
        }
        out
    });
    pick(statuses).map(|s| s.groups)
}

/// The leader's status if one answered, else the first answer; the errors if none did.
fn pick(statuses: Vec<Result<ClusterStatus, String>>) -> anyhow::Result<ClusterStatus> {
    let (ok, errors): (Vec<_>, Vec<_>) = statuses.into_iter().partition(Result::is_ok);
    let mut ok: Vec<ClusterStatus> = ok.into_iter().flatten().collect();
    if let Some(i) = ok.iter().position(|s| s.role == RaftRole::Leader) {
        return Ok(ok.swap_remove(i));
    }
    ok.into_iter().next().ok_or_else(|| {
        let why: Vec<String> = errors.into_iter().filter_map(Result::err).collect();
        anyhow::anyhow!("no endpoint answered: {}", why.join("; "))
    })
}

#[derive(Debug, serde::Serialize, PartialEq, Eq)]
struct GroupSummary {
    group: String,
    topics: usize,
    lag: u64,
}

fn summaries(groups: &[GroupLag]) -> Vec<GroupSummary> {
    let mut by: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for g in groups {
        let e = by.entry(&g.group).or_default();
        e.0 += 1;
        e.1 += g.lag;
    }
    by.into_iter()
        .map(|(group, (topics, lag))| GroupSummary {
            group: group.to_owned(),
            topics,
            lag,
        })
        .collect()
}

fn list_table(groups: &[GroupLag]) -> String {
    let mut t = vec![vec!["GROUP".into(), "TOPICS".into(), "LAG".into()]];
    for s in summaries(groups) {
        t.push(vec![s.group, s.topics.to_string(), s.lag.to_string()]);
    }
    render_table(&t)
}

fn describe_table(rows: &[GroupLag]) -> String {
    let mut t = vec![["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"]
        .map(String::from)
        .to_vec()];
    for g in rows {
        t.push(vec![
            g.topic.clone(),
            g.partition.to_string(),
            g.committed.to_string(),
            g.end.to_string(),
            g.lag.to_string(),
        ]);
    }
    render_table(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(group: &str, topic: &str, committed: i64, end: u64) -> GroupLag {
        GroupLag {
            group: group.into(),
            topic: topic.into(),
            committed,
            end,
            lag: end.saturating_sub(committed as u64),
            ..GroupLag::default()
        }
    }

    #[test]
    fn groups_are_summed_per_group_and_described_per_topic() {
        let rows = [
            lag("billing", "orders", 40, 100),
            lag("billing", "refunds", 5, 5),
            lag("audit", "orders", 90, 100),
        ];
        assert_eq!(
            summaries(&rows),
            [
                GroupSummary {
                    group: "audit".into(),
                    topics: 1,
                    lag: 10
                },
                GroupSummary {
                    group: "billing".into(),
                    topics: 2,
                    lag: 60
                },
            ]
        );
        let table = describe_table(&rows[..2]);
        assert!(
            table.contains("| orders  | 0         | 40        | 100 | 60  |"),
            "{table}"
        );
    }

    #[test]
    fn the_leaders_status_is_preferred() {
        let st = |id, role| ClusterStatus {
            node_id: id,
            role,
            ..ClusterStatus::default()
        };
        let picked = pick(vec![
            Err("a: refused".into()),
            Ok(st(2, RaftRole::Follower)),
            Ok(st(3, RaftRole::Leader)),
        ])
        .unwrap();
        assert_eq!(picked.node_id, 3);
        let none = pick(vec![Err("a: refused".into())]).unwrap_err();
        assert!(none.to_string().contains("a: refused"));
    }
}
