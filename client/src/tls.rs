//! TLS (rustls, `ring` provider) on the client side, and the admin bearer token.
//!
//! * [`ClientTls`] — what a client trusts (a CA) and, for mutual TLS, the certificate it
//!   presents.
//! * [`ConnReader`] / [`ConnWriter`] — the two halves of a plain or TLS connection, so the
//!   client and the node's server and peer transport run the same code over either. Plain TCP
//!   keeps tokio's lock-free `into_split` halves; TLS uses `tokio::io::split`.
//! * [`load_certs`], [`load_key`], [`load_roots`], [`server_name_for`], [`client_config`] —
//!   the PEM and rustls plumbing a node's own TLS is built from too; every file problem names
//!   the setting it came from.
//!
//! Invariants:
//! * Server names: a dialler checks the server certificate against the host part of the
//!   address it dials (an IP SAN for `127.0.0.1:7001`, a DNS SAN for `es-0.es:7001`) unless an
//!   explicit server name overrides it (`tls.server_name`, `--tls-server-name`).
//! * Writes over TLS are buffered inside rustls until flushed: every writer flushes after a
//!   batch (a no-op on plain TCP).
//! * Admin tokens are compared in constant time ([`tokens_match`]).

use crate::error::ClientError;
use eventstream_proto::frame::MAX_TOKEN_LEN;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, TlsStream};

/// The crypto provider every TLS configuration of eventstream uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(field: &str, path: &Path, reason: impl std::fmt::Display) -> ClientError {
    ClientError::config(field, format!("{}: {reason}", path.display()))
}

/// Every certificate of a PEM file (a chain: leaf first). `field` names the setting in errors.
pub fn load_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
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
pub fn load_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ClientError> {
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
pub fn load_roots(field: &str, path: &Path) -> Result<Arc<RootCertStore>, ClientError> {
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

/// A rustls client configuration trusting `roots` and presenting `identity` when given;
/// `field` names the setting in errors.
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    field: &str,
) -> Result<rustls::ClientConfig, ClientError> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::config(field, e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        Some((certs, key)) => b
            .with_client_auth_cert(certs, key)
            .map_err(|e| ClientError::config(field, format!("certificate and key: {e}"))),
        None => Ok(b.with_no_client_auth()),
    }
}

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
    /// nodes run with `tls.client_auth`); checks server certificates against `server_name`
    /// instead of each endpoint's host when given. Errors name the flag.
    pub fn from_files(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> Result<ClientTls, ClientError> {
        let roots = load_roots("tls-ca", ca)?;
        let identity = match identity {
            Some((c, k)) => Some((load_certs("tls-cert", c)?, load_key("tls-key", k)?)),
            None => None,
        };
        if let Some(n) = server_name {
            server_name_for("", Some(n)).map_err(|e| ClientError::config("tls-server-name", e))?;
        }
        let cfg = client_config(roots, identity, "tls-key")?;
        Ok(Self::from_config(cfg, server_name.map(str::to_owned)))
    }

    /// A dialler with a ready rustls configuration (a node dials its peers with its own
    /// certificate this way) checking `server_name` instead of each address's host when given.
    pub fn from_config(cfg: rustls::ClientConfig, server_name: Option<String>) -> Self {
        ClientTls {
            connector: TlsConnector::from(Arc::new(cfg)),
            server_name,
        }
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

/// An admin bearer token (what a client sends in its `Hello`; what a node expects). `Debug`
/// does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Vec<u8>);

impl AdminToken {
    /// Wraps a token (as read by [`read_token_file`]).
    pub fn new(token: Vec<u8>) -> Self {
        AdminToken(token)
    }

    /// A token from a string (`--token`, `EVENTSTREAM_TOKEN`); surrounding whitespace is
    /// ignored as in token files. Empty or longer than [`MAX_TOKEN_LEN`]: an error naming `token`.
    pub fn from_text(s: &str) -> Result<Self, ClientError> {
        let t = s.trim();
        if t.is_empty() || t.len() > MAX_TOKEN_LEN {
            return Err(ClientError::config(
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
