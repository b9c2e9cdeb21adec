//! TLS (rustls, `ring` provider) for the node's one port, and the admin bearer token.
//!
//! * [`NodeTls`] — a node's acceptor (its certificate; client certificates verified against
//!   `tls_ca`, required when `tls_client_auth`, otherwise optional) and its connector for
//!   dialling peers (verifies the peer's server certificate against `tls_ca` and presents the
//!   node's own certificate). Built from [`NodeConfig`]; every file problem names its field.
//! * [`ClientTls`] — what a client trusts (a CA) and, for mutual TLS, the certificate it
//!   presents.
//! * [`ConnReader`] / [`ConnWriter`] — the two halves of a plain or TLS connection, so the
//!   server, the peer transport and the client run the same code over either. Plain TCP keeps
//!   tokio's lock-free `into_split` halves; TLS uses `tokio::io::split`.
//!
//! Invariants:
//! * With TLS on, every peer connection is mutual TLS whatever `tls_client_auth` says: a
//!   connection whose `Hello` claims to be raft peer N is refused unless it presented a
//!   certificate that chains to `tls_ca` **and** is valid for the host of member N's address
//!   (or for `tls_server_name` when set) — so a client certificate cannot impersonate a node.
//! * Server names: a dialler checks the server certificate against the host part of the
//!   address it dials (an IP SAN for `127.0.0.1:7001`, a DNS SAN for `es-0.es:7001`) unless an
//!   explicit server name overrides it (`tls_server_name`, `--tls-server-name`).
//! * Writes over TLS are buffered inside rustls until flushed: every writer flushes after a
//!   batch (a no-op on plain TCP).
//! * Admin tokens are compared in constant time ([`tokens_match`]).

use crate::config::NodeConfig;
use crate::error::ClusterError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

/// Longest admin token accepted (in a file or a `Hello`).
pub const MAX_TOKEN_LEN: usize = 4096;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(field: &str, path: &Path, reason: impl std::fmt::Display) -> ClusterError {
    ClusterError::config(field, format!("{}: {reason}", path.display()))
}

/// Every certificate of a PEM file (a chain: leaf first). `field` names the setting in errors.
pub fn load_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ClusterError> {
    let text = std::fs::read(path).map_err(|e| bad(field, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(field, path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad(field, path, "no `BEGIN CERTIFICATE` section found"));
    }
    for c in &certs {
        rustls::server::ParsedCertificate::try_from(c)
            .map_err(|e| bad(field, path, format!("certificate does not parse: {e}")))?;
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ClusterError> {
    let text = std::fs::read(path).map_err(|e| bad(field, path, e))?;
    let key = PrivateKeyDer::from_pem_slice(&text)
        .map_err(|e| bad(field, path, format!("no usable PEM private key ({e})")))?;
    provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| bad(field, path, format!("private key not usable: {e}")))?;
    Ok(key)
}

/// Trust anchors: every certificate of a PEM file.
pub fn load_roots(field: &str, path: &Path) -> Result<Arc<RootCertStore>, ClusterError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(field, path)? {
        roots
            .add(c)
            .map_err(|e| bad(field, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The name a dialler checks the server certificate against: `over` if given, else the host of
/// `addr` (`HOST:PORT`, `[v6]:PORT`), an IP address or a DNS name.
pub fn server_name_for(addr: &str, over: Option<&str>) -> Result<ServerName<'static>, String> {
    let host = match over {
        Some(n) => n,
        None => addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']'),
    };
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("`{host}` is not a valid TLS server name: {e}"))
}

fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    field: &str,
) -> Result<rustls::ClientConfig, ClusterError> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::config(field, e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        Some((certs, key)) => b
            .with_client_auth_cert(certs, key)
            .map_err(|e| ClusterError::config(field, format!("certificate and key: {e}"))),
        None => Ok(b.with_no_client_auth()),
    }
}

/// A node's TLS: acceptor for its port, connector for its peers.
pub struct NodeTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
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
    /// `None` when TLS is off (no `tls_cert`, `tls_key`, `tls_ca`); an error naming the field
    /// when it is half-configured or a file is missing, unreadable or not PEM of the right kind.
    pub fn from_config(cfg: &NodeConfig) -> Result<Option<Arc<NodeTls>>, ClusterError> {
        let (cert, key, ca) = match (&cfg.tls_cert, &cfg.tls_key, &cfg.tls_ca) {
            (None, None, None) => {
                if cfg.tls_client_auth {
                    return Err(ClusterError::config(
                        "tls_client_auth",
                        "needs TLS: set tls_cert, tls_key and tls_ca",
                    ));
                }
                if cfg.tls_server_name.is_some() {
                    return Err(ClusterError::config(
                        "tls_server_name",
                        "needs TLS: set tls_cert, tls_key and tls_ca",
                    ));
                }
                return Ok(None);
            }
            (Some(c), Some(k), Some(a)) => (c, k, a),
            (c, k, _) => {
                let missing = if c.is_none() {
                    "tls_cert"
                } else if k.is_none() {
                    "tls_key"
                } else {
                    "tls_ca"
                };
                return Err(ClusterError::config(
                    missing,
                    "TLS needs all of tls_cert, tls_key and tls_ca (peers always verify each other)",
                ));
            }
        };
        let certs = load_certs("tls_cert", cert)?;
        let key = load_key("tls_key", key)?;
        let roots = load_roots("tls_ca", ca)?;
        if let Some(n) = &cfg.tls_server_name {
            server_name_for("", Some(n)).map_err(|e| ClusterError::config("tls_server_name", e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
        // Peers must present certificates even when clients need not: ask everyone, and
        // enforce it per connection once the Hello says who is speaking.
        let verifier = if cfg.tls_client_auth {
            verifier
        } else {
            verifier.allow_unauthenticated()
        }
        .build()
        .map_err(|e| ClusterError::config("tls_ca", e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClusterError::config("tls_cert", e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| {
                ClusterError::config("tls_key", format!("does not match tls_cert: {e}"))
            })?;
        let client = client_config(roots, Some((certs, key)), "tls_key")?;
        Ok(Some(Arc::new(NodeTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            server_name: cfg.tls_server_name.clone(),
            client_auth: cfg.tls_client_auth,
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
        let name = server_name_for(addr, self.server_name.as_deref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let s = self.connector.connect(name, sock).await?;
        let (r, w) = tokio::io::split(TlsStream::from(s));
        Ok((ConnReader::Tls(r), ConnWriter::Tls(w)))
    }

    /// Checks that a connection claiming to be the peer at `member_addr` presented a
    /// certificate (already verified against `tls_ca` by the handshake) that is valid for that
    /// member's host, or for `tls_server_name` when configured.
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

/// The certificate a TLS client presented (verified against `tls_ca` by the handshake), if any.
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<CertificateDer<'static>>);

/// A client's TLS settings.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in `ca`; presents `cert` + `key` when given (needed when the
    /// nodes run with `tls_client_auth`); checks server certificates against `server_name`
    /// instead of each endpoint's host when given. Errors name the flag.
    pub fn from_files(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> Result<ClientTls, ClusterError> {
        let roots = load_roots("tls-ca", ca)?;
        let identity = match identity {
            Some((c, k)) => Some((load_certs("tls-cert", c)?, load_key("tls-key", k)?)),
            None => None,
        };
        if let Some(n) = server_name {
            server_name_for("", Some(n)).map_err(|e| ClusterError::config("tls-server-name", e))?;
        }
        let cfg = client_config(roots, identity, "tls-key")?;
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(cfg)),
            server_name: server_name.map(str::to_owned),
        })
    }

    /// Client side of the handshake with the node at `addr`.
    pub async fn connect(
        &self,
        sock: TcpStream,
        addr: &str,
    ) -> io::Result<(ConnReader, ConnWriter)> {
        let name = server_name_for(addr, self.server_name.as_deref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let s = self.connector.connect(name, sock).await?;
        let (r, w) = tokio::io::split(TlsStream::from(s));
        Ok((ConnReader::Tls(r), ConnWriter::Tls(w)))
    }
}

/// Splits a plain TCP connection.
pub fn plain(sock: TcpStream) -> (ConnReader, ConnWriter) {
    let (r, w) = sock.into_split();
    (ConnReader::Tcp(r), ConnWriter::Tcp(w))
}

/// Reading half of a plain or TLS connection.
#[derive(Debug)]
pub enum ConnReader {
    /// Plain TCP.
    Tcp(OwnedReadHalf),
    /// TLS (client or server side).
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// Writing half of a plain or TLS connection. Flush after writing: TLS buffers records.
#[derive(Debug)]
pub enum ConnWriter {
    /// Plain TCP.
    Tcp(OwnedWriteHalf),
    /// TLS (client or server side).
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ConnReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnReader::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ConnReader::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ConnWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ConnWriter::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            ConnWriter::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnWriter::Tcp(w) => Pin::new(w).poll_flush(cx),
            ConnWriter::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnWriter::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            ConnWriter::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// The admin bearer token of a node. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Vec<u8>);

impl AdminToken {
    /// Wraps a token (as read by [`read_token_file`]).
    pub fn new(token: Vec<u8>) -> Self {
        AdminToken(token)
    }

    /// A token from a string (`--token`, `EVENTSTREAM_TOKEN`); surrounding whitespace is
    /// ignored as in token files. Empty or longer than [`MAX_TOKEN_LEN`]: an error naming `token`.
    pub fn from_text(s: &str) -> Result<Self, ClusterError> {
        let t = s.trim();
        if t.is_empty() || t.len() > MAX_TOKEN_LEN {
            return Err(ClusterError::config(
                "token",
                format!("must be 1..={MAX_TOKEN_LEN} bytes"),
            ));
        }
        Ok(AdminToken(t.as_bytes().to_vec()))
    }

    /// The token's bytes (what a client sends in its `Hello`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        tokens_match(presented, &self.0)
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken(<{} bytes, redacted>)", self.0.len())
    }
}

/// Reads an admin token file: surrounding whitespace (a trailing newline) is ignored; a
/// missing, unreadable, empty or oversized file is an error naming `admin_token_file`.
pub fn read_token_file(path: &Path) -> Result<Vec<u8>, ClusterError> {
    let field = "admin_token_file";
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

/// Constant-time token comparison: the time depends on the lengths only, never on where the
/// first differing byte is.
pub fn tokens_match(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(!*e);
        diff |= p ^ e;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_value_and_length() {
        assert!(tokens_match(b"secret", b"secret"));
        assert!(!tokens_match(b"secreT", b"secret"));
        assert!(!tokens_match(b"secret-longer", b"secret"));
        assert!(!tokens_match(b"sec", b"secret"));
        assert!(!tokens_match(b"", b"secret"));
    }

    #[test]
    fn token_file_is_trimmed_and_empty_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap(), b"s3cret");
        std::fs::write(&p, " \n").unwrap();
        let err = read_token_file(&p).unwrap_err().to_string();
        assert!(
            err.contains("admin_token_file") && err.contains("empty"),
            "{err}"
        );
        let err = read_token_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("admin_token_file"), "{err}");
    }

    #[test]
    fn server_names_come_from_the_address_host_unless_overridden() {
        assert_eq!(
            server_name_for("127.0.0.1:7001", None).unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name_for("[::1]:7001", None).unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name_for("es-0.es.default.svc:7001", None).unwrap(),
            ServerName::try_from("es-0.es.default.svc").unwrap()
        );
        assert_eq!(
            server_name_for("127.0.0.1:7001", Some("eventstream")).unwrap(),
            ServerName::try_from("eventstream").unwrap()
        );
        assert!(server_name_for("", Some("bad name!")).is_err());
    }
}
