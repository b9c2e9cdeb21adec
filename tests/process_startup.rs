//! Starting real node processes: a node that cannot come up is reported with its exit status
//! and the last lines of its log, not as a silent timeout; and concurrent clusters never share
//! a port.

use eventstream_testkit::{free_ports, ProcessCluster, Scratch};
use std::path::Path;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_eventstream");

/// The failure the start-up diagnosis exists for: a node's port is taken when it starts (by
/// anything: another test's node, another program). The wait names the node, its exit status
/// and why it stopped.
#[test]
fn a_node_whose_port_is_taken_is_reported_with_its_exit_status_and_log() {
    let dir = Scratch::new("port-taken");
    let ports = free_ports(3).unwrap();
    let taken = std::net::TcpListener::bind(("127.0.0.1", ports[1])).unwrap();
    let mut cluster = ProcessCluster::start_at(
        Path::new(EXE),
        &ports.addrs(),
        dir.path(),
        &["--raft-tick-ms".into(), "10".into()],
        None,
    )
    .unwrap();
    let rt = eventstream_testkit::test_runtime();
    let err = rt
        .block_on(cluster.wait_healthy(Duration::from_secs(5)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("node 2 exited by itself (exit status: 1)"),
        "{err}"
    );
    assert!(err.contains("Address already in use"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", ports[1])), "{err}");
    drop(taken);
}

/// Two clusters started at once, in parallel threads as the tests of one binary are: every
/// node of both comes up, because their ports are leased machine-wide until the clusters are
/// dropped.
#[test]
fn clusters_started_at_once_get_distinct_ports_and_all_come_up() {
    let start = || {
        std::thread::spawn(|| {
            let dir = Scratch::new("concurrent");
            let mut cluster = ProcessCluster::start(
                Path::new(EXE),
                3,
                dir.path(),
                &["--raft-tick-ms".into(), "10".into()],
            )
            .unwrap();
            let rt = eventstream_testkit::test_runtime();
            rt.block_on(cluster.wait_healthy(Duration::from_secs(60)))
                .unwrap_or_else(|e| panic!("{e}"));
            (cluster.endpoints(), dir, cluster)
        })
    };
    let (a, b) = (start(), start());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    for ep in &a.0 {
        assert!(!b.0.contains(ep), "{ep} in both clusters");
    }
}
