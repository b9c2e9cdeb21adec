//! Scratch directories for tests and benchmarks.

use crate::error::TestkitError;
use std::path::{Path, PathBuf};

/// A fresh directory under the system temporary directory, removed on drop — unless the
/// thread is panicking (a failing test): then it is kept and its path printed, so node logs
/// can be read.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// `$TMPDIR/eventstream-TAG-PID-NANOS`, created.
    pub fn new(tag: &str) -> Scratch {
        Self::try_new(tag).expect("create a scratch directory")
    }

    /// Like [`new`](Self::new), returning the error instead of panicking.
    pub fn try_new(tag: &str) -> Result<Scratch, TestkitError> {
        Self::try_new_in(&std::env::temp_dir(), tag)
    }

    /// A scratch directory under `parent` (e.g. the current directory, whose disk a benchmark
    /// measures).
    pub fn try_new_in(parent: &Path, tag: &str) -> Result<Scratch, TestkitError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = parent.join(format!(
            "eventstream-{tag}-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).map_err(|e| TestkitError::io(&p, e))?;
        Ok(Scratch(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Keeps the directory (it is not removed) and returns its path.
    pub fn keep(self) -> PathBuf {
        let p = self.0.clone();
        std::mem::forget(self);
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection (logs)", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_directories_are_distinct_and_removed_on_drop() {
        let a = Scratch::new("t");
        let b = Scratch::new("t");
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir());
        let p = a.path().to_path_buf();
        std::fs::write(p.join("f"), b"x").unwrap();
        drop(a);
        assert!(!p.exists());
    }
}
