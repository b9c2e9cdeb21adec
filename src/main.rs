//! `eventstream`: the command-line binary. It owns every flag and command (`cmd/`) and
//! composes the library crates; the logic lives in them.

mod cmd;

/// Very large blocks are mapped without reserving memory (see `eventstream_kafka::alloc`): a
/// peer's request that declares billions of elements cannot abort the process.
#[global_allocator]
static ALLOCATOR: eventstream_kafka::alloc::Allocator = eventstream_kafka::alloc::Allocator;

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
    /// Run a 3-node cluster in this process with synthetic load and print a live summary.
    Demo(cmd::demo::DemoArgs),
    /// Benchmarks that print results (and `--json` for scripts).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Jepsen-style fault injection against real node processes, checked by a history checker.
    Chaos(cmd::chaos::ChaosArgs),
    /// Graded health report of one node or all (latency, queues, replication, disk, ...).
    Doctor(cmd::doctor::DoctorArgs),
    /// Run one cluster node (flags, a TOML file via --config, EVENTSTREAM_* variables).
    Node(cmd::node::NodeArgs),
    /// Publish events to a cluster; prints one offset per event after commit.
    Publish(cmd::client::PublishArgs),
    /// Read a cluster's committed stream from an offset.
    Subscribe(cmd::client::SubscribeArgs),
    /// Status of cluster endpoints as a table (or --json).
    Status(cmd::client::StatusArgs),
    /// Cluster membership: add (learner → catch up → voter), remove, list.
    #[command(subcommand)]
    Member(cmd::member::MemberCommand),
    /// Leadership: transfer to another voter.
    #[command(subcommand)]
    Leader(cmd::member::LeaderCommand),
    /// Backups: save a node's snapshot, verify a file, seed a new cluster from one.
    #[command(subcommand)]
    Snapshot(cmd::snapshot::SnapshotCommand),
    /// Consumer groups: committed offsets and lag per topic.
    #[command(subcommand)]
    Groups(cmd::groups::GroupsCommand),
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
        Command::Demo(args) => cmd::demo::run(args),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Chaos(args) => std::process::exit(cmd::chaos::run(args)?),
        Command::Doctor(args) => match cmd::doctor::run(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("Error: {e:#}");
                std::process::exit(cmd::doctor::EXIT_NO_REPORT)
            }
        },
        Command::Node(args) => cmd::node::run(args),
        Command::Publish(args) => cmd::client::publish(args),
        Command::Subscribe(args) => cmd::client::subscribe(args),
        Command::Status(args) => cmd::client::status(args),
        Command::Member(c) => cmd::member::member(c),
        Command::Leader(c) => cmd::member::leader(c),
        Command::Snapshot(c) => cmd::snapshot::run(c),
        Command::Groups(c) => cmd::groups::run(c),
    }
}
