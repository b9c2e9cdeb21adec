//! `bench hiccups`: how much of each core the machine itself takes away.
//!
//! One thread per allowed core, pinned, does nothing but read the engine clock in a loop. Any
//! gap between two consecutive reads longer than the threshold is time the thread was not
//! running: an interrupt, a kernel thread, another process, or the hypervisor descheduling the
//! virtual CPU. This is the floor under every tail-latency figure measured on the machine (the
//! idea of jHiccup): an open-loop benchmark whose producer and worker are preempted for 1 % of
//! the time cannot have a p99 below the typical preemption, whatever the engine does.
//!
//! The same accounting ([`GapMeter`]) runs inside the open-loop producer of
//! `bench pipeline --rate`, so a run reports the stalls it suffered next to its percentiles.

use crate::error::BenchError;
use eventstream_core::clock;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Gaps between consecutive clock reads of one spinning thread.
#[derive(Debug, Clone, Copy)]
pub struct GapMeter {
    threshold_ns: u64,
    last_ns: u64,
    gaps: u64,
    stalled_ns: u64,
    max_ns: u64,
    over_100us: u64,
}

/// What a [`GapMeter`] saw.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct GapReport {
    /// Gaps longer than the threshold.
    pub gaps: u64,
    /// Their total length, in milliseconds.
    pub stalled_ms: f64,
    /// That total as a percentage of the observed time.
    pub stalled_pct: f64,
    /// The longest gap, in microseconds.
    pub max_gap_us: f64,
    /// Gaps of 100 µs or more.
    pub gaps_over_100us: u64,
}

impl GapMeter {
    /// A meter counting gaps longer than `threshold_ns`, starting at `start_ns`.
    pub fn new(threshold_ns: u64, start_ns: u64) -> Self {
        GapMeter {
            threshold_ns,
            last_ns: start_ns,
            gaps: 0,
            stalled_ns: 0,
            max_ns: 0,
            over_100us: 0,
        }
    }

    /// The thread read the clock at `now_ns`.
    #[inline]
    pub fn observe(&mut self, now_ns: u64) {
        let gap = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns;
        if gap > self.threshold_ns {
            self.gaps += 1;
            self.stalled_ns += gap;
            self.max_ns = self.max_ns.max(gap);
            self.over_100us += u64::from(gap >= 100_000);
        }
    }

    /// The gaps over `elapsed_ns` of observation.
    pub fn report(&self, elapsed_ns: u64) -> GapReport {
        GapReport {
            gaps: self.gaps,
            stalled_ms: self.stalled_ns as f64 / 1e6,
            stalled_pct: 100.0 * self.stalled_ns as f64 / elapsed_ns.max(1) as f64,
            max_gap_us: self.max_ns as f64 / 1e3,
            gaps_over_100us: self.over_100us,
        }
    }
}

/// Options of `bench hiccups`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HiccupOptions {
    /// How long to measure, seconds.
    pub seconds: f64,
    /// Gaps longer than this count as time taken away (µs). A loop iteration takes ~15 ns.
    pub threshold_us: u64,
}

impl Default for HiccupOptions {
    fn default() -> Self {
        HiccupOptions {
            seconds: 4.0,
            threshold_us: 5,
        }
    }
}

/// One core's gaps.
#[derive(Debug, Serialize)]
pub struct CoreHiccups {
    /// The core the thread was pinned to.
    pub core: usize,
    /// What it saw.
    #[serde(flatten)]
    pub gaps: GapReport,
}

/// Result of `bench hiccups`.
#[derive(Debug, Serialize)]
pub struct HiccupReport {
    /// Seconds measured.
    pub seconds: f64,
    /// Gap threshold, µs.
    pub threshold_us: u64,
    /// Per core.
    pub cores: Vec<CoreHiccups>,
}

/// Runs `bench hiccups`: one pinned spinning thread per allowed core.
pub fn run(opts: HiccupOptions) -> Result<HiccupReport, BenchError> {
    if !(opts.seconds > 0.0 && opts.seconds <= 3600.0) {
        return Err(BenchError::option(
            "seconds",
            format!("must be in (0, 3600], got {}", opts.seconds),
        ));
    }
    // Read the allowed-core mask before pinning anything (it is per thread).
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.is_empty() {
        return Err(BenchError::Failed(
            "could not read the allowed cores of this process".into(),
        ));
    }
    let threshold_ns = opts.threshold_us * 1_000;
    let run_for = Duration::from_secs_f64(opts.seconds);
    let threads: Vec<_> = cores
        .into_iter()
        .map(|core| {
            std::thread::spawn(move || {
                let pinned = core_affinity::set_for_current(core);
                let start = clock::now_ns();
                let deadline = Instant::now() + run_for;
                let mut meter = GapMeter::new(threshold_ns, start);
                let mut i = 0u32;
                loop {
                    meter.observe(clock::now_ns());
                    i = i.wrapping_add(1);
                    // The OS clock is slower: look at it once every 4096 iterations.
                    if i % 4096 == 0 && Instant::now() >= deadline {
                        break;
                    }
                }
                (core.id, pinned, meter.report(clock::now_ns() - start))
            })
        })
        .collect();
    let mut report = HiccupReport {
        seconds: opts.seconds,
        threshold_us: opts.threshold_us,
        cores: Vec::new(),
    };
    for t in threads {
        let (core, pinned, gaps) = t
            .join()
            .map_err(|_| BenchError::Failed("a hiccup thread panicked".into()))?;
        if !pinned {
            return Err(BenchError::Failed(format!(
                "could not pin a thread to core {core}"
            )));
        }
        report.cores.push(CoreHiccups { core, gaps });
    }
    Ok(report)
}

impl std::fmt::Display for HiccupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} s per core, gaps > {} µs between clock reads of a pinned spinning thread:",
            self.seconds, self.threshold_us
        )?;
        for c in &self.cores {
            writeln!(
                f,
                "  core {}: {} gaps, {:.1} ms taken ({:.2} %), longest {:.0} µs, {} of 100 µs or more",
                c.core,
                c.gaps.gaps,
                c.gaps.stalled_ms,
                c.gaps.stalled_pct,
                c.gaps.max_gap_us,
                c.gaps.gaps_over_100us
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gaps_over_the_threshold_count() {
        let mut m = GapMeter::new(5_000, 1_000);
        // 1 µs steps, then a 50 µs gap, then a 250 µs gap, then a gap of exactly the threshold.
        let mut t = 1_000;
        for _ in 0..10 {
            t += 1_000;
            m.observe(t);
        }
        t += 50_000;
        m.observe(t);
        t += 250_000;
        m.observe(t);
        t += 5_000;
        m.observe(t);
        let r = m.report(1_000_000);
        assert_eq!(r.gaps, 2);
        assert_eq!(r.stalled_ms, 0.3);
        assert!((r.stalled_pct - 30.0).abs() < 1e-9);
        assert_eq!(r.max_gap_us, 250.0);
        assert_eq!(r.gaps_over_100us, 1);
    }

    #[test]
    fn a_clock_that_does_not_advance_is_no_gap() {
        let mut m = GapMeter::new(5_000, 10);
        m.observe(10);
        m.observe(5);
        assert_eq!(m.report(100).gaps, 0);
    }
}
