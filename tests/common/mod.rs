//! What several of the binary's integration tests share: the command under test, a plain HTTP
//! `GET`, and publishing numbered batches.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use bytes::Bytes;
use eventstream_client::Client;
use eventstream_core::{Event, Priority};
use std::process::Command;
use std::time::Duration;

/// `eventstream`, the binary under test (the debug build under `cargo test`).
pub fn eventstream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eventstream"))
}

/// Runs `eventstream ARGS` to its end: its stdout, or a panic with its stderr if it failed.
pub fn eventstream_ok(args: &[&str]) -> String {
    let out = eventstream().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "eventstream {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `GET path` on `addr` (`host:port`, or a `http://` URL) with the doctor's HTTP client:
/// status and body (de-chunked). Panics if the server cannot be reached.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    eventstream_doctor::http::get(addr, path, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// Publishes `batches` batches of `size` events (topic `orders`, every priority, fresh ids,
/// payloads `TAG-BATCH-N`), each retried as the client retries; returns every event's
/// `(id, offset)` as acknowledged.
pub async fn publish_batches(
    client: &Client,
    batches: usize,
    size: usize,
    tag: &str,
) -> Vec<(u64, u64)> {
    let mut acked = Vec::new();
    for b in 0..batches {
        let evs: Vec<Event> = (0..size)
            .map(|i| {
                Event::new(
                    "orders",
                    Priority::from_index((i % 4) as u8).unwrap(),
                    Bytes::from(format!("{tag}-{b}-{i}")),
                )
                .with_id(client.next_id().0)
            })
            .collect();
        let ids: Vec<u64> = evs.iter().map(|e| e.id.0).collect();
        let offs = client
            .publish(evs)
            .await
            .expect("publish (with retries) succeeds");
        acked.extend(ids.into_iter().zip(offs));
    }
    acked
}
