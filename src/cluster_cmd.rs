//! Cluster subcommands: `node`, `publish`, `subscribe`, `status`, `bench replication`,
//! `bench failover`. Logic lives in `eventstream_cluster::cli`; this file composes the node
//! with the HTTP exporter (the cluster crate does not depend on the exporter).

use anyhow::Context;
use eventstream_cluster::cli;
use eventstream_cluster::Node;
use eventstream_core::replication::ReplicationSource;
use eventstream_core::Engine;
use eventstream_exporter::{Exporter, ExporterConfig};
use std::net::SocketAddr;
use std::sync::Arc;

pub use eventstream_cluster::cli::{
    FailoverBenchArgs, NodeArgs, PublishArgs, ReplicationBenchArgs, StatusArgs, SubscribeArgs,
};
pub use eventstream_cluster::member_cli::{LeaderCommand, MemberCommand, RestartBenchArgs};

/// How long a terminating leader waits for its hand-off before it shuts down anyway.
const HAND_OFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
pub use eventstream_cluster::snapshot_cli::SnapshotCommand;

/// `eventstream node`: runs until SIGINT/SIGTERM (or a fatal storage error).
pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    let cfg = args.to_config().context("invalid node configuration")?;
    let http_port = cfg.http_port;
    let node = Node::start(cfg, Engine::builder()).context("starting the node")?;
    let exporter = if http_port != 0 {
        let listen = SocketAddr::from(([0, 0, 0, 0], http_port));
        let source: Arc<dyn ReplicationSource> = node.metrics();
        let handle = Exporter::builder(ExporterConfig::listening_on(listen), node.stats_handle())
            .replication(source)
            .spawn(&node.runtime_handle())
            .with_context(|| format!("starting the HTTP exporter on {listen}"))?;
        eprintln!(
            "node {} serving on {}, HTTP on {}",
            node.id(),
            node.addr(),
            handle.local_addr()
        );
        Some(handle)
    } else {
        eprintln!("node {} serving on {}", node.id(), node.addr());
        None
    };
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the signal handler")?;
    // The driver thread only ends early on a fatal storage error. The node then keeps serving
    // what it can (status, /ready and /metrics with the reason, reads of the committed stream,
    // publishes refused with the reason) until it is stopped, and exits non-zero.
    let mut reported = false;
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !reported && !node.is_running() => {
                let Some(why) = node.metrics().storage_failure() else {
                    break; // any other fatal driver error: exit non-zero at once
                };
                reported = true;
                eprintln!(
                    "node {}: log storage failed ({why}); refusing writes and serving status until stopped",
                    node.id()
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    // Graceful stop (SIGTERM, e.g. a Kubernetes rolling update): a leader first hands
    // leadership to the most caught-up voter, so the cluster does not wait for an election
    // timeout; publishes in flight here fail with a retryable error and clients retry them at
    // the new leader with the same ids.
    match node.hand_off_leadership(HAND_OFF_TIMEOUT) {
        Ok(Some((leader, term))) => {
            eprintln!("node {}: leadership handed to {leader} (term {term})", node.id())
        }
        Ok(None) => {}
        Err(e) => eprintln!(
            "node {}: leadership hand-off failed ({:?}: {}); the cluster elects a new leader after an election timeout",
            node.id(),
            e.code,
            e.message
        ),
    }
    if let Some(h) = exporter {
        h.shutdown();
    }
    if !node.is_running() {
        return node.wait().context("the raft driver stopped");
    }
    node.shutdown();
    Ok(())
}

/// `eventstream member ...`.
pub fn member(cmd: MemberCommand) -> anyhow::Result<()> {
    Ok(eventstream_cluster::member_cli::run_member(cmd)?)
}

/// `eventstream leader ...`.
pub fn leader(cmd: LeaderCommand) -> anyhow::Result<()> {
    Ok(eventstream_cluster::member_cli::run_leader(cmd)?)
}

/// `eventstream bench restart`.
pub fn bench_restart(args: RestartBenchArgs) -> anyhow::Result<()> {
    let json = args.json;
    let exe = std::env::current_exe().context("locating the eventstream binary")?;
    let r = eventstream_cluster::member_cli::run_bench_restart(args, &exe)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "restart: {} graceful leader restarts; longest write gap p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target {:.0} ms); handed off {}/{}; acked {}, lost {}, duplicated {}, diverged nodes {}",
            r.restarts, r.gap_p50_ms, r.gap_p99_ms, r.gap_max_ms, r.target_ms,
            r.handed_off.iter().filter(|h| **h).count(), r.handed_off.len(),
            r.acked, r.lost, r.duplicated, r.diverged_nodes
        );
    }
    anyhow::ensure!(
        r.lost == 0 && r.duplicated == 0 && r.diverged_nodes == 0,
        "acknowledged events were lost, duplicated or diverged"
    );
    Ok(())
}

/// `eventstream publish`.
pub fn publish(args: PublishArgs) -> anyhow::Result<()> {
    Ok(cli::run_publish(args)?)
}

/// `eventstream subscribe`.
pub fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    Ok(cli::run_subscribe(args)?)
}

/// `eventstream status`.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    Ok(cli::run_status(args)?)
}

/// `eventstream snapshot save | status | restore`.
pub fn snapshot(cmd: SnapshotCommand) -> anyhow::Result<()> {
    Ok(eventstream_cluster::snapshot_cli::run(cmd)?)
}

/// `eventstream bench replication`.
pub fn bench_replication(args: ReplicationBenchArgs) -> anyhow::Result<()> {
    let json = args.json;
    let r = cli::run_bench_replication(args)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "replication: {} events in {:.2} s = {:.0} events/s; commit p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; failed requests {}; verified {:?}",
            r.events, r.seconds, r.events_per_sec, r.commit_p50_ms, r.commit_p99_ms, r.commit_p999_ms, r.commit_max_ms, r.failed_requests, r.verified
        );
    }
    anyhow::ensure!(
        r.verified != Some(false),
        "replicated streams do not match the acknowledged events"
    );
    Ok(())
}

/// `eventstream bench failover`.
pub fn bench_failover(args: FailoverBenchArgs) -> anyhow::Result<()> {
    let json = args.json;
    let exe = std::env::current_exe().context("locating the eventstream binary")?;
    let r = cli::run_bench_failover(args, &exe)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "failover: {} kills; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; acked {}, lost {}, duplicated {}, diverged nodes {}",
            r.kills, r.failover_p50_ms, r.failover_p99_ms, r.failover_max_ms, r.acked, r.lost, r.duplicated, r.diverged_nodes
        );
    }
    anyhow::ensure!(
        r.lost == 0 && r.duplicated == 0 && r.diverged_nodes == 0,
        "acknowledged events were lost, duplicated or diverged"
    );
    Ok(())
}
