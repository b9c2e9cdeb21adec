//! `eventstream node`: one cluster member, with its HTTP exporter (the node crate does not
//! depend on the exporter; the binary composes them).

use anyhow::Context;
use clap::parser::ValueSource;
use clap::Args;
use eventstream_core::replication::ReplicationSource;
use eventstream_core::Engine;
use eventstream_exporter::{Exporter, ExporterConfig};
use eventstream_node::config::{Kind, Source};
use eventstream_node::{Node, NodeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How long a terminating leader waits for its hand-off before it shuts down anyway.
const HAND_OFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `eventstream node`: run one cluster member.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// TOML configuration file (sections as in `NodeConfig`); EVENTSTREAM_* variables and
    /// then flags override it.
    #[arg(long, env = "EVENTSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (file, variables and flags merged) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Every setting of the configuration, as a flag and a variable.
    #[command(flatten)]
    pub settings: SettingFlags,
}

/// One flag and one `EVENTSTREAM_*` variable per setting of [`NodeConfig`], generated from
/// [`NodeConfig::settings`]: `raft.tick_ms` is `--raft-tick-ms` and
/// `EVENTSTREAM_RAFT_TICK_MS`. What was given is kept as `(key, text, source)` overrides,
/// variables before flags, for [`NodeConfig::load`] to apply and check.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags {
    overrides: Vec<(String, String, Source)>,
}

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let (mut env, mut flags) = (Vec::new(), Vec::new());
        for s in NodeConfig::settings() {
            let Some(v) = m.get_one::<String>(&s.key) else {
                continue;
            };
            match m.value_source(&s.key) {
                Some(ValueSource::EnvVariable) => env.push((s.key, v.clone(), Source::Env)),
                Some(ValueSource::CommandLine) => flags.push((s.key, v.clone(), Source::Flag)),
                _ => {}
            }
        }
        env.extend(flags);
        Ok(SettingFlags { overrides: env })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for SettingFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let defaults = NodeConfig::defaults();
        cmd.args(NodeConfig::settings().into_iter().map(|s| {
            let help = s.help.trim().to_owned();
            let help = match defaults.get(&s.key) {
                Some(d) if !d.is_empty() => format!("{help} [default: {d}]"),
                _ => help,
            };
            let arg = clap::Arg::new(s.key.clone())
                .long(s.flag)
                .env(s.env)
                .value_name(s.kind.value_name())
                .help(help)
                .help_heading("Settings (TOML key `section.name` = flag `--section-name`)");
            match s.kind {
                Kind::Bool => arg.num_args(0..=1).default_missing_value("true"),
                _ => arg,
            }
        }))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl NodeArgs {
    /// The file, then the environment, then the flags, validated.
    pub fn to_config(&self) -> anyhow::Result<NodeConfig> {
        Ok(NodeConfig::load(
            self.file()?.as_deref(),
            &self.settings.overrides,
        )?)
    }

    fn file(&self) -> anyhow::Result<Option<String>> {
        self.config
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading the configuration file {}", p.display()))
            })
            .transpose()
    }

    /// `--print-config`: the merged configuration as TOML; fails (after printing it) when it
    /// does not validate.
    fn print_config(&self) -> anyhow::Result<()> {
        let cfg = NodeConfig::merge(self.file()?.as_deref(), &self.settings.overrides)?;
        print!("{}", cfg.to_toml());
        cfg.validate()?;
        Ok(())
    }
}

/// `eventstream node`: runs until SIGINT/SIGTERM (or a fatal storage error).
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    if args.print_config {
        return args.print_config();
    }
    let cfg = args.to_config().context("invalid node configuration")?;
    let http_port = cfg.http.port;
    let kafka = cfg.kafka_addresses(&cfg.validate()?);
    let kafka_cfg = cfg.kafka.clone();
    let sasl = super::kafka::sasl_users(&kafka_cfg)?;
    let node = Node::start(cfg, Engine::builder()).context("starting the node")?;
    if let Some((listen, advertised)) = kafka {
        let addr = super::kafka::start(&node, &listen, advertised.clone(), &kafka_cfg, sasl)?;
        eprintln!(
            "node {}: Kafka listener on {addr} (advertised as {advertised})",
            node.id()
        );
    }
    let exporter = if http_port != 0 {
        let listen = SocketAddr::from(([0, 0, 0, 0], http_port));
        let source: Arc<dyn ReplicationSource> = node.metrics();
        let handle = Exporter::builder(ExporterConfig::listening_on(listen), node.stats_handle())
            .replication(source)
            .spawn(&node.runtime_handle())
            .with_context(|| format!("starting the HTTP exporter on {listen}"))?;
        eprintln!(
            "node {} serving on {}, HTTP on {}",
            node.id(),
            node.addr(),
            handle.local_addr()
        );
        Some(handle)
    } else {
        eprintln!("node {} serving on {}", node.id(), node.addr());
        None
    };
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the signal handler")?;
    // The driver thread only ends early on a fatal storage error. The node then keeps serving
    // what it can (status, /ready and /metrics with the reason, reads of the committed stream,
    // publishes refused with the reason) until it is stopped, and exits non-zero.
    let mut reported = false;
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !reported && !node.is_running() => {
                let Some(why) = node.metrics().storage_failure() else {
                    break; // any other fatal driver error: exit non-zero at once
                };
                reported = true;
                eprintln!(
                    "node {}: log storage failed ({why}); refusing writes and serving status until stopped",
                    node.id()
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    // Graceful stop (SIGTERM, e.g. a Kubernetes rolling update): a leader first hands
    // leadership to the most caught-up voter, so the cluster does not wait for an election
    // timeout; publishes in flight here fail with a retryable error and clients retry them at
    // the new leader with the same ids.
    match node.hand_off_leadership(HAND_OFF_TIMEOUT) {
        Ok(Some((leader, term))) => {
            eprintln!("node {}: leadership handed to {leader} (term {term})", node.id())
        }
        Ok(None) => {}
        Err(e) => eprintln!(
            "node {}: leadership hand-off failed ({:?}: {}); the cluster elects a new leader after an election timeout",
            node.id(),
            e.code,
            e.message
        ),
    }
    if let Some(h) = exporter {
        h.shutdown();
    }
    if !node.is_running() {
        return node.wait().context("the raft driver stopped");
    }
    node.shutdown();
    Ok(())
}
