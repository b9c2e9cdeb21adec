//! The HTTP server: routes, request accounting, limits, start-up and shutdown.
//!
//! Connections are served by hyper's HTTP/1 server directly (not `axum::serve`) so that the
//! request-head size and header read timeout can be bounded. Every request passes one
//! middleware that counts it (by matched route template — never the raw path — method and
//! status), times it, tracks it in flight, and rejects bodies over `max_body_bytes` with 413.
//! Handlers only read the latest [`Published`](crate::Published) view; a separate publisher
//! thread refreshes that view every `publish_interval`.

use crate::config::{BuildInfo, ExporterConfig};
use crate::error::ExporterError;
use crate::telemetry::Telemetry;
use crate::views::{Check, CheckReport, ClusterView, CurrentMetrics, NodeView, RaftView};
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use eventstream_core::replication::ReplicationSource;
use eventstream_core::StatsHandle;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// The status page (self-contained: inline CSS, JS and SVG; no network but this server).
const INDEX_HTML: &str = include_str!("../static/index.html");

/// Route templates, also the `path` label values (plus `other`).
pub const ROUTES: [&str; 6] = [
    "/",
    "/metrics",
    "/health",
    "/ready",
    "/api/v1/metrics/current",
    "/api/v1/cluster/status",
];

/// A liveness check supplied by the embedding program (e.g. "all worker threads still run").
pub type LivenessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Entry point: `Exporter::builder(config, stats)...start()`.
#[derive(Debug)]
pub struct Exporter;

impl Exporter {
    /// Starts configuring an exporter for the engine whose statistics `stats` reads.
    pub fn builder(config: ExporterConfig, stats: StatsHandle) -> ExporterBuilder {
        ExporterBuilder {
            config,
            stats,
            replication: None,
            liveness: None,
        }
    }
}

/// Configures and starts an exporter.
pub struct ExporterBuilder {
    config: ExporterConfig,
    stats: StatsHandle,
    replication: Option<Arc<dyn ReplicationSource>>,
    liveness: Option<LivenessCheck>,
}

impl std::fmt::Debug for ExporterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterBuilder")
            .field("config", &self.config)
            .field("replication", &self.replication.is_some())
            .field("liveness", &self.liveness.is_some())
            .finish()
    }
}

struct AppState {
    telemetry: Arc<Telemetry>,
    build: BuildInfo,
    liveness: Option<LivenessCheck>,
    local_addr: SocketAddr,
    max_body_bytes: usize,
    stale_after: Duration,
}

impl ExporterBuilder {
    /// Attaches a replicated node: adds the cluster series, `/ready` asks its `ready()`, and
    /// `/api/v1/cluster/status` lists its members.
    pub fn replication(mut self, source: Arc<dyn ReplicationSource>) -> Self {
        self.replication = Some(source);
        self
    }

    /// Adds a liveness check to `/health` (e.g. `move || engine_alive()`); `Err` gives the
    /// reason reported with the 503.
    pub fn liveness(
        mut self,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.liveness = Some(Arc::new(check));
        self
    }

    fn prepare(self) -> Result<(Prepared, std::net::TcpListener), ExporterError> {
        self.config.validate()?;
        let listener = std::net::TcpListener::bind(self.config.listen).map_err(|source| {
            ExporterError::Bind {
                addr: self.config.listen,
                source,
            }
        })?;
        listener
            .set_nonblocking(true)
            .map_err(ExporterError::Runtime)?;
        let local_addr = listener.local_addr().map_err(ExporterError::Runtime)?;
        let telemetry = Arc::new(Telemetry::new(
            self.stats,
            self.replication,
            &self.config.build,
            self.config.history_seconds,
        )?);
        telemetry.preregister_http(&ROUTES);
        let state = Arc::new(AppState {
            telemetry: telemetry.clone(),
            build: self.config.build.clone(),
            liveness: self.liveness,
            local_addr,
            max_body_bytes: self.config.max_body_bytes,
            stale_after: (self.config.publish_interval * 4).max(Duration::from_secs(5)),
        });
        Ok((
            Prepared {
                router: router(state),
                telemetry,
                config: self.config,
                local_addr,
            },
            listener,
        ))
    }

    /// Binds, then serves on a dedicated thread with its own single-threaded tokio runtime
    /// (for synchronous programs). Errors (bad config, address in use) come back here.
    pub fn start(self) -> Result<ExporterHandle, ExporterError> {
        let (prepared, std_listener) = self.prepare()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ExporterError::Runtime)?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(ExporterError::Runtime)?
        };
        let (tx, rx) = watch::channel(false);
        let limits = Limits::of(&prepared.config);
        let router = prepared.router.clone();
        let server = std::thread::Builder::new()
            .name("es-exporter-http".into())
            .spawn(move || {
                rt.block_on(serve(listener, router, limits, rx));
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(ExporterError::Runtime)?;
        prepared.finish(tx, Some(server))
    }

    /// Binds, then serves as a task on `runtime` (for async programs).
    pub fn spawn(self, runtime: &tokio::runtime::Handle) -> Result<ExporterHandle, ExporterError> {
        let (prepared, std_listener) = self.prepare()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(ExporterError::Runtime)?
        };
        let (tx, rx) = watch::channel(false);
        let limits = Limits::of(&prepared.config);
        runtime.spawn(serve(listener, prepared.router.clone(), limits, rx));
        prepared.finish(tx, None)
    }
}

struct Prepared {
    router: Router,
    telemetry: Arc<Telemetry>,
    config: ExporterConfig,
    local_addr: SocketAddr,
}

impl Prepared {
    fn finish(
        self,
        shutdown: watch::Sender<bool>,
        server: Option<std::thread::JoinHandle<()>>,
    ) -> Result<ExporterHandle, ExporterError> {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let telemetry = self.telemetry.clone();
        let interval = self.config.publish_interval;
        let publisher = std::thread::Builder::new()
            .name("es-exporter-publish".into())
            .spawn(move || {
                // `recv_timeout` doubles as the interval timer and the stop signal (a message
                // or a dropped sender).
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(interval)
                {
                    telemetry.publish();
                }
            })
            .map_err(ExporterError::Runtime)?;
        tracing::info!(addr = %self.local_addr, "exporter listening");
        Ok(ExporterHandle {
            local_addr: self.local_addr,
            telemetry: self.telemetry,
            shutdown,
            server,
            publisher: Some((stop_tx, publisher)),
        })
    }
}

/// A running exporter. Dropping it shuts it down.
pub struct ExporterHandle {
    local_addr: SocketAddr,
    telemetry: Arc<Telemetry>,
    shutdown: watch::Sender<bool>,
    server: Option<std::thread::JoinHandle<()>>,
    publisher: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl std::fmt::Debug for ExporterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl ExporterHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://host:port` for printing; a wildcard listen address is shown as `127.0.0.1`.
    pub fn base_url(&self) -> String {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// Every endpoint as `(description, url)`, for `eventstream demo` to print.
    pub fn urls(&self) -> Vec<(&'static str, String)> {
        let base = self.base_url();
        [
            ("status page", "/"),
            ("prometheus metrics", "/metrics"),
            ("liveness", "/health"),
            ("readiness", "/ready"),
            ("current metrics (JSON)", "/api/v1/metrics/current"),
            ("cluster status (JSON)", "/api/v1/cluster/status"),
        ]
        .into_iter()
        .map(|(d, p)| (d, format!("{base}{p}")))
        .collect()
    }

    /// The metrics registry and published views (e.g. to render `/metrics` without HTTP).
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Stops accepting, lets in-flight requests finish (up to ~2 s), stops the publisher.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some((tx, publisher)) = self.publisher.take() {
            drop(tx);
            let _ = publisher.join();
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

impl Drop for ExporterHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_header_bytes: usize,
    header_read_timeout: Duration,
    max_connections: usize,
}

impl Limits {
    fn of(c: &ExporterConfig) -> Self {
        Limits {
            max_header_bytes: c.max_header_bytes,
            header_read_timeout: c.header_read_timeout,
            max_connections: c.max_connections,
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning; the listener stays up.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "http connection ended with an error");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/api/v1/metrics/current", get(current))
        .route("/api/v1/cluster/status", get(cluster_status))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

fn error_body(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message, "status": status.as_u16() })),
    )
        .into_response()
}

/// Bounded label value for the method (`other` for extension methods).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts, times and size-checks every request.
async fn observe(
    State(st): State<Arc<AppState>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let _in_flight = st.telemetry.http_request_started();
    let path = matched
        .as_ref()
        .map(MatchedPath::as_str)
        .filter(|p| ROUTES.contains(p))
        .unwrap_or("other")
        .to_owned();
    let method = method_label(req.method());
    let response = match limit_body(req, st.max_body_bytes).await {
        Ok(req) => next.run(req).await,
        Err(rejection) => rejection,
    };
    st.telemetry
        .record_http(&path, method, response.status().as_u16(), started.elapsed());
    response
}

/// Rejects bodies over `max` bytes: by `Content-Length` without reading, or — for chunked
/// bodies — by reading at most `max + 1` bytes (within 10 s).
async fn limit_body(req: Request, max: usize) -> Result<Request, Response> {
    let too_large = || {
        error_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {max} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    if declared == Some(0)
        || (declared.is_none() && !req.headers().contains_key(header::TRANSFER_ENCODING))
    {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(Duration::from_secs(10), axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(error_body(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received within 10 s",
        )),
    }
}

async fn not_found() -> Response {
    error_body(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> Response {
    error_body(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed; this API is read-only (GET, HEAD)",
    )
}

async fn index() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            // Everything is inline; the page may only talk to this server.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'",
                ),
            ),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        st.telemetry.render_prometheus(),
    )
        .into_response()
}

fn report(r: CheckReport) -> Response {
    let status = if r.ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(r),
    )
        .into_response()
}

fn health_report(st: &AppState) -> CheckReport {
    let p = st.telemetry.latest();
    let dead: Vec<&str> = p
        .stats
        .workers
        .iter()
        .filter(|w| !w.alive)
        .map(|w| w.name.as_str())
        .collect();
    let total = p.stats.workers.len();
    let mut checks = vec![Check {
        name: "workers",
        ok: dead.is_empty(),
        detail: if dead.is_empty() {
            format!("{total} of {total} alive")
        } else {
            format!(
                "{} of {total} alive; stopped: {}",
                total - dead.len(),
                dead.join(", ")
            )
        },
    }];
    let age_ms = crate::telemetry::now_ms().saturating_sub(p.taken_at_ms);
    checks.push(Check {
        name: "publisher",
        ok: Duration::from_millis(age_ms) <= st.stale_after,
        detail: format!("last snapshot {age_ms} ms ago"),
    });
    if let Some(check) = &st.liveness {
        let r = check();
        checks.push(Check {
            name: "liveness",
            ok: r.is_ok(),
            detail: r.err().unwrap_or_else(|| "ok".into()),
        });
    }
    CheckReport::of(checks)
}

fn ready_report(st: &AppState) -> CheckReport {
    let p = st.telemetry.latest();
    let mut checks = vec![Check {
        name: "engine",
        ok: p.stats.running,
        detail: if p.stats.running {
            "running".into()
        } else {
            "engine is shut down".into()
        },
    }];
    if let Some(src) = st.telemetry.replication() {
        let r = src.ready();
        checks.push(Check {
            name: "replication",
            ok: r.is_ok(),
            detail: r
                .err()
                .unwrap_or_else(|| "has a leader and is caught up".into()),
        });
    }
    CheckReport::of(checks)
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    report(health_report(&st))
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    report(ready_report(&st))
}

async fn current(State(st): State<Arc<AppState>>) -> Response {
    let view = CurrentMetrics::of(&st.telemetry.latest(), &st.build);
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(view),
    )
        .into_response()
}

async fn cluster_status(State(st): State<Arc<AppState>>) -> Response {
    let p = st.telemetry.latest();
    let health = health_report(&st);
    let ready = ready_report(&st);
    let (mode, raft, members) = match &p.cluster {
        Some(c) => (
            "replicated",
            Some(RaftView::of(&c.status)),
            c.status.members.clone(),
        ),
        None => ("standalone", None, Vec::new()),
    };
    let view = ClusterView {
        mode,
        node: NodeView {
            http_address: st.local_addr.to_string(),
            running: p.stats.running,
            healthy: health.ok(),
            ready: ready.ok(),
            not_ready_reason: ready.reason,
            uptime_seconds: p.stats.uptime.as_secs_f64(),
            build: st.build.clone(),
        },
        raft,
        members,
    };
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(view),
    )
        .into_response()
}
