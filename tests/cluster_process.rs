//! Three real `eventstream node` processes on loopback: publish, `kill -9` the leader, keep
//! publishing, restart it, and check that every acknowledged event is readable exactly once, at
//! its acknowledged offset, in the same order on every node. Also the CLI around a cluster.

mod common;

use common::{eventstream_ok, publish_batches};
use eventstream_client::{Client, ClientConfig};
use eventstream_testkit::ProcessCluster;
use eventstream_testkit::{test_runtime, verify_acked, Verified};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_eventstream");

use eventstream_testkit::Scratch;

#[test]
fn kill_leader_restart_and_every_acknowledged_event_survives_once_in_order() {
    let dir = Scratch::new("proc");
    let mut cluster = ProcessCluster::start(Path::new(EXE), 3, dir.path(), &[]).unwrap();
    let eps = cluster.endpoints().to_vec();
    let rt = test_runtime();
    rt.block_on(async {
        let leader = cluster.wait_healthy(Duration::from_secs(20)).await.unwrap();
        let client = Client::new(ClientConfig::new(eps.clone())).unwrap();
        let mut acked = Vec::new();
        acked.extend(publish_batches(&client, 30, 10, "p").await);
        // Concurrent publishing while the leader dies.
        let c2 = Client::new(ClientConfig::new(eps.clone())).unwrap();
        let bg = tokio::spawn(async move {
            let mut a = Vec::new();
            a.extend(publish_batches(&c2, 60, 10, "p").await);
            a
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        cluster.kill(leader);
        acked.extend(publish_batches(&client, 30, 10, "p").await);
        acked.extend(bg.await.unwrap());
        cluster.restart(leader).unwrap();
        cluster.wait_healthy(Duration::from_secs(30)).await.unwrap();
        acked.extend(publish_batches(&client, 5, 10, "p").await);
        assert_eq!(acked.len(), 1250);
        let verified = verify_acked(&eps, &acked).await.unwrap();
        assert_eq!(
            verified,
            Verified::default(),
            "nothing lost, duplicated or diverged"
        );
    });

    // CLI: publish with a fixed id twice (second is deduplicated), subscribe, status.
    let first = eventstream_ok(&[
        "publish",
        "--endpoints",
        &eps.join(","),
        "--id",
        "77",
        "hello",
    ]);
    assert_eq!(
        eventstream_ok(&["publish", "--endpoints", &eps[2], "--id", "77", "hello"]),
        first,
        "a retry is acknowledged with the original offset"
    );
    let offset: u64 = first.trim().parse().unwrap();
    assert_eq!(offset, 1250);
    let lines: Vec<serde_json::Value> = eventstream_ok(&[
        "subscribe",
        "--endpoints",
        &eps[1],
        "--from",
        &offset.to_string(),
        "--idle-exit-ms",
        "1000",
        "--json",
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert_eq!(lines.len(), 1, "stored once");
    assert_eq!(lines[0]["payload"], "hello");
    assert_eq!(lines[0]["id"], 77);
    assert!(
        lines[0].get("key").is_none() && lines[0].get("headers").is_none(),
        "{}",
        lines[0]
    );
    // A record key and headers (one null, a repeated name) survive to the subscriber.
    let keyed = eventstream_ok(&[
        "publish",
        "--endpoints",
        &eps.join(","),
        "--key",
        "customer-7",
        "--header",
        "trace=abc",
        "--header",
        "nil",
        "--header",
        "trace=",
        "keyed",
    ]);
    assert_eq!(keyed.trim(), (offset + 1).to_string());
    let sub = |json: bool| {
        let from = (offset + 1).to_string();
        let mut args = vec![
            "subscribe",
            "--endpoints",
            &eps[0],
            "--from",
            &from,
            "--idle-exit-ms",
            "1000",
        ];
        if json {
            args.push("--json");
        }
        eventstream_ok(&args)
    };
    let line: serde_json::Value = serde_json::from_str(sub(true).trim()).unwrap();
    assert_eq!(line["payload"], "keyed");
    assert_eq!(line["key"], "customer-7");
    assert_eq!(
        line["headers"],
        serde_json::json!([
            {"name": "trace", "value": "abc"},
            {"name": "nil", "value": null},
            {"name": "trace", "value": ""},
        ])
    );
    let text = sub(false);
    assert!(
        text.trim_end()
            .ends_with("\tkeyed\tkey=customer-7\theader.trace=abc\theader.nil\theader.trace="),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&eventstream_ok(&[
        "status",
        "--endpoints",
        &eps.join(","),
        "--json",
    ]))
    .unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    let leaders: Vec<_> = arr
        .iter()
        .filter(|s| s["status"]["role"] == "leader")
        .collect();
    assert_eq!(leaders.len(), 1);
    assert!(arr
        .iter()
        .all(|s| s["status"]["members"].as_array().unwrap().len() == 3));
    let table = eventstream_ok(&["status", "--endpoints", &eps.join(",")]);
    assert!(
        table.contains("| ENDPOINT") && table.contains("leader") && table.lines().count() == 7,
        "{table}"
    );
    a_group_subscriber_resumes_at_its_commit(&eps);
    drop(cluster);
}

/// `subscribe --group`: a second subscriber of the group starts where the first one's commit
/// left it, and the commit is the one `groups describe` shows.
fn a_group_subscriber_resumes_at_its_commit(eps: &[String]) {
    let all = eps.join(",");
    let published = eventstream_ok(&[
        "publish",
        "--endpoints",
        &all,
        "--topic",
        "grouped",
        "g0",
        "g1",
        "g2",
        "g3",
        "g4",
        "g5",
    ]);
    let offsets: Vec<u64> = published
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let read = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["subscribe", "--endpoints", &eps[1], "--topic", "grouped"];
        args.extend_from_slice(&["--group", "cli-readers", "--idle-exit-ms", "1000"]);
        args.extend_from_slice(extra);
        let out = eventstream_ok(&args);
        out.lines()
            .map(|l| l.split('\t').nth(4).unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(read(&["--limit", "4"]), ["g0", "g1", "g2", "g3"]);
    assert_eq!(read(&[]), ["g4", "g5"], "resumed at the commit");
    assert!(read(&[]).is_empty(), "nothing left for the group");
    let described: serde_json::Value = serde_json::from_str(&eventstream_ok(&[
        "groups",
        "describe",
        "cli-readers",
        "--json",
        "--endpoints",
        &all,
    ]))
    .unwrap();
    let o = &described["offsets"][0];
    assert_eq!(o["topic"], "grouped", "{described}");
    assert_eq!(o["committed"], offsets[5] + 1, "{described}");
}

#[test]
fn invalid_node_configuration_names_the_field() {
    let out = Command::new(EXE)
        .args([
            "node",
            "--id",
            "4",
            "--peers",
            "1=127.0.0.1:1,2=127.0.0.1:2",
        ])
        .env_remove("EVENTSTREAM_ID")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`peers`") && err.contains("does not list this node's id 4"),
        "{err}"
    );
    let out = Command::new(EXE)
        .args(["node", "--peers", "1=127.0.0.1:1"])
        .env("EVENTSTREAM_ID", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("`id`"), "{err}");
    let dir = Scratch::new("cfg");
    let toml = dir.path().join("node.toml");
    std::fs::write(&toml, "id = 1\npeers = [\"1=127.0.0.1:1\"]\ntick_ms = 0\n").unwrap();
    let out = Command::new(EXE)
        .args(["node", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("`tick_ms`"), "{err}");
}
