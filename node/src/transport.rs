//! Peer transport: one outbound TCP connection per peer, fed by a bounded queue.
//!
//! * The driver never blocks on the network: [`TcpPeers::send`] is a `try_send`; a full queue
//!   or a peer without a connection fails the send (counted; heartbeats counted separately) and
//!   raft is told the peer is unreachable, which throttles replication to probes.
//! * A writer task per peer connects with exponential backoff (20 ms → 1 s), says hello, then
//!   batches queued messages into one write (up to 4 MiB). While disconnected, queued messages
//!   are dropped and counted (raft retransmits).
//! * Two queues per peer: *bulk* (appends, snapshots, `TimeoutNow`: the log stream, kept in
//!   order) and *control* (heartbeats, votes, responses). The writer always takes control messages
//!   first. Why: under overload a follower's queue held up to `max_inflight_msgs` full appends
//!   (tens of MB) ahead of the next heartbeat; a follower that fell behind for a moment then
//!   heard nothing else for longer than an election timeout, and the leader (check quorum)
//!   stepped down with no stalled thread anywhere. raft tolerates the reordering (heartbeats
//!   carry `min(commit, match)`; appends are checked by index and term).
//! * Inbound peer connections are accepted by the node's listener (see `server`).
//! * With TLS on, the writer completes a handshake (verifying the peer against `tls.ca` and
//!   its member address, presenting this node's certificate) before the hello; a failed
//!   handshake counts as a failed connection attempt (backoff, raft told it is unreachable).

use crate::driver::{DriverMsg, PeerSender};
use crate::metrics::NodeMetrics;
use crate::tls::NodeTls;
use bytes::{Bytes, BytesMut};
use crossbeam_channel::Sender;
use eventstream_client::tls;
use eventstream_proto::frame::{self, Kind, Role};
use eventstream_proto::DecodeError;
use eventstream_proto::Member;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Parses the body of a [`Kind::Raft`] frame. The parse is limited to the body's length:
/// rust-protobuf 2 reading from an in-memory buffer has no limit of its own, so a length field
/// claiming more bytes than the body holds made it reserve up to 10 MB (for an unknown field)
/// before noticing the input was short — found by the `peer-frame` fuzz target.
pub fn decode_raft_message(body: &Bytes) -> Result<raft::eraftpb::Message, DecodeError> {
    use protobuf::Message as _;
    let bad = |e: protobuf::ProtobufError| DecodeError::Invalid {
        field: "raft message",
        reason: e.to_string(),
    };
    let mut is = protobuf::CodedInputStream::from_carllerche_bytes(body);
    is.push_limit(body.len() as u64).map_err(bad)?;
    let mut m = raft::eraftpb::Message::default();
    m.merge_from(&mut is).map_err(bad)?;
    is.check_eof().map_err(bad)?;
    Ok(m)
}

/// The driver's handle on the peer writers.
#[derive(Debug)]
pub struct TcpPeers {
    queues: HashMap<u64, PeerQueues>,
    /// Address each writer task dials (a member re-added with a new address gets a new task).
    addrs: HashMap<u64, String>,
    metrics: Arc<NodeMetrics>,
    rt: tokio::runtime::Handle,
    my_id: u64,
    queue: usize,
    driver: Sender<DriverMsg>,
    tls: Option<Arc<NodeTls>>,
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
        tls: Option<Arc<NodeTls>>,
    ) -> TcpPeers {
        let mut peers = TcpPeers {
            queues: HashMap::new(),
            addrs: HashMap::new(),
            metrics,
            rt: rt.clone(),
            my_id,
            queue,
            driver,
            tls,
        };
        for m in members.iter().filter(|m| m.id != my_id) {
            peers.spawn_writer(m);
        }
        peers
    }

    fn spawn_writer(&mut self, m: &Member) {
        let (control, control_rx) = mpsc::channel(self.queue);
        let (bulk, bulk_rx) = mpsc::channel(self.queue);
        self.queues.insert(m.id, PeerQueues { control, bulk });
        let rx = PeerRx {
            control: control_rx,
            bulk: bulk_rx,
        };
        self.addrs.insert(m.id, m.addr.clone());
        self.rt.spawn(peer_writer(
            self.my_id,
            m.clone(),
            rx,
            self.metrics.clone(),
            self.driver.clone(),
            self.tls.clone(),
        ));
    }
}

/// The driver's ends of one peer's queues.
#[derive(Debug)]
struct PeerQueues {
    control: mpsc::Sender<Message>,
    bulk: mpsc::Sender<Message>,
}

/// Bulk: the leader's log stream to this peer — appends (with entries or without: an empty
/// append that overtook the entries before it would be rejected for a log gap and send the
/// follower back to probing), snapshots, and `TimeoutNow`, which must not overtake the appends
/// that caught the transfer target up. Everything else (heartbeats, votes, responses) is
/// control.
fn is_bulk(m: &Message) -> bool {
    matches!(
        m.get_msg_type(),
        MessageType::MsgAppend | MessageType::MsgSnapshot | MessageType::MsgTimeoutNow
    )
}

/// The writer's ends of one peer's queues.
struct PeerRx {
    control: mpsc::Receiver<Message>,
    bulk: mpsc::Receiver<Message>,
}

impl PeerRx {
    /// The next message, control first; `None` once the driver dropped the queues.
    async fn recv(&mut self) -> Option<Message> {
        tokio::select! {
            biased;
            m = self.control.recv() => m,
            m = self.bulk.recv() => m,
        }
    }

    /// A queued message without waiting, control first.
    fn try_recv(&mut self) -> Option<Message> {
        self.control
            .try_recv()
            .ok()
            .or_else(|| self.bulk.try_recv().ok())
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
        let q = if is_bulk(&msg) { &q.bulk } else { &q.control };
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

    /// Dropping a removed member's queue ends its writer task (its `recv` returns `None`).
    fn set_members(&mut self, members: &[Member]) {
        let addrs = &self.addrs;
        self.queues.retain(|id, _| {
            members
                .iter()
                .any(|m| m.id == *id && addrs.get(id) == Some(&m.addr))
        });
        self.addrs.retain(|id, _| self.queues.contains_key(id));
        let me = self.my_id;
        for m in members.iter().filter(|m| m.id != me) {
            if !self.queues.contains_key(&m.id) && !m.addr.is_empty() {
                tracing::info!(peer = m.id, addr = %m.addr, "new peer");
                self.spawn_writer(m);
            }
        }
    }
}

/// A peer writer stops adding messages to one write once this many bytes are encoded (one
/// message may exceed it: a snapshot, or an append of up to `max_msg_bytes`).
const WRITE_BATCH_BYTES: usize = 4 << 20;

async fn peer_writer(
    my_id: u64,
    peer: Member,
    mut rx: PeerRx,
    metrics: Arc<NodeMetrics>,
    driver: Sender<DriverMsg>,
    tls: Option<Arc<NodeTls>>,
) {
    let mut backoff = Duration::from_millis(20);
    let mut buf = BytesMut::with_capacity(1 << 20);
    loop {
        let conn = tokio::time::timeout(Duration::from_secs(1), async {
            let s = TcpStream::connect(&peer.addr).await?;
            let _ = s.set_nodelay(true);
            match &tls {
                None => Ok(tls::plain(s)),
                Some(t) => t.connect(s, &peer.addr).await.inspect_err(|e| {
                    tracing::warn!(peer = peer.id, addr = %peer.addr, error = %e, "TLS handshake with peer failed");
                }),
            }
        })
        .await;
        // The read half stays open (TLS session tickets may arrive); only writes are used.
        let (_read_half, mut stream) = match conn {
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
        buf.clear();
        frame::put_frame(
            &mut buf,
            Kind::Hello,
            &frame::encode_hello(Role::Peer { from: my_id }),
        );
        if stream.write_all(&buf).await.is_err() || stream.flush().await.is_err() {
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
            // Encode as messages are taken and stop at WRITE_BATCH_BYTES. (The size check
            // used to look at the buffer before anything was encoded into it, so under
            // overload one batch took up to 4096 queued appends of up to 1 MiB each: hundreds
            // of MB encoded in one go on the single peer I/O thread, which meanwhile read
            // nothing from any peer, and a buffer whose capacity stayed that large.)
            buf.clear();
            if buf.capacity() > 4 * WRITE_BATCH_BYTES {
                buf = BytesMut::with_capacity(WRITE_BATCH_BYTES);
            }
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(m) = next {
                match m.write_to_bytes() {
                    Ok(body) => frame::put_frame(&mut buf, Kind::Raft, &body),
                    Err(e) => tracing::error!(error = %e, "cannot encode raft message"),
                }
                batch.push(m);
                if buf.len() >= WRITE_BATCH_BYTES || batch.len() >= 4096 {
                    break;
                }
                next = rx.try_recv();
            }
            let written = match stream.write_all(&buf).await {
                Ok(()) => stream.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_message_lengths_are_checked_against_the_body() {
        use protobuf::Message as _;
        let m = raft::eraftpb::Message {
            to: 2,
            context: Bytes::from_static(b"ctx"),
            ..Default::default()
        };
        let good = Bytes::from(m.write_to_bytes().unwrap());
        assert_eq!(decode_raft_message(&good).unwrap(), m);
        // An unknown length-delimited field (number 99) claiming 5 MB in a 9-byte body.
        let bad = Bytes::from_static(&[0x9a, 0x06, 0x80, 0x89, 0xe1, 0x02, 1, 2, 3]);
        assert!(decode_raft_message(&bad).is_err());
    }

    use raft::eraftpb::Entry;

    fn msg(t: MessageType, entries: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.to = 2;
        m.set_entries(
            (0..entries)
                .map(|_| Entry::default())
                .collect::<Vec<_>>()
                .into(),
        );
        m
    }

    #[test]
    fn the_log_stream_is_bulk_the_rest_control() {
        assert!(is_bulk(&msg(MessageType::MsgAppend, 3)));
        assert!(is_bulk(&msg(MessageType::MsgSnapshot, 0)));
        assert!(
            is_bulk(&msg(MessageType::MsgAppend, 0)),
            "empty appends stay in order"
        );
        assert!(is_bulk(&msg(MessageType::MsgTimeoutNow, 0)));
        assert!(!is_bulk(&msg(MessageType::MsgHeartbeat, 0)));
        assert!(!is_bulk(&msg(MessageType::MsgAppendResponse, 0)));
        assert!(!is_bulk(&msg(MessageType::MsgRequestPreVote, 0)));
    }

    #[tokio::test]
    async fn the_writer_takes_control_messages_before_queued_bulk() {
        let (control, control_rx) = mpsc::channel(16);
        let (bulk, bulk_rx) = mpsc::channel(16);
        let mut rx = PeerRx {
            control: control_rx,
            bulk: bulk_rx,
        };
        for _ in 0..3 {
            bulk.try_send(msg(MessageType::MsgAppend, 1)).unwrap();
        }
        control.try_send(msg(MessageType::MsgHeartbeat, 0)).unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(first.get_msg_type(), MessageType::MsgHeartbeat);
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(rest.len(), 3);
        assert!(rest.iter().all(is_bulk));
        drop((control, bulk));
        assert!(rx.recv().await.is_none(), "closed queues end the writer");
    }
}
