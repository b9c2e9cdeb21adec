//! A cluster of real `eventstream node` processes on loopback (failover benchmark and the
//! process tests): spawn, `kill -9`, restart, find the leader.

use crate::client::{status_with, ClientConfig};
use crate::error::ClusterError;
use eventstream_core::replication::{ClusterStatus, RaftRole};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `n` distinct free ports on 127.0.0.1 for nodes to bind later. They are picked *below* the
/// kernel's ephemeral range (`ip_local_port_range`): a port the kernel handed out for `:0` could
/// be handed out again, as the source port of some outbound connection, before the node binds
/// it, and the node would then fail to start. Each pick is checked by binding it.
pub fn free_ports(n: usize) -> Result<Vec<u16>, ClusterError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PICKS: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u16, ephemeral_low.max(12_000));
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ PICKS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..n * 1000 {
        if ports.len() == n {
            break;
        }
        // xorshift64*: spreads concurrent test processes over the range.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let port = lo + (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as u16 % (hi - lo);
        if ports.contains(&port) {
            continue;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(ClusterError::Network {
            peer: format!("127.0.0.1:{lo}-{hi}"),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free ports found"),
        });
    }
    Ok(ports)
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
    /// TLS settings and token for the status probes (endpoints ignored).
    client: ClientConfig,
    /// Nodes removed from the membership (no longer polled by `statuses`).
    retired: Vec<bool>,
    /// Nodes started with `--join`.
    joiners: Vec<bool>,
}

impl ProcessCluster {
    /// Starts `n` nodes of `exe` with data under `dir`. `extra` flags go to every node.
    pub fn start(
        exe: &Path,
        n: usize,
        dir: &Path,
        extra: &[String],
    ) -> Result<ProcessCluster, ClusterError> {
        Self::start_with_ports(exe, &free_ports(n)?, dir, extra)
    }

    /// Like [`start`](Self::start) on given loopback ports (node `i + 1` on `ports[i]`), e.g.
    /// for data directories seeded by `eventstream snapshot restore --initial-cluster`.
    pub fn start_with_ports(
        exe: &Path,
        ports: &[u16],
        dir: &Path,
        extra: &[String],
    ) -> Result<ProcessCluster, ClusterError> {
        let n = ports.len();
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
            client: ClientConfig::new(Vec::new()),
            retired: vec![false; n],
            joiners: vec![false; n],
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
            .args(self.joiners[(id - 1) as usize].then_some("--join"))
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

    /// Uses `cfg`'s TLS settings and token for status probes (nodes started with `--tls-*`).
    pub fn set_client_config(&mut self, cfg: ClientConfig) {
        self.client = cfg;
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

    /// Sends SIGTERM to node `id` (a graceful stop: a leader hands leadership off first) and
    /// waits up to `timeout` for it to exit, then kills it.
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> Result<(), ClusterError> {
        let Some(mut c) = self.children[(id - 1) as usize].take() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .map_err(|e| ClusterError::Spawn {
                what: "kill -TERM",
                source: e,
            })?;
        let deadline = Instant::now() + timeout;
        while status.success() && Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = c.kill();
        let _ = c.wait();
        Err(ClusterError::Timeout(format!(
            "node {id} did not exit within {timeout:?} of SIGTERM"
        )))
    }

    /// Starts a new node (the next id) with `--join` and a `--peers` list of every live member
    /// plus itself. Add it to the membership first (`member add ID=ADDR --learner`); its
    /// address is [`next_endpoint`](Self::next_endpoint).
    pub fn add_node(&mut self, addr: &str) -> Result<u64, ClusterError> {
        let id = self.children.len() as u64 + 1;
        self.endpoints.push(addr.to_owned());
        self.children.push(None);
        self.retired.push(false);
        self.joiners.push(true);
        self.peers = self.live_peers();
        self.spawn(id)?;
        Ok(id)
    }

    /// A free loopback address for the next node.
    pub fn next_endpoint(&self) -> Result<String, ClusterError> {
        Ok(format!("127.0.0.1:{}", free_ports(1)?[0]))
    }

    /// Stops node `id` for good (after `member remove`): it is no longer polled.
    pub fn retire(&mut self, id: u64) {
        self.kill(id);
        self.retired[(id - 1) as usize] = true;
        self.peers = self.live_peers();
    }

    fn live_peers(&self) -> String {
        self.endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.retired[*i])
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Endpoints of the nodes not retired, with their ids.
    pub fn live_endpoints(&self) -> Vec<(u64, String)> {
        self.endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.retired[*i])
            .map(|(i, a)| (i as u64 + 1, a.clone()))
            .collect()
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
            if self.retired[i] {
                continue;
            }
            out.push((
                i as u64 + 1,
                status_with(&self.client, ep, Duration::from_millis(500))
                    .await
                    .ok(),
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
