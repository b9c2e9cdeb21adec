//! Exporter configuration, validated before anything starts.

use crate::error::ExporterError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// What the exporter reports in `eventstream_build_info` and the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Crate version.
    pub version: String,
    /// Source revision (git hash), `unknown` if not built from a checkout.
    pub revision: String,
    /// Compiler version.
    pub rustc: String,
}

impl Default for BuildInfo {
    /// The values baked in when this crate was compiled (see `build.rs`).
    fn default() -> Self {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision: env!("EVENTSTREAM_BUILD_REVISION").to_owned(),
            rustc: env!("EVENTSTREAM_BUILD_RUSTC").to_owned(),
        }
    }
}

/// Exporter settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterConfig {
    /// HTTP listen address. Default `0.0.0.0:8080`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How often engine (and cluster) snapshots are taken and published. `10 ms ..= 60 s`;
    /// default 250 ms.
    #[serde(with = "duration_ms")]
    pub publish_interval: Duration,
    /// Largest request body accepted (bytes); larger requests get 413. `0 ..= 16 MiB`; default 64 KiB.
    pub max_body_bytes: usize,
    /// Largest request head (request line + headers) accepted; larger gets 431.
    /// `8192 ..= 1 MiB`; default 16 KiB.
    pub max_header_bytes: usize,
    /// Concurrent connections served; further connections wait in the accept queue.
    /// `1 ..= 65536`; default 256.
    pub max_connections: usize,
    /// Time a client gets to send a request head. `100 ms ..= 300 s`; default 10 s.
    #[serde(with = "duration_ms")]
    pub header_read_timeout: Duration,
    /// Seconds of throughput/latency history kept for the status page. `10 ..= 3600`; default 300.
    pub history_seconds: usize,
    /// Build information to export.
    pub build: BuildInfo,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            publish_interval: Duration::from_millis(250),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            history_seconds: 300,
            build: BuildInfo::default(),
        }
    }
}

fn invalid(field: &'static str, value: impl ToString, allowed: &str) -> ExporterError {
    ExporterError::InvalidConfig {
        field,
        value: value.to_string(),
        allowed: allowed.to_owned(),
    }
}

impl ExporterConfig {
    /// A default configuration listening on `listen`.
    pub fn listening_on(listen: SocketAddr) -> Self {
        ExporterConfig {
            listen,
            ..ExporterConfig::default()
        }
    }

    /// Checks every field; the error names the first bad one and its allowed range.
    pub fn validate(&self) -> Result<(), ExporterError> {
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.publish_interval) {
            return Err(invalid(
                "publish_interval",
                ms(self.publish_interval),
                "10 ms to 60 s",
            ));
        }
        if self.max_body_bytes > 16 << 20 {
            return Err(invalid(
                "max_body_bytes",
                self.max_body_bytes,
                "0 to 16777216",
            ));
        }
        if !(8192..=1 << 20).contains(&self.max_header_bytes) {
            return Err(invalid(
                "max_header_bytes",
                self.max_header_bytes,
                "8192 to 1048576",
            ));
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return Err(invalid(
                "max_connections",
                self.max_connections,
                "1 to 65536",
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(300))
            .contains(&self.header_read_timeout)
        {
            return Err(invalid(
                "header_read_timeout",
                ms(self.header_read_timeout),
                "100 ms to 300 s",
            ));
        }
        if !(10..=3600).contains(&self.history_seconds) {
            return Err(invalid(
                "history_seconds",
                self.history_seconds,
                "10 to 3600",
            ));
        }
        for (field, v) in [
            ("build.version", &self.build.version),
            ("build.revision", &self.build.revision),
            ("build.rustc", &self.build.rustc),
        ] {
            if v.is_empty() || v.len() > 128 || v.chars().any(|c| c.is_control()) {
                return Err(invalid(
                    field,
                    format!("{v:?}"),
                    "1 to 128 printable characters",
                ));
            }
        }
        Ok(())
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_listens_on_8080() {
        let c = ExporterConfig::default();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert!(!c.build.version.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(ExporterConfig, &str)> = vec![
            (
                ExporterConfig {
                    publish_interval: Duration::from_millis(1),
                    ..Default::default()
                },
                "publish_interval",
            ),
            (
                ExporterConfig {
                    max_header_bytes: 100,
                    ..Default::default()
                },
                "max_header_bytes",
            ),
            (
                ExporterConfig {
                    max_body_bytes: 1 << 30,
                    ..Default::default()
                },
                "max_body_bytes",
            ),
            (
                ExporterConfig {
                    max_connections: 0,
                    ..Default::default()
                },
                "max_connections",
            ),
            (
                ExporterConfig {
                    header_read_timeout: Duration::ZERO,
                    ..Default::default()
                },
                "header_read_timeout",
            ),
            (
                ExporterConfig {
                    history_seconds: 1,
                    ..Default::default()
                },
                "history_seconds",
            ),
            (
                ExporterConfig {
                    build: BuildInfo {
                        revision: "a\nb".into(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "build.revision",
            ),
        ];
        for (c, field) in cases {
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains(field), "{e} should name {field}");
        }
    }

    #[test]
    fn serde_round_trip_rejects_unknown_fields() {
        let c = ExporterConfig::default();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ExporterConfig>(&json).unwrap(), c);
        let err = serde_json::from_str::<ExporterConfig>(r#"{"lisen":"1.2.3.4:5"}"#).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
