//! A cluster member as configured and as carried in conf-change entries and admin requests:
//! `ID=HOST:PORT` or `ID=HOST:PORT@HTTP_HOST:HTTP_PORT`.

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
}

impl Member {
    /// The member as `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT]` (what [`parse_member`] reads).
    pub fn spec(&self) -> String {
        match &self.http_addr {
            Some(h) => format!("{}={}@{h}", self.id, self.addr),
            None => format!("{}={}", self.id, self.addr),
        }
    }
}

/// Parses one `ID=HOST:PORT[@HTTP_HOST:HTTP_PORT]` member. The error's reason quotes the
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
    let (addr, http) = match rest.split_once('@') {
        Some((a, h)) => (a.trim(), Some(h.trim().to_owned())),
        None => (rest.trim(), None),
    };
    check_addr(addr).map_err(bad)?;
    if let Some(h) = &http {
        check_addr(h).map_err(bad)?;
    }
    Ok(Member {
        id,
        addr: addr.to_owned(),
        http_addr: http,
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
        for bad in [
            "x",
            "0=h:1",
            "2=host",
            "2=:1",
            "2=h:99999",
            "a=h:1",
            "2=h:1@x",
        ] {
            let err = parse_member(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }
}
