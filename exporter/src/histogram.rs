//! HDR histograms (nanoseconds) → classic Prometheus histograms (seconds).
//!
//! Core records latencies into HDR histograms (relative precision set by
//! `eventstream_core::LATENCY_SIGFIG`). Prometheus wants fixed bucket edges with cumulative
//! counts. [`Buckets::from_hdr`] walks the recorded HDR bins once and assigns each bin to the
//! first edge that is at least the bin's *highest* equivalent value, so a value is never
//! reported faster than it was (an alert on `p99 > 1 ms` can fire one HDR bin early, never
//! late). Values whose whole bin lies at or below an edge are always counted under it.
//!
//! Invariant: `cumulative` is non-decreasing and every entry is `<= count`; `+Inf` is `count`.

use crate::catalog::MetricDef;
use hdrhistogram::Histogram;
use std::fmt::Write;

/// A histogram bucketed onto fixed edges.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Upper edges in seconds (the `le` values, `+Inf` implied).
    pub edges: &'static [f64],
    /// Cumulative count of values `<=` each edge.
    pub cumulative: Vec<u64>,
    /// Total values (the `+Inf` bucket and `_count`).
    pub count: u64,
    /// Sum of values in seconds (from the HDR mean; within 0.1 %).
    pub sum_seconds: f64,
}

impl Buckets {
    /// Empty buckets on `edges`.
    pub fn empty(edges: &'static [f64]) -> Self {
        Buckets {
            edges,
            cumulative: vec![0; edges.len()],
            count: 0,
            sum_seconds: 0.0,
        }
    }

    /// Buckets the nanosecond histogram `h` onto `edges` (seconds).
    pub fn from_hdr(h: &Histogram<u64>, edges: &'static [f64]) -> Self {
        let mut out = Buckets::empty(edges);
        if h.is_empty() {
            return out;
        }
        let edges_ns: Vec<u64> = edges.iter().map(|e| (e * 1e9).round() as u64).collect();
        let mut per_edge = vec![0u64; edges.len()];
        let mut edge = 0usize;
        // `iter_recorded` yields non-empty bins in increasing value order, so the edge index
        // only moves forward: one pass over the bins plus one over the edges.
        for v in h.iter_recorded() {
            let high = h.highest_equivalent(v.value_iterated_to());
            while edge < edges_ns.len() && edges_ns[edge] < high {
                edge += 1;
            }
            if edge == edges_ns.len() {
                break;
            }
            per_edge[edge] += v.count_at_value();
        }
        let mut running = 0;
        for (c, n) in out.cumulative.iter_mut().zip(per_edge) {
            running += n;
            *c = running;
        }
        out.count = h.len();
        out.sum_seconds = h.mean() * h.len() as f64 / 1e9;
        out
    }

    /// Non-cumulative count in each bucket, with the `+Inf` overflow last (`edges.len() + 1`
    /// entries).
    pub fn per_bucket(&self) -> Vec<u64> {
        let mut prev = 0;
        let mut out = Vec::with_capacity(self.cumulative.len() + 1);
        for &c in &self.cumulative {
            out.push(c - prev);
            prev = c;
        }
        out.push(self.count - prev);
        out
    }

    /// Writes `# HELP`, `# TYPE` and the `_bucket`/`_sum`/`_count` lines of `def`.
    pub fn write_prometheus(&self, out: &mut String, def: &MetricDef) {
        write_header(out, def);
        for (edge, c) in self.edges.iter().zip(&self.cumulative) {
            let _ = writeln!(out, "{}_bucket{{le=\"{}\"}} {}", def.name, edge, c);
        }
        let _ = writeln!(out, "{}_bucket{{le=\"+Inf\"}} {}", def.name, self.count);
        let _ = writeln!(out, "{}_sum {}", def.name, fmt_f64(self.sum_seconds));
        let _ = writeln!(out, "{}_count {}", def.name, self.count);
    }
}

/// Writes the `# HELP` and `# TYPE` lines of `def`.
pub(crate) fn write_header(out: &mut String, def: &MetricDef) {
    let _ = writeln!(out, "# HELP {} {}", def.name, def.help);
    let _ = writeln!(out, "# TYPE {} {}", def.name, def.kind.as_str());
}

/// Formats a sample value: Prometheus accepts Rust's shortest round-trip form, plus the
/// special `NaN`/`+Inf`/`-Inf` spellings.
pub(crate) fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{EVENT_LATENCY, LATENCY_BUCKETS};
    use eventstream_core::new_latency_histogram;
    use proptest::prelude::*;

    #[test]
    fn exact_values_land_in_their_bucket() {
        let mut h = new_latency_histogram();
        h.record(100).unwrap(); // exactly 100 ns: in le=1e-7
        h.record(101).unwrap(); // just above: le=2.5e-7
        h.record(999_000).unwrap(); // 0.999 ms: le=0.001
        h.record_n(2_000_000, 3).unwrap(); // 2 ms: le=0.0025
        h.record(30_000_000_000).unwrap(); // 30 s: only +Inf
        let b = Buckets::from_hdr(&h, &LATENCY_BUCKETS);
        assert_eq!(b.count, 7);
        let at = |le: f64| b.cumulative[LATENCY_BUCKETS.iter().position(|&e| e == le).unwrap()];
        assert_eq!(at(100e-9), 1);
        assert_eq!(at(250e-9), 2);
        assert_eq!(at(500e-6), 2);
        assert_eq!(at(1e-3), 3);
        assert_eq!(at(2.5e-3), 6);
        assert_eq!(at(10.0), 6);
        assert_eq!(*b.per_bucket().last().unwrap(), 1);
        let expected_sum = (100 + 101 + 999_000 + 6_000_000) as f64 / 1e9 + 30.0;
        // The sum comes from HDR bins: within the histogram's relative precision (< 1 %).
        assert!((b.sum_seconds - expected_sum).abs() / expected_sum < 1e-2);
    }

    #[test]
    fn renders_valid_histogram_lines() {
        let mut h = new_latency_histogram();
        h.record(4_000).unwrap();
        let mut s = String::new();
        Buckets::from_hdr(&h, &LATENCY_BUCKETS).write_prometheus(&mut s, &EVENT_LATENCY);
        assert!(s.contains("# TYPE eventstream_event_latency_seconds histogram\n"));
        assert!(s.contains("eventstream_event_latency_seconds_bucket{le=\"0.000005\"} 1\n"));
        assert!(s.contains("eventstream_event_latency_seconds_bucket{le=\"0.0000025\"} 0\n"));
        assert!(s.contains("eventstream_event_latency_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(s.contains("eventstream_event_latency_seconds_count 1\n"));
        assert_eq!(s.lines().count(), 2 + LATENCY_BUCKETS.len() + 1 + 2);
    }

    #[test]
    fn empty_histogram_renders_zeros() {
        let b = Buckets::from_hdr(&new_latency_histogram(), &LATENCY_BUCKETS);
        assert_eq!(b, Buckets::empty(&LATENCY_BUCKETS));
        assert_eq!(b.per_bucket().iter().sum::<u64>(), 0);
    }

    proptest! {
        #[test]
        fn cumulative_is_monotone_and_never_reports_a_value_faster(
            values in proptest::collection::vec(1u64..20_000_000_000, 1..300)
        ) {
            let mut h = new_latency_histogram();
            for v in &values {
                h.record(*v).unwrap();
            }
            let b = Buckets::from_hdr(&h, &LATENCY_BUCKETS);
            prop_assert_eq!(b.count, values.len() as u64);
            prop_assert!(b.cumulative.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(b.cumulative.iter().all(|&c| c <= b.count));
            prop_assert_eq!(b.per_bucket().iter().sum::<u64>(), b.count);
            for (i, e) in LATENCY_BUCKETS.iter().enumerate() {
                let edge_ns = (e * 1e9).round() as u64;
                // Never more than the true count at or below the edge...
                let truth = values.iter().filter(|&&v| v <= edge_ns).count() as u64;
                prop_assert!(b.cumulative[i] <= truth, "le={} got {} truth {}", e, b.cumulative[i], truth);
                // ...and every value whose whole HDR bin lies at or below the edge is counted.
                let surely = values.iter().filter(|&&v| h.highest_equivalent(v) <= edge_ns).count() as u64;
                prop_assert!(b.cumulative[i] >= surely, "le={} got {} surely {}", e, b.cumulative[i], surely);
            }
        }
    }
}
