//! The one place lock-free code gets its atomics and cells from.
//!
//! Under `--cfg loom` these are loom's model-checked types, so the ring's tests explore every
//! interleaving the C++11 memory model allows; in a normal build they are `std`'s. Nothing else in
//! the crate may import `std::sync::atomic` for code that the ring shares with producers.
//!
//! The same goes for the threads of the worker/publisher sleep handshake (see `lane.rs`): the
//! worker's handle, `park` and `unpark` come from [`thread`], so loom checks that handshake with
//! the real parking and waking code.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

/// `UnsafeCell` with loom's access tracking when model checking.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(loom::cell::UnsafeCell<T>);

#[cfg(loom)]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::cell::UnsafeCell::new(value))
    }
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        self.0.with_mut(f)
    }
}

/// `UnsafeCell` with loom's access tracking when model checking.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Thread handles, parking and yielding: loom's under `--cfg loom`, `std`'s otherwise.
pub(crate) mod thread {
    #[cfg(loom)]
    pub(crate) use loom::thread::{yield_now, Thread};
    #[cfg(not(loom))]
    pub(crate) use std::thread::{yield_now, Thread};

    /// Parks the calling thread until it is unparked, `timeout` passes, or spuriously.
    ///
    /// loom has no timed park: under loom this parks until the thread is unparked. That is what
    /// the model checks want: a wake-up the handshake loses shows up as a deadlock instead of a
    /// stall of `timeout`.
    #[inline]
    pub(crate) fn park_timeout(timeout: std::time::Duration) {
        #[cfg(loom)]
        {
            let _ = timeout;
            loom::thread::park();
        }
        #[cfg(not(loom))]
        std::thread::park_timeout(timeout);
    }
}

/// Marks a point where code relies on the single total order of `SeqCst` operations: a `SeqCst`
/// store or read-modify-write followed by a `SeqCst` load of *another* location, which must not
/// pass it (the sleeping handshake of `lane.rs` on both of its sides).
///
/// loom models `SeqCst` loads, stores and read-modify-writes only as `AcqRel` (its README,
/// "Unsupported features"): it has no total order for them, so for that pattern it explores
/// store-buffering outcomes that the real build cannot have. It does model `fence(SeqCst)`.
/// Under loom this is that fence, which gives the model exactly what the total order of the
/// surrounding `SeqCst` accesses gives the real build; otherwise it is nothing, and the accesses'
/// own `SeqCst` is what orders them.
#[inline(always)]
pub(crate) fn seq_cst_order_point() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// Hint for spin loops; a yield under loom so the model checker can make progress.
#[inline(always)]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
