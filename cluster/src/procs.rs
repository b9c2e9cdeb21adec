//! A cluster of real `eventstream node` processes on loopback (failover benchmark and the
//! process tests): spawn, `kill -9`, restart, find the leader.

use crate::client::status_of;
use crate::error::ClusterError;
use eventstream_core::replication::{ClusterStatus, RaftRole};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Picks `n` free loopback ports (bind to :0, read, release). Another process could take one
/// in between; callers use fresh ports per run.
pub fn free_ports(n: usize) -> Result<Vec<u16>, ClusterError> {
    let ls: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| ClusterError::Network {
            peer: "127.0.0.1:0".into(),
            source: e,
        })?;
    Ok(ls
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect())
}

/// Real node processes.
#[derive(Debug)]
pub struct ProcessCluster {
    exe: PathBuf,
    dir: PathBuf,
    peers: String,
    endpoints: Vec<String>,
    extra: Vec<String>,
    children: Vec<Option<Child>>,
}

impl ProcessCluster {
    /// Starts `n` nodes of `exe` with data under `dir`. `extra` flags go to every node.
    pub fn start(
        exe: &Path,
        n: usize,
        dir: &Path,
        extra: &[String],
    ) -> Result<ProcessCluster, ClusterError> {
        let ports = free_ports(n)?;
        let endpoints: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers = endpoints
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = ProcessCluster {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            peers,
            endpoints,
            extra: extra.to_vec(),
            children: (0..n).map(|_| None).collect(),
        };
        for id in 1..=n as u64 {
            c.spawn(id)?;
        }
        Ok(c)
    }

    fn spawn(&mut self, id: u64) -> Result<(), ClusterError> {
        self.spawn_with(id, &[])
    }

    fn spawn_with(&mut self, id: u64, more: &[String]) -> Result<(), ClusterError> {
        let data = self.dir.join(format!("node-{id}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))
            .map_err(|e| ClusterError::io(&self.dir, e))?;
        let child = Command::new(&self.exe)
            .arg("node")
            .args(["--id", &id.to_string(), "--peers", &self.peers])
            .arg("--data-dir")
            .arg(&data)
            .args(&self.extra)
            .args(more)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| ClusterError::Spawn {
                what: "eventstream node process",
                source: e,
            })?;
        self.children[(id - 1) as usize] = Some(child);
        Ok(())
    }

    /// Client endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// `kill -9` node `id`.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children[(id - 1) as usize].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts node `id` on its data directory.
    pub fn restart(&mut self, id: u64) -> Result<(), ClusterError> {
        self.kill(id);
        self.spawn(id)
    }

    /// Restarts node `id` on its data directory with `more` flags (this start only).
    pub fn restart_with(&mut self, id: u64, more: &[String]) -> Result<(), ClusterError> {
        self.kill(id);
        self.spawn_with(id, more)
    }

    /// Statuses of every reachable node.
    pub async fn statuses(&self) -> Vec<(u64, Option<ClusterStatus>)> {
        let mut out = Vec::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            out.push((
                i as u64 + 1,
                status_of(ep, Duration::from_millis(500)).await.ok(),
            ));
        }
        out
    }

    /// Waits until one node is leader and every node in `alive` follows it with applied index
    /// at least the leader's commit index at first sight (caught up).
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<u64, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let sts = self.statuses().await;
            let leader = sts
                .iter()
                .find_map(|(_, s)| s.as_ref().filter(|s| s.role == RaftRole::Leader).cloned());
            if let Some(l) = leader {
                let all = sts.iter().all(|(_, s)| {
                    s.as_ref().is_some_and(|s| {
                        s.leader_id == Some(l.node_id) && s.applied_index + 64 >= l.commit_index
                    })
                });
                if all {
                    return Ok(l.node_id);
                }
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout(format!(
                    "cluster not healthy after {timeout:?}: {sts:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children
            .get((id - 1) as usize)?
            .as_ref()
            .map(|c| c.id())
    }

    /// Data directory root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for id in 1..=self.children.len() as u64 {
            self.kill(id);
        }
    }
}
