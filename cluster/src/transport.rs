//! Peer transport: one outbound TCP connection per peer, fed by a bounded queue.
//!
//! * The driver never blocks on the network: [`TcpPeers::send`] is a `try_send`; a full queue
//!   or a peer without a connection fails the send (counted; heartbeats counted separately) and
//!   raft is told the peer is unreachable, which throttles replication to probes.
//! * A writer task per peer connects with exponential backoff (20 ms → 1 s), says hello, then
//!   batches every queued message into one write. While disconnected, queued messages are
//!   dropped and counted (raft retransmits).
//! * Inbound peer connections are accepted by the node's listener (see `server`).

use crate::driver::{DriverMsg, PeerSender};
use crate::frame::{self, Kind, Role};
use crate::metrics::{Member, NodeMetrics};
use bytes::BytesMut;
use crossbeam_channel::Sender;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The driver's handle on the peer writers.
#[derive(Debug)]
pub struct TcpPeers {
    queues: HashMap<u64, mpsc::Sender<Message>>,
    metrics: Arc<NodeMetrics>,
}

impl TcpPeers {
    /// Spawns one writer task per peer (every member but `my_id`) on `rt`.
    pub fn start(
        rt: &tokio::runtime::Handle,
        my_id: u64,
        members: &[Member],
        queue: usize,
        metrics: Arc<NodeMetrics>,
        driver: Sender<DriverMsg>,
    ) -> TcpPeers {
        let mut queues = HashMap::new();
        for m in members.iter().filter(|m| m.id != my_id) {
            let (tx, rx) = mpsc::channel(queue);
            queues.insert(m.id, tx);
            rt.spawn(peer_writer(
                my_id,
                m.clone(),
                rx,
                metrics.clone(),
                driver.clone(),
            ));
        }
        TcpPeers { queues, metrics }
    }
}

fn count_failure(metrics: &NodeMetrics, m: &Message) {
    metrics.peer_send_failures.fetch_add(1, Ordering::Relaxed);
    if m.get_msg_type() == MessageType::MsgHeartbeat {
        metrics
            .heartbeat_send_failures
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Tells the driver whether a snapshot message reached the peer's connection (raft must hear
/// about it: a lost snapshot otherwise pauses replication to that follower for good).
fn report_snapshots(driver: &Sender<DriverMsg>, to: u64, msgs: &[Message], delivered: bool) {
    for m in msgs {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            let _ = driver.send(DriverMsg::SnapshotSent { to, delivered });
        }
    }
}

impl PeerSender for TcpPeers {
    fn send(&mut self, msg: Message) -> bool {
        let Some(q) = self.queues.get(&msg.to) else {
            count_failure(&self.metrics, &msg);
            return false;
        };
        if !self.metrics.connected(msg.to) {
            count_failure(&self.metrics, &msg);
            return false;
        }
        match q.try_send(msg) {
            Ok(()) => true,
            Err(e) => {
                let m = match e {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
                };
                count_failure(&self.metrics, &m);
                false
            }
        }
    }
}

async fn peer_writer(
    my_id: u64,
    peer: Member,
    mut rx: mpsc::Receiver<Message>,
    metrics: Arc<NodeMetrics>,
    driver: Sender<DriverMsg>,
) {
    let mut backoff = Duration::from_millis(20);
    let mut buf = BytesMut::with_capacity(1 << 20);
    loop {
        let conn =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&peer.addr)).await;
        let mut stream = match conn {
            Ok(Ok(s)) => s,
            _ => {
                let _ = driver.send(DriverMsg::Unreachable(peer.id));
                // Drop what queued up meanwhile; raft retransmits what matters.
                let deadline = tokio::time::Instant::now() + backoff;
                loop {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(m)) => {
                            count_failure(&metrics, &m);
                            report_snapshots(&driver, peer.id, std::slice::from_ref(&m), false);
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        buf.clear();
        frame::put_frame(
            &mut buf,
            Kind::Hello,
            &frame::encode_hello(Role::Peer { from: my_id }),
        );
        if stream.write_all(&buf).await.is_err() {
            continue;
        }
        backoff = Duration::from_millis(20);
        metrics.set_connected(peer.id, true);
        tracing::debug!(peer = peer.id, addr = %peer.addr, "peer connected");
        loop {
            let Some(first) = rx.recv().await else {
                metrics.set_connected(peer.id, false);
                return;
            };
            buf.clear();
            let mut batch = vec![first];
            while buf.len() < (4 << 20) {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
                if batch.len() >= 4096 {
                    break;
                }
            }
            for m in &batch {
                match m.write_to_bytes() {
                    Ok(body) => frame::put_frame(&mut buf, Kind::Raft, &body),
                    Err(e) => tracing::error!(error = %e, "cannot encode raft message"),
                }
            }
            if let Err(e) = stream.write_all(&buf).await {
                tracing::debug!(peer = peer.id, error = %e, "peer connection lost");
                for m in &batch {
                    count_failure(&metrics, m);
                }
                report_snapshots(&driver, peer.id, &batch, false);
                metrics.set_connected(peer.id, false);
                let _ = driver.send(DriverMsg::Unreachable(peer.id));
                break;
            }
            report_snapshots(&driver, peer.id, &batch, true);
        }
    }
}
