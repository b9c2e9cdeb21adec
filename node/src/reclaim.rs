//! Freeing big things off the latency-critical threads.
//!
//! Compaction drops hundreds of megabytes at once (raft log entries below the snapshot, stream
//! chunks past retention). Freed on the raft driver thread, that stalled it long enough (most
//! of the freed memory goes back to the kernel: `munmap` and TLB shootdowns on every thread of
//! the process) for followers to miss heartbeats and a leader under load to step down. The
//! driver hands such values to [`drop_later`], and one background thread (`es-reclaim`) drops
//! them in arrival order.
//!
//! Invariant: nothing handed over is used again (ownership moves), so where it is freed is
//! invisible to the program, only to its latency.

use std::any::Any;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

type Garbage = Box<dyn Any + Send>;

fn reclaimer() -> Option<&'static Mutex<Sender<Garbage>>> {
    static TX: OnceLock<Option<Mutex<Sender<Garbage>>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = channel::<Garbage>();
        std::thread::Builder::new()
            .name("es-reclaim".into())
            .spawn(move || {
                crate::driver::lower_thread_priority("reclaim");
                while let Ok(g) = rx.recv() {
                    drop(g);
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    })
    .as_ref()
}

/// Drops `value` on the background reclaim thread (or here, if that thread could not be
/// started). Use it for values whose drop frees a lot of memory on a thread that must not
/// stall; small values are cheaper to drop in place.
pub fn drop_later<T: Send + 'static>(value: T) {
    match reclaimer() {
        Some(tx) => {
            let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
            // A send fails only if the thread is gone; the value then comes back and is
            // dropped here.
            if let Err(back) = tx.send(Box::new(value)) {
                drop(back);
            }
        }
        None => drop(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    struct Flag(Arc<AtomicBool>, std::thread::ThreadId);
    impl Drop for Flag {
        fn drop(&mut self) {
            // Dropped on another thread than the one that handed it over.
            assert_ne!(std::thread::current().id(), self.1);
            self.0.store(true, Ordering::Release);
        }
    }

    #[test]
    fn values_are_dropped_on_the_reclaim_thread() {
        let dropped = Arc::new(AtomicBool::new(false));
        drop_later(Flag(dropped.clone(), std::thread::current().id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dropped.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "never dropped");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
