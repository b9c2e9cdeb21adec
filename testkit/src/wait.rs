//! Polling a condition from a synchronous test.

use std::time::{Duration, Instant};

/// Checks `f` every 10 ms until it holds; panics naming `what` if it does not within
/// `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
