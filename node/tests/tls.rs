//! TLS and the admin token end to end: certificates generated at test time (the testkit's
//! `Pki`), an in-process 3-node cluster with mutual TLS, clients and nodes that must be
//! refused, config validation of the TLS and token settings, and the token in the client
//! `Hello`.

mod common;

use bytes::Bytes;
use eventstream_client::status_with;
use eventstream_client::tls::{AdminToken, ClientTls};
use eventstream_client::{Client, ClientConfig, ClientError};
use eventstream_core::{Event, Priority};
use eventstream_node::{LocalCluster, NodeConfig, NodeError};
use eventstream_proto::frame::{self, Kind, Role, SubscribeBody};
use eventstream_testkit::{test_runtime, wait_until, Pki};
use std::io::{Read, Write};
use std::time::Duration;

/// What these tests set from the test PKI.
trait TlsSettings {
    /// Node TLS settings with `name` as the node's certificate.
    fn node(&self, c: &mut NodeConfig, name: &str, client_auth: bool);

    /// A client trusting `ca` and presenting `identity` (if any), with short deadlines so a
    /// refused client fails fast.
    fn client(&self, eps: Vec<String>, ca: &str, identity: Option<&str>) -> ClientConfig;
}

impl TlsSettings for Pki {
    fn node(&self, c: &mut NodeConfig, name: &str, client_auth: bool) {
        c.tls.cert = Some(self.path(&format!("{name}.pem")));
        c.tls.key = Some(self.path(&format!("{name}.key")));
        c.tls.ca = Some(self.path("ca.pem"));
        c.tls.client_auth = client_auth;
    }

    fn client(&self, eps: Vec<String>, ca: &str, identity: Option<&str>) -> ClientConfig {
        let mut cfg = ClientConfig::new(eps);
        let id = identity.map(|n| {
            (
                self.path(&format!("{n}.pem")),
                self.path(&format!("{n}.key")),
            )
        });
        cfg.tls = Some(
            ClientTls::from_files(
                &self.path(ca),
                id.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                None,
            )
            .unwrap(),
        );
        short(cfg)
    }
}

fn short(mut cfg: ClientConfig) -> ClientConfig {
    cfg.deadline = Duration::from_millis(1500);
    cfg.attempt_timeout = Duration::from_millis(500);
    cfg.connect_timeout = Duration::from_millis(500);
    cfg
}

fn events(n: u64, tag: &str) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new("tls", Priority::High, Bytes::from(format!("{tag}-{i}"))))
        .collect()
}

fn errors(c: &LocalCluster) -> (u64, u64) {
    c.nodes.iter().flatten().fold((0, 0), |(p, t), n| {
        (p + n.protocol_errors(), t + n.tls_handshake_failures())
    })
}

#[test]
fn mutual_tls_cluster_serves_tls_clients_and_refuses_plain_and_foreign_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let cluster = common::cluster(3, &dir.path().join("data"), |c| {
        pki.node(c, "node", true);
    });
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .expect("a leader elected over mutual TLS");
    let eps = cluster.endpoints();
    let follower = eps[(leader % 3) as usize].clone();
    test_runtime().block_on(async {
        // Publish through a follower (redirected to the leader), all over TLS with a client
        // certificate.
        let client =
            Client::new(pki.client(vec![follower.clone()], "ca.pem", Some("client"))).unwrap();
        let offsets = client.publish(events(100, "a")).await.unwrap();
        assert_eq!(offsets, (0..100).collect::<Vec<u64>>());
        let status = status_with(
            &pki.client(vec![], "ca.pem", Some("client")),
            &follower,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!(status.node_id, leader % 3 + 1);
        // Subscribe on another node over TLS.
        let mut sub = client.subscribe(SubscribeBody::default());
        for want in 0..100u64 {
            let (off, e) = sub
                .next_timeout(Duration::from_secs(10))
                .await
                .unwrap()
                .expect("event over TLS");
            assert_eq!(off, want);
            assert_eq!(e.payload, Bytes::from(format!("a-{want}")));
        }

        let before = errors(&cluster);
        // A plaintext client: its Hello is not a TLS ClientHello; the connection is closed.
        let plain = Client::new(short(ClientConfig::new(eps.clone()))).unwrap();
        assert!(plain.publish(events(1, "plain")).await.is_err());
        let after_plain = errors(&cluster);
        assert!(after_plain.0 > before.0 && after_plain.1 > before.1);
        // mTLS: a client without a certificate, and one whose certificate comes from another
        // CA, are refused in the handshake.
        for identity in [None, Some("rogue")] {
            let c = Client::new(pki.client(eps.clone(), "ca.pem", identity)).unwrap();
            let err = c.publish(events(1, "refused")).await.unwrap_err();
            // The node's TLS alert reaches the user.
            assert!(
                err.to_string().contains("fatal alert"),
                "{identity:?}: {err}"
            );
        }
        let after_mtls = errors(&cluster);
        assert!(after_mtls.1 > after_plain.1);
        // A client that trusts another CA refuses the nodes.
        let c = Client::new(pki.client(eps.clone(), "other-ca.pem", Some("client"))).unwrap();
        let err = c.status().await.unwrap_err();
        assert!(matches!(err, ClientError::Network { .. }), "{err}");
        // Nothing of the refused clients was stored, and the good client is unaffected.
        let offsets = client.publish(events(10, "b")).await.unwrap();
        assert_eq!(offsets, (100..110).collect::<Vec<u64>>());
        for n in cluster.nodes.iter().flatten() {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while n.stream().next_offset() < 110 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(n.stream().next_offset(), 110, "node {}", n.id());
        }
    });
    cluster.shutdown();
}

/// Nodes 1 and 2 are configured correctly; node 3 presents `bad_cert` (it trusts the right
/// CA). Node 3 must stay out of the peer mesh while 1 and 2 form a quorum.
fn isolated_third_node(bad_cert: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let cluster = common::cluster(3, &dir.path().join("data"), |c| {
        let cert = if c.id == 3 { bad_cert } else { "node" };
        pki.node(c, cert, false);
    });
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .expect("nodes 1 and 2 elect a leader");
    assert_ne!(leader, 3);
    let eps = cluster.endpoints();
    test_runtime().block_on(async {
        let client = Client::new(pki.client(eps[..2].to_vec(), "ca.pem", None)).unwrap();
        let offsets = client.publish(events(20, "q")).await.unwrap();
        assert_eq!(offsets.len(), 20);
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let node3 = cluster.nodes[2].as_ref().unwrap();
    assert_eq!(node3.stream().next_offset(), 0, "node 3 received nothing");
    assert_eq!(
        node3.metrics().leader_id(),
        0,
        "node 3 never heard a leader"
    );
    let refused: u64 = cluster.nodes[..2]
        .iter()
        .flatten()
        .map(|n| n.protocol_errors())
        .sum();
    assert!(refused > 0, "nodes 1 and 2 refused node 3's connections");
    cluster.shutdown();
}

#[test]
fn node_with_a_certificate_from_another_ca_cannot_join() {
    isolated_third_node("rogue");
}

#[test]
fn client_certificate_cannot_impersonate_a_peer() {
    // Signed by the right CA, but not valid for node 3's address (127.0.0.1).
    isolated_third_node("client");
}

#[test]
fn explicit_server_name_replaces_the_address_host() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let cluster = common::cluster(3, &dir.path().join("data"), |c| {
        pki.node(c, "shared", false);
        c.tls.server_name = Some("eventstream.internal".into());
    });
    cluster
        .wait_for_leader(Duration::from_secs(10))
        .expect("peers verify each other by the configured name");
    let eps = cluster.endpoints();
    test_runtime().block_on(async {
        // By address the certificate does not match; with the name it does.
        let by_addr = Client::new(pki.client(eps.clone(), "ca.pem", None)).unwrap();
        assert!(by_addr.status().await.is_err());
        let mut cfg = short(ClientConfig::new(eps.clone()));
        cfg.tls = Some(
            ClientTls::from_files(&pki.path("ca.pem"), None, Some("eventstream.internal")).unwrap(),
        );
        let by_name = Client::new(cfg).unwrap();
        assert_eq!(by_name.publish(events(5, "n")).await.unwrap().len(), 5);
    });
    for n in cluster.nodes.iter().flatten() {
        wait_until("every node to replicate", Duration::from_secs(5), || {
            n.stream().next_offset() >= 5
        });
        assert_eq!(n.stream().next_offset(), 5, "node {} replicated", n.id());
    }
    cluster.shutdown();
}

fn field(r: Result<Vec<eventstream_node::Member>, NodeError>) -> String {
    match r {
        Err(NodeError::InvalidConfig { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn tls_and_token_settings_are_validated_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let base = || NodeConfig {
        id: 1,
        peers: vec!["1=127.0.0.1:7001".into()],
        ..NodeConfig::default()
    };
    let tls = |cert: &str, key: &str, ca: &str| {
        let mut c = base();
        c.tls.cert = Some(pki.path(cert));
        c.tls.key = Some(pki.path(key));
        c.tls.ca = Some(pki.path(ca));
        c
    };
    tls("node.pem", "node.key", "ca.pem").validate().unwrap();
    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    std::fs::write(
        pki.path("bad-body.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (cert, key, ca, wrong) in [
        ("missing.pem", "node.key", "ca.pem", "tls.cert"),
        ("garbage.pem", "node.key", "ca.pem", "tls.cert"),
        ("bad-body.pem", "node.key", "ca.pem", "tls.cert"),
        ("node.pem", "node.pem", "ca.pem", "tls.key"),
        // A key that parses but belongs to another certificate.
        ("node.pem", "client.key", "ca.pem", "tls.key"),
        ("node.pem", "node.key", "garbage.pem", "tls.ca"),
        ("node.pem", "node.key", "missing.pem", "tls.ca"),
    ] {
        assert_eq!(
            field(tls(cert, key, ca).validate()),
            wrong,
            "cert {cert}, key {key}, ca {ca}"
        );
    }
    let mut half = base();
    half.tls.cert = Some(pki.path("node.pem"));
    assert_eq!(field(half.validate()), "tls.key");
    let mut no_ca = tls("node.pem", "node.key", "ca.pem");
    no_ca.tls.ca = None;
    assert_eq!(field(no_ca.validate()), "tls.ca");
    let mut mtls_without_tls = base();
    mtls_without_tls.tls.client_auth = true;
    assert_eq!(field(mtls_without_tls.validate()), "tls.client_auth");
    let mut bad_name = tls("node.pem", "node.key", "ca.pem");
    bad_name.tls.server_name = Some("not a name!".into());
    assert_eq!(field(bad_name.validate()), "tls.server_name");
    // Token file: missing or empty stops start-up; a good one is read (trimmed).
    std::fs::write(pki.path("empty-token"), "\n").unwrap();
    std::fs::write(pki.path("token"), "s3cret\n").unwrap();
    for bad in ["empty-token", "no-such-token"] {
        let mut c = base();
        c.admin.token_file = Some(pki.path(bad));
        assert_eq!(field(c.validate()), "admin.token_file");
    }
    let mut c = base();
    c.admin.token_file = Some(pki.path("token"));
    c.validate().unwrap();
    assert_eq!(c.admin_token().unwrap().unwrap(), b"s3cret".to_vec());
    // The TOML names are the field names.
    let text = format!(
        "id = 1\npeers = [\"1=127.0.0.1:7001\"]\n[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n\
         client_auth = true\n[admin]\ntoken_file = {:?}\n",
        pki.path("node.pem"),
        pki.path("node.key"),
        pki.path("ca.pem"),
        pki.path("token")
    );
    let c: NodeConfig = toml::from_str(&text).unwrap();
    assert!(c.tls.client_auth);
    c.validate().unwrap();

    // Client flags.
    let args = |ca: Option<&str>, cert: Option<&str>, token: Option<&str>| {
        let (ca, cert, key) = (
            ca.map(|c| pki.path(c)),
            cert.map(|c| pki.path(c)),
            cert.map(|_| pki.path("client.key")),
        );
        ClientConfig::new(vec!["127.0.0.1:1".into()]).secured(
            ca.as_deref(),
            cert.as_deref().zip(key.as_deref()),
            None,
            token,
        )
    };
    let flag = |r: Result<ClientConfig, ClientError>| match r {
        Err(ClientError::InvalidConfig { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    let ok = args(Some("ca.pem"), Some("client.pem"), Some("t")).unwrap();
    assert!(ok.tls.is_some());
    assert_eq!(ok.token.as_ref().map(AdminToken::as_bytes), Some(&b"t"[..]));
    assert!(!format!("{ok:?}").contains("AdminToken([")); // never printed
    assert_eq!(flag(args(None, Some("client.pem"), None)), "tls-ca");
    assert_eq!(flag(args(Some("garbage.pem"), None, None)), "tls-ca");
    assert_eq!(
        flag(args(Some("ca.pem"), Some("garbage.pem"), None)),
        "tls-cert"
    );
    assert_eq!(flag(args(Some("ca.pem"), None, Some("  "))), "token");
}

#[test]
fn hello_token_is_accepted_and_a_malformed_one_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret").unwrap();
    let token_file = dir.path().join("token");
    let cluster = common::cluster(1, &dir.path().join("data"), |c| {
        c.admin.token_file = Some(token_file.clone());
    });
    cluster.wait_for_leader(Duration::from_secs(10)).unwrap();
    let ep = cluster.endpoints()[0].clone();
    let node = cluster.nodes[0].as_ref().unwrap();
    // A malformed token trailer (length beyond the body) is a protocol error.
    let mut bad = frame::encode_hello(Role::Client);
    bad.extend_from_slice(&[200, 0, b'x']);
    let mut buf = bytes::BytesMut::new();
    frame::put_frame(&mut buf, Kind::Hello, &bad);
    let mut s = std::net::TcpStream::connect(&ep).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&buf).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    // The node says why (a BadRequest error frame), then closes.
    let (kind, body, _) = frame::decode_frame(&rest, 1 << 16)
        .unwrap()
        .expect("an error frame before the close");
    assert_eq!(kind, Kind::Error);
    assert_eq!(
        frame::decode_error(body).unwrap().code,
        frame::ErrorCode::BadRequest
    );
    // Counted just after the close.
    wait_until("the protocol error", Duration::from_secs(5), || {
        node.protocol_errors() > 0
    });
    assert_eq!(node.protocol_errors(), 1);
    // Clients with the right token, a wrong one, or none can all publish and read status:
    // only admin operations need the token.
    test_runtime().block_on(async {
        for token in [Some("s3cret"), Some("wrong"), None] {
            let mut cfg = short(ClientConfig::new(vec![ep.clone()]));
            cfg.token = token.map(|t| AdminToken::from_text(t).unwrap());
            let c = Client::new(cfg).unwrap();
            c.publish(events(1, "t")).await.unwrap();
            c.status().await.unwrap();
        }
    });
    assert_eq!(node.protocol_errors(), 1);
    cluster.shutdown();
}
