//! A cluster of real `eventstream node` processes on loopback, for the process tests, the
//! benchmarks that kill nodes and the chaos runs: spawn, `kill -9`, `SIGSTOP` / `SIGCONT`,
//! `SIGTERM`, restart, join and retire members, and wait for a state of the cluster.
//!
//! Invariants:
//! * A node is either running (a live child, maybe stopped by `SIGSTOP`) or down (no child);
//!   killing always reaps the child, so no zombie keeps a port; a paused node is continued
//!   before it is killed or the cluster is dropped, so nothing stays stopped behind us.
//! * The cluster holds the lease on its ports ([`crate::Ports`]) for its whole life, so no
//!   concurrent test hands one of them to another node.
//! * Every wait that gives up says what each node was doing: its status, or — for a node
//!   that is not running — its exit status and the last lines of its log.

use crate::error::TestkitError;
use crate::ports::{free_ports, Ports};
use eventstream_client::{status_with, ClientConfig};
use eventstream_core::replication::{ClusterStatus, RaftRole};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The address node `from` uses to reach node `to` (e.g. a fault-injecting proxy).
pub type Route = Arc<dyn Fn(u64, u64) -> String + Send + Sync>;

/// Lines of a node's log quoted when it is found not running.
const LOG_TAIL_LINES: usize = 15;

#[derive(Debug)]
struct NodeProc {
    /// Its real client and peer address.
    addr: String,
    child: Option<Child>,
    paused: bool,
    /// Removed from the membership: no longer started or polled.
    retired: bool,
    /// Started with `--join`.
    joiner: bool,
    /// How its last child ended, if it ended by itself.
    exited: Option<ExitStatus>,
}

/// Real node processes.
pub struct ProcessCluster {
    exe: PathBuf,
    dir: PathBuf,
    extra: Vec<String>,
    nodes: Vec<NodeProc>,
    route: Option<Route>,
    /// TLS settings and token for the status probes (endpoints ignored).
    client: ClientConfig,
    _ports: Option<Ports>,
    /// Leases of the ports [`next_endpoint`](Self::next_endpoint) handed out, held for the
    /// cluster's life so no later pick (here or in another test) returns the same port.
    spare_ports: std::sync::Mutex<Vec<Ports>>,
}

impl std::fmt::Debug for ProcessCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCluster")
            .field("dir", &self.dir)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own child, which has
    // not been reaped (we hold its `Child` and only reap it in `kill`), so the pid cannot have
    // been reused by another process.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl ProcessCluster {
    /// Starts `n` nodes of `exe` with data under `dir` (`dir/node-ID`, logs in
    /// `dir/node-ID.log`) on free loopback ports. `extra` flags go to every node.
    pub fn start(
        exe: &Path,
        n: usize,
        dir: &Path,
        extra: &[String],
    ) -> Result<ProcessCluster, TestkitError> {
        let ports = free_ports(n)?;
        let mut c = Self::build(exe, dir, ports.addrs(), extra, None);
        c._ports = Some(ports);
        c.spawn_all()?;
        Ok(c)
    }

    /// Like [`start`](Self::start) on given addresses (node `i + 1` on `addrs[i]`), e.g. for
    /// data directories seeded by `eventstream snapshot restore --initial-cluster`, and with
    /// `route` (when given) choosing the address each node dials for each peer.
    pub fn start_at(
        exe: &Path,
        addrs: &[String],
        dir: &Path,
        extra: &[String],
        route: Option<Route>,
    ) -> Result<ProcessCluster, TestkitError> {
        let mut c = Self::build(exe, dir, addrs.to_vec(), extra, route);
        c.spawn_all()?;
        Ok(c)
    }

    fn build(
        exe: &Path,
        dir: &Path,
        addrs: Vec<String>,
        extra: &[String],
        route: Option<Route>,
    ) -> ProcessCluster {
        ProcessCluster {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            extra: extra.to_vec(),
            nodes: addrs
                .into_iter()
                .map(|addr| NodeProc {
                    addr,
                    child: None,
                    paused: false,
                    retired: false,
                    joiner: false,
                    exited: None,
                })
                .collect(),
            route,
            client: ClientConfig::new(Vec::new()),
            _ports: None,
            spare_ports: std::sync::Mutex::default(),
        }
    }

    fn spawn_all(&mut self) -> Result<(), TestkitError> {
        for id in 1..=self.nodes.len() as u64 {
            self.spawn(id)?;
        }
        Ok(())
    }

    fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[(id - 1) as usize]
    }

    /// `--peers` for node `id`: every member not retired, at the address `id` dials it by.
    fn peers_arg(&self, id: u64) -> String {
        self.live_endpoints()
            .into_iter()
            .map(|(j, addr)| match &self.route {
                Some(route) if j != id => format!("{j}={}", route(id, j)),
                _ => format!("{j}={addr}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The log file of node `id`.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    /// Starts node `id` on its data directory (a no-op when it is running).
    pub fn spawn(&mut self, id: u64) -> Result<(), TestkitError> {
        self.spawn_with(id, &[])
    }

    fn spawn_with(&mut self, id: u64, more: &[String]) -> Result<(), TestkitError> {
        if self.node(id).child.is_some() {
            return Ok(());
        }
        let log_path = self.log_path(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| TestkitError::io(&log_path, e))?;
        let node = self.node(id);
        let child = Command::new(&self.exe)
            .arg("node")
            .args(["--id", &id.to_string(), "--peers", &self.peers_arg(id)])
            .args(["--listen", &node.addr])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(&self.extra)
            .args(node.joiner.then_some("--join"))
            .args(more)
            .env_remove("EVENTSTREAM_CONFIG")
            // An error's own backtrace would push the error out of the log tail we quote.
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                what: format!("node {id} ({})", self.exe.display()),
                source,
            })?;
        let n = self.node_mut(id);
        n.child = Some(child);
        n.paused = false;
        n.exited = None;
        Ok(())
    }

    /// Uses `cfg`'s TLS settings and token for status probes (nodes started with `--tls-*`).
    pub fn set_client_config(&mut self, cfg: ClientConfig) {
        self.client = cfg;
    }

    /// Number of nodes ever started (retired ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the cluster has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's client address, node `i + 1` at index `i`.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Node `id`'s client address.
    pub fn addr(&self, id: u64) -> &str {
        &self.node(id).addr
    }

    /// Endpoints of the nodes not retired, with their ids.
    pub fn live_endpoints(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.retired)
            .map(|(i, n)| (i as u64 + 1, n.addr.clone()))
            .collect()
    }

    /// `kill -9` node `id` and reap it (a no-op when it is down).
    pub fn kill(&mut self, id: u64) {
        let n = self.node_mut(id);
        if let Some(mut child) = n.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
        n.paused = false;
    }

    /// `SIGSTOP` node `id`.
    pub fn pause(&mut self, id: u64) {
        let n = self.node_mut(id);
        if let Some(child) = &n.child {
            signal(child, libc::SIGSTOP);
            n.paused = true;
        }
    }

    /// `SIGCONT` node `id` if it is paused.
    pub fn resume(&mut self, id: u64) {
        let n = self.node_mut(id);
        if let (Some(child), true) = (&n.child, n.paused) {
            signal(child, libc::SIGCONT);
        }
        n.paused = false;
    }

    /// Restarts node `id` on its data directory.
    pub fn restart(&mut self, id: u64) -> Result<(), TestkitError> {
        self.kill(id);
        self.spawn(id)
    }

    /// Restarts node `id` on its data directory with `more` flags (this start only).
    pub fn restart_with(&mut self, id: u64, more: &[String]) -> Result<(), TestkitError> {
        self.kill(id);
        self.spawn_with(id, more)
    }

    /// Sends SIGTERM to node `id` (a graceful stop: a leader hands leadership off first) and
    /// waits up to `timeout` for it to exit, then kills it.
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> Result<(), TestkitError> {
        let Some(mut c) = self.node_mut(id).child.take() else {
            return Ok(());
        };
        signal(&c, libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = c.kill();
        let _ = c.wait();
        Err(TestkitError::NotReady {
            what: format!("node {id} did not exit after SIGTERM"),
            waited_ms: timeout.as_millis() as u64,
            state: self.log_tail(id),
        })
    }

    /// Starts a new node (the next id) with `--join` at `addr` and a `--peers` list of every
    /// live member plus itself. Add it to the membership first (`member add ID=ADDR
    /// --learner`); a free address is [`next_endpoint`](Self::next_endpoint).
    pub fn add_node(&mut self, addr: &str) -> Result<u64, TestkitError> {
        self.nodes.push(NodeProc {
            addr: addr.to_owned(),
            child: None,
            paused: false,
            retired: false,
            joiner: true,
            exited: None,
        });
        let id = self.nodes.len() as u64;
        self.spawn(id)?;
        Ok(id)
    }

    /// A free loopback address for the next node.
    pub fn next_endpoint(&self) -> Result<String, TestkitError> {
        let ports = free_ports(1)?;
        let addr = ports.addrs().remove(0);
        self.spare_ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ports);
        Ok(addr)
    }

    /// Stops node `id` for good (after `member remove`): it is no longer started or polled.
    pub fn retire(&mut self, id: u64) {
        self.kill(id);
        self.node_mut(id).retired = true;
    }

    /// Process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes
            .get((id - 1) as usize)?
            .child
            .as_ref()
            .map(Child::id)
    }

    /// Data directory root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether node `id` has a live child process. A child that exited by itself counts as
    /// down, and its exit status and log tail are the error, so the caller can report a crash.
    pub fn check_alive(&mut self, id: u64) -> Result<bool, String> {
        let n = self.node_mut(id);
        let Some(child) = n.child.as_mut() else {
            return Ok(false);
        };
        match child.try_wait() {
            Ok(None) => Ok(true),
            Ok(Some(status)) => {
                n.child = None;
                n.exited = Some(status);
                Err(format!(
                    "node {id} exited by itself ({status}); {}",
                    self.log_tail(id)
                ))
            }
            Err(e) => Err(format!("node {id}: {e}")),
        }
    }

    /// The last lines of node `id`'s log, for error messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        if tail.is_empty() {
            format!("its log {} is empty", self.log_path(id).display())
        } else {
            format!(
                "last lines of {}:\n    {}",
                self.log_path(id).display(),
                tail.join("\n    ")
            )
        }
    }

    /// Every live node's status (`None`: no answer within `timeout`), queried concurrently.
    pub async fn statuses(&self, timeout: Duration) -> Vec<(u64, Option<ClusterStatus>)> {
        let ids: Vec<u64> = self
            .live_endpoints()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.statuses_of(&ids, timeout).await
    }

    /// The statuses of nodes `ids`, queried concurrently.
    pub async fn statuses_of(
        &self,
        ids: &[u64],
        timeout: Duration,
    ) -> Vec<(u64, Option<ClusterStatus>)> {
        let mut set = tokio::task::JoinSet::new();
        for &id in ids {
            let (addr, client) = (self.addr(id).to_owned(), self.client.clone());
            set.spawn(async move { (id, status_with(&client, &addr, timeout).await.ok()) });
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

    /// What every node was doing, for an error: its status, or why it is not answering.
    pub fn describe(&mut self, sts: &[(u64, Option<ClusterStatus>)]) -> String {
        let mut lines = Vec::new();
        for (id, s) in sts {
            lines.push(match s {
                Some(s) => format!(
                    "node {id}: {:?} term {} leader {:?} commit {} applied {}",
                    s.role, s.term, s.leader_id, s.commit_index, s.applied_index
                ),
                None => match self.check_alive(*id) {
                    Ok(true) => format!(
                        "node {id}: running (pid {}) but not answering; {}",
                        self.pid(*id).unwrap_or(0),
                        self.log_tail(*id)
                    ),
                    Ok(false) => {
                        let how = self
                            .node(*id)
                            .exited
                            .map_or("stopped by the test".to_owned(), |s| s.to_string());
                        format!("node {id}: not running ({how}); {}", self.log_tail(*id))
                    }
                    Err(crashed) => crashed,
                },
            });
        }
        lines.join("\n")
    }

    /// Waits until one node is leader and every live node follows it with an applied index
    /// within 64 entries of the leader's commit index (caught up). Returns the leader.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<u64, TestkitError> {
        self.wait_for("cluster not healthy", timeout, |sts| {
            let l = sts
                .iter()
                .find_map(|(_, s)| s.as_ref().filter(|s| s.role == RaftRole::Leader))?;
            sts.iter()
                .all(|(_, s)| {
                    s.as_ref().is_some_and(|s| {
                        s.leader_id == Some(l.node_id) && s.applied_index + 64 >= l.commit_index
                    })
                })
                .then_some(l.node_id)
        })
        .await
    }

    /// Waits until some node is leader and every node of `members` reports it, in its term.
    pub async fn wait_agreed_leader(
        &mut self,
        members: &[u64],
        timeout: Duration,
    ) -> Result<u64, TestkitError> {
        let members = members.to_vec();
        self.wait_for("no leader agreed on", timeout, move |sts| {
            agreed_leader(sts, &members)
        })
        .await
    }

    /// Waits until every live node follows one leader and has applied the leader's commit
    /// index, with the commit index unchanged between two polls (nothing more is arriving).
    pub async fn wait_quiescent(&mut self, timeout: Duration) -> Result<u64, TestkitError> {
        let last_commit = std::cell::Cell::new(None);
        self.wait_for("cluster not quiescent", timeout, move |sts| {
            let ids: Vec<u64> = sts.iter().map(|(id, _)| *id).collect();
            let l = agreed_leader(sts, &ids)?;
            let commit = sts
                .iter()
                .find(|(id, _)| *id == l)
                .and_then(|(_, s)| s.as_ref())
                .map_or(0, |s| s.commit_index);
            let caught_up = sts
                .iter()
                .all(|(_, s)| s.as_ref().is_some_and(|s| s.applied_index >= commit));
            let settled = caught_up && last_commit.get() == Some(commit);
            last_commit.set(Some(commit));
            settled.then_some(l)
        })
        .await
    }

    /// Polls every live node until `done` says yes; on timeout, the error describes each node.
    async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[(u64, Option<ClusterStatus>)]) -> Option<u64>,
    ) -> Result<u64, TestkitError> {
        let start = Instant::now();
        loop {
            let sts = self.statuses(Duration::from_millis(500)).await;
            if let Some(x) = done(&sts) {
                return Ok(x);
            }
            if start.elapsed() > timeout {
                return Err(TestkitError::NotReady {
                    what: what.to_owned(),
                    waited_ms: start.elapsed().as_millis() as u64,
                    state: self.describe(&sts),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.resume(id);
            self.kill(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endpoints for nodes not started yet stay leased while the cluster lives, so two picks
    /// never return the same port (a lease dropped at once let the next pick take it again).
    #[test]
    fn endpoints_for_later_nodes_stay_leased_until_the_cluster_goes() {
        let scratch = crate::Scratch::new("procs-spare");
        let c = ProcessCluster::build(
            Path::new("/bin/false"),
            scratch.path(),
            Vec::new(),
            &[],
            None,
        );
        let picked: Vec<u16> = (0..20)
            .map(|_| {
                c.next_endpoint()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        for p in &picked {
            assert!(crate::ports::lease(*p).is_none(), "port {p} was released");
        }
        let mut distinct = picked.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), picked.len(), "{picked:?}");
        drop(c);
        assert!(
            crate::ports::lease(picked[0]).is_some(),
            "released with the cluster"
        );
    }

    /// A "node binary" that exits at once: the wait reports its exit status and log.
    #[test]
    fn a_node_that_does_not_come_up_is_reported_with_its_exit_status_and_log() {
        let scratch = crate::Scratch::new("procs");
        let exe = scratch.path().join("fake-node");
        std::fs::write(
            &exe,
            "#!/bin/sh\necho \"bind 127.0.0.1: address in use\" >&2\nexit 3\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = ProcessCluster::start(&exe, 2, scratch.path(), &[]).unwrap();
        let rt = crate::test_runtime();
        let err = rt
            .block_on(c.wait_healthy(Duration::from_millis(300)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster not healthy after"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("address in use"), "{err}");
        assert!(err.contains("node 1") && err.contains("node 2"), "{err}");
    }

    #[test]
    fn agreed_leader_needs_every_member_in_the_same_term() {
        let st = |id, role, leader: Option<u64>, term| ClusterStatus {
            node_id: id,
            role,
            leader_id: leader,
            term,
            ..ClusterStatus::default()
        };
        let sts = vec![
            (1, Some(st(1, RaftRole::Leader, Some(1), 2))),
            (2, Some(st(2, RaftRole::Follower, Some(1), 2))),
            (3, Some(st(3, RaftRole::Follower, Some(1), 1))),
        ];
        assert_eq!(agreed_leader(&sts, &[1, 2]), Some(1));
        assert_eq!(agreed_leader(&sts, &[1, 2, 3]), None);
        assert_eq!(agreed_leader(&sts[1..], &[2]), None);
    }
}
