//! eventstream's criterion benchmarks live in `benches/`:
//!
//! * `ring` — the tier ring: publish/drain, single and batch, 1 and 2 producers.
//! * `dedup` — the dedup window, fresh and duplicate ids.
//! * `histogram` — recording one latency into an HDR histogram.
//! * `pipeline` — end to end (publish → ring → worker → dedup → dispatch, latency recorded per
//!   event) on eventstream, and the same work on crossbeam-channel and on the `disruptor` crate,
//!   in the same run, so the README can show ratios.
//!
//! * `apply` — the apply stage alone, in wall-clock time (`apply/…`) and in this thread's CPU
//!   time (`apply_cpu/…`, which does not count time spent preempted: usable for A/B while other
//!   work shares the machine).
//!
//! `examples/apply_cost.rs` applies a fixed number of events (`apply_cost EVENTS BATCH`), for
//! `perf stat -e task-clock` comparisons between builds.
//!
//! Run them with `cargo bench -p eventstream-benches` (or `--bench pipeline`).
