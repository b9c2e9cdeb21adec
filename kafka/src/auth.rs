//! The SASL gate of a connection that has not authenticated yet: what each request gets
//! (see `conn`'s invariants and [`crate::sasl`] for the mechanisms).

use crate::api::{self, Request};
use crate::error::KafkaError;
use crate::sasl::{SaslUsers, Session, Step, MECHANISMS};
use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// What a request on a connection not yet authenticated gets.
pub(crate) enum Gate {
    /// Served as usual (ApiVersions).
    Pass,
    /// This answer; the exchange goes on.
    Answer(Bytes),
    /// This answer (if any), then the connection closes.
    Close(Option<Bytes>, KafkaError),
}

fn mechanisms() -> Vec<StrBytes> {
    MECHANISMS
        .iter()
        .map(|m| StrBytes::from_static_str(m))
        .collect()
}

/// The gate's decision for `req` in `session`.
pub(crate) fn gate(users: &SaslUsers, session: &mut Session, req: &Request) -> Gate {
    let id = req.header.correlation_id;
    let encode = |r: ResponseKind| api::encode(id, req.key, req.version, &r);
    match &req.body {
        None | Some(RequestKind::ApiVersions(_)) => Gate::Pass,
        Some(RequestKind::SaslHandshake(h)) => {
            let ok = session.handshake(&h.mechanism);
            let r = SaslHandshakeResponse::default()
                .with_error_code(if ok {
                    0
                } else {
                    ResponseError::UnsupportedSaslMechanism.code()
                })
                .with_mechanisms(mechanisms());
            let answer = encode(ResponseKind::SaslHandshake(r));
            if ok {
                answer.map_or_else(encode_failed, Gate::Answer)
            } else {
                Gate::Close(
                    answer,
                    KafkaError::Auth(format!("mechanism `{}` is not offered", &*h.mechanism)),
                )
            }
        }
        Some(RequestKind::SaslAuthenticate(a)) => {
            let (code, message, bytes, outcome) = match session.step(users, &a.auth_bytes) {
                Step::Continue(b) => (0, None, b, None),
                Step::Done { user, reply } => {
                    tracing::debug!(%user, "kafka client authenticated");
                    (0, None, reply, None)
                }
                Step::Failed(why) => (
                    ResponseError::SaslAuthenticationFailed.code(),
                    // The client is told only that it failed; the node logs why.
                    Some(StrBytes::from_static_str("authentication failed")),
                    Vec::new(),
                    Some(why),
                ),
            };
            let r = SaslAuthenticateResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_auth_bytes(Bytes::from(bytes));
            let answer = encode(ResponseKind::SaslAuthenticate(r));
            match outcome {
                None => answer.map_or_else(encode_failed, Gate::Answer),
                Some(why) => Gate::Close(answer, KafkaError::Auth(why)),
            }
        }
        Some(_) => Gate::Close(
            None,
            KafkaError::Auth(format!(
                "{:?} before authentication (SaslHandshake, SaslAuthenticate)",
                req.key
            )),
        ),
    }
}

fn encode_failed() -> Gate {
    Gate::Close(
        None,
        KafkaError::Encode("a SASL answer could not be encoded".into()),
    )
}

/// SaslHandshake / SaslAuthenticate on a listener without SASL, or after authentication.
pub(crate) fn unexpected(key: ApiKey) -> ResponseKind {
    if key == ApiKey::SaslHandshake {
        ResponseKind::SaslHandshake(
            SaslHandshakeResponse::default()
                .with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
        )
    } else {
        ResponseKind::SaslAuthenticate(
            SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "no SASL exchange in progress on this connection",
                ))),
        )
    }
}
