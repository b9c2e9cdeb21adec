//! The check every cluster test and benchmark ends with: each acknowledged event is stored
//! exactly once, at its acknowledged offset, and every node holds the same stream.

use crate::error::TestkitError;
use eventstream_client::{Client, ClientConfig, SubscribeBody, OFFSET_UNKNOWN};
use std::collections::HashMap;
use std::time::Duration;

/// What a check of the acknowledged events against the nodes' streams found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verified {
    /// Acknowledged events not in the stream, or at another offset than acknowledged.
    pub lost: u64,
    /// Acknowledged events stored more than once.
    pub duplicated: u64,
    /// Nodes whose stream differs from the first endpoint's.
    pub diverged: u64,
}

/// Reads the whole committed stream from every endpoint and checks every acknowledged
/// `(id, offset)`: present exactly once, at its offset, and every node's stream identical.
pub async fn verify_acked(eps: &[String], acked: &[(u64, u64)]) -> Result<Verified, TestkitError> {
    let mut streams = Vec::new();
    for ep in eps {
        let client = Client::new(ClientConfig::new(vec![ep.clone()]))?;
        let mut sub = client.subscribe(SubscribeBody::default());
        let mut ids = Vec::new();
        while let Some((off, e)) = sub.next_timeout(Duration::from_millis(1500)).await? {
            if off != ids.len() as u64 {
                return Err(TestkitError::Diverged(format!(
                    "{ep}: offset {off} after {} events",
                    ids.len()
                )));
            }
            ids.push(e.id.0);
        }
        streams.push(ids);
    }
    let reference = &streams[0];
    let diverged = streams[1..].iter().filter(|s| *s != reference).count() as u64;
    let mut count: HashMap<u64, Vec<u64>> = HashMap::with_capacity(reference.len());
    for (off, id) in reference.iter().enumerate() {
        count.entry(*id).or_default().push(off as u64);
    }
    let (mut lost, mut duplicated) = (0, 0);
    for (id, off) in acked {
        match count.get(id) {
            None => lost += 1,
            Some(offs) if offs.len() > 1 => duplicated += 1,
            Some(offs) if *off != OFFSET_UNKNOWN && offs[0] != *off => lost += 1,
            Some(_) => {}
        }
    }
    Ok(Verified {
        lost,
        duplicated,
        diverged,
    })
}
