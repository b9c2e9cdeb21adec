//! Process metrics read from Linux `/proc` (the standard `process_*` family).
//!
//! Only `/proc/self/{stat,limits,fd}` and `/proc/stat` are read; any file that cannot be read or
//! parsed leaves its field `None`, and the exporter then omits that sample rather than guessing.

use std::fs;

/// One reading of the process's resources.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// Resident set size in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// User + system CPU seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// OS threads.
    pub threads: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Fields of `/proc/<pid>/stat` after the `(comm)` field; `comm` may hold spaces and parens,
/// so parsing starts after the *last* `)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatFields {
    utime_ticks: u64,
    stime_ticks: u64,
    threads: u64,
    start_ticks: u64,
    rss_pages: u64,
}

fn parse_stat(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": field 3 (state) is index 0, so field N is index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime_ticks: get(14)?,
        stime_ticks: get(15)?,
        threads: get(20)?,
        start_ticks: get(22)?,
        rss_pages: get(24)?,
    })
}

fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    // "unlimited" has no numeric value; report nothing rather than a made-up one.
    soft.parse().ok()
}

fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: `sysconf` only reads a system constant; it has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

/// Reads the current process's metrics.
pub fn sample() -> ProcessSample {
    let mut s = ProcessSample::default();
    let ticks = sysconf(libc::_SC_CLK_TCK);
    let page = sysconf(libc::_SC_PAGESIZE);
    if let Some(st) = fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t))
    {
        s.threads = Some(st.threads);
        s.resident_memory_bytes = page.map(|p| st.rss_pages * p);
        if let Some(hz) = ticks {
            s.cpu_seconds = Some((st.utime_ticks + st.stime_ticks) as f64 / hz as f64);
            s.start_time_seconds = fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| parse_boot_time(&t))
                .map(|boot| boot as f64 + st.start_ticks as f64 / hz as f64);
        }
    }
    s.open_fds = fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.filter(|e| e.is_ok()).count() as u64);
    s.max_fds = fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| parse_max_open_files(&t));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let line = "4242 (my) (prog x) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 75 0 0 20 0 7 0 \
                    123456 1000000 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let f = parse_stat(line).unwrap();
        assert_eq!(
            f,
            StatFields {
                utime_ticks: 250,
                stime_ticks: 75,
                threads: 7,
                start_ticks: 123456,
                rss_pages: 2048,
            }
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_limits_and_boot_time() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn reads_this_process() {
        let s = sample();
        assert!(s.resident_memory_bytes.unwrap() > 1 << 20);
        assert!(s.threads.unwrap() >= 1);
        assert!(s.open_fds.unwrap() >= 3);
        assert!(s.max_fds.unwrap() >= s.open_fds.unwrap());
        assert!(s.cpu_seconds.unwrap() >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }
}
