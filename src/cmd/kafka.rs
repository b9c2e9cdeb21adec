//! Starts a node's Kafka-protocol listener (the node crate does not depend on the listener;
//! the binary composes them, as it does the HTTP exporter).

use anyhow::Context;
use eventstream_kafka::{Coordinator, KafkaCounters, KafkaOptions, SaslUsers};
use eventstream_node::config::KafkaConfig;
use eventstream_node::Node;
use std::net::SocketAddr;
use std::sync::Arc;

/// The users of `kafka.sasl_users_file`, read before the node starts so that a bad file stops
/// start-up with the field named.
pub fn sasl_users(cfg: &KafkaConfig) -> anyhow::Result<Option<Arc<SaslUsers>>> {
    Ok(cfg
        .sasl_users_file
        .as_deref()
        .map(SaslUsers::from_file)
        .transpose()
        .map_err(|e| anyhow::anyhow!("kafka.sasl_users_file: {e}"))?
        .map(Arc::new))
}

/// Binds `listen` and serves Kafka clients on the node's runtime, advertising `advertised`
/// for this node (and requiring SASL as one of `sasl` when given); the bound address.
pub fn start(
    node: &Node,
    listen: &str,
    advertised: String,
    cfg: &KafkaConfig,
    sasl: Option<Arc<SaslUsers>>,
) -> anyhow::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("binding the Kafka listener on {listen} (kafka.listen)"))?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let opts = KafkaOptions {
        max_request_bytes: cfg.max_request_bytes as usize,
        default_priority: cfg
            .default_priority
            .parse()
            .context("kafka.default_priority")?,
        advertised: Some(advertised),
        // `kafka.tls` was validated against the node's TLS settings.
        tls: if cfg.tls { node.tls() } else { None },
        sasl,
        ..KafkaOptions::default()
    };
    let rt = node.runtime_handle();
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(std_listener)?
    };
    let counters = Arc::new(KafkaCounters::default());
    let shown = counters.clone();
    node.metrics().attach_kafka(move || shown.stats());
    let coordinator = Coordinator::default();
    let members = coordinator.clone();
    node.metrics()
        .attach_group_members(move || members.memberships());
    rt.spawn(eventstream_kafka::serve(
        listener,
        node.gateway(),
        opts,
        counters,
        coordinator,
    ));
    Ok(addr)
}
