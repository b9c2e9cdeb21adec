//! The dedup window: "have we seen this event id recently?" in O(1), bounded memory, and
//! deterministic — the same sequence of `(id, timestamp)` always yields the same decisions,
//! whatever the machine, hasher seed or timing. Replicas replaying one log therefore agree.
//!
//! # Invariants
//! * `order` holds the ids of the window, oldest first; `set` holds exactly the same ids.
//! * `order.len() <= window`; both structures are allocated once, at construction.
//! * With `max_age`, the clock is the largest event timestamp seen so far (not the wall clock),
//!   which is what keeps time-based expiry deterministic.

use crate::config::DedupConfig;
use std::collections::VecDeque;

type FixedState = ahash::RandomState;

/// A bounded window of recently seen event ids.
#[derive(Clone)]
pub struct DedupWindow {
    window: usize,
    max_age_ns: Option<u64>,
    /// `(id, timestamp)` oldest first.
    order: VecDeque<(u64, u64)>,
    set: hashbrown::HashSet<u64, FixedState>,
    newest_ts: u64,
}

impl std::fmt::Debug for DedupWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupWindow")
            .field("window", &self.window)
            .field("max_age_ns", &self.max_age_ns)
            .field("len", &self.order.len())
            .finish()
    }
}

/// What the window decided about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// First sighting within the window: dispatch it.
    Fresh,
    /// Seen within the window: count it and drop it.
    Duplicate,
}

impl DedupWindow {
    /// A window per `config`; `window == 0` makes every event fresh.
    pub fn new(config: DedupConfig) -> Self {
        // A fixed seed: decisions never depend on it, but a fixed layout keeps behaviour (and
        // timing) reproducible between replicas and runs.
        let hasher = FixedState::with_seeds(
            0x243f_6a88_85a3_08d3,
            0x1319_8a2e_0370_7344,
            0xa409_3822_299f_31d0,
            0x082e_fa98_ec4e_6c89,
        );
        // Twice the window keeps the load factor low, so deletions rarely leave tombstones and
        // the table never rehashes on the hot path.
        let table = if config.window == 0 {
            0
        } else {
            config.window * 2
        };
        DedupWindow {
            window: config.window,
            max_age_ns: config.max_age.map(|d| d.as_nanos() as u64),
            order: VecDeque::with_capacity(config.window),
            set: hashbrown::HashSet::with_capacity_and_hasher(table, hasher),
            newest_ts: 0,
        }
    }

    /// Records `id` seen at `ts_ns` and says whether it is fresh or a duplicate. A duplicate is
    /// not re-inserted, so it does not extend its own lifetime in the window.
    #[inline]
    pub fn check(&mut self, id: u64, ts_ns: u64) -> Decision {
        if self.window == 0 {
            return Decision::Fresh;
        }
        if let Some(max_age) = self.max_age_ns {
            self.newest_ts = self.newest_ts.max(ts_ns);
            let horizon = self.newest_ts.saturating_sub(max_age);
            while let Some(&(old, ts)) = self.order.front() {
                if ts >= horizon {
                    break;
                }
                self.order.pop_front();
                self.set.remove(&old);
            }
        }
        if !self.set.insert(id) {
            return Decision::Duplicate;
        }
        if self.order.len() == self.window {
            if let Some((old, _)) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back((id, ts_ns));
        Decision::Fresh
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Maximum ids remembered.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The window's content, oldest first — what a snapshot carries.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.order.iter().copied()
    }

    /// Rebuilds a window from [`entries`](Self::entries) (oldest first). Replaying them through
    /// `check` gives exactly the state that produced them.
    pub fn restore(config: DedupConfig, entries: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut w = DedupWindow::new(config);
        for (id, ts) in entries {
            w.check(id, ts);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn cfg(window: usize) -> DedupConfig {
        DedupConfig {
            window,
            max_age: None,
        }
    }

    #[test]
    fn duplicates_within_the_window_are_caught_and_old_ids_expire() {
        let mut w = DedupWindow::new(cfg(3));
        assert_eq!(w.check(1, 0), Decision::Fresh);
        assert_eq!(w.check(1, 0), Decision::Duplicate);
        assert_eq!(w.check(2, 0), Decision::Fresh);
        assert_eq!(w.check(3, 0), Decision::Fresh);
        assert_eq!(w.check(4, 0), Decision::Fresh); // evicts 1
        assert_eq!(w.check(1, 0), Decision::Fresh);
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn time_window_uses_event_timestamps() {
        let mut w = DedupWindow::new(DedupConfig {
            window: 100,
            max_age: Some(Duration::from_nanos(1000)),
        });
        assert_eq!(w.check(1, 10), Decision::Fresh);
        assert_eq!(w.check(1, 900), Decision::Duplicate);
        assert_eq!(w.check(2, 2000), Decision::Fresh); // 1 is now older than 1000 ns
        assert_eq!(w.check(1, 2001), Decision::Fresh);
    }

    #[test]
    fn disabled_window_passes_everything() {
        let mut w = DedupWindow::new(cfg(0));
        assert_eq!(w.check(7, 0), Decision::Fresh);
        assert_eq!(w.check(7, 0), Decision::Fresh);
    }

    #[test]
    fn restore_reproduces_decisions() {
        let mut a = DedupWindow::new(cfg(4));
        for id in [1, 2, 3, 2, 5, 6, 1] {
            a.check(id, 0);
        }
        let mut b = DedupWindow::restore(cfg(4), a.entries().collect::<Vec<_>>());
        for id in [1, 2, 3, 5, 6, 7, 8, 1] {
            assert_eq!(a.check(id, 0), b.check(id, 0), "id {id}");
        }
    }

    proptest! {
        /// Against the obvious model: a VecDeque of the last `window` fresh ids, searched linearly.
        #[test]
        fn matches_a_naive_window(window in 1usize..16, ids in proptest::collection::vec(0u64..24, 0..300)) {
            let mut w = DedupWindow::new(cfg(window));
            let mut model: VecDeque<u64> = VecDeque::new();
            for id in ids {
                let expect = if model.contains(&id) {
                    Decision::Duplicate
                } else {
                    if model.len() == window { model.pop_front(); }
                    model.push_back(id);
                    Decision::Fresh
                };
                prop_assert_eq!(w.check(id, 0), expect);
                prop_assert_eq!(w.len(), model.len());
            }
        }

        /// Two windows fed the same sequence decide the same (replicas agree).
        #[test]
        fn deterministic(ids in proptest::collection::vec((0u64..50, 0u64..10_000), 0..300)) {
            let c = DedupConfig { window: 8, max_age: Some(Duration::from_nanos(500)) };
            let mut a = DedupWindow::new(c);
            let mut b = DedupWindow::new(c);
            for (id, ts) in ids {
                prop_assert_eq!(a.check(id, ts), b.check(id, ts));
            }
        }
    }
}
