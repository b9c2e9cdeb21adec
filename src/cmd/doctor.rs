//! `eventstream doctor`: a graded health report of one node or all, from their metrics.

use clap::Args;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// A node's HTTP address (`http://HOST:PORT`, the metrics port); repeat for every node.
    #[arg(long = "endpoint", required = true, num_args = 1..)]
    endpoints: Vec<String>,
    /// Seconds between the two scrapes rates are computed from.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Exit code when the doctor itself could not run (bad flags, bad endpoint): distinct from the
/// report's grades, so scripts can tell "warning" from "no report".
pub const EXIT_NO_REPORT: i32 = 3;

/// Runs the doctor; the exit code is 0 (ok), 1 (warning) or 2 (critical).
pub fn run(args: DoctorArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (0.1..=600.0).contains(&args.interval),
        "--interval must be 0.1 to 600 seconds, got {}",
        args.interval
    );
    let report = eventstream_doctor::diagnose(
        &args.endpoints,
        Duration::from_secs_f64(args.interval),
        eventstream_doctor::Thresholds::default(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(match report.overall {
        eventstream_doctor::Grade::Ok => 0,
        eventstream_doctor::Grade::Warning => 1,
        eventstream_doctor::Grade::Critical => 2,
    })
}
