//! Bad input at start-up, one test each: a malformed configuration file stops
//! `eventstream node` with a non-zero exit and a message naming the field and line; an unknown
//! flag is a usage error (exit code 2) naming the flag. Nothing is started in either case.

use std::process::Command;
use std::time::Duration;

fn eventstream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eventstream"))
}

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
    let (code, err) = node_with_config(&format!("{base}tick_ms = \"fast\"\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("tick_ms"), "{err}");
    // A misspelt key is refused, not ignored.
    let (code, err) = node_with_config(&format!("{base}tick_msec = 5\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unknown field `tick_msec`"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    // Not TOML at all.
    let (code, err) = node_with_config("id = = 1\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 1"), "{err}");
    // Well-formed but invalid: validation names the field.
    let (code, err) = node_with_config(&format!("{base}election_ticks = 0\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("`election_ticks`"), "{err}");
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
