//! Partitionable peer links: one TCP proxy per directed link.
//!
//! Node *i* is configured so that its address for peer *j* is the proxy for link `(i, j)`,
//! which forwards to *j*'s real port. Raft peer traffic is one-way per connection (each node
//! opens its own outbound connection per peer; replies travel on the reverse link), so
//! cutting `(i, j)` and `(j, i)` separates the two nodes completely.
//!
//! Cutting a link makes it silent, as a real partition is: open connections stop being
//! forwarded (the proxy stops reading, so the sender's writes pile up in socket buffers and
//! then block — no reset, no end of stream), and new connections are accepted but black-holed
//! (what is written is read and discarded, nothing is forwarded). Healing closes every stalled
//! and black-holed connection (their byte streams are cut mid-way, so they cannot be resumed;
//! the sender reconnects) and forwards new connections again.
//!
//! Clients are never routed through a proxy by the harness, but a `NotLeader` redirect from
//! node *i* names the leader's address as *i* knows it — the proxy for `(i, leader)` — so a
//! redirected client shares that link's fate, like a client next to node *i* would.

use crate::error::ChaosError;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Counters of one link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Connections forwarded.
    pub forwarded: AtomicU64,
    /// Connections black-holed while the link was cut.
    pub black_holed: AtomicU64,
    /// Open connections stalled by a cut (and closed when it healed).
    pub stalled: AtomicU64,
}

#[derive(Debug)]
struct Link {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    stats: Arc<LinkStats>,
    task: JoinHandle<()>,
}

/// Every directed link of a cluster of nodes `1..=n`.
#[derive(Debug)]
pub struct Proxies {
    links: BTreeMap<(u64, u64), Link>,
}

impl Proxies {
    /// Starts a proxy for every ordered pair of distinct nodes; `real[k]` is node `k + 1`'s
    /// real address. Must be called inside a tokio runtime.
    pub async fn start(real: &[SocketAddr]) -> Result<Proxies, ChaosError> {
        let mut links = BTreeMap::new();
        for from in 1..=real.len() as u64 {
            for to in 1..=real.len() as u64 {
                if from == to {
                    continue;
                }
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(ChaosError::Network)?;
                let addr = listener.local_addr().map_err(ChaosError::Network)?;
                let (cut, cut_rx) = watch::channel(false);
                let stats = Arc::new(LinkStats::default());
                let task = tokio::spawn(serve(
                    listener,
                    real[(to - 1) as usize],
                    cut_rx,
                    stats.clone(),
                ));
                links.insert(
                    (from, to),
                    Link {
                        addr,
                        cut,
                        stats,
                        task,
                    },
                );
            }
        }
        Ok(Proxies { links })
    }

    /// The address node `from` uses for node `to`.
    pub fn addr(&self, from: u64, to: u64) -> SocketAddr {
        self.links[&(from, to)].addr
    }

    /// Cuts both directions between every node of `side` and every node not in it.
    pub fn isolate(&self, side: &[u64]) {
        for (&(from, to), link) in &self.links {
            if side.contains(&from) != side.contains(&to) {
                link.cut.send_replace(true);
            }
        }
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        for link in self.links.values() {
            link.cut.send_replace(false);
        }
    }

    /// Totals over all links: (forwarded, black-holed, stalled) connections.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.links.values().fold((0, 0, 0), |(f, b, s), l| {
            (
                f + l.stats.forwarded.load(Ordering::Relaxed),
                b + l.stats.black_holed.load(Ordering::Relaxed),
                s + l.stats.stalled.load(Ordering::Relaxed),
            )
        })
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for link in self.links.values() {
            link.task.abort();
        }
        // Dropping the senders (with `links`) ends every wait on them, which closes every
        // connection of every link.
    }
}

async fn serve(
    listener: TcpListener,
    target: SocketAddr,
    cut: watch::Receiver<bool>,
    stats: Arc<LinkStats>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(handle(inbound, target, cut.clone(), stats.clone()));
    }
}

async fn handle(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<bool>,
    stats: Arc<LinkStats>,
) {
    if *cut.borrow_and_update() {
        stats.black_holed.fetch_add(1, Ordering::Relaxed);
        let mut sink = vec![0u8; 64 << 10];
        loop {
            tokio::select! {
                r = inbound.read(&mut sink) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                healed = cut.wait_for(|c| !*c) => {
                    // Healed (or the proxy is gone): close, the sender reconnects.
                    let _ = healed;
                    return;
                }
            }
        }
    }
    let upstream =
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            // The target is down: close, as a refused connection would.
            _ => return,
        };
    let _ = inbound.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    stats.forwarded.fetch_add(1, Ordering::Relaxed);
    let mut upstream = upstream;
    let mut cut_started = false;
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream) => {}
        cutting = cut.wait_for(|c| *c) => cut_started = cutting.is_ok(),
    }
    if cut_started {
        // Cut: the copy is dropped (nothing more is read or written) but both sockets stay
        // open, so each side sees silence, until the link heals (or the proxies are dropped,
        // which ends the wait) and the sockets are closed.
        stats.stalled.fetch_add(1, Ordering::Relaxed);
        let _ = cut.wait_for(|c| !*c).await;
    }
}
