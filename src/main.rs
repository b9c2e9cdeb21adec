//! `eventstream`: the command-line binary. Thin by design — it parses flags and composes the
//! library crates (core, exporter, cluster); all logic lives in them.

mod bench;
mod chaos_cmd;
mod cluster_cmd;
mod demo;
mod doctor_cmd;
mod hiccups;

use clap::{Parser, Subcommand};

/// eventstream: a priority-tiered, replicated event-stream engine.
#[derive(Debug, Parser)]
#[command(name = "eventstream", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine with synthetic producers and print a live one-line summary every second.
    Demo(demo::DemoArgs),
    /// Benchmarks that print results (and `--json` for scripts).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Jepsen-style fault injection against real node processes, checked by a history checker.
    Chaos(chaos_cmd::ChaosArgs),
    /// Graded health report of one node or all (latency, queues, replication, disk, ...).
    Doctor(doctor_cmd::DoctorArgs),
    /// Run one cluster node (flags, a TOML file via --config, EVENTSTREAM_* variables).
    Node(cluster_cmd::NodeArgs),
    /// Publish events to a cluster; prints one offset per event after commit.
    Publish(cluster_cmd::PublishArgs),
    /// Read a cluster's committed stream from an offset.
    Subscribe(cluster_cmd::SubscribeArgs),
    /// Status of cluster endpoints as a table (or --json).
    Status(cluster_cmd::StatusArgs),
    /// Cluster membership: add (learner → catch up → voter), remove, list.
    #[command(subcommand)]
    Member(cluster_cmd::MemberCommand),
    /// Leadership: transfer to another voter.
    #[command(subcommand)]
    Leader(cluster_cmd::LeaderCommand),
    /// Backups: save a node's snapshot, verify a file, seed a new cluster from one.
    #[command(subcommand)]
    Snapshot(cluster_cmd::SnapshotCommand),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVENTSTREAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Chaos(args) => std::process::exit(chaos_cmd::run(args)?),
        Command::Doctor(args) => match doctor_cmd::run(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("Error: {e:#}");
                std::process::exit(doctor_cmd::EXIT_NO_REPORT)
            }
        },
        Command::Node(args) => cluster_cmd::node(args),
        Command::Publish(args) => cluster_cmd::publish(args),
        Command::Subscribe(args) => cluster_cmd::subscribe(args),
        Command::Status(args) => cluster_cmd::status(args),
        Command::Member(cmd) => cluster_cmd::member(cmd),
        Command::Leader(cmd) => cluster_cmd::leader(cmd),
        Command::Snapshot(cmd) => cluster_cmd::snapshot(cmd),
    }
}
