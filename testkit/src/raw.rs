//! The client protocol spoken by hand, for answers a `Client` would retry or hide.

use bytes::BytesMut;
use eventstream_core::Event;
use eventstream_proto::frame::{self, ErrorBody, Kind};
use std::io::{Read, Write};
use std::time::Duration;

/// Publishes `event` once over a new connection to `addr` (no retry, no redirect) and returns
/// the error the node answers with. Panics if the node answers anything else — an
/// acknowledgement — or nothing within 10 s.
pub fn raw_publish_error(addr: &str, event: Event) -> ErrorBody {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = BytesMut::new();
    frame::put_frame(
        &mut b,
        Kind::Hello,
        &frame::encode_hello(frame::Role::Client),
    );
    frame::put_publish(&mut b, 5, &[event]);
    s.write_all(&b).unwrap();
    let mut hdr = [0u8; 8];
    s.read_exact(&mut hdr).unwrap();
    let (kind, len) = frame::decode_header(&hdr, 1 << 20).unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    assert_eq!(kind, Kind::Error, "the publish must not be acknowledged");
    frame::decode_error(&body).unwrap()
}
