//! `groups list | describe`: consumer groups' committed offsets and lag, and their members,
//! from a node's status (every node holds the same replicated commits; the leader's status is
//! preferred: it coordinates the groups, so only it knows their members).

use super::{print_json, render_table, runtime, ClusterArgs};
use clap::{Args, Subcommand};
use eventstream_client::status_with;
use eventstream_core::replication::{ClusterStatus, GroupLag, GroupMembership, RaftRole};
use std::collections::BTreeMap;
use std::time::Duration;

/// `eventstream groups ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum GroupsCommand {
    /// Every group: state, members, topics with committed offsets, total lag.
    List(GroupsArgs),
    /// One group: state and members, and committed offset, topic end and lag per topic.
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
            let st = fetch(&a)?;
            let list = summaries(&st.groups, &st.group_members);
            if a.json {
                return print_json(&list);
            }
            print!("{}", list_table(&list));
            Ok(())
        }
        GroupsCommand::Describe(d) => {
            let st = fetch(&d.target)?;
            let described = describe(&st, &d.group).ok_or_else(|| {
                anyhow::anyhow!(
                    "group `{}` has no committed offsets and no members",
                    d.group
                )
            })?;
            if d.target.json {
                return print_json(&described);
            }
            print!("{}", describe_text(&described));
            Ok(())
        }
    }
}

/// The leader's status, else the first node's that answers.
fn fetch(a: &GroupsArgs) -> anyhow::Result<ClusterStatus> {
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
    pick(statuses)
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
    /// The coordinator's state; `Empty` for a group that only has committed offsets.
    state: String,
    members: usize,
    topics: usize,
    lag: u64,
}

fn summaries(offsets: &[GroupLag], members: &[GroupMembership]) -> Vec<GroupSummary> {
    let mut by: BTreeMap<&str, GroupSummary> = BTreeMap::new();
    let empty = |group: &str| GroupSummary {
        group: group.to_owned(),
        state: "Empty".into(),
        members: 0,
        topics: 0,
        lag: 0,
    };
    for g in offsets {
        let s = by.entry(&g.group).or_insert_with(|| empty(&g.group));
        s.topics += 1;
        s.lag += g.lag;
    }
    for m in members {
        let s = by.entry(&m.group).or_insert_with(|| empty(&m.group));
        s.state = m.state.clone();
        s.members = m.members.len();
    }
    by.into_values().collect()
}

fn list_table(list: &[GroupSummary]) -> String {
    let mut t = vec![["GROUP", "STATE", "MEMBERS", "TOPICS", "LAG"]
        .map(String::from)
        .to_vec()];
    for s in list {
        t.push(vec![
            s.group.clone(),
            s.state.clone(),
            s.members.to_string(),
            s.topics.to_string(),
            s.lag.to_string(),
        ]);
    }
    render_table(&t)
}

/// One group as `describe` shows it.
#[derive(Debug, serde::Serialize)]
struct Described {
    group: String,
    /// The coordinator's view; `None` when the group has no members (or no node that answered
    /// coordinates it).
    membership: Option<GroupMembership>,
    offsets: Vec<GroupLag>,
}

fn describe(st: &ClusterStatus, group: &str) -> Option<Described> {
    let offsets: Vec<GroupLag> = st
        .groups
        .iter()
        .filter(|g| g.group == group)
        .cloned()
        .collect();
    let membership = st.group_members.iter().find(|m| m.group == group).cloned();
    (!offsets.is_empty() || membership.is_some()).then(|| Described {
        group: group.to_owned(),
        membership,
        offsets,
    })
}

fn describe_text(d: &Described) -> String {
    let mut out = match &d.membership {
        Some(m) => format!(
            "group {}: {}, generation {}, protocol {} {}, {} member(s)\n",
            d.group,
            m.state,
            m.generation,
            m.protocol_type,
            m.protocol,
            m.members.len()
        ),
        None => format!("group {}: Empty (no members)\n", d.group),
    };
    if let Some(m) = d.membership.as_ref().filter(|m| !m.members.is_empty()) {
        let mut t = vec![["MEMBER", "CLIENT", "HOST"].map(String::from).to_vec()];
        for x in &m.members {
            t.push(vec![
                x.member_id.clone(),
                x.client_id.clone(),
                x.client_host.clone(),
            ]);
        }
        out.push_str(&render_table(&t));
    }
    if !d.offsets.is_empty() {
        out.push_str(&describe_table(&d.offsets));
    }
    out
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
        let members = [GroupMembership {
            group: "billing".into(),
            state: "Stable".into(),
            generation: 3,
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            members: vec![eventstream_core::replication::GroupMember {
                member_id: "rdkafka-1".into(),
                client_id: "rdkafka".into(),
                client_host: "/10.0.0.9".into(),
            }],
        }];
        let list = summaries(&rows, &members);
        assert_eq!(
            list.iter()
                .map(|s| (
                    s.group.as_str(),
                    s.state.as_str(),
                    s.members,
                    s.topics,
                    s.lag
                ))
                .collect::<Vec<_>>(),
            [
                ("audit", "Empty", 0, 1, 10),
                ("billing", "Stable", 1, 2, 60)
            ]
        );
        let st = ClusterStatus {
            groups: rows.to_vec(),
            group_members: members.to_vec(),
            ..ClusterStatus::default()
        };
        let text = describe_text(&describe(&st, "billing").unwrap());
        assert!(
            text.starts_with(
                "group billing: Stable, generation 3, protocol consumer range, 1 member(s)"
            ),
            "{text}"
        );
        assert!(
            text.contains("| rdkafka-1 | rdkafka | /10.0.0.9 |"),
            "{text}"
        );
        assert!(
            text.contains("| orders  | 0         | 40        | 100 | 60  |"),
            "{text}"
        );
        let audit = describe_text(&describe(&st, "audit").unwrap());
        assert!(
            audit.starts_with("group audit: Empty (no members)"),
            "{audit}"
        );
        assert!(describe(&st, "nobody").is_none());
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
