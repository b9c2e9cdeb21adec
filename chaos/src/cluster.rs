//! The node processes of a chaos run: `eventstream node` children on loopback, each with its
//! own data directory, its real listen address, and peer addresses that point at the
//! [`crate::proxy::Proxies`] for its outbound links.
//!
//! Invariants: a node is either running (a live child, maybe stopped by `SIGSTOP`) or down
//! (no child); `kill -9` always reaps the child, so no zombie keeps a port; a paused node is
//! continued before it is killed or the set is dropped, so nothing stays stopped behind us.

use crate::error::ChaosError;
use crate::proxy::Proxies;
use eventstream_cluster::client::status_of;
use eventstream_core::replication::{ClusterStatus, RaftRole};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct NodeProc {
    child: Option<Child>,
    paused: bool,
    peers_arg: String,
}

/// The cluster's node processes.
#[derive(Debug)]
pub struct NodeSet {
    exe: PathBuf,
    dir: PathBuf,
    real: Vec<SocketAddr>,
    extra: Vec<String>,
    nodes: Vec<NodeProc>,
}

fn signal(child: &Child, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own child, which has
    // not been reaped (we hold its `Child` and only reap it in `kill9`), so the pid cannot
    // have been reused by another process.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl NodeSet {
    /// Starts nodes `1..=real.len()` of `exe`: node *i* listens on `real[i-1]` and reaches
    /// peer *j* at `proxies.addr(i, j)`. `extra` flags go to every node.
    pub fn start(
        exe: &Path,
        dir: &Path,
        real: &[SocketAddr],
        proxies: &Proxies,
        extra: &[String],
    ) -> Result<NodeSet, ChaosError> {
        let n = real.len() as u64;
        let nodes = (1..=n)
            .map(|i| {
                let peers_arg = (1..=n)
                    .map(|j| {
                        let addr = if i == j {
                            real[(j - 1) as usize]
                        } else {
                            proxies.addr(i, j)
                        };
                        format!("{j}={addr}")
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                NodeProc {
                    child: None,
                    paused: false,
                    peers_arg,
                }
            })
            .collect();
        let mut set = NodeSet {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            real: real.to_vec(),
            extra: extra.to_vec(),
            nodes,
        };
        for id in 1..=n {
            set.spawn(id)?;
        }
        Ok(set)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false (a set has at least one node); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `id`'s real client address.
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.real[(id - 1) as usize]
    }

    /// Every node's real client address, as client endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        self.real.iter().map(ToString::to_string).collect()
    }

    fn node(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Starts node `id` on its data directory (no-op when it is running).
    pub fn spawn(&mut self, id: u64) -> Result<(), ChaosError> {
        if self.node(id).child.is_some() {
            return Ok(());
        }
        let data = self.dir.join(format!("node-{id}"));
        let log_path = self.dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ChaosError::io(&log_path, e))?;
        let listen = self.addr(id).to_string();
        let peers = self.node(id).peers_arg.clone();
        let child = Command::new(&self.exe)
            .arg("node")
            .args([
                "--id",
                &id.to_string(),
                "--peers",
                &peers,
                "--listen",
                &listen,
            ])
            .arg("--data-dir")
            .arg(&data)
            .args(&self.extra)
            .env_remove("EVENTSTREAM_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| ChaosError::Spawn {
                id,
                exe: self.exe.clone(),
                source,
            })?;
        let n = self.node(id);
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    /// `kill -9` node `id` and reap it (no-op when it is down).
    pub fn kill9(&mut self, id: u64) {
        let n = self.node(id);
        if let Some(mut child) = n.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
        n.paused = false;
    }

    /// `SIGSTOP` node `id`.
    pub fn pause(&mut self, id: u64) {
        let n = self.node(id);
        if let Some(child) = &n.child {
            signal(child, libc::SIGSTOP);
            n.paused = true;
        }
    }

    /// `SIGCONT` node `id` if it is paused.
    pub fn resume(&mut self, id: u64) {
        let n = self.node(id);
        if let (Some(child), true) = (&n.child, n.paused) {
            signal(child, libc::SIGCONT);
        }
        n.paused = false;
    }

    /// Whether node `id` has a live child process (an exited child counts as down; its exit
    /// status is returned so the caller can report a crash).
    pub fn check_alive(&mut self, id: u64) -> Result<bool, String> {
        let n = self.node(id);
        let Some(child) = n.child.as_mut() else {
            return Ok(false);
        };
        match child.try_wait() {
            Ok(None) => Ok(true),
            Ok(Some(status)) => {
                n.child = None;
                Err(format!("node {id} exited by itself: {status}"))
            }
            Err(e) => Err(format!("node {id}: {e}")),
        }
    }

    /// Every node's status (`None`: no answer within `timeout`), queried concurrently.
    pub async fn statuses(&self, timeout: Duration) -> Vec<(u64, Option<ClusterStatus>)> {
        let all: Vec<u64> = (1..=self.len() as u64).collect();
        self.statuses_of(&all, timeout).await
    }

    /// The statuses of nodes `ids`, queried concurrently.
    pub async fn statuses_of(
        &self,
        ids: &[u64],
        timeout: Duration,
    ) -> Vec<(u64, Option<ClusterStatus>)> {
        let mut set = tokio::task::JoinSet::new();
        for &id in ids {
            let addr = self.addr(id).to_string();
            set.spawn(async move { (id, status_of(&addr, timeout).await.ok()) });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(x) = r {
                out.push(x);
            }
        }
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Waits until some node is leader and every node in `members` reports it as leader.
    /// Returns the leader, or the last statuses seen on timeout.
    pub async fn wait_agreed_leader(
        &self,
        members: &[u64],
        timeout: Duration,
    ) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let sts = self.statuses_of(members, Duration::from_millis(300)).await;
            if let Some(l) = agreed_leader(&sts, members) {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(summarize(&sts));
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    /// Waits until every node follows one leader and has applied the leader's commit index,
    /// with the commit index unchanged between two polls (nothing more is arriving).
    pub async fn wait_quiescent(&self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let all: Vec<u64> = (1..=self.len() as u64).collect();
        let mut last_commit = None;
        loop {
            let sts = self.statuses(Duration::from_millis(500)).await;
            if let Some(l) = agreed_leader(&sts, &all) {
                let leader = sts
                    .iter()
                    .find_map(|(id, s)| s.as_ref().filter(|_| *id == l));
                let commit = leader.map_or(0, |s| s.commit_index);
                let caught_up = sts
                    .iter()
                    .all(|(_, s)| s.as_ref().is_some_and(|s| s.applied_index >= commit));
                if caught_up && last_commit == Some(commit) {
                    return Ok(l);
                }
                last_commit = Some(commit);
            }
            if Instant::now() > deadline {
                return Err(summarize(&sts));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The leader every node of `members` reports (and that reports itself leader), if any.
pub fn agreed_leader(sts: &[(u64, Option<ClusterStatus>)], members: &[u64]) -> Option<u64> {
    let leader = sts
        .iter()
        .find_map(|(_, s)| s.as_ref().filter(|s| s.role == RaftRole::Leader))?;
    let all = members.iter().all(|m| {
        sts.iter()
            .find(|(id, _)| id == m)
            .and_then(|(_, s)| s.as_ref())
            .is_some_and(|s| s.leader_id == Some(leader.node_id) && s.term == leader.term)
    });
    all.then_some(leader.node_id)
}

fn summarize(sts: &[(u64, Option<ClusterStatus>)]) -> String {
    sts.iter()
        .map(|(id, s)| match s {
            Some(s) => format!(
                "node {id}: {:?} term {} leader {:?} commit {} applied {}",
                s.role, s.term, s.leader_id, s.commit_index, s.applied_index
            ),
            None => format!("node {id}: no answer"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Drop for NodeSet {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.kill9(id);
        }
    }
}
