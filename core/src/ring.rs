//! A bounded, lock-free, multi-producer single-consumer ring.
//!
//! This is Dmitry Vyukov's bounded queue with a sequence number per slot, specialised for one
//! consumer (each tier ring is drained by exactly one worker, which is what gives eventstream its
//! per-producer FIFO guarantee) and extended with batch claim on the producer side.
//!
//! # Invariants
//!
//! * Positions are `u64` counters that never wrap in practice (2^64 events at 10^9/s is 584
//!   years); slot `i` serves positions `p` with `p & mask == i`.
//! * `slot.seq == p` — the slot is free for the producer that claims position `p`.
//! * `slot.seq == p + 1` — the value for position `p` is written and may be read.
//! * `slot.seq == p + capacity` — the consumer has taken `p`'s value; the slot is free for `p + capacity`.
//! * `tail` is the next position to claim. Producers claim positions only by a successful CAS on
//!   `tail`, so every position has at most one writer.
//! * `head` is the next position to consume. Only the [`Consumer`] advances it, and it frees
//!   slots strictly in position order, so "the slot at position `p` is free" implies "every
//!   position below `p` in this lap is free" — the fact batch claims rely on.
//! * A value is moved out exactly once (by the consumer, or by `Drop` for values never consumed).
//!
//! * [`Ring::close`] sets the top bit of `tail`. Every claim is a CAS from a `tail` without that
//!   bit, so after `close` no claim succeeds, and every claim that did succeed is below the
//!   closed tail — which is how shutdown drains *every* accepted value without making producers
//!   pay for a separate "in flight" counter.
//! * Claims use a `SeqCst` CAS on `tail` (the same `lock cmpxchg` on x86 as a relaxed one). With
//!   the worker's `SeqCst` write (a swap) of its sleeping flag followed by a `SeqCst` load of
//!   `tail` ([`Ring::claimed`]), this is the Dekker pattern that makes sleeping workers miss no
//!   wake-up (model-checked in `lane.rs`).
//!
//! `push` hands the value back when the ring is full, like crossbeam's `ArrayQueue::push`.

use crate::sync::{AtomicU64, Ordering, UnsafeCell};
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;

/// Set in `tail` by [`Ring::close`]: no position can be claimed any more.
const CLOSED: u64 = 1 << 63;

/// Why a push did not take the value; the value is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// Every slot holds an unconsumed value.
    Full(T),
    /// The ring was closed; it accepts nothing more.
    Closed(T),
}

impl<T> PushError<T> {
    /// The value that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            PushError::Full(v) | PushError::Closed(v) => v,
        }
    }
}

struct Slot<T> {
    seq: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A bounded MPSC ring buffer. Producers share it by reference (`&Ring`); the single consumer
/// holds the [`Consumer`] handle returned by [`Ring::with_capacity`].
pub struct Ring<T> {
    /// Next position a producer will claim.
    tail: CachePadded<AtomicU64>,
    /// Next position the consumer will read; published after every drained batch.
    head: CachePadded<AtomicU64>,
    slots: Box<[Slot<T>]>,
    mask: u64,
}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

// SAFETY: values of `T` are moved in by producers and out by the single consumer, each slot access
// being handed over through the slot's `seq` (Release store / Acquire load). `T: Send` is all that
// is needed to move values between threads; no `&T` is ever shared.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: see `Send`; concurrent `&Ring` use is the whole point, and every shared mutation goes
// through atomics or through slots owned exclusively by the claimant of their position.
unsafe impl<T: Send> Sync for Ring<T> {}

/// The single consumer's handle to a [`Ring`]. Not `Clone`: there is exactly one per ring.
pub struct Consumer<T> {
    ring: crate::sync::Arc<Ring<T>>,
    head: u64,
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .finish()
    }
}

impl<T> Ring<T> {
    /// Creates a ring of `capacity` slots (a power of two, at least 2) and its consumer handle.
    ///
    /// # Panics
    /// If `capacity` is not a power of two of at least 2 (with one slot, "written for position
    /// `p`" and "free for position `p + 1`" would be the same sequence number); configuration
    /// validation rejects such values first.
    pub fn with_capacity(capacity: usize) -> (crate::sync::Arc<Ring<T>>, Consumer<T>) {
        assert!(
            capacity >= 2 && capacity.is_power_of_two(),
            "ring capacity must be a power of two of at least 2, got {capacity}"
        );
        let slots = (0..capacity as u64)
            .map(|p| Slot {
                seq: AtomicU64::new(p),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let ring = crate::sync::Arc::new(Ring {
            tail: CachePadded::new(AtomicU64::new(0)),
            head: CachePadded::new(AtomicU64::new(0)),
            slots,
            mask: capacity as u64 - 1,
        });
        let consumer = Consumer {
            ring: ring.clone(),
            head: 0,
        };
        (ring, consumer)
    }

    /// Number of slots.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Values pushed and not yet consumed. A racy snapshot, exact when producers and consumer are quiet.
    pub fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::Relaxed) & !CLOSED;
        let head = self.head.load(Ordering::Relaxed);
        tail.saturating_sub(head) as usize
    }

    /// True when [`len`](Self::len) is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total positions ever claimed by producers, i.e. successful pushes.
    pub fn pushed(&self) -> u64 {
        self.tail.load(Ordering::Relaxed) & !CLOSED
    }

    /// Total values ever consumed.
    pub fn popped(&self) -> u64 {
        self.head.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn slot(&self, pos: u64) -> &Slot<T> {
        // `mask < slots.len()` by construction, so this index is always in bounds; the compiler
        // cannot see that, and the bounds check is one predictable compare.
        &self.slots[(pos & self.mask) as usize]
    }

    /// Writes `value` into the slot of `pos` and makes it visible to the consumer.
    ///
    /// # Safety
    /// The caller must own `pos`: it won the CAS on `tail` that claimed it, and the slot's `seq`
    /// was observed equal to `pos` (free) with Acquire ordering before that.
    #[inline(always)]
    unsafe fn write(&self, pos: u64, value: T) {
        let slot = self.slot(pos);
        slot.value.with_mut(|p| {
            // SAFETY: by the caller's contract no other thread reads or writes this slot until
            // the Release store below publishes it.
            unsafe { (*p).write(value) };
        });
        // Release: pairs with the consumer's Acquire load of `seq` in `pop_batch`, so the value
        // written above is visible before the consumer reads it.
        slot.seq.store(pos + 1, Ordering::Release);
    }

    /// Pushes one value; hands it back if the ring is full.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), PushError<T>> {
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(tail);
            // Acquire: pairs with the consumer's Release store of `seq = pos + capacity`, so the
            // consumer's read of the previous lap's value happens before we overwrite it.
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == tail {
                // The slot hand-over is ordered by `seq`; `tail` arbitrates which producer owns
                // the position. SeqCst on success pairs with the worker's SeqCst sleeping-flag
                // swap and `claimed` load (see the module docs).
                match self.tail.compare_exchange_weak(
                    tail,
                    tail + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: we won the CAS for `tail` after seeing its slot free.
                        unsafe { self.write(tail, value) };
                        return Ok(());
                    }
                    Err(current) => tail = current,
                }
            } else if tail & CLOSED != 0 {
                return Err(PushError::Closed(value));
            } else if seq < tail {
                // The slot still holds the value of `tail - capacity`: the ring is full.
                return Err(PushError::Full(value));
            } else {
                // Another producer claimed `tail` and moved on; catch up.
                crate::sync::spin_hint();
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Claims up to `want` consecutive positions at once; returns the first position and how many
    /// were claimed (0 when full), or `None` when the ring is closed.
    #[inline]
    fn claim(&self, want: usize) -> Option<(u64, usize)> {
        let cap = self.slots.len() as u64;
        let want = (want as u64).min(cap);
        if want == 0 {
            return Some((self.tail.load(Ordering::Relaxed) & !CLOSED, 0));
        }
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if tail & CLOSED != 0 {
                return None;
            }
            // Fast path: if the slot of the last wanted position is free for this lap, all the
            // positions before it are too (the consumer frees in order). This reads a slot the
            // consumer released a lap ago instead of `head`, which the consumer writes on every
            // batch — keeping that cache line from bouncing between cores on every publish.
            let last = tail + want - 1;
            // Acquire: pairs with the consumer's Release store of this slot's `seq`, which
            // follows (in its program order) its reads of every earlier slot.
            let seq = self.slot(last).seq.load(Ordering::Acquire);
            let n = if seq == last {
                want
            } else if seq > last {
                // Someone claimed past our stale `tail`.
                crate::sync::spin_hint();
                tail = self.tail.load(Ordering::Relaxed);
                continue;
            } else {
                // Acquire: pairs with the consumer's Release store of `head` after it freed
                // the slots below it, so every position in `tail .. head + capacity` is free.
                let head = self.head.load(Ordering::Acquire);
                (head + cap).saturating_sub(tail).min(want)
            };
            if n == 0 {
                return Some((tail, 0));
            }
            // SeqCst on success: as in `push`.
            match self.tail.compare_exchange_weak(
                tail,
                tail + n,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((tail, n as usize)),
                Err(current) => tail = current,
            }
        }
    }

    /// Asks for the cache lines of the slots of `start .. start + n` in exclusive state before
    /// they are written. The consumer on another core freed them (its `seq` store left each line
    /// modified in its cache); without this, every store of a batch waits in turn for its line's
    /// ownership, and the store buffer fills. With it, the transfers overlap. A hint only.
    #[inline(always)]
    fn prefetch_for_write(&self, start: u64, n: usize) {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        {
            if n < 2 {
                return;
            }
            let first = (start & self.mask) as usize;
            let to_end = self.slots.len() - first;
            for (from, len) in [(first, n.min(to_end)), (0, n.saturating_sub(to_end))] {
                if len == 0 {
                    continue;
                }
                let base = self.slots[from..].as_ptr().cast::<u8>();
                let bytes = len * std::mem::size_of::<Slot<T>>();
                let mut off = 0;
                while off < bytes + 63 {
                    let at = off.min(bytes - 1);
                    // SAFETY: `from + len <= slots.len()`, so `base + at` (at < bytes) lies inside
                    // the slots allocation. PREFETCHW only hints the cache: it never faults, writes
                    // no memory and changes no register or flag (a NOP on CPUs without it).
                    unsafe {
                        std::arch::asm!(
                            "prefetchw [{p}]",
                            p = in(reg) base.add(at),
                            options(nostack, preserves_flags, readonly)
                        );
                    }
                    off += 64;
                }
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        let _ = (start, n);
    }

    /// Pushes values from the front of `values` while there is room, in order, with one claim for
    /// the whole run. Returns how many were pushed (`None` if the ring is closed); the rest stay
    /// in `values`.
    pub fn push_batch(&self, values: &mut std::collections::VecDeque<T>) -> Option<usize> {
        let (start, n) = self.claim(values.len())?;
        for pos in start..start + n as u64 {
            let value = values
                .pop_front()
                .expect("claimed no more positions than values");
            // SAFETY: `claim` won the CAS for `start .. start + n`, and the consumer's published
            // head shows each of their slots free (see `claim`).
            unsafe { self.write(pos, value) };
        }
        Some(n)
    }

    /// Pushes values produced by `next` into freshly claimed positions, claiming at most `want`;
    /// returns how many positions were filled (`None` if the ring is closed). `next` is called
    /// exactly that many times. This is the allocation-free batch path used by publishers.
    #[inline]
    pub fn push_with(&self, want: usize, mut next: impl FnMut() -> T) -> Option<usize> {
        let (start, n) = self.claim(want)?;
        self.prefetch_for_write(start, n);
        for pos in start..start + n as u64 {
            let value = next();
            // SAFETY: as in `push_batch`.
            unsafe { self.write(pos, value) };
        }
        Some(n)
    }

    /// Closes the ring: every later push or claim fails with `Closed`. Returns the final tail —
    /// every position below it was claimed and will be written by its claimant.
    pub fn close(&self) -> u64 {
        // SeqCst: totally ordered with the claim CASes, so each claim is either below the
        // returned tail or fails.
        self.tail.fetch_or(CLOSED, Ordering::SeqCst) & !CLOSED
    }

    /// True once [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.tail.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Positions claimed so far (the tail without the closed bit). SeqCst: the worker's side of
    /// the sleeping handshake (see the module docs).
    #[inline]
    pub fn claimed(&self) -> u64 {
        self.tail.load(Ordering::SeqCst) & !CLOSED
    }
}

impl<T> Consumer<T> {
    /// The ring this consumer drains.
    pub fn ring(&self) -> &Ring<T> {
        &self.ring
    }

    /// Moves up to `max` ready values, oldest first, onto the end of `out`. Returns how many.
    #[inline]
    pub fn pop_batch(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let ring = &*self.ring;
        let cap = ring.slots.len() as u64;
        let start = self.head;
        let mut head = start;
        while ((head - start) as usize) < max {
            let slot = ring.slot(head);
            // Acquire: pairs with the producer's Release store in `write`.
            if slot.seq.load(Ordering::Acquire) != head + 1 {
                // Empty, or claimed and not yet written: stop to keep FIFO order.
                break;
            }
            let value = slot.value.with_mut(|p| {
                // SAFETY: `seq == head + 1` means the value for `head` is fully written, and as
                // the single consumer we are the only reader; it is read exactly once.
                unsafe { (*p).assume_init_read() }
            });
            out.push(value);
            // Release: pairs with the Acquire load of `seq` in `push`: our read of the value
            // happens before a producer of the next lap overwrites it.
            slot.seq.store(head + cap, Ordering::Release);
            head += 1;
        }
        let n = (head - start) as usize;
        if n > 0 {
            self.head = head;
            // Release: pairs with the Acquire load of `head` in `claim`; the per-slot stores above
            // happen before it, so a batch claimant that sees this head may reuse those slots.
            ring.head.store(head, Ordering::Release);
        }
        n
    }

    /// Pops one value, if one is ready.
    pub fn pop(&mut self) -> Option<T> {
        let mut one = Vec::with_capacity(1);
        self.pop_batch(&mut one, 1);
        one.pop()
    }

    /// Position of the next value to read (= values consumed so far).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// True when the next position is not ready to read.
    pub fn is_empty(&self) -> bool {
        // Acquire: as in `pop_batch`.
        self.ring.slot(self.head).seq.load(Ordering::Acquire) != self.head + 1
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // `&mut self`: every producer reference and the consumer are gone, so reading the
        // counters without synchronisation beyond `Arc`'s drop fence is sound.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed) & !CLOSED;
        for pos in head..tail {
            let slot = self.slot(pos);
            if slot.seq.load(Ordering::Relaxed) == pos + 1 {
                slot.value.with_mut(|p| {
                    // SAFETY: written and never consumed; dropped exactly once here.
                    unsafe { (*p).assume_init_drop() }
                });
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn push_hands_value_back_when_full() {
        let (ring, mut consumer) = Ring::with_capacity(4);
        for i in 0..4 {
            ring.push(i).unwrap();
        }
        assert_eq!(ring.push(99), Err(PushError::Full(99)));
        assert_eq!(ring.len(), 4);
        let mut out = Vec::new();
        assert_eq!(consumer.pop_batch(&mut out, 10), 4);
        assert_eq!(out, vec![0, 1, 2, 3]);
        ring.push(5).unwrap();
        assert_eq!(consumer.pop(), Some(5));
        assert_eq!(consumer.pop(), None);
        assert_eq!(ring.pushed(), 5);
        assert_eq!(ring.popped(), 5);
    }

    #[test]
    fn batch_push_claims_only_free_slots() {
        let (ring, mut consumer) = Ring::with_capacity(8);
        let mut values: VecDeque<u32> = (0..12).collect();
        assert_eq!(ring.push_batch(&mut values), Some(8));
        assert_eq!(values.len(), 4);
        let mut out = Vec::new();
        consumer.pop_batch(&mut out, 3);
        assert_eq!(ring.push_batch(&mut values), Some(3));
        assert_eq!(values, VecDeque::from(vec![11]));
        consumer.pop_batch(&mut out, 100);
        assert_eq!(out, (0..11).collect::<Vec<_>>());
    }

    #[test]
    fn drop_releases_unconsumed_values() {
        let marker = std::sync::Arc::new(());
        {
            let (ring, _consumer) = Ring::with_capacity(4);
            ring.push(marker.clone()).unwrap();
            ring.push(marker.clone()).unwrap();
            assert_eq!(std::sync::Arc::strong_count(&marker), 3);
        }
        assert_eq!(std::sync::Arc::strong_count(&marker), 1);
    }

    #[test]
    fn many_producers_lose_nothing_and_keep_per_producer_order() {
        const PRODUCERS: u64 = 4;
        const PER: u64 = 200_000;
        let (ring, mut consumer) = Ring::<u64>::with_capacity(1024);
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    let mut i = 0;
                    while i < PER {
                        // Alternate single and batch pushes to exercise both claim paths.
                        if i % 3 == 0 {
                            let mut v = (p << 32) | i;
                            loop {
                                match ring.push(v) {
                                    Ok(()) => break,
                                    Err(back) => {
                                        v = back.into_inner();
                                        std::thread::yield_now();
                                    }
                                }
                            }
                            i += 1;
                        } else {
                            let want = (PER - i).min(7) as usize;
                            let mut k = i;
                            let n = ring
                                .push_with(want, || {
                                    let v = (p << 32) | k;
                                    k += 1;
                                    v
                                })
                                .unwrap();
                            i += n as u64;
                            if n == 0 {
                                std::thread::yield_now();
                            }
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u64; PRODUCERS as usize];
        let mut out = Vec::with_capacity(256);
        let mut total = 0;
        while total < PRODUCERS * PER {
            out.clear();
            consumer.pop_batch(&mut out, 256);
            for &v in &out {
                let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                assert_eq!(i, next[p], "producer {p} out of order");
                next[p] += 1;
            }
            total += out.len() as u64;
        }
        for h in handles {
            h.join().unwrap();
        }
        assert!(consumer.pop().is_none());
        assert_eq!(next, [PER; PRODUCERS as usize]);
    }

    #[test]
    fn close_refuses_new_claims_and_keeps_claimed_values() {
        let (ring, mut consumer) = Ring::with_capacity(4);
        ring.push(1).unwrap();
        ring.push(2).unwrap();
        assert_eq!(ring.close(), 2);
        assert!(ring.is_closed());
        assert_eq!(ring.push(3), Err(PushError::Closed(3)));
        assert_eq!(ring.push_with(2, || 4), None);
        assert_eq!(ring.claimed(), 2);
        let mut out = Vec::new();
        consumer.pop_batch(&mut out, 10);
        assert_eq!(out, vec![1, 2]);
        assert_eq!(ring.len(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u16),
        PushBatch(Vec<u16>),
        Pop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u16>().prop_map(Op::Push),
            proptest::collection::vec(any::<u16>(), 0..20).prop_map(Op::PushBatch),
            (0usize..20).prop_map(Op::Pop),
        ]
    }

    proptest! {
        /// The ring behaves exactly like a bounded VecDeque that refuses pushes when full.
        #[test]
        fn ring_matches_bounded_vecdeque_model(cap_log in 1u32..6, ops in proptest::collection::vec(op(), 0..200)) {
            let cap = 1usize << cap_log;
            let (ring, mut consumer) = Ring::with_capacity(cap);
            let mut model: VecDeque<u16> = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(v) => {
                        let res = ring.push(v);
                        if model.len() < cap {
                            prop_assert_eq!(res, Ok(()));
                            model.push_back(v);
                        } else {
                            prop_assert_eq!(res, Err(PushError::Full(v)));
                        }
                    }
                    Op::PushBatch(vs) => {
                        let mut q: VecDeque<u16> = vs.iter().copied().collect();
                        let n = ring.push_batch(&mut q).unwrap();
                        let room = cap - model.len();
                        prop_assert_eq!(n, vs.len().min(room));
                        model.extend(vs.iter().take(n).copied());
                        prop_assert_eq!(q.len(), vs.len() - n);
                    }
                    Op::Pop(max) => {
                        let mut out = Vec::new();
                        consumer.pop_batch(&mut out, max);
                        let expect: Vec<u16> = (0..max.min(model.len())).filter_map(|_| model.pop_front()).collect();
                        prop_assert_eq!(out, expect);
                    }
                }
                prop_assert_eq!(ring.len(), model.len());
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// Two producers (one single push, one batch claim) race a consumer on a ring of two slots,
    /// so every wrap-around and full case is explored. Nothing is lost, nothing duplicated,
    /// per-producer order holds.
    #[test]
    fn two_producers_one_consumer() {
        loom::model(|| {
            let (ring, mut consumer) = Ring::<u32>::with_capacity(2);
            let r1 = ring.clone();
            let p1 = thread::spawn(move || {
                let mut sent = 0;
                for v in [10, 11] {
                    if r1.push(v).is_ok() {
                        sent += 1;
                    } else {
                        break;
                    }
                }
                sent
            });
            let r2 = ring.clone();
            let p2 = thread::spawn(move || {
                let mut k = 20;
                r2.push_with(2, || {
                    let v = k;
                    k += 1;
                    v
                })
                .unwrap()
            });
            let mut got = Vec::new();
            for _ in 0..2 {
                consumer.pop_batch(&mut got, 2);
                thread::yield_now();
            }
            let sent1 = p1.join().unwrap();
            let sent2 = p2.join().unwrap();
            consumer.pop_batch(&mut got, 4);
            consumer.pop_batch(&mut got, 4);
            let from1: Vec<_> = got.iter().copied().filter(|v| *v < 20).collect();
            let from2: Vec<_> = got.iter().copied().filter(|v| *v >= 20).collect();
            assert_eq!(from1, (10..10 + sent1 as u32).collect::<Vec<_>>());
            assert_eq!(from2, (20..20 + sent2 as u32).collect::<Vec<_>>());
        });
    }

    /// A value written by a producer is fully visible to the consumer that reads it, and a slot
    /// is reused only after the consumer is done with it (loom checks the cell accesses).
    #[test]
    fn slot_reuse_is_ordered() {
        loom::model(|| {
            let (ring, mut consumer) = Ring::<Box<u32>>::with_capacity(2);
            let r = ring.clone();
            let p = thread::spawn(move || {
                let mut pushed = 0;
                for v in 0..3u32 {
                    let mut b = Box::new(v);
                    loop {
                        match r.push(b) {
                            Ok(()) => {
                                pushed += 1;
                                break;
                            }
                            Err(back) => {
                                b = back.into_inner();
                                thread::yield_now();
                            }
                        }
                    }
                }
                pushed
            });
            let mut got = Vec::new();
            while got.len() < 3 {
                consumer.pop_batch(&mut got, 1);
                thread::yield_now();
            }
            assert_eq!(p.join().unwrap(), 3);
            assert_eq!(got.iter().map(|b| **b).collect::<Vec<_>>(), vec![0, 1, 2]);
        });
    }
}
