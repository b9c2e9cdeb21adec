//! Free loopback ports for nodes that bind them later.
//!
//! Ports are picked *below* the kernel's ephemeral range (`ip_local_port_range`): a port the
//! kernel handed out for `:0` could be handed out again, as the source port of some outbound
//! connection, before the node binds it, and the node would then fail to start.
//!
//! Invariant: a port is leased to one holder at a time across every process on the machine
//! that uses this module (an `flock` on `$TMPDIR/eventstream-ports/PORT.lock`, held by the
//! [`Ports`] value), so two tests running at once never hand the same port to two nodes; and
//! each pick is checked by binding it.

use crate::error::TestkitError;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Leased ports: free when picked, and not handed to anyone else while this value lives.
#[derive(Debug)]
pub struct Ports {
    ports: Vec<u16>,
    _locks: Vec<File>,
}

impl std::ops::Deref for Ports {
    type Target = [u16];
    fn deref(&self) -> &[u16] {
        &self.ports
    }
}

impl Ports {
    /// The ports as `127.0.0.1:PORT` addresses.
    pub fn addrs(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("eventstream-ports")
}

/// Takes the machine-wide lease on `port`, if nobody holds it.
pub(crate) fn lease(port: u16) -> Option<File> {
    let dir = lock_dir();
    let _ = std::fs::create_dir_all(&dir);
    let f = File::create(dir.join(format!("{port}.lock"))).ok()?;
    // SAFETY: `flock` has no memory-safety preconditions; the descriptor is owned by `f`,
    // which outlives the call (the lock goes when `f` is closed).
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (r == 0).then_some(f)
}

/// `n` distinct free ports on 127.0.0.1, leased until the returned value is dropped.
pub fn free_ports(n: usize) -> Result<Ports, TestkitError> {
    static PICKS: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u16, ephemeral_low.max(12_000));
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ PICKS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = Ports {
        ports: Vec::with_capacity(n),
        _locks: Vec::with_capacity(n),
    };
    for _ in 0..n * 1000 {
        if out.ports.len() == n {
            break;
        }
        // xorshift64*: spreads concurrent test processes over the range.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let port = lo + (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as u16 % (hi - lo);
        if out.ports.contains(&port) {
            continue;
        }
        let Some(lock) = lease(port) else { continue };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.ports.push(port);
            out._locks.push(lock);
        }
    }
    if out.ports.len() < n {
        return Err(TestkitError::NoPorts { wanted: n, lo, hi });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leased_ports_are_not_handed_out_twice_until_released() {
        let a = free_ports(3).unwrap();
        assert_eq!(a.len(), 3);
        for p in a.iter() {
            assert!(lease(*p).is_none(), "port {p} leased twice");
        }
        let b = free_ports(50).unwrap();
        assert!(b.iter().all(|p| !a.contains(p)));
        let held = a[0];
        drop(a);
        // A child another test forks at this moment holds a copy of the lock until it
        // execs: allow it that long.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while lease(held).is_none() {
            assert!(std::time::Instant::now() < deadline, "released on drop");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(b.addrs()[0], format!("127.0.0.1:{}", b[0]));
    }
}
