//! Shared helpers for the exporter's integration tests: a raw HTTP/1.1 client (so tests can
//! also send malformed and oversized requests), a loaded engine, a fake cluster and tool lookup.
#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

pub mod fake_cluster;

use eventstream_core::{Engine, Event, HandlerError, Priority};
use eventstream_exporter::{Exporter, ExporterConfig, ExporterHandle};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends `raw` on a fresh connection and reads the response until the server closes.
pub fn raw(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(raw)?;
    read_response(&mut s)
}

pub fn read_response(s: &mut TcpStream) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf); // a reset after a complete response is fine
    parse_response(&buf).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad response: {:?}", String::from_utf8_lossy(&buf)),
        )
    })
}

pub fn parse_response(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..nl]).ok()?.trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some(Response {
        status,
        headers,
        body,
    })
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path)
}

pub fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    raw(addr, req.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An engine with handlers on several topics and a background producer.
pub struct LoadedEngine {
    pub engine: Option<Engine>,
    stop: Arc<AtomicBool>,
    producer: Option<JoinHandle<u64>>,
}

impl LoadedEngine {
    /// Starts an unpinned 2-worker engine and a producer publishing ~`rate` events/s of every
    /// priority, with every 10th event a duplicate id, every 50th to a failing handler, and
    /// low-priority events to a slow handler so the batch tier shows depth.
    pub fn start(rate: u64) -> Self {
        let engine = Engine::builder()
            .configure(|c| {
                c.pin_workers = false;
                c.workers = 2;
                c.tiers.batch.capacity = 1024;
                c.stats_flush_ms = 20;
            })
            .on("orders", |_: &[Event]| Ok(()))
            .on("flaky", |_: &[Event]| -> Result<(), HandlerError> {
                Err("flaky handler refused".into())
            })
            .on("bulk", |batch: &[Event]| {
                std::thread::sleep(Duration::from_micros(20 * batch.len() as u64));
                Ok(())
            })
            .start()
            .expect("engine starts");
        let publisher = engine.publisher();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let producer = std::thread::spawn(move || {
            let mut n: u64 = 0;
            let started = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                for _ in 0..50 {
                    n += 1;
                    let prio = Priority::ALL[(n % 4) as usize];
                    let topic = match (n % 50, prio) {
                        (0, _) => "flaky",
                        (_, Priority::Low) => "bulk",
                        _ => "orders",
                    };
                    // Every 10th event repeats the previous id: a duplicate for dedup.
                    let id = if n % 10 == 0 { n - 1 } else { n };
                    let _ = publisher.publish(Event::new(topic, prio, &b"{}"[..]).with_id(id));
                }
                // Pace to `rate` events/s so tests leave CPU for Prometheus and Chromium.
                let due = Duration::from_secs_f64(n as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            n
        });
        LoadedEngine {
            engine: Some(engine),
            stop,
            producer: Some(producer),
        }
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    /// Stops the producer; returns how many events it offered.
    pub fn stop_load(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.producer.take().map(|p| p.join().unwrap()).unwrap_or(0)
    }
}

impl Drop for LoadedEngine {
    fn drop(&mut self) {
        self.stop_load();
    }
}

/// Starts an exporter on 127.0.0.1:0 for `engine`.
pub fn exporter_for(engine: &Engine) -> ExporterHandle {
    Exporter::builder(test_config(), engine.stats_handle())
        .start()
        .expect("exporter starts")
}

/// Starts an exporter on 127.0.0.1:0 for `engine` whose cluster series come from a fake
/// leader ([`fake_cluster::FakeCluster::leader`]).
pub fn cluster_exporter_for(engine: &Engine) -> ExporterHandle {
    Exporter::builder(test_config(), engine.stats_handle())
        .replication(Arc::new(fake_cluster::FakeCluster::leader()))
        .start()
        .expect("exporter starts")
}

pub fn test_config() -> ExporterConfig {
    ExporterConfig {
        publish_interval: Duration::from_millis(100),
        ..ExporterConfig::listening_on("127.0.0.1:0".parse().unwrap())
    }
}

/// Finds an external tool. Missing: skip loudly, unless `CI` is set (then fail).
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").map(|v| !v.is_empty() && v != "false" && v != "0");
        if ci.unwrap_or(false) {
            panic!("`{name}` is required when CI is set (install Debian's package: prometheus / chromium)");
        }
        // Straight to the process's stderr: libtest captures `eprintln!` of passing tests, and a
        // skipped check must be visible.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPING: `{name}` not found on PATH; this check did not run \
             (install Debian's prometheus / chromium, or set CI=true to make this fail)\n"
        );
    }
    found
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh, empty temp directory unique to this process and `tag`.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "eventstream-exporter-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where test artifacts go: `<workspace>/target/artifacts` (gitignored).
pub fn artifacts_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
