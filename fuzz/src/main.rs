//! `eventstream-fuzz`: runs the fuzz targets of [`eventstream_fuzz::targets`] for a bounded
//! time each, on stable Rust.
//!
//! ```text
//! eventstream-fuzz --target all --seconds 15            # CI: every target, seed from the clock
//! eventstream-fuzz --target wal-replay --seconds 600 --seed 42
//! eventstream-fuzz --target client-protocol --reproduce target/fuzz-artifacts/client-protocol-42-1234.bin
//! ```
//!
//! Exit status: 0 clean, 1 a finding (panic or oversized allocation; the input is saved and
//! the command to reproduce it printed), 2 usage error.

use clap::Parser;
use eventstream_fuzz::{run_one, targets, CountingAlloc, Fuzzer};
use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Bounded-time fuzzing of eventstream's decoders and configuration parsers.
#[derive(Debug, Parser)]
#[command(name = "eventstream-fuzz")]
struct Args {
    /// Target name, or `all` (see --list).
    #[arg(long, default_value = "all")]
    target: String,
    /// Seconds per target.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Seed (default: from the clock; always printed, so any run can be replayed).
    #[arg(long)]
    seed: Option<u64>,
    /// Largest input, bytes.
    #[arg(long, default_value_t = 4096)]
    max_len: usize,
    /// Where failing inputs are saved.
    #[arg(long, default_value = "target/fuzz-artifacts")]
    artifacts: PathBuf,
    /// Run one saved input against --target and report.
    #[arg(long)]
    reproduce: Option<PathBuf>,
    /// List the targets.
    #[arg(long)]
    list: bool,
    /// One JSON object per target on stdout.
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    let mut all = targets::all();
    if args.list {
        for t in &all {
            println!("{}", t.name());
        }
        return;
    }
    let names: Vec<&str> = all.iter().map(|t| t.name()).collect();
    if args.target != "all" && !names.contains(&args.target.as_str()) {
        eprintln!(
            "unknown target `{}`; targets: {}",
            args.target,
            names.join(", ")
        );
        std::process::exit(2);
    }
    if let Some(path) = &args.reproduce {
        let input = std::fs::read(path).unwrap_or_else(|e| {
            eprintln!("cannot read {}: {e}", path.display());
            std::process::exit(2)
        });
        let t = all
            .iter_mut()
            .find(|t| t.name() == args.target)
            .unwrap_or_else(|| {
                eprintln!("--reproduce needs one --target");
                std::process::exit(2)
            });
        match run_one(t.as_mut(), &input) {
            Ok((outcome, largest)) => {
                let bound = eventstream_fuzz::alloc_bound(input.len(), t.fixed_allowance());
                println!("{outcome:?}; largest allocation {largest} bytes (bound {bound})");
                std::process::exit(i32::from(largest > bound));
            }
            Err(msg) => {
                println!("panic: {msg}");
                std::process::exit(1);
            }
        }
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "eventstream-fuzz: seed {seed}, {} s per target",
        args.seconds
    );
    // Findings are reported below; the default hook would print every caught panic.
    std::panic::set_hook(Box::new(|_| {}));
    for t in all.iter_mut() {
        if args.target != "all" && t.name() != args.target {
            continue;
        }
        let mut f = Fuzzer::new(seed, args.max_len);
        match f.run(t.as_mut(), Duration::from_secs(args.seconds), None) {
            Ok(rep) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string(&rep).expect("a report serializes")
                    );
                } else {
                    println!(
                        "{:<16} {:>9} execs  {:>8.0} execs/s  accepted {:>8}  rejected {:>8}  largest alloc {:>8} B ({:.2} of bound)",
                        rep.target,
                        rep.execs,
                        rep.execs_per_sec,
                        rep.accepted,
                        rep.rejected,
                        rep.largest_alloc,
                        rep.worst_alloc_to_bound
                    );
                }
            }
            Err(finding) => {
                let _ = std::fs::create_dir_all(&args.artifacts);
                let path =
                    args.artifacts
                        .join(format!("{}-{seed}-{}.bin", t.name(), std::process::id()));
                let saved = std::fs::write(&path, finding.input()).is_ok();
                eprintln!("FINDING: {finding}");
                if saved {
                    eprintln!(
                        "input saved; reproduce with: eventstream-fuzz --target {} --reproduce {}",
                        t.name(),
                        path.display()
                    );
                }
                eprintln!(
                    "replay the run with: eventstream-fuzz --target {} --seed {seed} --seconds {}",
                    t.name(),
                    args.seconds
                );
                std::process::exit(1);
            }
        }
    }
}
