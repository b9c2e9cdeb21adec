//! Async framing over tokio streams: read whole frames with a maximum size, write batches.
//!
//! A decode error (bad version, kind, reserved bits, oversized length) is returned as
//! `io::ErrorKind::InvalidData`; callers close that connection and nothing else.

use bytes::{Bytes, BytesMut};
use eventstream_proto::frame::{self, Kind};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads frames from `R`.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_body: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader accepting bodies of at most `max_body` bytes.
    pub fn new(inner: R, max_body: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(64 << 10),
            max_body,
        }
    }

    /// Changes the largest body accepted (a peer connection, once identified, accepts
    /// snapshot-sized raft messages).
    pub fn set_max_body(&mut self, max_body: usize) {
        self.max_body = max_body;
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    pub async fn next(&mut self) -> io::Result<Option<(Kind, Bytes)>> {
        loop {
            match frame::decode_frame(&self.buf, self.max_body) {
                Ok(Some((kind, _, used))) => {
                    let mut f = self.buf.split_to(used);
                    let body = f.split_off(frame::HEADER_LEN).freeze();
                    return Ok(Some((kind, body)));
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if self.buf.capacity() - self.buf.len() < 16 << 10 {
                self.buf.reserve(64 << 10);
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a frame",
                    ))
                };
            }
        }
    }
}

/// Maps a decode error to `InvalidData`.
pub fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
