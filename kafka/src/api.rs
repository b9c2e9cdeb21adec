//! The APIs and versions the listener offers, request decoding, and dispatch.
//!
//! Versions stop where Kafka moved from topic names to topic ids (Fetch 13, Produce 13):
//! clients negotiate down through ApiVersions, and every current librdkafka, kcat and Java
//! client speaks the versions offered here.

use crate::conn::Broker;
use crate::error::KafkaError;
use crate::{admin, coordinator, fetch, metadata, produce};
use bytes::{Bytes, BytesMut};
use eventstream_node::Producer;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use std::sync::Arc;

/// Every API offered, with the lowest and highest version.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// One connection's side of every request: its publishing side and the client's address.
#[derive(Debug)]
pub(crate) struct Client {
    pub producer: Producer,
    /// The client's IP address (DescribeGroups shows it).
    pub host: String,
}

/// The versions of `key` offered, if it is.
fn offered(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// A decoded request.
#[derive(Debug)]
pub(crate) struct Request {
    pub header: RequestHeader,
    pub key: ApiKey,
    pub version: i16,
    /// `None`: an ApiVersions request of a version not offered (answered with the error).
    pub body: Option<RequestKind>,
}

/// Decodes one request (the bytes after its size prefix).
pub(crate) fn decode(mut buf: Bytes) -> Result<Request, KafkaError> {
    let malformed = |api: String, version: i16, reason: String| KafkaError::Malformed {
        api,
        version,
        reason,
    };
    if buf.len() < 4 {
        return Err(malformed("?".into(), -1, "shorter than a header".into()));
    }
    let raw_key = i16::from_be_bytes([buf[0], buf[1]]);
    let version = i16::from_be_bytes([buf[2], buf[3]]);
    let key = ApiKey::try_from(raw_key)
        .map_err(|_| malformed(raw_key.to_string(), version, "unknown API key".into()))?;
    let name = format!("{key:?}");
    let in_range = offered(key).is_some_and(|(lo, hi)| (lo..=hi).contains(&version));
    if !in_range && key != ApiKey::ApiVersions {
        return Err(malformed(
            name,
            version,
            "API or version not offered".into(),
        ));
    }
    // An ApiVersions request of a newer version is read with the oldest header (its first
    // fields are the same in every version) and answered with the error.
    let header_version = if in_range {
        key.request_header_version(version)
    } else {
        1
    };
    let header = RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| malformed(name.clone(), version, format!("header: {e:#}")))?;
    let body = if in_range {
        Some(
            RequestKind::decode(key, &mut buf, version)
                .map_err(|e| malformed(name.clone(), version, format!("{e:#}")))?,
        )
    } else {
        None
    };
    Ok(Request {
        header,
        key,
        version,
        body,
    })
}

/// What [`check_request`]'s produce batches may expand to in all (the listener's default:
/// four times the default `kafka.max_request_bytes`).
const DECOMPRESSED_PER_REQUEST_BYTES: usize = 64 << 20;

/// The listener's decoder entry point without a node: decodes one request (the bytes after
/// its size prefix) as the listener does and, for a produce, every partition's record batches
/// into events. The number of events, or why the request would close its connection (or,
/// for records, be refused). What the fuzzer drives.
pub fn check_request(buf: Bytes) -> Result<usize, KafkaError> {
    let req = decode(buf)?;
    let Some(RequestKind::Produce(p)) = req.body else {
        return Ok(0);
    };
    let budget = crate::decompress::Budget::new(DECOMPRESSED_PER_REQUEST_BYTES);
    let mut n = 0;
    for t in &p.topic_data {
        for part in &t.partition_data {
            let records = part.records.clone().unwrap_or_default();
            n += crate::records::decode_produce(
                &t.name.0,
                &records,
                eventstream_core::Priority::Low,
                &budget,
            )?
            .len();
        }
    }
    Ok(n)
}

/// Answers one request: the encoded response header and body, or `None` when the request
/// gets no answer (an `acks=0` produce).
/// A produce request comes with its [`produce::Turn`] in the connection's order.
pub(crate) async fn answer(
    broker: Arc<Broker>,
    client: Arc<Client>,
    req: Request,
    turn: Option<produce::Turn>,
) -> Option<Bytes> {
    let correlation_id = req.header.correlation_id;
    let Some(body) = req.body else {
        return encode(correlation_id, ApiKey::ApiVersions, 0, &api_versions(true));
    };
    let v = req.version;
    let response = match body {
        RequestKind::ApiVersions(_) => api_versions(false),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::answer(&broker, r, v).await),
        RequestKind::Produce(r) => {
            let turn = turn.unwrap_or_else(|| produce::Turn::next(&mut None));
            match produce::answer(&broker, &client, r, turn).await {
                Some(resp) => ResponseKind::Produce(resp),
                None => return None,
            }
        }
        other => dispatch(&broker, &client, &req.header, other, v).await?,
    };
    encode(correlation_id, req.key, v, &response)
}

/// Every request but ApiVersions, Metadata and Produce: the group coordinator's, reads and
/// administration.
async fn dispatch(
    broker: &Broker,
    client: &Client,
    header: &RequestHeader,
    body: RequestKind,
    v: i16,
) -> Option<ResponseKind> {
    Some(match body {
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(coordinator::find_coordinator(broker, r, v))
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(
            coordinator::join_group(broker, r, header, &client.host, v).await,
        ),
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(coordinator::sync_group(broker, r).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(coordinator::heartbeat(broker, r)),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(coordinator::leave_group(broker, r, v))
        }
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(
            coordinator::offset_commit(broker, &client.producer, r).await,
        ),
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(coordinator::offset_fetch(broker, r, v))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(coordinator::list_groups(broker, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(coordinator::describe_groups(broker, r))
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::answer(broker, r, v).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(fetch::list_offsets(broker, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(broker, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(admin::describe_configs(broker, r))
        }
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(admin::init_producer_id(r)),
        // A connection that must authenticate is answered by `auth::gate` until it has.
        RequestKind::SaslHandshake(_) => crate::auth::unexpected(ApiKey::SaslHandshake),
        RequestKind::SaslAuthenticate(_) => crate::auth::unexpected(ApiKey::SaslAuthenticate),
        other => {
            // `decode` lets only offered APIs through.
            tracing::error!(request = ?other, "kafka request without a handler");
            return None;
        }
    })
}

pub(crate) fn encode(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    response: &ResponseKind,
) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    // ApiVersions answers always carry the oldest header, whatever the version (KIP-511).
    let header_version = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let done = header
        .encode(&mut buf, header_version)
        .and_then(|_| response.encode(&mut buf, version));
    match done {
        Ok(()) => Some(buf.freeze()),
        Err(e) => {
            tracing::error!(api = ?key, version, error = %e, "encoding a kafka response");
            None
        }
    }
}

fn api_versions(unsupported: bool) -> ResponseKind {
    let keys = SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect();
    let code = if unsupported {
        ResponseError::UnsupportedVersion.code()
    } else {
        0
    };
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(code)
            .with_api_keys(keys),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn request(key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn offered_versions_are_ones_the_codec_knows() {
        for (k, lo, hi) in SUPPORTED {
            let v = k.valid_versions();
            assert!(
                v.min <= *lo && *hi <= v.max,
                "{k:?} {lo}..={hi} outside {v:?}"
            );
        }
    }

    #[test]
    fn requests_decode_and_bad_ones_are_refused() {
        let ok = decode(request(ApiKey::Metadata, 12, &MetadataRequest::default())).unwrap();
        assert_eq!(
            (ok.key, ok.version, ok.header.correlation_id),
            (ApiKey::Metadata, 12, 7)
        );
        // A newer ApiVersions than offered is still answered (with the error).
        let newer = decode(request(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        ));
        assert!(newer.unwrap().body.is_some());
        let mut v9 = request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).to_vec();
        v9[3] = 9;
        assert!(decode(Bytes::from(v9)).unwrap().body.is_none());
        // Fetch 13 (topic ids) is not offered: the connection closes.
        let fetch13 = request(
            ApiKey::Fetch,
            13,
            &kafka_protocol::messages::FetchRequest::default(),
        );
        assert!(decode(fetch13)
            .unwrap_err()
            .to_string()
            .contains("not offered"));
        for bad in [
            &b""[..],
            b"\x00",
            b"\x7f\x7f\x00\x00",
            b"\x00\x03\x00\x0c\x00",
        ] {
            assert!(decode(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
