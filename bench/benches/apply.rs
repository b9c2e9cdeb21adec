//! The apply stage alone (dedup → dispatch → latency record), single-threaded: the worker-side
//! cost per batch and per event, for batches of 1 (what a lightly loaded worker sees) and 64.
//!
//! Each case runs twice: `apply` in wall-clock time, and `apply_cpu` in this thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), which does not count the time the thread spends preempted — on
//! a shared 2-core machine that makes A/B comparisons usable while other work is running.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventstream_bench::apply::ApplyLoop;

fn apply(c: &mut Criterion) {
    apply_group(c, "apply");
}

fn apply_cpu(c: &mut Criterion<ThreadCpuTime>) {
    apply_group(c, "apply_cpu");
}

fn apply_group<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let mut g = c.benchmark_group(name);
    for batch in [1usize, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch_{batch}"), |b| {
            let mut apply = ApplyLoop::new(batch);
            b.iter(|| apply.apply_batch())
        });
    }
    g.finish();
}

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always supported
    // on Linux, and the call writes nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNanos
    }
}

/// Formats CPU nanoseconds (always as ns, and throughput as elements per CPU-second).
struct CpuNanos;

impl ValueFormatter for CpuNanos {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns (cpu)"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iter = match *throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n,
            Throughput::Bits(n) => n,
            Throughput::ElementsAndBytes { elements, .. } => elements,
        } as f64;
        for v in values.iter_mut() {
            *v = per_iter * 1e3 / *v;
        }
        "M/cpu-s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group!(benches, apply);
criterion_group! {
    name = benches_cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = apply_cpu
}
criterion_main!(benches, benches_cpu);
