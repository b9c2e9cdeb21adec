//! Shared by `tests/ops_e2e.rs` and `tests/doctor_live.rs`: a live cluster of real
//! `eventstream node` processes on loopback (free ports, a scratch data directory, every child
//! killed on drop), a background publisher, HTTP and polling helpers, and tool lookup.
//!
//! Every wait is a bounded poll that panics with what it waited for and what it last saw.
#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use bytes::Bytes;
use eventstream_client::{Client, ClientConfig};
use eventstream_core::{Event, Priority};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test (the debug build under `cargo test`).
pub const EXE: &str = env!("CARGO_BIN_EXE_eventstream");

/// The repository root (rules, dashboards).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `name` on PATH. Missing: with `CI=true` the test fails (CI installs it through
/// scripts/ensure-tools.sh); otherwise it is skipped with a loud message.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "`{name}` is not installed and CI=true: scripts/ensure-tools.sh must install it"
            );
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED: `{name}` is not on PATH; install it (scripts/ensure-tools.sh) \
             to run this test !!!!!!!!\n"
        );
    }
    found
}

pub use eventstream_testkit::Scratch;

/// `n` distinct free loopback ports, outside the kernel's ephemeral range (see
/// [`eventstream_testkit::free_ports`]).
pub fn free_ports(n: usize) -> eventstream_testkit::Ports {
    eventstream_testkit::free_ports(n).expect("free loopback ports")
}

/// Polls `probe` every `every` until it returns `Some`, or panics after `timeout` naming `what`
/// and the last observation `describe` gives.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                describe()
            );
        }
        std::thread::sleep(every);
    }
}

/// `GET path` on `endpoint` (`http://host:port`): status and body.
pub fn http_get(endpoint: &str, path: &str) -> Result<(u16, String), String> {
    eventstream_doctor::http::get(endpoint, path, Duration::from_secs(5)).map_err(|e| e.to_string())
}

/// One node process.
struct NodeProc {
    id: u64,
    raft: String,
    http: String,
    log: PathBuf,
    child: Option<Child>,
}

/// Real `eventstream node` processes on 127.0.0.1 with an exporter each.
pub struct LiveCluster {
    nodes: Vec<NodeProc>,
    dir: Scratch,
}

impl LiveCluster {
    /// Starts `n` nodes (ids 1..=n) on fresh ports, data under a new scratch directory.
    pub fn start(n: usize, tag: &str) -> LiveCluster {
        let dir = Scratch::new(tag);
        let ports = free_ports(2 * n);
        let nodes: Vec<NodeProc> = (0..n)
            .map(|i| NodeProc {
                id: i as u64 + 1,
                raft: format!("127.0.0.1:{}", ports[i]),
                http: format!("127.0.0.1:{}", ports[n + i]),
                log: dir.path().join(format!("node-{}.log", i + 1)),
                child: None,
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}@{}", n.id, n.raft, n.http))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LiveCluster { nodes, dir };
        for node in &mut cluster.nodes {
            let log = std::fs::File::create(&node.log).unwrap();
            let http_port = node.http.rsplit(':').next().unwrap().to_owned();
            let child = Command::new(EXE)
                .arg("node")
                .args(["--id", &node.id.to_string(), "--peers", &peers])
                .arg("--data-dir")
                .arg(cluster.dir.path().join(format!("node-{}", node.id)))
                .args(["--http-port", &http_port])
                // Environment could override flags' absence (EVENTSTREAM_* are read by clap).
                .env_remove("EVENTSTREAM_CONFIG")
                .env_remove("EVENTSTREAM_TICK_MS")
                .env_remove("EVENTSTREAM_LISTEN")
                .env_remove("EVENTSTREAM_REQUEST_TIMEOUT_MS")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn eventstream node");
            node.child = Some(child);
        }
        cluster
    }

    /// The scratch directory (logs, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Client (raft port) addresses, `host:port`.
    pub fn raft_endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.raft.clone()).collect()
    }

    /// HTTP addresses, `host:port` (Prometheus targets).
    pub fn http_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.http.clone()).collect()
    }

    /// HTTP endpoints, `http://host:port` (doctor endpoints).
    pub fn http_endpoint(&self, id: u64) -> String {
        format!("http://{}", self.node(id).http)
    }

    pub fn http_endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.http))
            .collect()
    }

    pub fn http_addr(&self, id: u64) -> String {
        self.node(id).http.clone()
    }

    fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[(id - 1) as usize]
    }

    /// Ids of the nodes still running.
    pub fn alive(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[(id - 1) as usize].child.take() {
            child.kill().expect("SIGKILL a node"); // Child::kill is SIGKILL on Unix
            let _ = child.wait();
        }
    }

    /// Node `id`'s `/api/v1/cluster/status` (None while unreachable or not JSON).
    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let (code, body) = http_get(&self.http_endpoint(id), "/api/v1/cluster/status").ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Every running node's status, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let st = if n.child.is_some() {
                self.status(n.id)
                    .map(|v| v["raft"].to_string())
                    .unwrap_or_else(|| "unreachable".into())
            } else {
                "killed".into()
            };
            s += &format!("node {} ({}): {st}\n", n.id, n.http);
        }
        s + &self.log_tails()
    }

    /// The last lines of every node's log.
    pub fn log_tails(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            s += &format!("--- node {} log ({}):\n{tail}\n", n.id, n.log.display());
        }
        s
    }

    /// The leader every running node agrees on, if they all do and are caught up (applied
    /// within 64 entries of the leader's commit index) and ready.
    pub fn agreed_leader(&self) -> Option<u64> {
        let statuses: Vec<serde_json::Value> = self
            .alive()
            .into_iter()
            .map(|id| self.status(id))
            .collect::<Option<_>>()?;
        let leader = statuses
            .iter()
            .find(|s| s["raft"]["role"] == "leader")?
            .clone();
        let lid = leader["raft"]["node_id"].as_u64()?;
        let commit = leader["raft"]["commit_index"].as_u64()?;
        statuses
            .iter()
            .all(|s| {
                s["raft"]["leader_id"].as_u64() == Some(lid)
                    && s["raft"]["applied_index"].as_u64().unwrap_or(0) + 64 >= commit
                    && s["node"]["ready"] == true
            })
            .then_some(lid)
    }

    /// Waits until the running nodes agree on a leader; returns its id.
    pub fn wait_leader(&self, timeout: Duration) -> u64 {
        poll(
            "the running nodes to agree on a leader and catch up",
            timeout,
            Duration::from_millis(50),
            || self.agreed_leader(),
            || self.describe(),
        )
    }
}

impl Drop for LiveCluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.kill(id);
        }
    }
}

/// A background publisher: batches of `batch` events over all priorities, one batch every
/// `pause`, through the cluster client (which follows the leader and retries with the same ids).
pub struct Publisher {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    pub fn start(endpoints: Vec<String>, batch: usize, pause: Duration) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(std::sync::Mutex::new(None));
        let (s, a, f, e) = (
            stop.clone(),
            acked.clone(),
            failed.clone(),
            last_error.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("test-publisher".into())
            .spawn(move || {
                // A current-thread runtime on purpose: this thread is the publisher's only
                // worker, beside the cluster's processes and the test's own runtime, on a
                // two-core machine; `test_runtime` would add two more worker threads.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut cfg = ClientConfig::new(endpoints);
                    // Short enough that stopping never waits long; long enough for a failover.
                    cfg.attempt_timeout = Duration::from_secs(2);
                    cfg.deadline = Duration::from_secs(5);
                    cfg.connect_timeout = Duration::from_millis(500);
                    let client = Client::new(cfg).unwrap();
                    let mut n: u64 = 0;
                    while !s.load(Ordering::Relaxed) {
                        let events: Vec<Event> = (0..batch)
                            .map(|i| {
                                n += 1;
                                Event::new(
                                    if i % 2 == 0 { "orders" } else { "audit" },
                                    Priority::from_index((n % 4) as u8).unwrap(),
                                    Bytes::from(format!("{{\"n\":{n}}}")),
                                )
                            })
                            .collect();
                        match client.publish(events).await {
                            Ok(offsets) => {
                                a.fetch_add(offsets.len() as u64, Ordering::Relaxed);
                            }
                            Err(err) => {
                                f.fetch_add(1, Ordering::Relaxed);
                                *e.lock().unwrap() = Some(err.to_string());
                            }
                        }
                        tokio::time::sleep(pause).await;
                    }
                });
            })
            .unwrap();
        Publisher {
            stop,
            acked,
            failed,
            last_error,
            thread: Some(thread),
        }
    }

    /// Events acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Publish calls that failed after all retries, and the last error.
    pub fn failed(&self) -> (u64, Option<String>) {
        (
            self.failed.load(Ordering::Relaxed),
            self.last_error.lock().unwrap().clone(),
        )
    }

    /// Waits until `more` further events are acknowledged.
    pub fn wait_acked(&self, more: u64, timeout: Duration, cluster: &LiveCluster) {
        let target = self.acked() + more;
        poll(
            &format!("{more} more acknowledged events (target {target})"),
            timeout,
            Duration::from_millis(50),
            || (self.acked() >= target).then_some(()),
            || {
                format!(
                    "acked {}, failed {:?}\n{}",
                    self.acked(),
                    self.failed(),
                    cluster.describe()
                )
            },
        );
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Node `endpoint`'s `/metrics`, parsed.
pub fn metrics(endpoint: &str) -> Vec<eventstream_doctor::prom::Sample> {
    let (code, body) = http_get(endpoint, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{endpoint}/metrics answered {code}");
    eventstream_doctor::prom::parse(&body).expect("/metrics parses")
}

/// The value of the first sample called `name` whose labels include `labels`.
pub fn metric_value(
    samples: &[eventstream_doctor::prom::Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Cumulative `(upper bound, count)` buckets of histogram `base` in one scrape.
pub fn histogram_buckets(
    samples: &[eventstream_doctor::prom::Sample],
    base: &str,
) -> Vec<(f64, f64)> {
    let name = format!("{base}_bucket");
    let mut out: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter_map(|s| {
            let le = s.labels.get("le")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, s.value))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Quantile `q` of histogram `base` over the observations made between two scrapes, and how
/// many there were (Prometheus' bucket interpolation, as the doctor and the rules use it).
pub fn window_quantile(
    first: &[eventstream_doctor::prom::Sample],
    second: &[eventstream_doctor::prom::Sample],
    base: &str,
    q: f64,
) -> Option<(f64, f64)> {
    let before = histogram_buckets(first, base);
    let delta: Vec<(f64, f64)> = histogram_buckets(second, base)
        .into_iter()
        .map(|(bound, count)| {
            let was = before
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |x| x.1);
            (bound, count - was)
        })
        .collect();
    let n = delta.last()?.1;
    (n > 0.0).then(|| eventstream_doctor::prom::histogram_quantile(q, &delta).map(|v| (v, n)))?
}
