//! A test PKI generated at run time (feature `pki`): PEM files for TLS and mutual-TLS tests.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    let cert = p.self_signed(&key).expect("self-signed CA");
    Ca { cert, key }
}

/// A leaf signed by `ca` for `sans` (IP addresses become IP SANs), with `usages`: PEM
/// certificate and key.
fn leaf(ca: &Ca, sans: &[&str], usages: Vec<ExtendedKeyUsagePurpose>) -> (String, String) {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("leaf parameters");
    p.distinguished_name.push(DnType::CommonName, sans[0]);
    p.extended_key_usages = usages;
    let key = KeyPair::generate().expect("leaf key");
    let cert = p
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("leaf signed by the CA");
    (cert.pem(), key.serialize_pem())
}

/// The PEM files of one test PKI, in one directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Writes into `dir`: `ca.pem` (the CA every node trusts), `other-ca.pem` (a CA nobody
    /// trusts), and `NAME.pem` + `NAME.key` for each of
    /// * `node` — `127.0.0.1` and `localhost`, server and client auth, from `ca.pem`;
    /// * `client` — `client.example`, client auth, from `ca.pem`;
    /// * `rogue` — `127.0.0.1`, server and client auth, from `other-ca.pem`;
    /// * `shared` — `eventstream.internal` (a name, not an address), server and client auth,
    ///   from `ca.pem`.
    ///
    /// Panics if a certificate cannot be made or a file written.
    pub fn generate(dir: &Path) -> Pki {
        let good = ca("eventstream test CA");
        let other = ca("some other CA");
        let node_usage = || {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        };
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        };
        let write_pair = |name: &str, (cert, key): (String, String)| {
            write(&format!("{name}.pem"), cert);
            write(&format!("{name}.key"), key);
        };
        write("ca.pem", good.cert.pem());
        write("other-ca.pem", other.cert.pem());
        write_pair(
            "node",
            leaf(&good, &["127.0.0.1", "localhost"], node_usage()),
        );
        write_pair(
            "client",
            leaf(
                &good,
                &["client.example"],
                vec![ExtendedKeyUsagePurpose::ClientAuth],
            ),
        );
        write_pair("rogue", leaf(&other, &["127.0.0.1"], node_usage()));
        write_pair(
            "shared",
            leaf(&good, &["eventstream.internal"], node_usage()),
        );
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    /// The file `name` (`ca.pem`, `node.key`, …) of this PKI.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
