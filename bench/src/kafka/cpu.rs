//! CPU time of this process over a run, split into the nodes' threads and the rest (the
//! load clients: librdkafka's threads, the native clients' runtime, the sending thread), from
//! `/proc/self/stat` and `/proc/self/task/*/stat`.
//!
//! A node names its threads `es-…`; they live through a whole run. A client's threads may
//! exit before the run ends (librdkafka's do), so the clients' share is the process's CPU time
//! less the nodes', and the process's total counts threads that have exited.

use std::path::Path;

/// Prefix of every node thread's name.
const NODE_THREAD_PREFIX: &str = "es-";

/// CPU seconds so far: (the whole process, the nodes' threads). `None` where `/proc` is not
/// readable.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuSample {
    process: f64,
    nodes: f64,
}

impl CpuSample {
    pub(super) fn now() -> Option<CpuSample> {
        let process = ticks_of(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let mut nodes = 0;
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            if let Some(t) = node_thread_ticks(&task.path()) {
                nodes += t;
            }
        }
        let hz = clock_ticks_per_second();
        Some(CpuSample {
            process: process as f64 / hz,
            nodes: nodes as f64 / hz,
        })
    }

    /// (nodes' CPU seconds, clients' CPU seconds) from `self` to `later`.
    pub(super) fn until(&self, later: &CpuSample) -> (f64, f64) {
        let nodes = (later.nodes - self.nodes).max(0.0);
        let process = (later.process - self.process).max(0.0);
        (nodes, (process - nodes).max(0.0))
    }
}

/// A node thread's user + system ticks, `None` for any other thread.
fn node_thread_ticks(task: &Path) -> Option<u64> {
    let comm = std::fs::read_to_string(task.join("comm")).ok()?;
    if !comm.starts_with(NODE_THREAD_PREFIX) {
        return None;
    }
    ticks_of(&std::fs::read_to_string(task.join("stat")).ok()?)
}

/// utime + stime of a `stat` line (fields 14 and 15, counted after the parenthesised name,
/// which may hold spaces).
fn ticks_of(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux build this runs on (the kernel's `USER_HZ`).
fn clock_ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_come_from_fields_14_and_15_whatever_the_name() {
        let line = "4242 (es-raft 1) S 1 4242 4242 0 -1 4194368 100 0 0 0 123 45 0 0 20 0 9 0";
        assert_eq!(ticks_of(line), Some(168));
        assert_eq!(ticks_of("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_sample_and_it_grows() {
        let a = CpuSample::now().expect("/proc/self readable");
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = CpuSample::now().unwrap();
        let (nodes, rest) = a.until(&b);
        assert_eq!(nodes, 0.0, "no node threads here");
        assert!(rest > 0.0, "{a:?} → {b:?}");
    }
}
