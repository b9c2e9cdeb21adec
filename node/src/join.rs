//! Joining a running cluster with an empty data directory (`join = true` / `--join`).
//!
//! raft-rs requires a node's initial `ConfState` to be the configuration its log starts from:
//! a joiner that starts with an empty log receives the cluster's log from index 1, and the
//! first entries were committed under the *bootstrap* voters, with no conf-change entry for
//! them. So the joiner asks a member (`member list`, answered by the leader) for
//! `bootstrap_voters`, records that as its first conf state, and then applies every conf
//! change from the log like every other replica. It is not a voter in that configuration, so
//! it can never campaign with a wrong voter set; it becomes a learner, then a voter, exactly
//! when the log says so.
//!
//! When the leader has compacted the entries a joiner needs, it sends a snapshot instead (the
//! snapshot carries its own `ConfState`), and the bootstrap configuration is replaced by it.

use crate::config::NodeConfig;
use crate::error::NodeError;
use eventstream_client::{Client, ClientConfig};
use eventstream_proto::Member;
use std::path::Path;
use std::time::Duration;

/// True when `dir` already holds log segments (the node restarts: `join` is ignored).
pub fn has_log(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "wal"))
    })
}

/// Asks the other members for the cluster's bootstrap voters; checks that this node has been
/// added (as a learner) already. Retries for up to 60 s (the leader may be restarting).
pub fn fetch_bootstrap_voters(cfg: &NodeConfig, members: &[Member]) -> Result<Vec<u64>, NodeError> {
    let endpoints: Vec<String> = members
        .iter()
        .filter(|m| m.id != cfg.id)
        .map(|m| m.addr.clone())
        .collect();
    if endpoints.is_empty() {
        return Err(NodeError::config(
            "join",
            "`peers` lists no other member to join through",
        ));
    }
    let mut ccfg = ClientConfig::new(endpoints.clone());
    ccfg.deadline = Duration::from_secs(60);
    ccfg.attempt_timeout = Duration::from_secs(5);
    ccfg.connect_timeout = Duration::from_secs(1);
    let client = Client::new(ccfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NodeError::Spawn {
            what: "join runtime",
            source: e,
        })?;
    let list = rt.block_on(client.member_list()).map_err(|e| {
        NodeError::config(
            "join",
            format!("cannot reach the cluster through {endpoints:?}: {e}"),
        )
    })?;
    if !list.members.iter().any(|m| m.id == cfg.id) {
        return Err(NodeError::config(
            "join",
            format!(
                "node {} is not a member of the cluster (members: {:?}); add it first with \
                 `eventstream member add {}=ADDR --learner`",
                cfg.id,
                list.members.iter().map(|m| m.id).collect::<Vec<_>>(),
                cfg.id
            ),
        ));
    }
    if list.bootstrap_voters.contains(&cfg.id) {
        return Err(NodeError::config(
            "join",
            format!(
                "node {} was a founding voter of this cluster; a replacement with an empty \
                 disk needs a new id",
                cfg.id
            ),
        ));
    }
    tracing::info!(id = cfg.id, bootstrap = ?list.bootstrap_voters, leader = list.leader_id, "joining");
    Ok(list.bootstrap_voters)
}
