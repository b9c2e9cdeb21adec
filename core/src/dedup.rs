//! The dedup window: "have we seen this event id recently?" in O(1), bounded memory, and
//! deterministic — the same sequence of `(id, timestamp)` always yields the same decisions,
//! whatever the machine, hasher seed or timing. Replicas replaying one log therefore agree.
//!
//! # Invariants
//! * `order` holds the ids of the window, oldest first; `set` holds exactly the same ids.
//! * At most `window` ids are held; every structure is allocated once, at construction, and the
//!   id set never rehashes (load factor ≤ 1/2, deletion without tombstones).
//! * With `max_age`, the clock is the largest event timestamp seen so far (not the wall clock),
//!   which is what keeps time-based expiry deterministic.

use crate::config::DedupConfig;

/// Open-addressing set of non-zero `u64` ids: seeded Fibonacci hashing, linear probing,
/// backward-shift deletion (no tombstones, so it never needs rehashing), sized once at twice the
/// window or more.
#[derive(Clone)]
struct IdSet {
    slots: Box<[u64]>,
    mask: usize,
    bits: u32,
    /// Random per set, XORed into ids before hashing: ids arrive from the network in a cluster,
    /// and with a known hash a client could pick ids that share a home slot and turn every
    /// check into a scan. Membership — every decision — does not depend on it. XOR keeps runs of
    /// consecutive ids consecutive (within aligned blocks), so they keep the golden ratio's
    /// even spread.
    seed: u64,
}

/// Writes one word per 4 KiB page of a zero-filled table, so every page is mapped now.
///
/// Why: a zeroed allocation this large comes straight from `mmap` and is mapped lazily, and a
/// table that is read before it is written (every probe reads) first maps the shared zero
/// page. The first write to each page then takes a write-protect fault whose TLB flush
/// interrupts every core running the process (`do_wp_page` → `flush_tlb_mm_range`, seen with
/// `perf` in the raft driver applying its first few hundred thousand events: 10–20 ms of
/// faults per driver iteration on a 2-core machine). Writing each page once here costs a
/// plain first-touch fault, without the flush, before any event is on the clock.
fn prefaulted(mut table: Box<[u64]>) -> Box<[u64]> {
    const WORDS_PER_PAGE: usize = 4096 / std::mem::size_of::<u64>();
    // `black_box` hides that the memory came zeroed, so the stores of zero below are not
    // optimised away.
    let words: &mut [u64] = std::hint::black_box(&mut table[..]);
    for i in (0..words.len()).step_by(WORDS_PER_PAGE) {
        words[i] = 0;
    }
    table
}

impl IdSet {
    const EMPTY: u64 = 0;

    fn with_capacity(min_slots: usize) -> Self {
        let n = min_slots.next_power_of_two().max(16);
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        IdSet {
            slots: prefaulted(vec![Self::EMPTY; n].into_boxed_slice()),
            mask: n - 1,
            bits: n.trailing_zeros(),
            seed: random,
        }
    }

    #[inline(always)]
    fn home(&self, id: u64) -> usize {
        // Fibonacci hashing: the top bits of the product are well mixed, and consecutive ids
        // land evenly spread (three-distance theorem).
        ((id ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    /// Asks the CPU to start loading `id`'s home slot; no effect on the set's content.
    #[inline(always)]
    fn prefetch(&self, id: u64) {
        prefetch_slot(&self.slots[self.home(id)]);
    }

    /// Inserts `id` (non-zero); false if it was already present.
    #[inline(always)]
    fn insert(&mut self, id: u64) -> bool {
        let mut i = self.home(id);
        loop {
            let cur = self.slots[i];
            if cur == id {
                return false;
            }
            if cur == Self::EMPTY {
                self.slots[i] = id;
                return true;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Removes `id` if present, shifting later members of its probe run back into the gap.
    #[inline(always)]
    fn remove(&mut self, id: u64) {
        let mut i = self.home(id);
        loop {
            let cur = self.slots[i];
            if cur == Self::EMPTY {
                return;
            }
            if cur == id {
                break;
            }
            i = (i + 1) & self.mask;
        }
        // Backward-shift deletion: move each following entry whose home is not in (hole, j]
        // into the hole, until an empty slot ends the run.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let cur = self.slots[j];
            if cur == Self::EMPTY {
                break;
            }
            let home = self.home(cur);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = cur;
                hole = j;
            }
        }
        self.slots[hole] = Self::EMPTY;
    }
}

/// A hint to the CPU to bring the line holding `slot` into L1; a no-op where we have no
/// prefetch instruction.
#[inline(always)]
fn prefetch_slot(slot: &u64) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is only a hint — it never faults and changes no memory or program
        // state — and SSE (which provides it) is part of the x86_64 baseline. The pointer comes
        // from a live reference in any case.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((slot as *const u64).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// How many items ahead [`DedupWindow::check_batch`] prefetches: far enough that a line
/// arrives from L2/L3 before its item is checked (a check is a few ns), near enough that the
/// prefetched lines (two per item) fit the core's outstanding-miss buffers.
const PREFETCH_AHEAD: usize = 8;

/// A bounded window of recently seen event ids.
#[derive(Clone)]
pub struct DedupWindow {
    window: usize,
    max_age_ns: Option<u64>,
    /// Ids of the window in arrival order: a ring of `window` entries, `len` of them live,
    /// the oldest at `head`.
    order: Box<[u64]>,
    /// Timestamps parallel to `order` (only with `max_age`).
    stamps: Box<[u64]>,
    head: usize,
    len: usize,
    set: IdSet,
    /// Id 0 cannot live in `set` (it marks empty slots); it is tracked here instead.
    has_zero: bool,
    newest_ts: u64,
}

impl std::fmt::Debug for DedupWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupWindow")
            .field("window", &self.window)
            .field("max_age_ns", &self.max_age_ns)
            .field("len", &self.len)
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
        let window = config.window;
        DedupWindow {
            window,
            max_age_ns: config.max_age.map(|d| d.as_nanos() as u64),
            order: prefaulted(vec![0; window].into_boxed_slice()),
            stamps: if config.max_age.is_some() {
                prefaulted(vec![0; window].into_boxed_slice())
            } else {
                Box::new([])
            },
            head: 0,
            len: 0,
            // Load factor at most 1/2: short probe runs, no tombstones, never resized.
            set: IdSet::with_capacity(if window == 0 { 0 } else { window * 2 }),
            has_zero: false,
            newest_ts: 0,
        }
    }

    #[inline(always)]
    fn set_insert(&mut self, id: u64) -> bool {
        if id == 0 {
            !std::mem::replace(&mut self.has_zero, true)
        } else {
            self.set.insert(id)
        }
    }

    #[inline(always)]
    fn set_remove(&mut self, id: u64) {
        if id == 0 {
            self.has_zero = false;
        } else {
            self.set.remove(id);
        }
    }

    #[inline(always)]
    fn pop_oldest(&mut self) {
        let old = self.order[self.head];
        self.set_remove(old);
        self.head += 1;
        if self.head == self.window {
            self.head = 0;
        }
        self.len -= 1;
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
            while self.len > 0 && self.stamps[self.head] < horizon {
                self.pop_oldest();
            }
        }
        if !self.set_insert(id) {
            return Decision::Duplicate;
        }
        if self.len == self.window {
            self.pop_oldest();
        }
        let mut tail = self.head + self.len;
        if tail >= self.window {
            tail -= self.window;
        }
        self.order[tail] = id;
        if self.max_age_ns.is_some() {
            self.stamps[tail] = ts_ns;
        }
        self.len += 1;
        Decision::Fresh
    }

    /// [`check`](Self::check) for every item of a batch, in order: `out` is cleared and gets
    /// one decision per item, exactly the decisions successive `check` calls would give.
    ///
    /// What it adds is memory-level parallelism: while item `i` is checked, the home line of
    /// item `i + PREFETCH_AHEAD` and the line of the id that insert will evict are already
    /// being loaded, so the cache misses of a batch overlap instead of being paid one after
    /// another. Prefetches are hints only; they change no state.
    ///
    /// Measured: in isolation (`cargo bench -p eventstream-benches --bench dedup`, group
    /// `dedup_batch_64`) the table stays hot in L2 and a plain `check` loop is as fast or
    /// faster; in the closed-loop pipeline, where ring slots compete for the worker's cache,
    /// the [`Applier`](crate::Applier) using it ran faster (README, issue 2 rows).
    #[inline]
    pub fn check_batch<T>(
        &mut self,
        items: &[T],
        key: impl Fn(&T) -> (u64, u64),
        out: &mut Vec<Decision>,
    ) {
        out.clear();
        if self.window == 0 {
            out.resize(items.len(), Decision::Fresh);
            return;
        }
        out.reserve(items.len());
        for (ahead, item) in items.iter().take(PREFETCH_AHEAD).enumerate() {
            self.prefetch(key(item).0, ahead);
        }
        for (i, item) in items.iter().enumerate() {
            if let Some(next) = items.get(i + PREFETCH_AHEAD) {
                self.prefetch(key(next).0, PREFETCH_AHEAD);
            }
            let (id, ts) = key(item);
            out.push(self.check(id, ts));
        }
    }

    /// Prefetches what checking `id` will touch if it is checked after `ahead` more fresh
    /// inserts: its home line, and (window full) the line of the id that insert will evict.
    /// A guess that turns out wrong (duplicates or age-expiry in between) costs one wasted load.
    #[inline(always)]
    fn prefetch(&self, id: u64, ahead: usize) {
        if id != 0 {
            self.set.prefetch(id);
        }
        if self.len == self.window {
            let mut k = self.head + ahead;
            if k >= self.window {
                k %= self.window;
            }
            let leaving = self.order[k];
            if leaving != 0 {
                self.set.prefetch(leaving);
            }
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum ids remembered.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The window's content, oldest first, as `(id, timestamp)` — what a snapshot carries
    /// (timestamps are 0 unless `max_age` is set).
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.len).map(move |k| {
            let i = (self.head + k) % self.window.max(1);
            let ts = if self.stamps.is_empty() {
                0
            } else {
                self.stamps[i]
            };
            (self.order[i], ts)
        })
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
    use std::collections::{HashSet, VecDeque};
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
        fn matches_a_naive_window(window in 1usize..16, ids in proptest::collection::vec(prop_oneof![0u64..24, any::<u64>(), (0u64..4).prop_map(|k| k << 40)], 0..300)) {
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

        /// The id set against std's HashSet, on a tiny table with keys built to collide (same
        /// home slot, wrapping probe runs), exercising backward-shift deletion.
        #[test]
        fn id_set_matches_hashset(ops in proptest::collection::vec((any::<bool>(), 1u64..40), 0..400)) {
            let mut set = IdSet::with_capacity(16);
            let mut model = HashSet::new();
            for (insert, k) in ops {
                // Spread keys over few home groups: low bits vary, high bits from a small set.
                let id = ((k % 5) << 50) | (k % 8) | ((k / 8) << 3);
                if insert {
                    if model.len() < 12 || model.contains(&id) {
                        prop_assert_eq!(set.insert(id), model.insert(id));
                    }
                } else {
                    set.remove(id);
                    model.remove(&id);
                }
                for &m in &model {
                    prop_assert!(!set.insert(m), "lost {}", m);
                }
                let live = set.slots.iter().filter(|&&v| v != IdSet::EMPTY).count();
                prop_assert_eq!(live, model.len());
            }
        }

        /// `check_batch` decides exactly as successive `check` calls, for any split of the
        /// stream into batches, with and without an age limit (ids repeat, wrap the window,
        /// include 0, and timestamps go backwards as well as forwards).
        #[test]
        fn check_batch_matches_sequential_check(
            window in 0usize..40,
            aged in any::<bool>(),
            items in proptest::collection::vec(
                (prop_oneof![0u64..60, any::<u64>(), (0u64..4).prop_map(|k| k << 40)], 0u64..5_000),
                0..400,
            ),
            cuts in proptest::collection::vec(1usize..40, 1..20),
        ) {
            let c = DedupConfig {
                window,
                max_age: aged.then(|| Duration::from_nanos(700)),
            };
            let mut seq = DedupWindow::new(c);
            let mut bat = DedupWindow::new(c);
            let mut out = Vec::new();
            let mut rest = &items[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (batch, tail) = rest.split_at((*cut).min(rest.len()));
                rest = tail;
                bat.check_batch(batch, |&(id, ts)| (id, ts), &mut out);
                prop_assert_eq!(out.len(), batch.len());
                for (&(id, ts), &d) in batch.iter().zip(&out) {
                    prop_assert_eq!(d, seq.check(id, ts), "id {}", id);
                }
                prop_assert_eq!(bat.len(), seq.len());
            }
            prop_assert!(bat.entries().eq(seq.entries()));
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
