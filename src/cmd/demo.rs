//! `eventstream demo`: a 3-node raft cluster in this process on loopback, with synthetic load
//! (mixed topics and priorities, a sprinkling of retried ids), an exporter and status page per
//! node, and a one-line summary per second. `--embedded` runs the engine alone instead: no
//! replication, producers in this process at a higher rate.

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use eventstream_core::replication::ReplicationSource;
use eventstream_core::{Engine, EngineBuilder, Event, Priority, Stats, Tier};
use eventstream_exporter::{Exporter, ExporterConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Run the engine embedded, without replication.
    #[arg(long)]
    embedded: bool,
    /// Offered events per second (default: 20000 to the cluster, 200000 embedded).
    #[arg(long)]
    rate: Option<u64>,
    /// Nodes of the in-process cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Where the cluster keeps its logs (default: a temporary directory, removed at exit).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Producer threads (embedded).
    #[arg(long, default_value_t = 2)]
    producers: usize,
    /// Worker threads (embedded).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// HTTP address for /metrics, the JSON API and the status page; cluster node `i` uses this
    /// port + `i` (port 0: any free ports).
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: std::net::SocketAddr,
    /// Kafka-protocol listener of cluster node 1 (Kafka clients bootstrap from it); node `i`
    /// uses this port + `i` (port 0: any free ports).
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka: std::net::SocketAddr,
}

const TOPICS: [&str; 3] = ["orders", "payments", "clicks"];

/// An engine builder with the demo's handlers: one per topic, looking at every payload like a
/// real handler would.
fn with_handlers(mut builder: EngineBuilder) -> EngineBuilder {
    for topic in TOPICS {
        builder = builder.on(topic, |batch: &[Event]| {
            let bytes: usize = batch.iter().map(|e| e.payload.len()).sum();
            std::hint::black_box(bytes);
            Ok(())
        });
    }
    builder
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.producers >= 1, "--producers must be at least 1");
    let rate = args
        .rate
        .unwrap_or(if args.embedded { 200_000 } else { 20_000 });
    anyhow::ensure!(
        (1..=50_000_000).contains(&rate),
        "--rate must be 1 to 50000000, got {rate}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C / SIGTERM handler")?;
    }
    if args.embedded {
        embedded(args, rate, stop)
    } else {
        cluster(args, rate, stop)
    }
}

fn embedded(args: DemoArgs, rate: u64, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let builder = with_handlers(Engine::builder().configure(|c| c.workers = args.workers));
    let engine = builder.start().context("starting the engine")?;
    let exporter = Exporter::builder(
        ExporterConfig::listening_on(args.http),
        engine.stats_handle(),
    )
    .start()
    .context("starting the HTTP exporter")?;
    println!(
        "eventstream demo (embedded): {} producers at {} events/s total, {} worker(s); Ctrl-C to stop",
        args.producers, rate, args.workers
    );
    for (what, url) in exporter.urls() {
        println!("  {what:<24} {url}");
    }

    let mut producers = Vec::new();
    for p in 0..args.producers {
        let publisher = engine.publisher();
        let stop = stop.clone();
        let rate = (rate / args.producers as u64).max(1);
        producers.push(std::thread::spawn(move || {
            // 1 ms ticks: publish the events due in each tick as one batch.
            let per_tick = (rate as f64 / 1000.0).max(1.0);
            let mut owed = 0.0;
            let mut seq: u64 = 0;
            let mut recent: Vec<u64> = Vec::with_capacity(64);
            let payload = Bytes::from(vec![b'x'; 100]);
            let mut buf = Vec::new();
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                owed += per_tick;
                let n = owed as u64;
                owed -= n as f64;
                for _ in 0..n {
                    seq = seq.wrapping_add(1);
                    // Deterministic mix: 5 % critical, 15 % high, 50 % medium, 30 % low.
                    let priority = match seq % 20 {
                        0 => Priority::Critical,
                        1..=3 => Priority::High,
                        4..=13 => Priority::Medium,
                        _ => Priority::Low,
                    };
                    // 1 in 50 is a producer retry of a recent id: dedup must catch it.
                    let id = if seq % 50 == 0 && !recent.is_empty() {
                        recent[(seq as usize / 50) % recent.len()]
                    } else {
                        ((p as u64) << 56) | seq
                    };
                    if recent.len() < 64 {
                        recent.push(id);
                    } else {
                        recent[(seq % 64) as usize] = id;
                    }
                    buf.push(
                        Event::new(TOPICS[(seq % 3) as usize], priority, payload.clone())
                            .with_id(id),
                    );
                }
                let _ = publisher.publish_batch(&mut buf);
                next += Duration::from_millis(1);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else if now - next > Duration::from_millis(100) {
                    next = now; // fell far behind (machine busy): do not burst to catch up
                }
            }
        }));
    }

    let started = Instant::now();
    let stats = engine.stats_handle();
    let mut prev = stats.stats();
    let mut prev_hist = stats.latency_histogram();
    let mut tick = Instant::now();
    loop {
        tick += Duration::from_secs(1);
        while Instant::now() < tick {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = stats.stats();
        let hist = stats.latency_histogram();
        println!(
            "{}",
            summary_line(started.elapsed(), &prev, &now, &prev_hist, &hist)
        );
        prev = now;
        prev_hist = hist;
        if let Some(d) = args.duration {
            if started.elapsed() >= Duration::from_secs(d) {
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
    for p in producers {
        let _ = p.join();
    }
    let fin = engine.shutdown().context("shutting down")?;
    exporter.shutdown();
    println!(
        "shutdown: received {}  processed {}  dedup hits {}  dropped {}  handler panics {}",
        fin.received,
        fin.processed,
        fin.dedup_hits,
        fin.dropped.total(),
        fin.handler_panics
    );
    Ok(())
}

fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        _ => format!("{:.2}ms", ns as f64 / 1e6),
    }
}

fn summary_line(
    elapsed: Duration,
    prev: &Stats,
    now: &Stats,
    prev_hist: &eventstream_core::hdrhistogram::Histogram<u64>,
    hist: &eventstream_core::hdrhistogram::Histogram<u64>,
) -> String {
    let secs = (now.uptime.as_secs_f64() - prev.uptime.as_secs_f64()).max(1e-3);
    let rate = (now.processed - prev.processed) as f64 / secs;
    // Latency of this interval only: the cumulative histogram minus the previous one.
    let mut interval = hist.clone();
    let _ = interval.subtract(prev_hist);
    let (p50, p99) = if interval.is_empty() {
        (0, 0)
    } else {
        (
            interval.value_at_quantile(0.5),
            interval.value_at_quantile(0.99),
        )
    };
    let fill = |t: Tier| {
        let s = now.tier(t);
        100.0 * s.depth as f64 / s.capacity.max(1) as f64
    };
    format!(
        "t={:>4}s  events/s={:>9.0}  p50={:>7} p99={:>7}  fill realtime={:>5.1}% transactional={:>5.1}% batch={:>5.1}%  drops={}  dedup_hits={}",
        elapsed.as_secs(),
        rate,
        fmt_ns(p50),
        fmt_ns(p99),
        fill(Tier::Realtime),
        fill(Tier::Transactional),
        fill(Tier::Batch),
        now.dropped.total(),
        now.dedup_hits
    )
}

/// Addresses for `n` nodes: `base` port + i, or free ports when `base` has port 0.
fn node_addrs(base: SocketAddr, n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    (0..n)
        .map(|i| {
            if base.port() == 0 {
                // Reserve-and-release: a tiny race with other processes, fine for a demo.
                let l = std::net::TcpListener::bind((base.ip(), 0))
                    .with_context(|| format!("finding a free port on {}", base.ip()))?;
                Ok(l.local_addr()?)
            } else {
                let port = base
                    .port()
                    .checked_add(i as u16)
                    .context("port + node index overflows")?;
                Ok(SocketAddr::new(base.ip(), port))
            }
        })
        .collect()
}

/// Commands to paste into another terminal while the demo runs, against its nodes.
fn print_try_it(endpoints: &[String], http: &[String], kafka: &[String]) {
    let exe = std::env::current_exe()
        .ok()
        .map(|p| {
            let here = std::env::current_dir().unwrap_or_default();
            p.strip_prefix(&here).map(|r| r.to_path_buf()).unwrap_or(p)
        })
        .map_or_else(|| "eventstream".to_owned(), |p| p.display().to_string());
    let eps = endpoints.join(",");
    println!("  try it from another terminal while the demo runs:");
    println!("    {exe} status --endpoints {eps}");
    println!("    {exe} publish --endpoints {eps} --topic orders --priority high '{{\"id\":42}}'");
    println!("    {exe} subscribe --endpoints {eps} --topic orders --limit 5");
    let doctor: Vec<String> = http.iter().map(|h| format!("--endpoint {h}")).collect();
    println!("    {exe} doctor {}", doctor.join(" "));
    let brokers = kafka.join(",");
    println!("    echo hello | kcat -P -b {brokers} -t orders");
    println!("    kcat -C -b {brokers} -t orders -o beginning -e");
}

fn cluster(args: DemoArgs, rate: u64, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=7).contains(&args.nodes),
        "--nodes must be 1 to 7, got {}",
        args.nodes
    );
    let temp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("eventstream-demo-")
                .tempdir()
                .context("creating a temporary data directory")?;
            temp.path().to_owned()
        }
    };
    let https = node_addrs(args.http, args.nodes)?;
    let kafkas = node_addrs(args.kafka, args.nodes)?;
    // What other nodes (and the status page) use to reach a node's HTTP API.
    let shown = |a: &SocketAddr| {
        let ip = if a.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            a.ip()
        };
        SocketAddr::new(ip, a.port())
    };
    let http_for: Vec<String> = https.iter().map(|a| shown(a).to_string()).collect();
    let cluster = eventstream_node::LocalCluster::start(
        args.nodes,
        &dir,
        |c| {
            for p in c.peers.iter_mut() {
                let id: usize = p
                    .split('=')
                    .next()
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(1);
                p.push('@');
                p.push_str(&http_for[id - 1]);
                p.push('+');
                p.push_str(&shown(&kafkas[id - 1]).to_string());
            }
        },
        |_| with_handlers(Engine::builder()),
    )
    .context("starting the in-process cluster")?;
    let mut exporters = Vec::new();
    for (i, node) in cluster.nodes.iter().flatten().enumerate() {
        let exporter =
            Exporter::builder(ExporterConfig::listening_on(https[i]), node.stats_handle())
                .replication(node.metrics())
                .spawn(&node.runtime_handle())
                .with_context(|| {
                    format!(
                        "starting node {}'s HTTP exporter on {}",
                        node.id(),
                        https[i]
                    )
                })?;
        exporters.push(exporter);
        let advertised = shown(&kafkas[i]).to_string();
        super::kafka::start(
            node,
            &kafkas[i].to_string(),
            advertised,
            &eventstream_node::config::KafkaConfig::default(),
            None,
        )
        .with_context(|| format!("starting node {}'s Kafka listener (--kafka)", node.id()))?;
    }
    println!(
        "eventstream demo: {}-node raft cluster on loopback (logs in {}), {} events/s offered; Ctrl-C to stop",
        args.nodes,
        dir.display(),
        rate
    );
    let endpoints = cluster.endpoints();
    for (i, e) in exporters.iter().enumerate() {
        println!(
            "  node {}  client {}  status page {}/  metrics {}/metrics",
            i + 1,
            endpoints[i],
            e.base_url(),
            e.base_url()
        );
    }
    let leader = cluster
        .wait_for_leader(Duration::from_secs(15))
        .context("no leader elected within 15 s")?;
    println!("  leader elected: node {leader}");
    let bootstrap: Vec<String> = kafkas.iter().map(|a| shown(a).to_string()).collect();
    println!("  Kafka bootstrap servers: {}", bootstrap.join(","));
    let http: Vec<String> = exporters.iter().map(|e| e.base_url()).collect();
    print_try_it(&endpoints, &http, &bootstrap);
    let load = super::demo_load::DemoLoad::start(cluster.endpoints(), rate)
        .context("starting the load generator")?;

    let started = Instant::now();
    let mut prev_acked = 0;
    let mut prev_commit: Vec<Option<eventstream_core::hdrhistogram::Histogram<u64>>> =
        vec![None; args.nodes];
    let mut tick = Instant::now();
    loop {
        tick += Duration::from_secs(1);
        while Instant::now() < tick && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let acked = load.acked();
        let Some(leader) = cluster.leader() else {
            println!(
                "t={:>4}s  no leader (election in progress)",
                started.elapsed().as_secs()
            );
            continue;
        };
        let node = cluster.nodes[(leader - 1) as usize]
            .as_ref()
            .context("leader node is stopped")?;
        let status = node.metrics().status();
        let hist = node.metrics().histograms().commit_ns;
        let mut interval = hist.clone();
        if let Some(p) = &prev_commit[(leader - 1) as usize] {
            let _ = interval.subtract(p);
        }
        let (p50, p99) = if interval.is_empty() {
            (0, 0)
        } else {
            (
                interval.value_at_quantile(0.5),
                interval.value_at_quantile(0.99),
            )
        };
        prev_commit[(leader - 1) as usize] = Some(hist);
        let stats = node.stats_handle().stats();
        let fill = |t: Tier| {
            let s = stats.tier(t);
            100.0 * s.depth as f64 / s.capacity.max(1) as f64
        };
        let lag = status
            .members
            .iter()
            .filter_map(|m| m.lag_entries)
            .max()
            .unwrap_or(0);
        println!(
            "t={:>4}s  events/s={:>7}  commit p50={:>7} p99={:>7}  leader={} term={} commit={} lag={}  fill realtime={:.1}% transactional={:.1}% batch={:.1}%  drops={}  dedup_hits={}",
            started.elapsed().as_secs(),
            acked - prev_acked,
            fmt_ns(p50),
            fmt_ns(p99),
            leader,
            status.term,
            status.commit_index,
            lag,
            fill(Tier::Realtime),
            fill(Tier::Transactional),
            fill(Tier::Batch),
            stats.dropped.total(),
            stats.dedup_hits
        );
        prev_acked = acked;
        if let Some(d) = args.duration {
            if started.elapsed() >= Duration::from_secs(d) {
                break;
            }
        }
    }
    let (acked, failed) = (load.acked(), load.failed());
    load.stop();
    let applied: Vec<String> = cluster
        .nodes
        .iter()
        .flatten()
        .map(|n| {
            format!(
                "node {} applied {}",
                n.id(),
                n.metrics().status().applied_index
            )
        })
        .collect();
    for e in exporters {
        e.shutdown();
    }
    cluster.shutdown();
    println!(
        "shutdown: acknowledged {acked}  failed {failed}  {}",
        applied.join("  ")
    );
    Ok(())
}
