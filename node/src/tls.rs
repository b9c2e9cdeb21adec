//! The node's TLS (rustls, `ring` provider) for its one port, and its admin token file.
//!
//! * [`NodeTls`] — a node's acceptor (its certificate; client certificates verified against
//!   `tls.ca`, required when `tls.client_auth`, otherwise optional) and its connector for
//!   dialling peers (verifies the peer's server certificate against `tls.ca` and presents the
//!   node's own certificate). Built from the node's TLS settings; every file problem names its
//!   field. The PEM and rustls plumbing is the client crate's.
//!
//! Invariants:
//! * With TLS on, every peer connection is mutual TLS whatever `tls.client_auth` says: a
//!   connection whose `Hello` claims to be raft peer N is refused unless it presented a
//!   certificate that chains to `tls.ca` **and** is valid for the host of member N's address
//!   (or for `tls.server_name` when set) — so a client certificate cannot impersonate a node.

use crate::config::NodeConfig;
use crate::error::NodeError;
use eventstream_client::tls::{
    client_config, load_certs, load_key, load_roots, provider, server_name_for, ClientTls,
    ConnReader, ConnWriter,
};
use eventstream_proto::frame::MAX_TOKEN_LEN;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use std::io;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsStream};

fn bad(field: &str, path: &Path, reason: impl std::fmt::Display) -> NodeError {
    NodeError::config(field, format!("{}: {reason}", path.display()))
}

/// A node's TLS: acceptor for its port, connector for its peers.
pub struct NodeTls {
    acceptor: TlsAcceptor,
    /// Dials peers, presenting this node's certificate.
    dialer: ClientTls,
    server_name: Option<String>,
    client_auth: bool,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("server_name", &self.server_name)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// `None` when TLS is off (no `tls.cert`, `tls.key`, `tls.ca`); an error naming the field
    /// when it is half-configured or a file is missing, unreadable or not PEM of the right kind.
    pub fn from_config(cfg: &NodeConfig) -> Result<Option<Arc<NodeTls>>, NodeError> {
        let (cert, key, ca) = match (&cfg.tls.cert, &cfg.tls.key, &cfg.tls.ca) {
            (None, None, None) => {
                if cfg.tls.client_auth {
                    return Err(NodeError::config(
                        "tls.client_auth",
                        "needs TLS: set tls.cert, tls.key and tls.ca",
                    ));
                }
                if cfg.tls.server_name.is_some() {
                    return Err(NodeError::config(
                        "tls.server_name",
                        "needs TLS: set tls.cert, tls.key and tls.ca",
                    ));
                }
                return Ok(None);
            }
            (Some(c), Some(k), Some(a)) => (c, k, a),
            (c, k, _) => {
                let missing = if c.is_none() {
                    "tls.cert"
                } else if k.is_none() {
                    "tls.key"
                } else {
                    "tls.ca"
                };
                return Err(NodeError::config(
                    missing,
                    "TLS needs all of tls.cert, tls.key and tls.ca (peers always verify each other)",
                ));
            }
        };
        let certs = load_certs("tls.cert", cert)?;
        let key = load_key("tls.key", key)?;
        let roots = load_roots("tls.ca", ca)?;
        if let Some(n) = &cfg.tls.server_name {
            server_name_for("", Some(n)).map_err(|e| NodeError::config("tls.server_name", e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
        // Peers must present certificates even when clients need not: ask everyone, and
        // enforce it per connection once the Hello says who is speaking.
        let verifier = if cfg.tls.client_auth {
            verifier
        } else {
            verifier.allow_unauthenticated()
        }
        .build()
        .map_err(|e| NodeError::config("tls.ca", e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| NodeError::config("tls.cert", e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| NodeError::config("tls.key", format!("does not match tls.cert: {e}")))?;
        let client = client_config(roots, Some((certs, key)), "tls.key")?;
        Ok(Some(Arc::new(NodeTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            dialer: ClientTls::from_config(client, cfg.tls.server_name.clone()),
            server_name: cfg.tls.server_name.clone(),
            client_auth: cfg.tls.client_auth,
        })))
    }

    /// Server side of the handshake. Any failure (plain bytes, an untrusted or missing client
    /// certificate under mTLS) is `InvalidData`, i.e. counted as a protocol error.
    pub async fn accept(&self, sock: TcpStream) -> io::Result<(ConnReader, ConnWriter, PeerCert)> {
        let s = self.acceptor.accept(sock).await.map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("TLS handshake: {e}"))
        })?;
        let cert = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned());
        let (r, w) = tokio::io::split(TlsStream::from(s));
        Ok((ConnReader::Tls(r), ConnWriter::Tls(w), PeerCert(cert)))
    }

    /// Dials side of a peer connection to `addr` (presents this node's certificate).
    pub async fn connect(
        &self,
        sock: TcpStream,
        addr: &str,
    ) -> io::Result<(ConnReader, ConnWriter)> {
        self.dialer.connect(sock, addr).await
    }

    /// Checks that a connection claiming to be the peer at `member_addr` presented a
    /// certificate (already verified against `tls.ca` by the handshake) that is valid for that
    /// member's host, or for `tls.server_name` when configured.
    pub fn check_peer(&self, cert: &PeerCert, member_addr: &str) -> Result<(), String> {
        let Some(der) = &cert.0 else {
            return Err("a peer must present a client certificate".into());
        };
        let name = server_name_for(member_addr, self.server_name.as_deref())?;
        let parsed = rustls::server::ParsedCertificate::try_from(der)
            .map_err(|e| format!("peer certificate: {e}"))?;
        rustls::client::verify_server_name(&parsed, &name)
            .map_err(|e| format!("peer certificate is not valid for {name:?}: {e}"))
    }
}

/// The certificate a TLS client presented (verified against `tls.ca` by the handshake), if any.
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<CertificateDer<'static>>);

/// Reads an admin token file: surrounding whitespace (a trailing newline) is ignored; a
/// missing, unreadable, empty or oversized file is an error naming `admin.token_file`.
pub fn read_token_file(path: &Path) -> Result<Vec<u8>, NodeError> {
    let field = "admin.token_file";
    let raw = std::fs::read(path).map_err(|e| bad(field, path, e))?;
    let token = raw.trim_ascii();
    if token.is_empty() {
        return Err(bad(field, path, "the token file is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(bad(
            field,
            path,
            format!("token longer than {MAX_TOKEN_LEN} bytes"),
        ));
    }
    Ok(token.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_trimmed_and_empty_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap(), b"s3cret");
        std::fs::write(&p, " \n").unwrap();
        let err = read_token_file(&p).unwrap_err().to_string();
        assert!(
            err.contains("admin.token_file") && err.contains("empty"),
            "{err}"
        );
        let err = read_token_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("admin.token_file"), "{err}");
    }
}
