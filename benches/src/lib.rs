//! eventstream's criterion benchmarks live in `benches/`:
//!
//! * `ring` — the tier ring: publish/drain, single and batch, 1 and 2 producers.
//! * `dedup` — the dedup window, fresh and duplicate ids.
//! * `histogram` — recording one latency into an HDR histogram.
//! * `pipeline` — end to end (publish → ring → worker → dedup → dispatch, latency recorded per
//!   event) on eventstream, and the same work on crossbeam-channel and on the `disruptor` crate,
//!   in the same run, so the README can show ratios.
//!
//! Run them with `cargo bench -p eventstream-benches` (or `--bench pipeline`).
