//! `snapshot save | status | restore`: backups (the logic is `eventstream_node::backup`).

use super::{print_json, runtime, ClientTlsArgs};
use clap::{Args, Subcommand};
use eventstream_node::backup::{self, SnapshotSummary};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `eventstream snapshot ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum SnapshotCommand {
    /// Save a backup of a running node into DIR: its snapshot, its stream's segment files,
    /// and a manifest of checksums.
    Save(SaveArgs),
    /// Verify a backup (every checksum and every record) and print what it holds.
    Status(StatusArgs),
    /// Seed an empty data directory for a member of a new cluster from a backup.
    Restore(RestoreArgs),
}

/// `eventstream snapshot save`.
#[derive(Debug, Args, Clone)]
pub struct SaveArgs {
    /// The backup directory to create (new, or empty).
    pub dir: PathBuf,
    /// The node to take it from (`host:port`, any member; a caught-up follower spares the leader).
    #[arg(long)]
    pub endpoint: String,
    /// Give up on a request (the snapshot, one chunk of the stream) after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// TLS and the admin bearer token (`--token` / `EVENTSTREAM_TOKEN`).
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// `eventstream snapshot status`.
#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// The backup directory (or a single snapshot file).
    pub dir: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `eventstream snapshot restore`.
#[derive(Debug, Args, Clone)]
pub struct RestoreArgs {
    /// The backup directory (or a single snapshot file).
    pub dir: PathBuf,
    /// The (new or empty) data directory of the member being seeded.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Every member of the new cluster: `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT]`, comma-separated
    /// (the same list as the nodes' `--peers`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub initial_cluster: Vec<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn print(sum: &SnapshotSummary, json: bool, verb: &str) -> anyhow::Result<()> {
    if json {
        return print_json(sum);
    }
    let members: Vec<String> = sum
        .members
        .iter()
        .map(|m| {
            let http = m
                .http_addr
                .as_deref()
                .map(|h| format!("@{h}"))
                .unwrap_or_default();
            let learner = if m.learner { " (learner)" } else { "" };
            format!("{}={}{http}{learner}", m.id, m.addr)
        })
        .collect();
    let range = match sum.last_offset {
        Some(last) => format!("offsets {}..={last}", sum.first_offset),
        None => "no events".to_owned(),
    };
    println!("{verb} {}", sum.file);
    println!("  index {}  term {}", sum.index, sum.term);
    println!("  voters {:?}  learners {:?}", sum.voters, sum.learners);
    println!("  members {}", members.join(","));
    println!(
        "  events {} ({range}), next offset {}",
        sum.events, sum.next_offset
    );
    println!(
        "  dedup window {} ids, offset index {} ids",
        sum.dedup_ids, sum.offset_index_ids
    );
    println!(
        "  snapshot {} bytes  checksum {}",
        sum.size_bytes, sum.checksum
    );
    if sum.stream_segments > 0 {
        println!(
            "  stream {} segment files, {} bytes",
            sum.stream_segments, sum.stream_bytes
        );
    }
    Ok(())
}

/// Runs a `snapshot` subcommand.
pub fn run(cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Save(a) => {
            let started = Instant::now();
            let base = a.tls.client_config(Vec::new())?;
            let timeout = Duration::from_secs(a.timeout_secs.max(1));
            let sum = runtime()?.block_on(backup::save(&base, &a.endpoint, &a.dir, timeout))?;
            print(&sum, a.json, "saved")?;
            if !a.json {
                println!("  took {:.3} s", started.elapsed().as_secs_f64());
            }
            Ok(())
        }
        SnapshotCommand::Status(a) => print(&backup::verify(&a.dir)?, a.json, "backup"),
        SnapshotCommand::Restore(a) => {
            let sum = backup::restore(&a.dir, &a.data_dir, &a.initial_cluster)?;
            print(&sum, a.json, "restored")
        }
    }
}
