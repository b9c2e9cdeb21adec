//! A real Prometheus (Debian's `prometheus` binary) for end-to-end tests: scraping given
//! targets every second on a leased loopback port, killed when dropped.

use crate::error::TestkitError;
use crate::ports::{free_ports, Ports};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running Prometheus; killed and reaped on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    port: Ports,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `binary` with its configuration, database and log under `dir`: job
    /// `eventstream` scraping `targets` (`host:port`) every second (900 ms timeout), and
    /// `rules` (a rule file) evaluated every second when given.
    pub fn start(
        binary: &Path,
        dir: &Path,
        targets: &[String],
        rules: Option<&Path>,
    ) -> Result<Prometheus, TestkitError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| TestkitError::Io { path, source }
        };
        let config = dir.join("prometheus.yml");
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let rule_files = rules.map_or(String::new(), |r| {
            format!("rule_files:\n  - '{}'\n", r.display())
        });
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 {rule_files}\
                 scrape_configs:\n  - job_name: eventstream\n    scrape_interval: 1s\n    \
                 scrape_timeout: 900ms\n    static_configs:\n      - targets: [{targets}]\n"
            ),
        )
        .map_err(io(&config))?;
        let port = free_ports(1)?;
        let log = dir.join("prometheus.log");
        let stderr = std::fs::File::create(&log).map_err(io(&log))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", port[0]))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                what: binary.display().to_string(),
                source,
            })?;
        Ok(Prometheus { child, port, log })
    }

    /// Its HTTP address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port[0])
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP API path of an instant query for `promql` (percent-encoded).
pub fn query_path(promql: &str) -> String {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/api/v1/query?query={encoded}")
}
