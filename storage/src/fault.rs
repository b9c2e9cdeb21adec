//! Storage fault injection for tests: make the log's next write or fsync in one data
//! directory fail with a chosen OS error (ENOSPC on write, EIO on fsync, ...).
//!
//! Compiled in only with the `fault-injection` cargo feature, which tests enable and
//! production builds do not: without it the hook is an inlined `None`.
//!
//! A fault is armed per data directory, so one node of an in-process cluster can fail while
//! the others keep working. [`crate::Wal::sync`] asks `injected_fault` before each write and
//! each fsync; with nothing armed that is one relaxed atomic load, so the hook costs nothing
//! measurable next to an fsync. A write fault first writes half of the buffer (a short write,
//! as a full disk produces), leaving a torn tail that recovery must truncate.
//!
//! Invariant: a fault fires at most `times` times and is then disarmed; [`clear`] disarms
//! everything for a directory.

#[cfg(feature = "fault-injection")]
pub(crate) use armed::injected_fault;
#[cfg(feature = "fault-injection")]
pub use armed::{clear, inject, EIO, ENOSPC};

/// Which log operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalOp {
    /// Writing the buffered records (a short write, then the error).
    Write,
    /// `fdatasync` after a successful write.
    Fsync,
}

/// Without the `fault-injection` feature no fault is ever due.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn injected_fault(_dir: &std::path::Path, _op: WalOp) -> Option<std::io::Error> {
    None
}

#[cfg(feature = "fault-injection")]
mod armed {
    use super::WalOp;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    #[derive(Debug)]
    struct Armed {
        dir: PathBuf,
        op: WalOp,
        errno: i32,
        skip: u64,
        times: u64,
    }

    static ANY_ARMED: AtomicBool = AtomicBool::new(false);
    static FAULTS: Mutex<Vec<Armed>> = Mutex::new(Vec::new());

    /// `ENOSPC` (no space left on device), for [`inject`].
    pub const ENOSPC: i32 = 28;
    /// `EIO` (input/output error), for [`inject`].
    pub const EIO: i32 = 5;

    /// Arms a fault: after `skip` successful `op`s on the log in `dir`, the next `times` fail with
    /// OS error `errno`.
    pub fn inject(dir: &Path, op: WalOp, errno: i32, skip: u64, times: u64) {
        let mut f = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
        f.push(Armed {
            dir: dir.to_path_buf(),
            op,
            errno,
            skip,
            times: times.max(1),
        });
        ANY_ARMED.store(true, Ordering::Release);
    }

    /// Disarms every fault of `dir`.
    pub fn clear(dir: &Path) {
        let mut f = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
        f.retain(|a| a.dir != dir);
        ANY_ARMED.store(!f.is_empty(), Ordering::Release);
    }

    /// The injected error for `op` on the log in `dir`, if one is due now.
    pub(crate) fn injected_fault(dir: &Path, op: WalOp) -> Option<io::Error> {
        if !ANY_ARMED.load(Ordering::Acquire) {
            return None;
        }
        let mut f = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
        let a = f.iter_mut().find(|a| a.op == op && a.dir == dir)?;
        if a.skip > 0 {
            a.skip -= 1;
            return None;
        }
        let err = io::Error::from_raw_os_error(a.errno);
        a.times -= 1;
        if a.times == 0 {
            f.retain(|a| a.times > 0);
            ANY_ARMED.store(!f.is_empty(), Ordering::Release);
        }
        Some(err)
    }
}
