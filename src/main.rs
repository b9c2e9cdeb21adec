//! `eventstream`: the command-line binary. Thin by design — it parses flags and composes the
//! library crates (core, exporter, cluster); all logic lives in them.

mod bench;
mod demo;

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
    }
}
