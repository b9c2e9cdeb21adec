//! Three real `eventstream node` processes with TLS, mutual TLS and an admin token configured
//! by flags; the `publish` / `subscribe` / `status` commands talk to them with `--tls-*` flags
//! and `EVENTSTREAM_*` variables. Bad TLS or token settings stop `eventstream node` at start-up
//! with the setting named.

use eventstream_client::tls::ClientTls;
use eventstream_client::ClientConfig;
use eventstream_testkit::{free_ports, test_runtime, Pki, ProcessCluster};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_eventstream");

fn run(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(EXE);
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn node_refuses_to_start_with_bad_tls_or_token_settings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    Pki::generate(d);
    std::fs::write(d.join("empty-token"), "").unwrap();
    std::fs::write(d.join("garbage.pem"), "hello").unwrap();
    let port = free_ports(1).unwrap()[0];
    let peers = format!("1=127.0.0.1:{port}");
    let data = d.join("data");
    let p = |n: &str| d.join(n).to_str().unwrap().to_owned();
    let base = [
        "node",
        "--id",
        "1",
        "--peers",
        &peers,
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let cases: [(Vec<String>, &str); 3] = [
        (
            vec!["--admin-token-file".into(), p("empty-token")],
            "admin.token_file",
        ),
        (
            vec![
                "--tls-cert".into(),
                p("garbage.pem"),
                "--tls-key".into(),
                p("node.key"),
                "--tls-ca".into(),
                p("ca.pem"),
            ],
            "tls.cert",
        ),
        (vec!["--tls-cert".into(), p("node.pem")], "tls.key"),
    ];
    for (extra, field) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter().map(String::as_str));
        let out = run(&args, &[]);
        assert!(!out.status.success(), "{args:?} must not start");
        let err = stderr(&out);
        assert!(err.contains(&format!("`{field}`")), "{args:?}: {err}");
    }
}

#[test]
fn tls_process_cluster_with_cli_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    Pki::generate(d);
    std::fs::write(d.join("token"), "s3cret\n").unwrap();
    let p = |n: &str| d.join(n).to_str().unwrap().to_owned();
    let flags: Vec<String> = [
        "--tls-cert",
        &p("node.pem"),
        "--tls-key",
        &p("node.key"),
        "--tls-ca",
        &p("ca.pem"),
        "--tls-client-auth",
        "--admin-token-file",
        &p("token"),
        "--raft-tick-ms",
        "10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    std::fs::create_dir_all(d.join("data")).unwrap();
    let mut cluster = ProcessCluster::start(Path::new(EXE), 3, &d.join("data"), &flags).unwrap();
    let mut probe = ClientConfig::new(Vec::new());
    probe.tls = Some(
        ClientTls::from_files(
            &d.join("ca.pem"),
            Some((&d.join("client.pem"), &d.join("client.key"))),
            None,
        )
        .unwrap(),
    );
    cluster.set_client_config(probe);
    let rt = test_runtime();
    rt.block_on(cluster.wait_healthy(Duration::from_secs(20)))
        .expect("TLS cluster healthy");
    let eps = cluster.endpoints().join(",");
    let tls_flags = [
        "--tls-ca",
        &p("ca.pem"),
        "--tls-cert",
        &p("client.pem"),
        "--tls-key",
        &p("client.key"),
    ];

    // A command with the client's TLS flags.
    let run_tls = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(tls_flags);
        run(&args, &[])
    };
    let transfer = |token: Option<&str>| {
        let mut args = vec![
            "leader",
            "transfer",
            "--endpoints",
            &eps,
            "--timeout",
            "10s",
        ];
        args.extend(token.into_iter().flat_map(|t| ["--token", t]));
        run_tls(&args)
    };

    let out = run_tls(&[
        "publish",
        "--endpoints",
        &eps,
        "--topic",
        "sec",
        "one",
        "two",
        "three",
    ]);
    assert!(out.status.success(), "publish: {}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n");

    // The same settings from the environment.
    let envs = [
        ("EVENTSTREAM_TLS_CA", d.join("ca.pem")),
        ("EVENTSTREAM_TLS_CERT", d.join("client.pem")),
        ("EVENTSTREAM_TLS_KEY", d.join("client.key")),
    ];
    let envs: Vec<(&str, &Path)> = envs.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let out = run(
        &[
            "subscribe",
            "--endpoints",
            &eps,
            "--limit",
            "3",
            "--idle-exit-ms",
            "5000",
            "--json",
        ],
        &envs,
    );
    assert!(out.status.success(), "subscribe: {}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let payloads: Vec<&str> = lines
        .iter()
        .map(|v| v["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["one", "two", "three"]);

    let out = run_tls(&["status", "--endpoints", &eps, "--json"]);
    assert!(out.status.success(), "status: {}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"]["leader_id"].is_u64()));

    // Mutating admin operations need the bearer token; listing members does not.
    let out = run_tls(&["member", "list", "--endpoints", &eps, "--json"]);
    assert!(out.status.success(), "member list: {}", stderr(&out));
    let out = transfer(None);
    assert!(!out.status.success(), "transfer without a token succeeded");
    assert!(
        stderr(&out).contains("nauthorized"),
        "transfer without a token: {}",
        stderr(&out)
    );
    let out = transfer(Some("wrong"));
    assert!(
        !out.status.success() && stderr(&out).contains("nauthorized"),
        "transfer with a wrong token: {}",
        stderr(&out)
    );
    let out = transfer(Some("s3cret"));
    assert!(
        out.status.success(),
        "transfer with the token: {}",
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("leadership moved"));

    // Plain TCP, or TLS without the client certificate mTLS requires: no endpoint answers.
    let out = run(&["status", "--endpoints", &eps], &[]);
    assert!(!out.status.success());
    let out = run(
        &["status", "--endpoints", &eps, "--tls-ca", &p("ca.pem")],
        &[],
    );
    assert!(!out.status.success());
}
