//! Decompression of produced record batches with a cap on what they expand to.
//!
//! A compressed batch says nothing trustworthy about its decompressed size, and zstd or gzip
//! expand highly repetitive input by orders of magnitude: without a cap, a small request
//! could make the node hold gigabytes. Every codec here decompresses into a buffer that may
//! grow only while the request's [`Budget`] lasts; past it the batch is refused (and the
//! produce partition answered `CORRUPT_MESSAGE`), before the memory is used.
//!
//! Formats (as Kafka writes them): gzip streams, LZ4 frames, zstd frames, and snappy either
//! in xerial framing (a 16-byte header starting `\x82SNAPPY\0`, then `u32 length | raw
//! block` chunks, big-endian) or as one raw block.

use bytes::Bytes;
use kafka_protocol::records::Compression;
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Decompressed bytes one request's batches may expand to in all (shared by the tasks that
/// decode its partitions).
#[derive(Debug)]
pub struct Budget(AtomicUsize);

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Budget(AtomicUsize::new(bytes))
    }

    /// Takes `n` bytes, or says how much was left. Relaxed: the count is the only state.
    fn take(&self, n: usize) -> io::Result<()> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(n))
            .map(|_| ())
            .map_err(|left| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "records expand past the request's decompression budget ({left} bytes left, {n} more asked)"
                    ),
                )
            })
    }

    fn left(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// `compressed` decompressed by `codec`, within `budget`.
pub fn decompress(compressed: &Bytes, codec: Compression, budget: &Budget) -> io::Result<Bytes> {
    match codec {
        Compression::None => Ok(compressed.clone()),
        Compression::Gzip => read_capped(flate2::read::GzDecoder::new(&compressed[..]), budget),
        Compression::Zstd => {
            read_capped(zstd::stream::read::Decoder::new(&compressed[..])?, budget)
        }
        Compression::Lz4 => read_capped(lz4::Decoder::new(&compressed[..])?, budget),
        Compression::Snappy => snappy(compressed, budget),
    }
}

/// Reads `r` to its end, at most the budget's bytes.
fn read_capped(r: impl Read, budget: &Budget) -> io::Result<Bytes> {
    let cap = budget.left();
    let mut out = Vec::new();
    r.take(cap as u64 + 1).read_to_end(&mut out)?;
    budget.take(out.len())?;
    Ok(out.into())
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER: usize = 16;

fn snappy(src: &Bytes, budget: &Budget) -> io::Result<Bytes> {
    if !src.starts_with(XERIAL_MAGIC) {
        let mut out = Vec::new();
        snappy_block(src, budget, &mut out)?;
        return Ok(out.into());
    }
    let mut rest = src
        .get(XERIAL_HEADER..)
        .ok_or_else(|| bad("short xerial header"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad("truncated xerial chunk length"))?;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| bad("xerial chunk longer than the data"))?;
        snappy_block(block, budget, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out.into())
}

/// Appends one raw snappy block to `out`; its stated length is charged before allocating.
fn snappy_block(block: &[u8], budget: &Budget, out: &mut Vec<u8>) -> io::Result<()> {
    let n = snap::raw::decompress_len(block).map_err(|e| bad(&e.to_string()))?;
    budget.take(n)?;
    let start = out.len();
    out.resize(start + n, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| bad(&e.to_string()))?;
    Ok(())
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("snappy: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(value: Bytes, compression: Compression) -> Bytes {
        let r = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            key: None,
            value: Some(value),
            headers: [(StrBytes::from_static_str("h"), None)]
                .into_iter()
                .collect(),
        };
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, [&r], &options).unwrap();
        buf.freeze()
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn decode(b: &Bytes, budget: &Budget) -> Result<usize, String> {
        let mut buf = b.clone();
        RecordBatchDecoder::decode_with_custom_compression(
            &mut buf,
            Some(|c: &mut Bytes, codec| decompress(c, codec, budget).map_err(Into::into)),
        )
        .map(|set| set.records.len())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn every_codec_decodes_as_the_crate_does_within_the_budget() {
        for c in CODECS {
            let b = batch(Bytes::from(vec![b'x'; 10_000]), c);
            assert_eq!(decode(&b, &Budget::new(1 << 20)), Ok(1), "{c:?}");
            let mut plain = b.clone();
            assert_eq!(
                RecordBatchDecoder::decode(&mut plain)
                    .unwrap()
                    .records
                    .len(),
                1
            );
        }
    }

    #[test]
    fn a_batch_expanding_past_the_budget_is_refused() {
        // 8 MiB of one byte compresses to kilobytes with every codec.
        for c in &CODECS[1..] {
            let b = batch(Bytes::from(vec![0u8; 8 << 20]), *c);
            assert!(b.len() < 1 << 20, "{c:?} compressed to {}", b.len());
            let err = decode(&b, &Budget::new(1 << 20)).unwrap_err();
            assert!(err.contains("budget"), "{c:?}: {err}");
        }
    }

    #[test]
    fn the_budget_is_shared_by_a_requests_batches() {
        let budget = Budget::new(30_000);
        let b = batch(Bytes::from(vec![b'y'; 10_000]), Compression::Zstd);
        assert_eq!(decode(&b, &budget), Ok(1));
        assert_eq!(decode(&b, &budget), Ok(1));
        assert!(decode(&b, &budget).unwrap_err().contains("budget"));
    }
}
