//! The smallest HTTP/1.1 client that reads a node's `/metrics` and status API: plain TCP,
//! `GET`, `Connection: close`, with a time limit and a size limit. No TLS: the metrics and
//! health endpoints are plain by design.

use crate::DoctorError;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response accepted (a `/metrics` page is tens of KiB).
const MAX_RESPONSE: usize = 16 << 20;

/// Splits `http://host:port` (with or without a trailing path) into `host:port`.
pub(crate) fn authority(endpoint: &str) -> Result<String, DoctorError> {
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    if endpoint.starts_with("https://") {
        return Err(DoctorError::BadEndpoint(
            endpoint.to_owned(),
            "https is not supported: metrics endpoints are plain http".into(),
        ));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(DoctorError::BadEndpoint(
            endpoint.to_owned(),
            "expected http://HOST:PORT".into(),
        ));
    }
    Ok(if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    })
}

/// `GET path` from `endpoint`; returns the status code and body.
pub fn get(endpoint: &str, path: &str, timeout: Duration) -> Result<(u16, String), DoctorError> {
    let auth = authority(endpoint)?;
    let io = |e: std::io::Error| DoctorError::Unreachable(endpoint.to_owned(), e.to_string());
    let addr = auth
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| DoctorError::Unreachable(endpoint.to_owned(), "no address".into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {auth}\r\nUser-Agent: eventstream-doctor\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    if raw.len() > MAX_RESPONSE {
        return Err(DoctorError::BadResponse(
            endpoint.to_owned(),
            "response too large".into(),
        ));
    }
    parse_response(&raw).map_err(|why| DoctorError::BadResponse(endpoint.to_owned(), why))
}

/// Parses a complete HTTP/1.1 response (status line, headers, body; chunked or not).
fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&b[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size `{size_text}`"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain).unwrap(), (200, "hello".into()));
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (503, "abcde".into()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            authority("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(authority("http://node-0:9/metrics").unwrap(), "node-0:9");
        assert_eq!(authority("localhost").unwrap(), "localhost:80");
        assert!(authority("https://x:1").is_err());
        assert!(authority("http://").is_err());
    }
}
