//! Bad input at start-up: a malformed configuration file stops `eventstream node` with a
//! non-zero exit and a message naming the field and line; a bad `EVENTSTREAM_*` variable or
//! setting flag names itself and the setting; an unknown flag is a usage error (exit code 2)
//! naming the flag. Nothing is started in any case. And the one configuration's three ways in
//! (file, variables, flags) with `--print-config` showing the merged result.

mod common;

use common::eventstream;
use std::time::Duration;

/// Runs `eventstream node --config FILE` with `toml` as the file; returns (exit code, stderr).
fn node_with_config(toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = eventstream()
        .args(["node", "--config"])
        .arg(&path)
        .env_remove("EVENTSTREAM_ID")
        .env_remove("EVENTSTREAM_PEERS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A node that starts would run until stopped: give it a bounded time to fail.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node started with a malformed configuration file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn malformed_configuration_file_stops_start_up_naming_field_and_line() {
    let base = "id = 1\npeers = [\"1=127.0.0.1:1\"]\n";
    // Wrong type: the parser names the line and the expected type.
    let (code, err) = node_with_config(&format!("{base}[raft]\ntick_ms = \"fast\"\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("tick_ms"), "{err}");
    // A misspelt key is refused, not ignored, in a section as at the top.
    let (code, err) = node_with_config(&format!("{base}[raft]\ntick_msec = 5\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unknown field `tick_msec`"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    let (code, err) = node_with_config(&format!("{base}tick_ms = 5\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unknown field `tick_ms`"), "{err}");
    // Not TOML at all.
    let (code, err) = node_with_config("id = = 1\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 1"), "{err}");
    // Well-formed but invalid: validation names the field, the value and the range.
    let (code, err) = node_with_config(&format!("{base}[raft]\nelection_ticks = 0\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("`raft.election_ticks`"), "{err}");
    assert!(err.contains("0 is outside 3..=1000"), "{err}");
    // A Kafka users file that is missing stops start-up naming the setting.
    let (code, err) = node_with_config(&format!(
        "{base}[kafka]\nlisten = \"127.0.0.1:0\"\nsasl_users_file = \"/nonexistent/users\"\n"
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("kafka.sasl_users_file"), "{err}");
    assert!(err.contains("/nonexistent/users"), "{err}");
}

/// `eventstream node` with `args` and `env`: (exit code, stdout, stderr). Only for commands
/// that exit by themselves (a bad setting, `--print-config`).
fn node_output(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = eventstream();
    cmd.arg("node").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.env_remove("EVENTSTREAM_CONFIG").output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_setting_is_a_flag_and_a_variable_and_print_config_shows_the_result() {
    let peers = ["--id", "1", "--peers", "1=127.0.0.1:1"];
    // Flags override variables, which override the file; the result prints as TOML.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "[raft]\ntick_ms = 7\n[engine]\ndedup_window = 5\n").unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = node_output(
        &[
            &peers[..],
            &[
                "--config",
                f,
                "--raft-tick-ms",
                "9",
                "--tls-client-auth=false",
                "--print-config",
            ],
        ]
        .concat(),
        &[
            ("EVENTSTREAM_RAFT_TICK_MS", "8"),
            ("EVENTSTREAM_ENGINE_RING_CAPACITY", "1024"),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let printed: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(printed["raft"]["tick_ms"].as_integer(), Some(9), "{out}");
    assert_eq!(
        printed["engine"]["dedup_window"].as_integer(),
        Some(5),
        "{out}"
    );
    assert_eq!(
        printed["engine"]["ring_capacity"].as_integer(),
        Some(1024),
        "{out}"
    );
    assert_eq!(
        printed["tls"]["client_auth"].as_bool(),
        Some(false),
        "{out}"
    );
    // A bad variable or flag names itself, the setting and the value.
    let (code, _, err) = node_output(&peers, &[("EVENTSTREAM_ENGINE_IO_THREADS", "lots")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("engine.io_threads")
            && err.contains("EVENTSTREAM_ENGINE_IO_THREADS")
            && err.contains("lots"),
        "{err}"
    );
    let (code, _, err) = node_output(
        &[&peers[..], &["--engine-ring-capacity", "1000"]].concat(),
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("engine.ring_capacity") && err.contains("power of two"),
        "{err}"
    );
    // --help lists every setting with its flag, variable and default.
    let out = eventstream().args(["node", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--raft-election-ticks",
        "EVENTSTREAM_RAFT_ELECTION_TICKS",
        "--engine-dedup-window",
        "--limits-max-inflight-events",
        "--storage-snapshot-bytes",
        "--http-port",
        "[default: 15]",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn unknown_flag_is_a_usage_error_with_exit_code_2() {
    let out = eventstream()
        .args(["node", "--id", "1", "--no-such-flag"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unexpected argument '--no-such-flag'"),
        "{err}"
    );
    assert!(err.contains("Usage:"), "{err}");
}
