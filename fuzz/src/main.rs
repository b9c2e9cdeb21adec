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

use eventstream_fuzz::{run_one, targets, CountingAlloc, Fuzzer};
use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const USAGE: &str = "\
eventstream-fuzz: bounded-time fuzzing of eventstream's decoders and configuration parsers

Options:
  --target NAME       target name, or `all` (see --list) [default: all]
  --seconds N         seconds per target [default: 15]
  --seed N            seed (default: from the clock; always printed, so any run can be replayed)
  --max-len N         largest input, bytes [default: 4096]
  --artifacts DIR     where failing inputs are saved [default: target/fuzz-artifacts]
  --reproduce FILE    run one saved input against --target and report
  --list              list the targets
  --json              one JSON object per target on stdout
  -h, --help          print this help";

/// The runner's flags (a dev tool with a handful of options: parsed by hand, so the fuzz
/// crate needs no argument-parsing library).
#[derive(Debug)]
struct Args {
    target: String,
    seconds: u64,
    seed: Option<u64>,
    max_len: usize,
    artifacts: PathBuf,
    reproduce: Option<PathBuf>,
    list: bool,
    json: bool,
}

impl Args {
    fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut a = Args {
            target: "all".into(),
            seconds: 15,
            seed: None,
            max_len: 4096,
            artifacts: PathBuf::from("target/fuzz-artifacts"),
            reproduce: None,
            list: false,
            json: false,
        };
        while let Some(flag) = argv.next() {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (flag.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| argv.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            let number = |v: String| {
                v.parse::<u64>()
                    .map_err(|e| format!("{name}: `{v}` is not a number ({e})"))
            };
            match name.as_str() {
                "--target" => a.target = value()?,
                "--seconds" => a.seconds = number(value()?)?,
                "--seed" => a.seed = Some(number(value()?)?),
                "--max-len" => a.max_len = number(value()?)? as usize,
                "--artifacts" => a.artifacts = PathBuf::from(value()?),
                "--reproduce" => a.reproduce = Some(PathBuf::from(value()?)),
                "--list" => a.list = true,
                "--json" => a.json = true,
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown option `{other}`")),
            }
        }
        Ok(a)
    }
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(why) if why.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(why) => {
            eprintln!("eventstream-fuzz: {why}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
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
