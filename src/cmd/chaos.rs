//! `eventstream chaos`: a Jepsen-style fault-injection run against real node processes of this
//! binary on loopback, checked by `eventstream_chaos::check`. Logic lives in the chaos crate.

use anyhow::Context;
use eventstream_chaos::{ChaosConfig, ChaosOutcome};
use std::path::PathBuf;

/// Flags of `eventstream chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Cluster size (3 or 5).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Faults to inject (each kind once per six cycles).
    #[arg(long, default_value_t = 12)]
    pub cycles: u32,
    /// Nemesis seed (default: from the clock; printed so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long each fault is held before it is healed, ms.
    #[arg(long, default_value_t = 800)]
    pub cycle_ms: u64,
    /// Concurrent producers.
    #[arg(long, default_value_t = 3)]
    pub producers: usize,
    /// Events per publish request (mixed priorities).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Time a publish may take, retries included, before it is recorded as failed, ms.
    #[arg(long, default_value_t = 2000)]
    pub publish_deadline_ms: u64,
    /// The `eventstream` binary that runs the nodes (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Directory for node data, logs and the history (default: a fresh temp directory,
    /// removed after a clean run).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the directory (with history.json) even after a clean run.
    #[arg(long)]
    pub keep: bool,
    /// Do not run anything: check a history written by an earlier run (`history.json`) and
    /// print the report.
    #[arg(long, value_name = "HISTORY_JSON")]
    pub check: Option<PathBuf>,
    /// Print one JSON object (the report) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the chaos test; the exit code is 0 for a clean history, 1 when anomalies were found.
pub fn run(args: ChaosArgs) -> anyhow::Result<i32> {
    if let Some(path) = &args.check {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let history: eventstream_chaos::History = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a chaos history", path.display()))?;
        let report = eventstream_chaos::check(&history);
        println!("{}", serde_json::to_string(&report)?);
        return Ok(if report.is_valid() { 0 } else { 1 });
    }
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe().context("locating this binary for the node processes")?,
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut cfg = ChaosConfig::new(binary);
    cfg.nodes = args.nodes;
    cfg.cycles = args.cycles;
    cfg.seed = seed;
    cfg.fault_ms = args.cycle_ms;
    cfg.producers = args.producers;
    cfg.batch = args.batch;
    cfg.publish_deadline_ms = args.publish_deadline_ms;
    cfg.work_dir = args.dir;
    cfg.keep_dir = args.keep;
    cfg.progress = !args.json;
    cfg.validate().context("invalid chaos settings")?;
    if !args.json {
        eprintln!(
            "chaos: {} nodes, {} cycles, seed {seed}, faults held {} ms",
            cfg.nodes, cfg.cycles, cfg.fault_ms
        );
    }
    let outcome = eventstream_chaos::run(&cfg).context("chaos run")?;
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        print_text(&outcome);
    }
    Ok(if outcome.valid { 0 } else { 1 })
}

fn print_text(o: &ChaosOutcome) {
    let r = &o.report;
    println!(
        "{} after {} cycles in {:.1} s (seed {}, {} nodes)",
        if o.valid { "VALID" } else { "ANOMALIES FOUND" },
        r.cycles,
        o.elapsed_ms as f64 / 1000.0,
        o.seed,
        o.nodes
    );
    println!(
        "publishes {}: acked {}, failed {} ({} of them stored once); stream {} events; delivered {}",
        r.published, r.acked, r.failed_publishes, r.unacked_stored, r.final_stream_len, r.delivered
    );
    println!(
        "lost {}  duplicates {}  divergent offsets {}  ack offset mismatches {}  consumer order violations {}  unacked duplicates {}  phantoms {}  incomplete reads {}",
        r.lost,
        r.duplicates,
        r.divergent_offsets,
        r.ack_offset_mismatches,
        r.consumer_order_violations,
        r.unacked_duplicates,
        r.phantom_ids,
        r.incomplete_final_reads
    );
    println!(
        "max unavailable {} ms; by fault: {:?}; unrecovered cycles {}",
        r.max_unavailable_ms, r.max_unavailable_ms_by_fault, r.unrecovered_cycles
    );
    for e in &o.unexpected_exits {
        println!("unexpected exit: {e}");
    }
    if let Some(e) = &o.quiescence_error {
        println!("cluster did not settle after healing: {e}");
    }
    if !o.valid {
        println!("examples: lost {:?}", r.lost_examples);
        println!("duplicates {:?}", r.duplicate_examples);
        println!("divergences {:?}", r.divergence_examples);
        println!("ack mismatches {:?}", r.ack_mismatch_examples);
        println!("consumer {:?}", r.consumer_examples);
    }
    if let Some(d) = &o.kept_dir {
        println!("history and node logs kept in {}", d.display());
    }
}
