//! The binary's commands: each module holds one command's flags (clap) and turns them into
//! calls of the library crates. Shared here: how client commands name their cluster, TLS and
//! token, and how long they wait.

pub mod bench;
pub mod chaos;
pub mod client;
pub mod demo;
mod demo_load;
pub mod doctor;
pub mod groups;
mod kafka;
pub mod member;
pub mod node;
pub mod snapshot;

use anyhow::Context;
use clap::Args;
use eventstream_client::{Client, ClientConfig, RetryNotice};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// TLS and admin-token options of every client command (`#[command(flatten)]` it into a new
/// command's arguments and build its client with [`ClientTlsArgs::client_config`]).
#[derive(Debug, Args, Clone, Default)]
pub struct ClientTlsArgs {
    /// CA certificate (PEM) the nodes' certificates must chain to; turns TLS on.
    #[arg(long = "tls-ca", env = "EVENTSTREAM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for nodes that require client certificates (mutual TLS).
    #[arg(long = "tls-cert", env = "EVENTSTREAM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", env = "EVENTSTREAM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to check in the nodes' certificates instead of each endpoint's host.
    #[arg(long = "tls-server-name", env = "EVENTSTREAM_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Admin bearer token (mutating admin operations on nodes with admin_token_file).
    #[arg(long, env = "EVENTSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientTlsArgs {
    /// A client configuration for `endpoints` with these TLS settings and token; errors name
    /// the flag (a file that is missing or not PEM, a certificate without --tls-ca).
    pub fn client_config(&self, endpoints: Vec<String>) -> anyhow::Result<ClientConfig> {
        Ok(ClientConfig::new(endpoints).secured(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref().zip(self.tls_key.as_deref()),
            self.tls_server_name.as_deref(),
            self.token.as_deref(),
        )?)
    }
}

/// How an interactive command reaches the cluster: where, with which TLS and token, and for
/// how long it retries.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// Node addresses, comma-separated or repeated (any member: requests find the leader).
    #[arg(
        long,
        env = "EVENTSTREAM_ENDPOINTS",
        required = true,
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Give up after this long (e.g. 500ms, 15s, 2m; default 10s, `member add` 60s while a
    /// learner catches up, `leader transfer` 15s). Each retry is reported on stderr; when no
    /// endpoint accepts a connection at all the command gives up after at most 5 s.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// TLS and token.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

impl ClusterArgs {
    /// The endpoints, split and trimmed.
    pub fn endpoints(&self) -> Vec<String> {
        split_endpoints(&self.endpoints)
    }

    /// `--timeout`, or the command's own default.
    pub fn timeout_or(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }

    /// A client for these endpoints that reports its retries on stderr and gives up after
    /// `timeout`.
    pub fn client(&self, timeout: Duration) -> anyhow::Result<Client> {
        let mut cfg = self.tls.client_config(self.endpoints())?;
        cfg.deadline = timeout;
        cfg.attempt_timeout = cfg.attempt_timeout.min(timeout);
        cfg.unreachable_timeout = cfg.unreachable_timeout.min(timeout);
        let notice: RetryNotice = Arc::new(|m: &str| eprintln!("eventstream: {m}"));
        cfg.on_retry = Some(notice);
        Client::new(cfg).context("invalid client settings")
    }
}

/// Endpoints given as `a,b` or repeated, trimmed, empty ones dropped.
pub fn split_endpoints(s: &[String]) -> Vec<String> {
    s.iter()
        .flat_map(|e| e.split(','))
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect()
}

/// How long a client command retries unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime client commands run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    eventstream_client::runtime(2).context("starting a tokio runtime")
}

/// Parses `500ms`, `15s`, `2m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 15s, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        other => return Err(format!("unknown unit `{other}` in `{s}` (ms, s, m)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Prints `value` as one line of JSON on stdout.
/// Rows (the first one the header) as an ASCII table, like `etcdctl -w table`.
pub fn render_table(table: &[Vec<String>]) -> String {
    let columns = table.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let sep = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let mut out = sep.clone();
    for (i, r) in table.iter().enumerate() {
        out.push('|');
        for (c, cell) in r.iter().enumerate() {
            out.push_str(&format!(" {cell:<w$} |", w = widths[c]));
        }
        out.push('\n');
        if i == 0 {
            out.push_str(&sep);
        }
    }
    out.push_str(&sep);
    out
}

pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_are_explained() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3h").unwrap_err().contains("unit"));
        assert!(parse_duration("abc")
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn endpoints_split_on_commas_and_repeats() {
        let e = split_endpoints(&["a:1, b:2".into(), "c:3".into(), " ".into()]);
        assert_eq!(e, ["a:1", "b:2", "c:3"]);
    }
}
