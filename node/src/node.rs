//! A running cluster node: embedded core engine (its stage proposes), raft driver thread, peer
//! transport and client listener on a tokio runtime.
//!
//! Threads: `es-worker-0` (engine: drains the tier rings by priority, encodes blocks, hands them
//! to the driver), `es-raft-N` (driver: the only owner of RawNode; persist, fsync, apply), and
//! the node's tokio runtime (`io_threads` workers: connections, peer writers).

use crate::acks::{AckError, AckRegistry};
use crate::config::NodeConfig;
use crate::driver::{self, DriverConfig, DriverMsg, Proposal};
use crate::error::NodeError;
use crate::metrics::NodeMetrics;
use crate::replica::Replica;
use crate::server::{self, ServerCtx};
use crate::state::StateMachine;
use crate::stream::CommittedStream;
use crate::transport::TcpPeers;
use bytes::BytesMut;
use eventstream_core::{
    DedupConfig, EngineBuilder, Event, IdleStrategy, OverflowPolicy, Stage, StatsHandle, Tier,
};
use eventstream_proto::codec;
use eventstream_proto::Member;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The engine stage of a cluster node: each drained batch (one tier, priority order) becomes
/// one encoded block proposed to raft. Blocking on the bounded proposal channel back-pressures
/// the tier rings, which then refuse publishes (`Busy`) instead of growing without bound.
pub struct ProposalStage {
    tx: crossbeam_channel::Sender<Proposal>,
    acks: Arc<AckRegistry>,
    buf: BytesMut,
    max_block: usize,
}

impl std::fmt::Debug for ProposalStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProposalStage").finish_non_exhaustive()
    }
}

impl Stage for ProposalStage {
    fn process(&mut self, _tier: Tier, batch: &mut Vec<Event>) {
        // Blocks stay under the entry size limit so one entry never outgrows a frame.
        let mut start = 0;
        while start < batch.len() {
            let mut end = start;
            let mut size = codec::BLOCK_HEADER_LEN;
            while end < batch.len()
                && (end == start || size + codec::encoded_len(&batch[end]) <= self.max_block)
            {
                size += codec::encoded_len(&batch[end]);
                end += 1;
            }
            let part = &batch[start..end];
            codec::put_block(&mut self.buf, part);
            let block = self.buf.split().freeze();
            let ids: Vec<u64> = part.iter().map(|e| e.id.0).collect();
            if let Err(e) = self.tx.send(server::proposal(block, ids)) {
                self.acks.fail(e.0.ids, AckError::ShuttingDown);
            }
            start = end;
        }
    }
}

/// A running node.
pub struct Node {
    id: u64,
    addr: SocketAddr,
    metrics: Arc<NodeMetrics>,
    ctx: Arc<ServerCtx>,
    stats: StatsHandle,
    runtime: Option<tokio::runtime::Runtime>,
    /// Peer connections (inbound and outbound) run here, apart from client connections.
    peer_runtime: Option<tokio::runtime::Runtime>,
    driver: Option<JoinHandle<Result<(), NodeError>>>,
    driver_tx: crossbeam_channel::Sender<DriverMsg>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Validates `cfg`, binds its listen address and starts.
    pub fn start(cfg: NodeConfig, engine: EngineBuilder) -> Result<Node, NodeError> {
        let members = cfg.validate()?;
        let me = cfg.me(&members);
        let listen = cfg.listen.clone().unwrap_or(me.addr.clone());
        let listener = std::net::TcpListener::bind(&listen).map_err(|e| NodeError::Network {
            peer: listen.clone(),
            source: e,
        })?;
        Self::start_with_listener(cfg, engine, listener)
    }

    /// Starts on an already bound listener (in-process clusters bind every port first).
    pub fn start_with_listener(
        cfg: NodeConfig,
        engine: EngineBuilder,
        listener: std::net::TcpListener,
    ) -> Result<Node, NodeError> {
        let members: Vec<Member> = cfg.validate()?;
        let addr = listener.local_addr().map_err(|e| NodeError::Network {
            peer: "listener".into(),
            source: e,
        })?;
        let node_tls = crate::tls::NodeTls::from_config(&cfg)?;
        let admin_token = cfg
            .admin_token()?
            .map(eventstream_client::tls::AdminToken::new);
        if admin_token.is_some() && node_tls.is_none() {
            tracing::warn!(
                id = cfg.id,
                "admin_token_file is set but TLS is off: clients send the token in clear text"
            );
        }
        let metrics = Arc::new(NodeMetrics::new(cfg.id, members.clone()));
        let acks = AckRegistry::new();
        let stream = CommittedStream::open(&cfg.data_dir, cfg.stream_settings())?;
        let dedup = DedupConfig {
            window: (cfg.engine.dedup_window as usize),
            max_age: None,
        };
        let (prop_tx, prop_rx) = crossbeam_channel::bounded::<Proposal>(256);
        let (driver_tx, driver_rx) = crossbeam_channel::unbounded::<DriverMsg>();
        let stage_acks = acks.clone();
        let ring = cfg.engine.ring_capacity as usize;
        let max_block = cfg.raft.max_entry_bytes as usize;
        let engine = engine
            .configure(|c| {
                c.workers = 1;
                c.pin_workers = false;
                c.max_batch = 4096;
                // Dedup happens in the state machine (per-event decisions for offsets); the
                // applier it feeds gets only fresh events, so its own window is off.
                c.dedup = DedupConfig {
                    window: 0,
                    max_age: None,
                };
                // A short spin (three nodes may share two cores), then park. Publishers wake
                // a parked worker (core's sleeping handshake), so the park timeout is only a
                // safety net: at 500 µs an idle node's worker used ~4 % of a core waking up to
                // find nothing.
                c.idle = IdleStrategy::SpinThenPark {
                    spin_iters: 64,
                    yield_iters: 16,
                    park_timeout_us: 100_000,
                };
                for t in [
                    &mut c.tiers.realtime,
                    &mut c.tiers.transactional,
                    &mut c.tiers.batch,
                ] {
                    t.capacity = ring;
                    t.overflow = OverflowPolicy::Reject;
                }
            })
            .stage(move |_ctx| {
                Box::new(ProposalStage {
                    tx: prop_tx.clone(),
                    acks: stage_acks.clone(),
                    buf: BytesMut::with_capacity(1 << 20),
                    max_block,
                }) as Box<dyn Stage>
            })
            .start()?;
        let applier = engine.new_applier(format!("raft-apply-{}", cfg.id));
        let stats = engine.stats_handle();
        let sm = StateMachine::new(dedup, applier, stream.clone(), acks.clone());
        let groups = sm.group_offsets().clone();
        let producers = sm.producer_sequences().clone();
        metrics.attach_groups(groups.clone());
        let mut rcfg = cfg.replica_config(&members);
        if cfg.join && !crate::join::has_log(&cfg.data_dir) {
            rcfg.voters = crate::join::fetch_bootstrap_voters(&cfg, &members)?;
        }
        let replica = Replica::open(&rcfg, sm, acks.clone(), metrics.clone())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.engine.io_threads as usize)
            .thread_name(format!("es-io-{}", cfg.id))
            .enable_all()
            .build()
            .map_err(|e| NodeError::Spawn {
                what: "tokio runtime",
                source: e,
            })?;
        // Peer traffic (heartbeats, appends and their answers) on a runtime of its own, at
        // the driver's priority: under overload the client connections kept the shared
        // runtime so busy that a leader missed its followers' answers for an election timeout
        // and stepped down (check quorum), see docs/reliability.md (Overload).
        let peer_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("es-peer-{}", cfg.id))
            .on_thread_start(|| driver::raise_thread_priority("peer I/O"))
            .enable_all()
            .build()
            .map_err(|e| NodeError::Spawn {
                what: "peer runtime",
                source: e,
            })?;
        let peers = TcpPeers::start(
            peer_runtime.handle(),
            cfg.id,
            &members,
            cfg.limits.peer_queue as usize,
            metrics.clone(),
            driver_tx.clone(),
            node_tls.clone(),
        );
        let dcfg = DriverConfig {
            tick: cfg.tick(),
            max_entry_bytes: (cfg.raft.max_entry_bytes as usize),
            async_persist: cfg.raft.async_persist,
            compaction_interval: Duration::from_millis(cfg.storage.compaction_interval_ms),
            max_peer_frame: cfg.limits.max_peer_frame_bytes as usize,
        };
        let dacks = acks.clone();
        let self_tx = driver_tx.clone();
        let dmetrics = metrics.clone();
        let driver = std::thread::Builder::new()
            .name(format!("es-raft-{}", cfg.id))
            .spawn(move || {
                let io = driver::DriverIo {
                    msgs: driver_rx,
                    self_tx,
                    proposals: prop_rx,
                    net: Box::new(peers),
                    acks: dacks,
                    metrics: dmetrics,
                };
                driver::run(replica, dcfg, io)
            })
            .map_err(|e| NodeError::Spawn {
                what: "raft driver",
                source: e,
            })?;
        let copies = Arc::new(crate::copy::CopyCounters::default());
        metrics.attach_stream(stream.clone(), copies.clone(), &cfg.data_dir);
        let ctx = Arc::new(ServerCtx {
            id: cfg.id,
            metrics: metrics.clone(),
            engine: Arc::new(engine),
            acks,
            stream: stream.clone(),
            groups,
            producers,
            admissions: Default::default(),
            copies: copies.clone(),
            driver: driver_tx.clone(),
            max_frame: (cfg.limits.max_frame_bytes as usize),
            max_peer_frame: cfg.limits.max_peer_frame_bytes as usize,
            max_event_bytes: (cfg.limits.max_event_bytes as usize),
            request_timeout: Duration::from_millis(cfg.limits.request_timeout_ms),
            protocol_errors: metrics.protocol_errors.clone(),
            tls: node_tls.clone(),
            admin_token,
            tls_handshake_failures: metrics.tls_handshake_failures.clone(),
            overload_policy: cfg.limits.overload_policy,
            max_inflight_per_connection: (cfg.limits.max_inflight_per_connection as usize),
            inflight_events: Arc::new(tokio::sync::Semaphore::new(
                cfg.limits.max_inflight_events as usize,
            )),
            max_inflight_events: (cfg.limits.max_inflight_events as usize),
            publishes: metrics.publishes.clone(),
            peer_runtime: Some(peer_runtime.handle().clone()),
        });
        listener
            .set_nonblocking(true)
            .map_err(|e| NodeError::Network {
                peer: addr.to_string(),
                source: e,
            })?;
        let _guard = runtime.enter();
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| NodeError::Network {
                peer: addr.to_string(),
                source: e,
            })?;
        runtime.spawn(server::serve(listener, ctx.clone()));
        let copier = crate::copy::Copier {
            id: cfg.id,
            stream,
            metrics: metrics.clone(),
            tls: node_tls,
            bytes_per_sec: cfg.storage.copy_bytes_per_sec,
            max_frame: cfg.limits.max_peer_frame_bytes as usize,
            counters: copies,
        };
        runtime.spawn(crate::copy::run(copier, Duration::from_millis(500)));
        drop(_guard);
        tracing::info!(id = cfg.id, %addr, "node started");
        Ok(Node {
            id: cfg.id,
            addr,
            metrics,
            ctx,
            stats,
            runtime: Some(runtime),
            peer_runtime: Some(peer_runtime),
            driver: Some(driver),
            driver_tx,
        })
    }

    /// Sends an administrative request to this node's driver and waits up to `timeout` for
    /// the answer (the `eventstream node` shutdown hand-off uses it).
    pub fn admin(
        &self,
        req: eventstream_proto::admin::AdminRequest,
        timeout: Duration,
    ) -> crate::driver::AdminResult {
        let (tx, rx) = std::sync::mpsc::channel();
        let msg = DriverMsg::Admin {
            req,
            reply: crate::driver::AdminReplyTo::new(move |r| {
                let _ = tx.send(r);
            }),
        };
        let down = || {
            eventstream_proto::admin::AdminError::new(
                eventstream_proto::frame::ErrorCode::ShuttingDown,
                "node is stopped",
            )
        };
        self.driver_tx.send(msg).map_err(|_| down())?;
        rx.recv_timeout(timeout).map_err(|_| {
            eventstream_proto::admin::AdminError::new(
                eventstream_proto::frame::ErrorCode::Timeout,
                format!("no answer from the raft driver within {timeout:?}"),
            )
        })?
    }

    /// If this node leads, hands leadership to the most caught-up voter and waits (at most
    /// `timeout`) until the new leader is known. `Ok(None)`: this node was not the leader.
    pub fn hand_off_leadership(
        &self,
        timeout: Duration,
    ) -> Result<Option<(u64, u64)>, eventstream_proto::admin::AdminError> {
        if !self.metrics.is_leader() {
            return Ok(None);
        }
        match self.admin(
            eventstream_proto::admin::AdminRequest::TransferLeader {
                to: None,
                timeout,
                only_if_leader: None,
            },
            timeout + Duration::from_millis(500),
        )? {
            eventstream_proto::admin::AdminReply::Transferred { leader_id, term } => {
                Ok(Some((leader_id, term)))
            }
            eventstream_proto::admin::AdminReply::Members(_) => Ok(None),
        }
    }

    /// Raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The address peers and clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// This node's TLS (its certificate, `tls.ca`, `tls.client_auth`), for a listener of
    /// another protocol to accept with; `None` when TLS is off.
    pub fn tls(&self) -> Option<Arc<crate::NodeTls>> {
        self.ctx.tls.clone()
    }

    /// Publish and read steps for a listener of another protocol.
    pub fn gateway(&self) -> crate::Gateway {
        crate::Gateway::new(self.ctx.clone())
    }

    /// Replication state for exporters (`ReplicationSource`).
    pub fn metrics(&self) -> Arc<NodeMetrics> {
        self.metrics.clone()
    }

    /// The embedded engine's statistics (for exporters).
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// The committed stream.
    pub fn stream(&self) -> Arc<CommittedStream> {
        self.ctx.stream.clone()
    }

    /// The node's tokio runtime (to spawn an exporter on it).
    pub fn runtime_handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("runtime lives until shutdown")
            .handle()
            .clone()
    }

    /// What happened to the publishes this node received (also in its status JSON as
    /// `publishes`).
    pub fn publish_counts(&self) -> eventstream_core::replication::PublishCounts {
        self.ctx.publishes.snapshot()
    }

    /// Connections closed for protocol errors so far.
    pub fn protocol_errors(&self) -> u64 {
        self.ctx
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Failed TLS handshakes on this node's port so far (also in [`Node::protocol_errors`]).
    pub fn tls_handshake_failures(&self) -> u64 {
        self.ctx
            .tls_handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// False once the driver thread has exited (shutdown or a fatal storage error).
    pub fn is_running(&self) -> bool {
        self.driver.as_ref().is_some_and(|d| !d.is_finished())
    }

    /// Blocks until the driver thread exits (it runs until shutdown or a fatal storage error).
    pub fn wait(mut self) -> Result<(), NodeError> {
        let r = match self.driver.take() {
            Some(d) => d.join().unwrap_or(Err(NodeError::Closed)),
            None => Ok(()),
        };
        self.shutdown_inner();
        r
    }

    /// Stops accepting connections, drains the engine into the log, stops the driver.
    pub fn shutdown(mut self) {
        self.shutdown_inner();
    }

    fn shutdown_inner(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(500));
        }
        if let Some(rt) = self.peer_runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(500));
        }
        let _ = self.driver_tx.send(DriverMsg::Stop);
        if let Some(d) = self.driver.take() {
            let _ = d.join();
            // Nothing appends any more: seal the newest segment's index, so the next start
            // reads it instead of scanning the segment.
            if let Err(e) = self.ctx.stream.checkpoint() {
                tracing::warn!(id = self.id, error = %e, "could not checkpoint the stream index");
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown_inner();
    }
}

/// An in-process cluster on loopback (for `eventstream demo`, benchmarks and tests).
#[derive(Debug)]
pub struct LocalCluster {
    /// The nodes, by index (`id = index + 1`).
    pub nodes: Vec<Option<Node>>,
    configs: Vec<NodeConfig>,
}

impl LocalCluster {
    /// Starts `n` nodes on `127.0.0.1` ephemeral ports with data under `dir`; `tune` may edit
    /// each node's configuration (ids, peers, listen and data_dir are set already).
    pub fn start(
        n: usize,
        dir: &std::path::Path,
        mut tune: impl FnMut(&mut NodeConfig),
        mut engine: impl FnMut(u64) -> EngineBuilder,
    ) -> Result<LocalCluster, NodeError> {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| {
                NodeError::Network {
                    peer: "127.0.0.1:0".into(),
                    source: e,
                }
            })?);
        }
        let peers: Vec<String> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{}={}", i + 1, l.local_addr().expect("bound")))
            .collect();
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let mut cfg = NodeConfig {
                id,
                peers: peers.clone(),
                data_dir: dir.join(format!("node-{id}")),
                ..NodeConfig::default()
            };
            tune(&mut cfg);
            configs.push(cfg.clone());
            nodes.push(Some(Node::start_with_listener(cfg, engine(id), l)?));
        }
        Ok(LocalCluster { nodes, configs })
    }

    /// Client addresses of every node.
    pub fn endpoints(&self) -> Vec<String> {
        self.configs
            .iter()
            .map(|c| c.me(&c.members().expect("validated")).addr)
            .collect()
    }

    /// Stops node `id` (1-based) abruptly-but-cleanly (its files stay).
    pub fn stop_node(&mut self, id: u64) {
        if let Some(n) = self.nodes[(id - 1) as usize].take() {
            n.shutdown();
        }
    }

    /// Restarts a stopped node from its data directory.
    pub fn restart_node(&mut self, id: u64, engine: EngineBuilder) -> Result<(), NodeError> {
        let cfg = self.configs[(id - 1) as usize].clone();
        self.nodes[(id - 1) as usize] = Some(Node::start(cfg, engine)?);
        Ok(())
    }

    /// The current leader's id, if the running nodes agree on one.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .flatten()
            .find(|n| n.metrics.is_leader())
            .map(|n| n.id)
    }

    /// Waits up to `timeout` for a leader.
    pub fn wait_for_leader(&self, timeout: Duration) -> Option<u64> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Shuts every node down.
    pub fn shutdown(mut self) {
        for n in self.nodes.iter_mut() {
            if let Some(n) = n.take() {
                n.shutdown();
            }
        }
    }
}
