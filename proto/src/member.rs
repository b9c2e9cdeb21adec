//! A cluster member as configured and as carried in conf-change entries and admin requests:
//! `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT][+KAFKA_HOST:KAFKA_PORT]`: the address peers and native
//! clients use, then optionally the HTTP (metrics, API) address and the Kafka-protocol
//! listener's address (what Kafka clients are told to connect to, Kafka's advertised
//! listener). `+` cannot occur in a host or port, so the parts never mix.

use crate::error::DecodeError;

/// One member: its raft id and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Raft id (non-zero).
    pub id: u64,
    /// Client + peer address (`host:port`).
    pub addr: String,
    /// HTTP (metrics/API) address, if known.
    pub http_addr: Option<String>,
    /// Kafka-protocol listener address advertised to Kafka clients, if it has one.
    pub kafka_addr: Option<String>,
}

impl Member {
    /// The member as `ID=HOST:PORT[@HTTP][+KAFKA]` (what [`parse_member`] reads).
    pub fn spec(&self) -> String {
        let mut s = format!("{}={}", self.id, self.addr);
        if let Some(h) = &self.http_addr {
            s.push('@');
            s.push_str(h);
        }
        if let Some(k) = &self.kafka_addr {
            s.push('+');
            s.push_str(k);
        }
        s
    }

    /// A member with only its peer/client address.
    pub fn new(id: u64, addr: impl Into<String>) -> Self {
        Member {
            id,
            addr: addr.into(),
            http_addr: None,
            kafka_addr: None,
        }
    }
}

/// Parses one `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT][+KAFKA_HOST:KAFKA_PORT]` member. The error's reason quotes the
/// specification and says what is wrong with it.
pub fn parse_member(s: &str) -> Result<Member, DecodeError> {
    let bad = |reason: String| DecodeError::Invalid {
        field: "member",
        reason: format!("`{s}`: {reason}"),
    };
    let (id, rest) = s
        .split_once('=')
        .ok_or_else(|| bad("expected ID=HOST:PORT".into()))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|e| bad(format!("id is not a number ({e})")))?;
    if id == 0 {
        return Err(bad("id 0 is reserved".into()));
    }
    let (rest, kafka) = match rest.split_once('+') {
        Some((r, k)) => (r, Some(k.trim().to_owned())),
        None => (rest, None),
    };
    let (addr, http) = match rest.split_once('@') {
        Some((a, h)) => (a.trim(), Some(h.trim().to_owned())),
        None => (rest.trim(), None),
    };
    check_addr(addr).map_err(bad)?;
    for extra in [&http, &kafka].into_iter().flatten() {
        check_addr(extra).map_err(bad)?;
    }
    Ok(Member {
        id,
        addr: addr.to_owned(),
        http_addr: http,
        kafka_addr: kafka,
    })
}

/// Checks that `a` is `HOST:PORT` with a non-empty host and a valid port.
pub fn check_addr(a: &str) -> Result<(), String> {
    let (host, port) = a
        .rsplit_once(':')
        .ok_or_else(|| format!("address `{a}` has no port"))?;
    if host.is_empty() {
        return Err(format!("address `{a}` has no host"));
    }
    port.parse::<u16>()
        .map_err(|e| format!("port of `{a}`: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_print_back() {
        let m = parse_member("2=127.0.0.1:7002@127.0.0.1:9002").unwrap();
        assert_eq!(m.http_addr.as_deref(), Some("127.0.0.1:9002"));
        assert_eq!(parse_member(&m.spec()).unwrap(), m);
        let k = parse_member("3=10.0.0.3:7003@10.0.0.3:9003+kafka-3.example:9092").unwrap();
        assert_eq!(k.http_addr.as_deref(), Some("10.0.0.3:9003"));
        assert_eq!(k.kafka_addr.as_deref(), Some("kafka-3.example:9092"));
        assert_eq!(parse_member(&k.spec()).unwrap(), k);
        let only_kafka = parse_member("4=h:1+h:9092").unwrap();
        assert_eq!(
            (only_kafka.http_addr, only_kafka.kafka_addr.as_deref()),
            (None, Some("h:9092"))
        );
        for bad in [
            "x",
            "0=h:1",
            "2=host",
            "2=:1",
            "2=h:99999",
            "a=h:1",
            "2=h:1@x",
            "2=h:1+x",
            "2=h:1@h:2+",
        ] {
            let err = parse_member(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }
}
