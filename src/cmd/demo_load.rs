//! A steady synthetic load against a cluster, for `eventstream demo`: mixed topics and
//! priorities at a fixed rate, with a sprinkling of retried ids (which dedup drops).

use anyhow::Context;
use bytes::Bytes;
use eventstream_client::{Client, ClientConfig};
use eventstream_core::{Event, Priority};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const TOPICS: [&str; 3] = ["orders", "payments", "clicks"];

/// A running load generator.
#[derive(Debug)]
pub struct DemoLoad {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl DemoLoad {
    /// Publishes about `rate` events per second to `endpoints` (in requests every 10 ms) on
    /// its own thread and runtime until [`stop`](Self::stop).
    pub fn start(endpoints: Vec<String>, rate: u64) -> anyhow::Result<DemoLoad> {
        let client = Arc::new(Client::new(ClientConfig::new(endpoints))?);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the demo load's runtime")?;
        let (s, a, f) = (stop.clone(), acked.clone(), failed.clone());
        let per_tick = (rate / 100).max(1) as usize;
        let thread = std::thread::Builder::new()
            .name("es-demo-load".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(10));
                    let mut recent: Vec<u64> = Vec::new();
                    let mut n = 0u64;
                    while !s.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let mut events = Vec::with_capacity(per_tick);
                        for _ in 0..per_tick {
                            n += 1;
                            // About 1 % are retries of a recent id: stored once, acknowledged twice.
                            let id = if n % 97 == 0 && !recent.is_empty() {
                                recent[(n as usize / 97) % recent.len()]
                            } else {
                                client.next_id().0
                            };
                            if recent.len() < 64 {
                                recent.push(id);
                            } else {
                                recent[(n % 64) as usize] = id;
                            }
                            let p = Priority::from_index((n % 4) as u8).unwrap_or(Priority::Low);
                            let topic = TOPICS[(n % 3) as usize];
                            events.push(
                                Event::new(topic, p, Bytes::from(format!("{{\"n\":{n}}}")))
                                    .with_id(id),
                            );
                        }
                        let (client, a, f) = (client.clone(), a.clone(), f.clone());
                        tokio::spawn(async move {
                            match client.publish(events).await {
                                Ok(o) => a.fetch_add(o.len() as u64, Ordering::Relaxed),
                                Err(_) => f.fetch_add(1, Ordering::Relaxed),
                            };
                        });
                    }
                });
            })
            .context("starting the demo load's thread")?;
        Ok(DemoLoad {
            stop,
            acked,
            failed,
            thread: Some(thread),
        })
    }

    /// Events acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Publish requests that failed after all retries.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Stops the load.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DemoLoad {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstream_core::Engine;
    use eventstream_node::LocalCluster;

    #[test]
    fn demo_load_runs_against_a_local_cluster_and_dedups_its_retries() {
        let dir = eventstream_testkit::Scratch::new("demo-load");
        let cluster = LocalCluster::start(
            3,
            dir.path(),
            |c| c.raft.tick_ms = 10,
            |_| Engine::builder(),
        )
        .unwrap();
        cluster
            .wait_for_leader(Duration::from_secs(10))
            .expect("leader");
        let load = DemoLoad::start(cluster.endpoints(), 5_000).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let acked = load.acked();
        load.stop();
        assert!(acked > 1000, "acked {acked}");
        assert_eq!(acked % 50, 0, "whole requests of 50 events");
        // Retried ids were acknowledged but stored once: the stream is shorter than acked.
        let stored = settled_stream_length(&cluster, Duration::from_secs(30));
        assert!(
            stored < acked && stored > acked * 9 / 10,
            "stored {stored} of {acked} acknowledged"
        );
        cluster.shutdown();
    }

    /// The stream's length once every node has applied the same entries (followers may still
    /// be applying when the load stops, longer on a loaded machine); fails after `limit`.
    fn settled_stream_length(cluster: &LocalCluster, limit: Duration) -> u64 {
        let deadline = std::time::Instant::now() + limit;
        let lengths = || -> Vec<u64> {
            cluster
                .nodes
                .iter()
                .flatten()
                .map(|n| n.stream().next_offset())
                .collect()
        };
        loop {
            let now = lengths();
            std::thread::sleep(Duration::from_millis(200));
            if now.windows(2).all(|w| w[0] == w[1]) && lengths() == now {
                return now[0];
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the nodes' streams never agreed: {now:?}"
            );
        }
    }
}
