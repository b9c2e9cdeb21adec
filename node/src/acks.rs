//! Publish acknowledgements: requests wait here, keyed by event id, until the apply step
//! reports each id's stream offset (or a failure).
//!
//! Keying by event id (not by log index) means an acknowledgement does not care which entry,
//! term or proposal carried the event: a retried id that dedup rejects is acknowledged with the
//! original offset, and a request whose entry was lost in a leader change simply fails (or
//! times out) and is retried by the client with the same ids.

use crate::state::IdHasher;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Why a waiting publish failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// Leadership was lost before the events were applied here.
    NotLeader,
    /// raft refused the proposal (no leader, or too much uncommitted data).
    Dropped(String),
    /// The node is stopping.
    ShuttingDown,
}

struct WaiterState {
    offsets: Vec<u64>,
    remaining: usize,
    tx: Option<oneshot::Sender<Result<Vec<u64>, AckError>>>,
}

struct Waiter {
    token: u64,
    state: Mutex<WaiterState>,
}

impl Waiter {
    /// Sets the offsets at the given positions; answers the request once every one is set.
    fn fill(&self, fills: &[(u32, u64)]) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for &(pos, offset) in fills {
            // Empty once answered (the offsets were sent).
            let Some(slot) = s.offsets.get_mut(pos as usize) else {
                return;
            };
            if *slot == OFFSET_UNSET {
                *slot = offset;
                s.remaining -= 1;
                if s.remaining == 0 {
                    let offsets = std::mem::take(&mut s.offsets);
                    if let Some(tx) = s.tx.take() {
                        let _ = tx.send(Ok(offsets));
                    }
                    return;
                }
            }
        }
    }

    fn fail(&self, err: AckError) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = s.tx.take() {
            let _ = tx.send(Err(err));
        }
    }
}

const OFFSET_UNSET: u64 = u64::MAX - 1;

/// Who waits for one id: nearly always one request, kept inline (no allocation per event; the
/// registering connection thread allocated and the driver freed, ~500 k times a second).
type Slots = SmallVec<[(Arc<Waiter>, u32); 1]>;
type IdMap = HashMap<u64, Slots, BuildHasherDefault<IdHasher>>;

/// Pending publishes by event id.
///
/// One lock, shared by connection threads (`register`, `cancel`) and the raft driver
/// (`resolve`). Tried and reverted: queueing registrations for the driver to apply, so the
/// driver never waits for the lock. Under 2× overload that moved ~600 k map inserts per second
/// onto the driver and made its apply phase slower (75–133 ms iterations, a leader change)
/// than the lock waits it removed; those waits came from a lock holder starved of CPU, which
/// running background threads at nice +10 fixed (docs/reliability.md, Overload).
#[derive(Default)]
pub struct AckRegistry {
    by_id: Mutex<IdMap>,
    len: AtomicUsize,
    next_token: AtomicU64,
}

impl std::fmt::Debug for AckRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckRegistry")
            .field("pending_ids", &self.len.load(Ordering::Relaxed))
            .finish()
    }
}

/// A registered request; pass it back to [`AckRegistry::cancel`] if it is abandoned.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl AckRegistry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Ids with someone waiting.
    pub fn pending(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Waits for the offsets of `ids` (in that order).
    pub fn register(&self, ids: &[u64]) -> (Ticket, oneshot::Receiver<Result<Vec<u64>, AckError>>) {
        let (tx, rx) = oneshot::channel();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let w = Arc::new(Waiter {
            token,
            state: Mutex::new(WaiterState {
                offsets: vec![OFFSET_UNSET; ids.len()],
                remaining: ids.len(),
                tx: Some(tx),
            }),
        });
        if ids.is_empty() {
            w.fill_empty();
        }
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        for (i, id) in ids.iter().enumerate() {
            let slots = map.entry(*id).or_default();
            if slots.is_empty() {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            slots.push((w.clone(), i as u32));
        }
        (Ticket(token), rx)
    }

    /// Reports applied `(id, offset)` pairs.
    pub fn resolve(&self, applied: &[(u64, u64)]) {
        if self.pending() == 0 {
            return;
        }
        let mut done = Vec::new();
        {
            let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
            for (id, off) in applied {
                if let Some(slots) = map.remove(id) {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    done.push((slots, *off));
                }
            }
        }
        // Consecutive ids usually belong to one request: fill each run under one lock of its
        // waiter instead of one lock per id.
        let mut run: Vec<(u32, u64)> = Vec::new();
        let mut current: Option<Arc<Waiter>> = None;
        for (slots, off) in done {
            for (w, pos) in slots {
                if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &w)) {
                    if let Some(c) = current.take() {
                        c.fill(&run);
                    }
                    run.clear();
                    current = Some(w);
                }
                run.push((pos, off));
            }
        }
        if let Some(c) = current {
            c.fill(&run);
        }
    }

    /// Fails whoever waits for any of `ids`.
    pub fn fail(&self, ids: impl IntoIterator<Item = u64>, err: AckError) {
        let mut failed = Vec::new();
        {
            let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
            for id in ids {
                if let Some(slots) = map.remove(&id) {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    failed.extend(slots.into_iter().map(|(w, _)| w));
                }
            }
        }
        for w in failed {
            w.fail(err.clone());
        }
    }

    /// Fails every waiting request (leadership lost, shutdown).
    pub fn fail_all(&self, err: AckError) {
        let all: Vec<Slots> = {
            let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
            self.len.store(0, Ordering::Relaxed);
            map.drain().map(|(_, v)| v).collect()
        };
        for (w, _) in all.into_iter().flatten() {
            w.fail(err.clone());
        }
    }

    /// Forgets a request that nobody waits for any more (timed out, or refused by the rings).
    pub fn cancel(&self, ticket: Ticket, ids: &[u64]) {
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if let Some(slots) = map.get_mut(id) {
                slots.retain(|(w, _)| w.token != ticket.0);
                if slots.is_empty() {
                    map.remove(id);
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl Waiter {
    fn fill_empty(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = s.tx.take() {
            let _ = tx.send(Ok(Vec::new()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_every_id_and_repeated_ids_share_an_offset() {
        let r = AckRegistry::new();
        let (_, mut rx) = r.register(&[5, 6, 5]);
        r.resolve(&[(5, 10)]);
        assert!(rx.try_recv().is_err());
        r.resolve(&[(6, 11)]);
        assert_eq!(rx.try_recv().unwrap(), Ok(vec![10, 11, 10]));
        assert_eq!(r.pending(), 0);
        let (t, _rx) = r.register(&[1, 2]);
        let (_, mut rx2) = r.register(&[2]);
        r.cancel(t, &[1, 2]);
        assert_eq!(r.pending(), 1);
        // A registration queued but not yet applied is still failed by fail_all.
        let (_, mut rx3) = r.register(&[7]);
        r.fail_all(AckError::NotLeader);
        assert_eq!(rx2.try_recv().unwrap(), Err(AckError::NotLeader));
        assert_eq!(rx3.try_recv().unwrap(), Err(AckError::NotLeader));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn one_resolve_fills_interleaved_requests_and_ids_they_share() {
        let r = AckRegistry::new();
        let (_, mut a) = r.register(&[1, 2, 3]);
        // Id 2 is waited for by both requests (two waiters in its slots).
        let (_, mut b) = r.register(&[4, 2, 5, 4]);
        r.resolve(&[(1, 10), (4, 40), (2, 20)]);
        assert!(a.try_recv().is_err());
        assert!(b.try_recv().is_err());
        r.resolve(&[(5, 50), (3, 30)]);
        assert_eq!(a.try_recv().unwrap(), Ok(vec![10, 20, 30]));
        assert_eq!(b.try_recv().unwrap(), Ok(vec![40, 20, 50, 40]));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn registrations_from_other_threads_resolve_in_order_with_cancels() {
        let r = AckRegistry::new();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut rxs = Vec::new();
                    for k in 0..100u64 {
                        let id = t * 1000 + k;
                        let (ticket, rx) = r.register(&[id]);
                        if k % 10 == 0 {
                            r.cancel(ticket, &[id]);
                        } else {
                            rxs.push((id, rx));
                        }
                    }
                    rxs
                })
            })
            .collect();
        let rxs: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(r.pending(), 360, "40 of 400 cancelled");
        let applied: Vec<(u64, u64)> = rxs.iter().map(|(id, _)| (*id, id + 1)).collect();
        r.resolve(&applied);
        for (id, mut rx) in rxs {
            assert_eq!(rx.try_recv().unwrap(), Ok(vec![id + 1]));
        }
        assert_eq!(r.pending(), 0);
    }
}
