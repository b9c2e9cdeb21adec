//! External clients the tests drive, found on this machine (`scripts/ensure-tools.sh`
//! installs them).

use std::path::PathBuf;
use std::process::Command;

/// A `python3` that imports `confluent_kafka` (a real librdkafka client). `None` when there is
/// none, after a loud note: the caller skips its test. With `CI=true` a missing client is a
/// failure instead, so CI never passes by skipping.
pub fn confluent_kafka_python() -> Option<PathBuf> {
    let python = PathBuf::from("python3");
    let have = Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "confluent-kafka is not installed and CI=true: scripts/ensure-tools.sh must install it"
        );
        eprintln!("\n!!!!!!!! SKIPPED: python3 -m pip install confluent-kafka !!!!!!!!\n");
        return None;
    }
    Some(python)
}
