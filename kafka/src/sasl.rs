//! SASL authentication of Kafka clients: PLAIN and SCRAM-SHA-256 (RFC 5802, RFC 7677), the
//! mechanisms Kafka's `SaslHandshake` / `SaslAuthenticate` carry (KIP-152).
//!
//! * [`SaslUsers`] — the users a listener accepts, read from `kafka.sasl_users_file`
//!   (`USER:PASSWORD` per line). Passwords are not kept: each user's SCRAM credential (a
//!   random salt, 4096 iterations, StoredKey and ServerKey) is derived once at start, and PLAIN
//!   is checked against the same credential.
//! * [`Session`] — one connection's exchange: mechanism chosen by the handshake, then one
//!   (PLAIN) or two (SCRAM) authenticate rounds, ending authenticated or failed.
//!
//! Invariants:
//! * A connection is authenticated only after a proof checked against a user's credential;
//!   every malformed message, unknown user, wrong password or out-of-order step fails the
//!   session for good (the listener answers `SASL_AUTHENTICATION_FAILED` and closes).
//! * Comparisons of secrets take the same time whatever bytes differ.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;

/// The mechanisms offered, as SaslHandshake names them.
pub const MECHANISMS: [&str; 2] = ["SCRAM-SHA-256", "PLAIN"];

/// PBKDF2 iterations of the derived credentials (Kafka's minimum for SCRAM-SHA-256).
const ITERATIONS: u32 = 4096;

/// One user's SCRAM-SHA-256 credential.
#[derive(Clone)]
struct Credential {
    salt: Vec<u8>,
    iterations: NonZeroU32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg);
    tag.as_ref().try_into().expect("32 bytes")
}

fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

/// Equal bytes, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Credential {
    fn derive(password: &[u8], salt: Vec<u8>, iterations: NonZeroU32) -> Credential {
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password,
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        Credential {
            salt,
            iterations,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    fn matches_password(&self, password: &[u8]) -> bool {
        let other = Credential::derive(password, self.salt.clone(), self.iterations);
        same(&other.stored_key, &self.stored_key)
    }
}

/// The users a listener accepts (see the module's docs). Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct SaslUsers {
    users: HashMap<String, Credential>,
}

impl SaslUsers {
    /// Parses `USER:PASSWORD` lines (blank lines and `#` comments skipped; the password is
    /// everything after the first `:`). Errors name the line.
    pub fn parse(text: &str) -> Result<SaslUsers, String> {
        let rng = ring::rand::SystemRandom::new();
        let iterations = NonZeroU32::new(ITERATIONS).expect("non-zero");
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (user, password) = line
                .split_once(':')
                .filter(|(u, p)| !u.is_empty() && !p.is_empty())
                .ok_or_else(|| format!("line {}: expected USER:PASSWORD", i + 1))?;
            if user.contains(',') || user.contains('=') {
                return Err(format!(
                    "line {}: user `{user}` has a `,` or `=`, which SCRAM cannot carry unescaped",
                    i + 1
                ));
            }
            let mut salt = vec![0u8; 16];
            rng.fill(&mut salt)
                .map_err(|_| "the system's random source failed".to_owned())?;
            let cred = Credential::derive(password.as_bytes(), salt, iterations);
            if users.insert(user.to_owned(), cred).is_some() {
                return Err(format!("line {}: user `{user}` is listed twice", i + 1));
            }
        }
        if users.is_empty() {
            return Err("no users (expected USER:PASSWORD lines)".into());
        }
        Ok(SaslUsers { users })
    }

    /// Reads and parses `path`.
    pub fn from_file(path: &Path) -> Result<SaslUsers, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        SaslUsers::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True without users (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// What a session's step led to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send these bytes and wait for the next round.
    Continue(Vec<u8>),
    /// Authenticated as the user; send these bytes (SCRAM's server-final, empty for PLAIN).
    Done { user: String, reply: Vec<u8> },
    /// Refused, for this reason (the connection closes).
    Failed(String),
}

#[derive(Debug)]
enum State {
    /// Waiting for SaslHandshake.
    Start,
    /// PLAIN: waiting for the one message.
    Plain,
    /// SCRAM: waiting for client-first.
    ScramFirst,
    /// SCRAM: waiting for client-final.
    ScramFinal {
        user: String,
        cred: Credential,
        nonce: String,
        gs2_header: String,
        /// client-first-bare + "," + server-first.
        auth_prefix: String,
    },
    Done,
    Failed,
}

/// One connection's SASL exchange (see the module's docs).
#[derive(Debug)]
pub(crate) struct Session {
    state: State,
}

impl Session {
    pub(crate) fn new() -> Self {
        Session {
            state: State::Start,
        }
    }

    /// True once a step ended in [`Step::Done`].
    pub(crate) fn authenticated(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// SaslHandshake: whether `mechanism` is offered (and now chosen).
    pub(crate) fn handshake(&mut self, mechanism: &str) -> bool {
        if !matches!(self.state, State::Start) {
            self.state = State::Failed;
            return false;
        }
        self.state = match mechanism {
            "PLAIN" => State::Plain,
            "SCRAM-SHA-256" => State::ScramFirst,
            _ => return false,
        };
        true
    }

    /// One SaslAuthenticate round's bytes.
    pub(crate) fn step(&mut self, users: &SaslUsers, msg: &[u8]) -> Step {
        let mut nonce = [0u8; 18];
        if ring::rand::SystemRandom::new().fill(&mut nonce).is_err() {
            return self.fail("the system's random source failed");
        }
        self.step_with_nonce(users, msg, &B64.encode(nonce))
    }

    fn fail(&mut self, why: impl Into<String>) -> Step {
        self.state = State::Failed;
        Step::Failed(why.into())
    }

    /// [`step`](Self::step) with the server nonce given (the tests use RFC 7677's).
    fn step_with_nonce(&mut self, users: &SaslUsers, msg: &[u8], server_nonce: &str) -> Step {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Plain => self.plain(users, msg),
            State::ScramFirst => self.scram_first(users, msg, server_nonce),
            State::ScramFinal {
                user,
                cred,
                nonce,
                gs2_header,
                auth_prefix,
            } => self.scram_final(msg, user, &cred, &nonce, &gs2_header, &auth_prefix),
            State::Start => self.fail("SaslAuthenticate before SaslHandshake"),
            State::Done | State::Failed => self.fail("the exchange is over"),
        }
    }

    /// PLAIN: `authzid NUL authcid NUL password` (RFC 4616).
    fn plain(&mut self, users: &SaslUsers, msg: &[u8]) -> Step {
        let parts: Vec<&[u8]> = msg.split(|b| *b == 0).collect();
        let [authzid, user, password] = parts[..] else {
            return self.fail("PLAIN message is not authzid NUL user NUL password");
        };
        let Ok(user) = std::str::from_utf8(user) else {
            return self.fail("PLAIN user is not UTF-8");
        };
        if !authzid.is_empty() && authzid != user.as_bytes() {
            return self.fail("PLAIN authorization id differs from the user");
        }
        match users.users.get(user) {
            Some(c) if c.matches_password(password) => {
                self.state = State::Done;
                Step::Done {
                    user: user.to_owned(),
                    reply: Vec::new(),
                }
            }
            _ => self.fail(format!("wrong user or password (user `{user}`)")),
        }
    }

    /// SCRAM client-first: `gs2-header client-first-bare` with `n=user,r=nonce[,ext...]`.
    fn scram_first(&mut self, users: &SaslUsers, msg: &[u8], server_nonce: &str) -> Step {
        let Ok(msg) = std::str::from_utf8(msg) else {
            return self.fail("SCRAM client-first is not UTF-8");
        };
        // gs2-header: "n,," or "n,a=AUTHZID," (no channel binding: "y"/"p" are refused).
        let Some(rest) = msg.strip_prefix("n,") else {
            return self
                .fail("SCRAM channel binding is not supported (gs2 header must start with n,)");
        };
        let Some((authzid, bare)) = rest.split_once(',') else {
            return self.fail("SCRAM client-first has no gs2 header");
        };
        let gs2_header = format!("n,{authzid},");
        let mut fields = bare.split(',');
        let (Some(n), Some(r)) = (fields.next(), fields.next()) else {
            return self.fail("SCRAM client-first lacks n= and r=");
        };
        let (Some(user), Some(client_nonce)) = (n.strip_prefix("n="), r.strip_prefix("r=")) else {
            return self.fail("SCRAM client-first lacks n= and r=");
        };
        let user = user.replace("=2C", ",").replace("=3D", "=");
        if client_nonce.is_empty() {
            return self.fail("SCRAM client nonce is empty");
        }
        if let Some(a) = authzid.strip_prefix("a=") {
            if a.replace("=2C", ",").replace("=3D", "=") != user {
                return self.fail("SCRAM authorization id differs from the user");
            }
        } else if !authzid.is_empty() {
            return self.fail("SCRAM gs2 header is malformed");
        }
        let Some(cred) = users.users.get(&user).cloned() else {
            return self.fail(format!("unknown user `{user}`"));
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&cred.salt),
            cred.iterations
        );
        self.state = State::ScramFinal {
            user,
            cred,
            nonce,
            gs2_header,
            auth_prefix: format!("{bare},{server_first}"),
        };
        Step::Continue(server_first.into_bytes())
    }

    /// SCRAM client-final: `c=b64(gs2-header),r=nonce[,ext...],p=b64(proof)`.
    fn scram_final(
        &mut self,
        msg: &[u8],
        user: String,
        cred: &Credential,
        nonce: &str,
        gs2_header: &str,
        auth_prefix: &str,
    ) -> Step {
        let Ok(msg) = std::str::from_utf8(msg) else {
            return self.fail("SCRAM client-final is not UTF-8");
        };
        let Some((without_proof, proof)) = msg.rsplit_once(",p=") else {
            return self.fail("SCRAM client-final has no proof");
        };
        let mut fields = without_proof.split(',');
        if fields.next() != Some(&format!("c={}", B64.encode(gs2_header))) {
            return self.fail("SCRAM channel binding data differs from the gs2 header");
        }
        if fields.next() != Some(&format!("r={nonce}")) {
            return self.fail("SCRAM nonce differs from the one agreed");
        }
        let Ok(proof) = B64.decode(proof) else {
            return self.fail("SCRAM proof is not base64");
        };
        if proof.len() != 32 {
            return self.fail("SCRAM proof is not 32 bytes");
        }
        let auth_message = format!("{auth_prefix},{without_proof}");
        let signature = hmac_sha256(&cred.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if !same(&sha256(&client_key), &cred.stored_key) {
            return self.fail(format!("wrong password for user `{user}`"));
        }
        let server_signature = hmac_sha256(&cred.server_key, auth_message.as_bytes());
        self.state = State::Done;
        Step::Done {
            user,
            reply: format!("v={}", B64.encode(server_signature)).into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example user: `user` / `pencil`, with its salt.
    fn rfc_users() -> SaslUsers {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = Credential::derive(b"pencil", salt, NonZeroU32::new(4096).unwrap());
        SaslUsers {
            users: [("user".to_owned(), cred)].into_iter().collect(),
        }
    }

    #[test]
    fn scram_sha_256_follows_rfc_7677s_example() {
        let users = rfc_users();
        let mut s = Session::new();
        assert!(s.handshake("SCRAM-SHA-256"));
        let first = s.step_with_nonce(
            &users,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        );
        assert_eq!(
            first,
            Step::Continue(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        let last = s.step_with_nonce(
            &users,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "unused",
        );
        assert_eq!(
            last,
            Step::Done {
                user: "user".into(),
                reply: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
            }
        );
        assert!(s.authenticated());
    }

    #[test]
    fn a_wrong_proof_nonce_or_user_fails_for_good() {
        let users = rfc_users();
        let first = |msg: &[u8]| {
            let mut s = Session::new();
            assert!(s.handshake("SCRAM-SHA-256"));
            let step = s.step_with_nonce(&users, msg, "SERVER");
            (s, step)
        };
        let (_, unknown) = first(b"n,,n=nobody,r=abc");
        assert!(matches!(unknown, Step::Failed(ref w) if w.contains("unknown user")));
        let (_, bound) = first(b"p=tls-unique,,n=user,r=abc");
        assert!(matches!(bound, Step::Failed(_)));
        // A proof made for another password.
        let (mut s, _) = first(b"n,,n=user,r=abc");
        let bad = s.step_with_nonce(
            &users,
            format!("c=biws,r=abcSERVER,p={}", B64.encode([7u8; 32])).as_bytes(),
            "x",
        );
        assert!(
            matches!(bad, Step::Failed(ref w) if w.contains("wrong password")),
            "{bad:?}"
        );
        assert!(!s.authenticated());
        assert!(matches!(s.step(&users, b"anything"), Step::Failed(_)));
        // The nonce must be the one agreed.
        let (mut s, _) = first(b"n,,n=user,r=abc");
        let replay = s.step_with_nonce(&users, b"c=biws,r=abcOTHER,p=AAAA", "x");
        assert!(matches!(replay, Step::Failed(ref w) if w.contains("nonce")));
    }

    #[test]
    fn plain_checks_the_password_against_the_derived_credential() {
        let users = SaslUsers::parse("# users\nalice:s3cret:with:colons\n\nbob:hunter2\n").unwrap();
        assert_eq!(users.len(), 2);
        let plain = |msg: &[u8]| {
            let mut s = Session::new();
            assert!(s.handshake("PLAIN"));
            s.step(&users, msg)
        };
        assert_eq!(
            plain(b"\0alice\0s3cret:with:colons"),
            Step::Done {
                user: "alice".into(),
                reply: Vec::new()
            }
        );
        assert!(matches!(plain(b"\0alice\0wrong"), Step::Failed(_)));
        assert!(matches!(plain(b"\0carol\0hunter2"), Step::Failed(_)));
        assert!(matches!(
            plain(b"bob\0alice\0s3cret:with:colons"),
            Step::Failed(_)
        ));
        assert!(matches!(plain(b"garbage"), Step::Failed(_)));
        let mut s = Session::new();
        assert!(!s.handshake("GSSAPI"), "not offered");
        assert!(matches!(s.step(&users, b"\0bob\0hunter2"), Step::Failed(_)));
    }

    #[test]
    fn a_bad_users_file_names_the_line() {
        for (text, want) in [
            ("", "no users"),
            ("alice\n", "line 1"),
            ("alice:a\nalice:b\n", "line 2: user `alice` is listed twice"),
            ("a,b:c\n", "line 1"),
            (":pw\n", "line 1"),
        ] {
            let err = SaslUsers::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
