//! `publish`, `subscribe` and `status`: the client commands.

use super::{print_json, runtime, ClusterArgs};
use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use eventstream_client::{status_with, SubscribeBody, OFFSET_UNKNOWN};
use eventstream_core::replication::ClusterStatus;
use eventstream_core::{Event, Priority};
use serde::Serialize;
use std::io::Write;
use std::time::Duration;

/// `eventstream publish`.
#[derive(Debug, Args, Clone)]
pub struct PublishArgs {
    /// Cluster, TLS, token, timeout.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Topic.
    #[arg(long, default_value = "default")]
    pub topic: String,
    /// Priority: critical, high, medium, low.
    #[arg(long, default_value = "medium")]
    pub priority: String,
    /// Idempotency key of the first event (following events get id+1, id+2, ...); random if absent.
    #[arg(long)]
    pub id: Option<u64>,
    /// Record key of every event (UTF-8 bytes).
    #[arg(long)]
    pub key: Option<String>,
    /// A header of every event, `NAME=VALUE`; `NAME` alone is a null value. Repeatable; the
    /// order is kept and names may repeat.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, Option<String>)>,
    /// Payloads; if none are given, one event per line of standard input.
    pub payloads: Vec<String>,
}

/// `--header NAME=VALUE` (or `NAME`: a null value).
fn parse_header(s: &str) -> Result<(String, Option<String>), String> {
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (s, None),
    };
    if name.is_empty() {
        return Err(format!("`{s}` has no header name (NAME=VALUE)"));
    }
    Ok((name.to_owned(), value))
}

/// Runs `eventstream publish`; prints one offset per event.
pub fn publish(a: PublishArgs) -> anyhow::Result<()> {
    let priority: Priority = a.priority.parse().context("--priority")?;
    let payloads: Vec<String> = if a.payloads.is_empty() {
        std::io::stdin().lines().map_while(Result::ok).collect()
    } else {
        a.payloads.clone()
    };
    let events: Vec<Event> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut e = Event::new(a.topic.as_str(), priority, Bytes::from(p));
            if let Some(k) = &a.key {
                e = e.with_key(k.clone());
            }
            for (name, value) in &a.headers {
                e = e.with_header(name.clone(), value.clone().map(Bytes::from));
            }
            match a.id {
                Some(id) => e.with_id(id + i as u64),
                None => e,
            }
        })
        .collect();
    let client = a
        .cluster
        .client(a.cluster.timeout_or(super::DEFAULT_TIMEOUT))?;
    let offsets = runtime()?.block_on(client.publish(events))?;
    for o in offsets {
        if o == OFFSET_UNKNOWN {
            println!("duplicate");
        } else {
            println!("{o}");
        }
    }
    Ok(())
}

/// `eventstream subscribe`.
#[derive(Debug, Args, Clone)]
pub struct SubscribeArgs {
    /// Cluster, TLS, token, and how long to keep trying to connect (any node serves the
    /// committed stream).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// First offset.
    #[arg(long, default_value_t = 0, conflicts_with = "from_time")]
    pub from: u64,
    /// Start at the first event committed at or after this time: RFC 3339
    /// (`2026-12-02T08:00:00Z`) or milliseconds since the Unix epoch.
    #[arg(long, value_parser = parse_time_ms)]
    pub from_time: Option<u64>,
    /// Only this topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only events at least this important (critical > high > medium > low).
    #[arg(long)]
    pub min_priority: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Stop when no event arrives for this many milliseconds.
    #[arg(long)]
    pub idle_exit_ms: Option<u64>,
    /// One JSON object per line (`key` and `headers` only for events that have them).
    #[arg(long)]
    pub json: bool,
    /// Read as consumer group GROUP: start at the group's committed offset for `--topic`
    /// (`--from`/`--from-time` when it has none) and commit what was printed, every
    /// `--commit-interval-ms` and on exit — the table Kafka clients' groups commit to.
    #[arg(long, requires = "topic")]
    pub group: Option<String>,
    /// How often a `--group` subscriber commits, milliseconds.
    #[arg(long, default_value_t = 1000, requires = "group")]
    pub commit_interval_ms: u64,
}

/// `--from-time`: RFC 3339 or Unix milliseconds.
fn parse_time_ms(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("`{s}` is neither RFC 3339 (2026-12-02T08:00:00Z) nor Unix milliseconds: {e}")
    })?;
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("`{s}` is before 1970"))?;
    Ok(since.as_millis() as u64)
}

#[derive(Serialize)]
struct EventLine<'a> {
    offset: u64,
    /// Stream time: when the leader committed it, ms since the Unix epoch.
    time_ms: u64,
    id: u64,
    topic: &'a str,
    priority: Priority,
    payload: String,
    /// The record key (UTF-8, lossy); absent when the event has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The headers in order; absent when the event has none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<HeaderLine>,
}

#[derive(Serialize)]
struct HeaderLine {
    name: String,
    /// UTF-8 (lossy); `null` for a null value.
    value: Option<String>,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The text line's fields after the payload: `key=KEY`, then `header.NAME=VALUE` per header
/// (`header.NAME` for a null value), each after a tab; empty for an event without them.
fn meta_columns(e: &Event) -> String {
    let mut s = String::new();
    if let Some(k) = e.key() {
        s.push_str(&format!("\tkey={}", lossy(k)));
    }
    for h in e.headers() {
        match &h.value {
            Some(v) => s.push_str(&format!("\theader.{}={}", h.name, lossy(v))),
            None => s.push_str(&format!("\theader.{}", h.name)),
        }
    }
    s
}

/// Runs `eventstream subscribe`: prints `offset id topic priority payload` lines, then the
/// event's key and headers if it has them ([`meta_columns`]), or JSON objects.
pub fn subscribe(a: SubscribeArgs) -> anyhow::Result<()> {
    let min_priority = a
        .min_priority
        .as_deref()
        .map(str::parse::<Priority>)
        .transpose()
        .context("--min-priority")?;
    let client = a
        .cluster
        .client(a.cluster.timeout_or(super::DEFAULT_TIMEOUT))?;
    runtime()?.block_on(async {
        let mut group = match &a.group {
            Some(g) => Some(
                GroupCursor::resume(&client, g, a.topic.as_deref(), a.commit_interval_ms).await?,
            ),
            None => None,
        };
        let resumed = group.as_ref().and_then(|g| g.committed);
        let mut sub = client.subscribe(SubscribeBody {
            from_offset: resumed.unwrap_or(a.from),
            topic: a.topic.clone(),
            min_priority,
            from_time_ms: if resumed.is_some() { None } else { a.from_time },
        });
        let mut n = 0u64;
        let stdout = std::io::stdout();
        while a.limit.is_none_or(|l| n < l) {
            if let Some(g) = &mut group {
                g.commit_if_due(&client).await?;
            }
            let next = match a.idle_exit_ms {
                Some(ms) => match sub.next_timeout(Duration::from_millis(ms)).await? {
                    Some(x) => x,
                    None => break,
                },
                None => sub.next().await?,
            };
            let (off, e) = next;
            if let Some(g) = &mut group {
                g.read(off);
            }
            let payload = lossy(&e.payload);
            let mut out = stdout.lock();
            let r = if a.json {
                let line = EventLine {
                    offset: off,
                    time_ms: e.ingest_ns / 1_000_000,
                    id: e.id.0,
                    topic: &e.topic,
                    priority: e.priority,
                    payload,
                    key: e.key().map(|k| lossy(k)),
                    headers: e
                        .headers()
                        .iter()
                        .map(|h| HeaderLine {
                            name: h.name.clone(),
                            value: h.value.as_deref().map(lossy),
                        })
                        .collect(),
                };
                writeln!(out, "{}", serde_json::to_string(&line).unwrap_or_default())
            } else {
                writeln!(
                    out,
                    "{off}\t{}\t{}\t{}\t{payload}{}",
                    e.id,
                    e.topic,
                    e.priority,
                    meta_columns(&e)
                )
            };
            if r.is_err() {
                break; // stdout closed (e.g. piped into `head`)
            }
            n += 1;
        }
        if let Some(g) = &mut group {
            g.commit(&client).await?;
        }
        Ok(())
    })
}

/// A `--group` subscriber's position: where it resumed, what it printed, what it committed.
struct GroupCursor {
    group: String,
    topic: String,
    /// The group's committed offset for the topic when the subscriber started.
    committed: Option<u64>,
    /// One past the last event printed.
    next: Option<u64>,
    /// The last offset committed by this subscriber.
    sent: Option<u64>,
    every: Duration,
    last_commit: std::time::Instant,
}

impl GroupCursor {
    async fn resume(
        client: &eventstream_client::Client,
        group: &str,
        topic: Option<&str>,
        interval_ms: u64,
    ) -> anyhow::Result<GroupCursor> {
        let topic = topic.context("--group needs --topic")?.to_owned();
        let committed = client
            .committed_offsets(group)
            .await
            .with_context(|| format!("reading group `{group}`'s committed offsets"))?
            .into_iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, o)| o);
        Ok(GroupCursor {
            group: group.to_owned(),
            topic,
            committed,
            next: None,
            sent: committed,
            every: Duration::from_millis(interval_ms),
            last_commit: std::time::Instant::now(),
        })
    }

    fn read(&mut self, offset: u64) {
        self.next = Some(offset + 1);
    }

    async fn commit_if_due(&mut self, client: &eventstream_client::Client) -> anyhow::Result<()> {
        if self.last_commit.elapsed() >= self.every {
            self.commit(client).await?;
        }
        Ok(())
    }

    /// Commits what was printed, unless it was committed already.
    async fn commit(&mut self, client: &eventstream_client::Client) -> anyhow::Result<()> {
        self.last_commit = std::time::Instant::now();
        let Some(next) = self.next.filter(|n| Some(*n) != self.sent) else {
            return Ok(());
        };
        client
            .commit_offsets(&self.group, vec![(self.topic.clone(), next)])
            .await
            .with_context(|| {
                format!("committing group `{}` at {}/{next}", self.group, self.topic)
            })?;
        self.sent = Some(next);
        Ok(())
    }
}

/// `eventstream status`.
#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// Cluster, TLS, token; `--timeout` bounds each endpoint's answer.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct EndpointStatus {
    endpoint: String,
    status: Option<ClusterStatus>,
    error: Option<String>,
}

/// Renders statuses like `etcdctl endpoint status -w table`.
pub fn status_table(rows: &[(String, Result<ClusterStatus, String>)]) -> String {
    let header = [
        "ENDPOINT", "NODE", "STATE", "TERM", "COMMIT", "APPLIED", "LAG", "LEADER", "ERROR",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for (ep, r) in rows {
        table.push(match r {
            Ok(s) => vec![
                ep.clone(),
                s.node_id.to_string(),
                // A learner replicates like a follower but does not vote: say so.
                if s.members.iter().any(|m| m.id == s.node_id && m.learner) {
                    "learner".to_owned()
                } else {
                    s.role.as_str().to_owned()
                },
                s.term.to_string(),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.commit_index.saturating_sub(s.applied_index).to_string(),
                s.leader_id.map_or("-".into(), |l| l.to_string()),
                // A node whose log cannot be written answers, but accepts no writes: say why.
                s.storage_failure
                    .as_ref()
                    .map_or(String::new(), |why| format!("storage failed: {why}")),
            ],
            Err(e) => {
                let mut v = vec![ep.clone()];
                v.extend(std::iter::repeat_n("-".to_string(), 7));
                v.push(e.clone());
                v
            }
        });
    }
    super::render_table(&table)
}

/// Runs `eventstream status`. Fails (non-zero exit) if no endpoint answered.
pub fn status(a: StatusArgs) -> anyhow::Result<()> {
    let eps = a.cluster.endpoints();
    let ccfg = a.cluster.tls.client_config(eps.clone())?;
    let each = a.cluster.timeout_or(Duration::from_secs(2));
    let rows: Vec<(String, Result<ClusterStatus, String>)> = runtime()?.block_on(async {
        let mut rows = Vec::new();
        for ep in &eps {
            rows.push((
                ep.clone(),
                status_with(&ccfg, ep, each)
                    .await
                    .map_err(|e| e.to_string()),
            ));
        }
        rows
    });
    if a.json {
        let v: Vec<EndpointStatus> = rows
            .iter()
            .map(|(ep, r)| EndpointStatus {
                endpoint: ep.clone(),
                status: r.as_ref().ok().cloned(),
                error: r.as_ref().err().cloned(),
            })
            .collect();
        print_json(&v)?;
    } else {
        print!("{}", status_table(&rows));
    }
    anyhow::ensure!(rows.iter().any(|(_, r)| r.is_ok()), "no endpoint answered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_time_ms;

    #[test]
    fn from_time_takes_rfc3339_or_unix_milliseconds_and_names_bad_input() {
        assert_eq!(parse_time_ms("1764662400000"), Ok(1_764_662_400_000));
        assert_eq!(parse_time_ms("2025-12-02T08:00:00Z"), Ok(1_764_662_400_000));
        assert_eq!(
            parse_time_ms("2025-12-02T08:00:00.250Z"),
            Ok(1_764_662_400_250)
        );
        let err = parse_time_ms("yesterday").unwrap_err();
        assert!(
            err.contains("`yesterday`") && err.contains("RFC 3339"),
            "{err}"
        );
    }
}
