//! The crate graph ARCHITECTURE.md describes, checked with `cargo tree`: what a producer that
//! embeds only the client pulls in, which crates may use clap, and that production crates do
//! not depend on the test kit.

use std::process::Command;

/// `cargo tree` of `package` with `args`, one crate name per line (no versions, no duplicates).
fn tree(package: &str, args: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = tree_lines(package, args)
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The raw lines of `cargo tree -p package args` (crates and, with `-e features`, features).
fn tree_lines(package: &str, args: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(["-p", package])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_client_pulls_in_no_consensus_storage_server_or_cli() {
    let deps = tree("eventstream-client", &["-e", "normal"]);
    for banned in [
        "raft",
        "raft-proto",
        "protobuf",
        "clap",
        "eventstream-storage",
        "eventstream-node",
        "tempfile",
        "hdrhistogram-cli",
    ] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "eventstream-client depends on {banned}: {deps:?}"
        );
    }
    assert!(deps.iter().any(|d| d == "eventstream-proto"), "{deps:?}");
}

#[test]
fn the_protocol_crate_is_pure() {
    let deps = tree("eventstream-proto", &["-e", "normal"]);
    for banned in ["tokio", "raft", "protobuf", "rustls"] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "eventstream-proto depends on {banned}: {deps:?}"
        );
    }
}

#[test]
fn no_library_crate_depends_on_clap() {
    for lib in [
        "eventstream-core",
        "eventstream-proto",
        "eventstream-client",
        "eventstream-storage",
        "eventstream-node",
        "eventstream-kafka",
        "eventstream-exporter",
        "eventstream-doctor",
        "eventstream-chaos",
        "eventstream-bench",
        "eventstream-testkit",
        "eventstream-fuzz",
    ] {
        let deps = tree(lib, &["-e", "normal"]);
        assert!(
            !deps.iter().any(|d| d == "clap"),
            "{lib} depends on clap (flags belong to the binary)"
        );
    }
}

#[test]
fn production_crates_do_not_depend_on_the_test_kit_or_fault_injection() {
    for lib in [
        "eventstream-proto",
        "eventstream-client",
        "eventstream-storage",
        "eventstream-node",
        "eventstream-kafka",
        "eventstream-exporter",
    ] {
        let deps = tree(lib, &["-e", "normal"]);
        assert!(
            !deps.iter().any(|d| d == "eventstream-testkit"),
            "{lib} depends on the test kit"
        );
    }
    // The binary's own build has no storage fault injection compiled in; the node's tests do
    // (which shows the check sees the feature when it is there).
    let storage_features = |package: &str, edges: &str| {
        tree_lines(package, &["-e", edges, "-i", "eventstream-storage"])
            .iter()
            .any(|l| l.contains("feature \"fault-injection\""))
    };
    assert!(
        !storage_features("eventstream", "normal,features"),
        "the binary is built with storage fault injection"
    );
    assert!(storage_features("eventstream-node", "normal,dev,features"));
}
