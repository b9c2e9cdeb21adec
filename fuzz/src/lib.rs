//! # eventstream-fuzz
//!
//! Bounded-time fuzzing on stable Rust of everything eventstream decodes from outside: the
//! peer frame decoder and the raft message parse behind it, the client protocol messages and
//! event blocks, log records and log replay from a segment file, and configuration parsing
//! (TOML → `NodeConfig` → `validate`, and the `node` command-line flags).
//!
//! Main types:
//! * [`Target`] — one fuzz target: a structure-aware generator of valid inputs and a `run`
//!   that feeds one input to the code under test (and checks round trips where the encoding is
//!   canonical).
//! * [`Fuzzer`] — the loop: each input is either freshly generated or a valid one mutated
//!   (bit flips, interesting lengths written over length fields, inserts, deletes, splices),
//!   optionally with the checksums and lengths of log records fixed up so that mutations
//!   reach the record bodies. It runs each input under `catch_unwind` with the
//!   [`CountingAlloc`] watching the largest single allocation.
//! * [`Rng`] — SplitMix64: the whole run is a function of the seed it prints, so any failure
//!   is reproducible (`--seed`), and a failing input is also saved to a file (`--reproduce`).
//!
//! Invariants checked for every input: no panic, and no single allocation larger than
//! [`alloc_bound`] (64 × the input length + 64 KiB, plus a target's documented fixed
//! allowance) — a decoder that sizes an allocation by an unchecked length field fails this.

mod kafka;
pub mod targets;

/// The unit tests run the targets too, `kafka-requests` among them: its decoder reserves
/// array capacity from counts on the wire, which only the node's allocator serves without
/// committing memory (the fuzzer binary installs it beneath its counting allocator).
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: eventstream_kafka::alloc::Allocator = eventstream_kafka::alloc::Allocator;

use eventstream_kafka::alloc::Allocator as Inner;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A global allocator that records the largest single allocation while armed.
#[derive(Debug)]
pub struct CountingAlloc;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

impl CountingAlloc {
    /// Starts watching (and forgets the previous maximum).
    pub fn arm() {
        LARGEST.store(0, Ordering::Relaxed);
        ARMED.store(true, Ordering::Relaxed);
    }

    /// Stops watching; returns the largest single allocation since [`arm`](Self::arm).
    pub fn disarm() -> usize {
        ARMED.store(false, Ordering::Relaxed);
        LARGEST.load(Ordering::Relaxed)
    }

    fn note(size: usize) {
        if ARMED.load(Ordering::Relaxed) {
            LARGEST.fetch_max(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `Inner` (the system allocator, very large
// blocks mapped without reserving memory, as in the node binary), which upholds `GlobalAlloc`'s
// contract; the only addition is a relaxed atomic update that neither allocates nor panics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: the caller's layout obligations are passed on unchanged.
        unsafe { Inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: as above.
        unsafe { Inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `Inner` with `layout` (every allocation goes there).
        unsafe { Inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        // SAFETY: as for `dealloc`; `new_size` is the caller's, passed on unchanged.
        unsafe { Inner.realloc(ptr, layout, new_size) }
    }
}

/// Largest single allocation allowed for an input of `len` bytes with a target's fixed
/// allowance.
pub fn alloc_bound(len: usize, fixed: usize) -> usize {
    64 * len + (64 << 10) + fixed
}

/// SplitMix64: small, fast, and fully determined by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// What one input did (for the report: a target whose inputs are all rejected is not reaching
/// the code behind its first check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded / parsed / accepted.
    Accepted,
    /// Refused with an error (the expected result for most mutated inputs).
    Rejected,
}

/// One fuzz target.
pub trait Target {
    /// Name used on the command line.
    fn name(&self) -> &'static str;
    /// A valid input (structure-aware generation).
    fn generate(&mut self, rng: &mut Rng) -> Vec<u8>;
    /// Feeds one input to the code under test. Panics (assertion failures included) are
    /// findings.
    fn run(&mut self, input: &[u8]) -> Outcome;
    /// Bytes a run may allocate at once regardless of the input (documented per target).
    fn fixed_allowance(&self) -> usize {
        0
    }
    /// Re-validates framing after a mutation (checksums, lengths), so mutations reach the
    /// bodies; called on some mutated inputs.
    fn fix_up(&self, _input: &mut Vec<u8>) {}
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum Finding {
    /// The code under test panicked.
    #[error("{target}: panic on a {len}-byte input (seed {seed}, exec {exec}): {message}")]
    Panic {
        /// Target name.
        target: &'static str,
        /// Run seed.
        seed: u64,
        /// Execution number.
        exec: u64,
        /// Input length.
        len: usize,
        /// Panic message.
        message: String,
        /// The input.
        input: Vec<u8>,
    },
    /// One allocation exceeded the bound.
    #[error("{target}: a single allocation of {size} bytes for a {len}-byte input exceeds the bound of {bound} (seed {seed}, exec {exec})")]
    Allocation {
        /// Target name.
        target: &'static str,
        /// Run seed.
        seed: u64,
        /// Execution number.
        exec: u64,
        /// Input length.
        len: usize,
        /// Largest allocation seen.
        size: usize,
        /// The bound.
        bound: usize,
        /// The input.
        input: Vec<u8>,
    },
}

impl Finding {
    /// The input that caused it.
    pub fn input(&self) -> &[u8] {
        match self {
            Finding::Panic { input, .. } | Finding::Allocation { input, .. } => input,
        }
    }
}

/// Totals of one target's run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Target name.
    pub target: String,
    /// Seed of the run.
    pub seed: u64,
    /// Inputs executed.
    pub execs: u64,
    /// Executions per second.
    pub execs_per_sec: f64,
    /// Inputs accepted by the code under test.
    pub accepted: u64,
    /// Inputs refused with an error.
    pub rejected: u64,
    /// Largest input tried.
    pub max_input_len: usize,
    /// Largest single allocation seen, bytes.
    pub largest_alloc: usize,
    /// Largest ratio of an allocation to its bound seen (must stay <= 1).
    pub worst_alloc_to_bound: f64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// The fuzz loop for one target.
#[derive(Debug)]
pub struct Fuzzer {
    rng: Rng,
    seed: u64,
    corpus: Vec<Vec<u8>>,
    max_len: usize,
}

/// Values worth writing over a length or count field.
const INTERESTING_U32: [u32; 10] = [
    0,
    1,
    7,
    0x7f,
    0xff,
    0xffff,
    0x10000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

impl Fuzzer {
    /// A fuzzer seeded with `seed`, inputs up to `max_len` bytes.
    pub fn new(seed: u64, max_len: usize) -> Fuzzer {
        Fuzzer {
            rng: Rng::new(seed),
            seed,
            corpus: Vec::new(),
            max_len,
        }
    }

    fn mutate(&mut self, input: &mut Vec<u8>) {
        let rounds = 1 + self.rng.below(4);
        for _ in 0..rounds {
            let len = input.len();
            match self.rng.below(10) {
                0 | 1 if len > 0 => {
                    let i = self.rng.below(len);
                    input[i] ^= 1 << self.rng.below(8);
                }
                2 if len > 0 => {
                    let i = self.rng.below(len);
                    input[i] = [0, 1, 0x7f, 0x80, 0xff][self.rng.below(5)];
                }
                3 | 4 if len >= 4 => {
                    // A length or count field: write an interesting or off-by-one value.
                    let i = self.rng.below(len - 3);
                    let old =
                        u32::from_le_bytes([input[i], input[i + 1], input[i + 2], input[i + 3]]);
                    let v = match self.rng.below(3) {
                        0 => INTERESTING_U32[self.rng.below(INTERESTING_U32.len())],
                        1 => old.wrapping_add(1),
                        _ => old.wrapping_sub(1),
                    };
                    input[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
                5 if len > 0 => {
                    input.truncate(self.rng.below(len));
                }
                6 => {
                    let at = self.rng.below(len + 1);
                    let n = 1 + self.rng.below(16);
                    let bytes = self.rng.bytes(n);
                    input.splice(at..at, bytes);
                }
                7 if len > 1 => {
                    let a = self.rng.below(len);
                    let b = (a + 1 + self.rng.below(32)).min(len);
                    input.drain(a..b);
                }
                8 if len > 1 => {
                    // Duplicate a range (repeated records / frames / fields).
                    let a = self.rng.below(len);
                    let b = (a + 1 + self.rng.below(64)).min(len);
                    let piece = input[a..b].to_vec();
                    let at = self.rng.below(len + 1);
                    input.splice(at..at, piece);
                }
                _ if !self.corpus.is_empty() => {
                    // Splice: our head, another input's tail.
                    let other = &self.corpus[self.rng.below(self.corpus.len())];
                    let cut = self.rng.below(input.len() + 1);
                    let from = self.rng.below(other.len() + 1);
                    input.truncate(cut);
                    input.extend_from_slice(&other[from..]);
                }
                _ => {}
            }
        }
        input.truncate(self.max_len);
    }

    /// Runs `target` until `duration` has passed (or `max_execs` inputs, if given); stops at
    /// the first finding.
    pub fn run(
        &mut self,
        target: &mut dyn Target,
        duration: Duration,
        max_execs: Option<u64>,
    ) -> Result<Report, Box<Finding>> {
        for _ in 0..32 {
            let g = target.generate(&mut self.rng);
            self.corpus.push(g);
        }
        let start = Instant::now();
        let mut rep = Report {
            target: target.name().into(),
            seed: self.seed,
            ..Report::default()
        };
        let mut exec = 0u64;
        loop {
            if exec % 64 == 0 && start.elapsed() >= duration {
                break;
            }
            if max_execs.is_some_and(|m| exec >= m) {
                break;
            }
            let mut input = if self.rng.one_in(8) {
                target.generate(&mut self.rng)
            } else {
                let mut i = self.corpus[self.rng.below(self.corpus.len())].clone();
                self.mutate(&mut i);
                if self.rng.one_in(2) {
                    target.fix_up(&mut i);
                }
                i
            };
            input.truncate(self.max_len);
            let outcome = run_one(target, &input);
            match outcome {
                Ok((o, largest)) => {
                    let bound = alloc_bound(input.len(), target.fixed_allowance());
                    if largest > bound {
                        return Err(Box::new(Finding::Allocation {
                            target: target.name(),
                            seed: self.seed,
                            exec,
                            len: input.len(),
                            size: largest,
                            bound,
                            input,
                        }));
                    }
                    rep.largest_alloc = rep.largest_alloc.max(largest);
                    rep.worst_alloc_to_bound =
                        rep.worst_alloc_to_bound.max(largest as f64 / bound as f64);
                    match o {
                        Outcome::Accepted => rep.accepted += 1,
                        Outcome::Rejected => rep.rejected += 1,
                    }
                }
                Err(message) => {
                    return Err(Box::new(Finding::Panic {
                        target: target.name(),
                        seed: self.seed,
                        exec,
                        len: input.len(),
                        message,
                        input,
                    }))
                }
            }
            rep.max_input_len = rep.max_input_len.max(input.len());
            // Keep some mutants: without coverage feedback this still walks away from the
            // generated seeds over time; the corpus stays bounded.
            if self.rng.one_in(16) {
                if self.corpus.len() < 256 {
                    self.corpus.push(input);
                } else {
                    let i = self.rng.below(self.corpus.len());
                    self.corpus[i] = input;
                }
            }
            exec += 1;
        }
        rep.execs = exec;
        rep.seconds = start.elapsed().as_secs_f64();
        rep.execs_per_sec = exec as f64 / rep.seconds.max(1e-9);
        Ok(rep)
    }
}

/// Runs one input: its outcome and largest allocation, or the panic message.
pub fn run_one(target: &mut dyn Target, input: &[u8]) -> Result<(Outcome, usize), String> {
    CountingAlloc::arm();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.run(input)));
    let largest = CountingAlloc::disarm();
    match r {
        Ok(o) => Ok((o, largest)),
        Err(p) => Err(p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into())),
    }
}
