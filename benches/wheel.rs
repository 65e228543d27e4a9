//! Timing wheel throughput: the registrar's load shape, a million bindings expiring
//! over an hour, scheduled, fired and re-armed. `BinaryHeap` is the naive baseline
//! (what a timer thread would use without a wheel).
//!
//! Every figure is for 1 M timers per iteration; criterion's `thrpt` line is timers/s,
//! so ns per timer = 1e9 / thrpt.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sipreg::timer::wheel::{Wheel, TICK_MS};

const N: usize = 1_000_000;
/// Deadlines spread over one hour: `--default-expires 3600`.
const SPREAD_MS: u64 = 3_600_000;

/// Deterministic deadlines uniform over `[1, SPREAD_MS]` (splitmix64; no rand dependency).
fn deadlines() -> Vec<u64> {
    let mut x: u64 = 0x5EED_F00D_u64;
    (0..N)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            1 + z % SPREAD_MS
        })
        .collect()
}

fn filled(deadlines: &[u64]) -> Wheel<u64> {
    let mut w = Wheel::new(0);
    for (i, &d) in deadlines.iter().enumerate() {
        w.insert(d, i as u64);
    }
    w
}

/// Advances `w` from `from` to `from + SPREAD_MS` one tick at a time, as the timer
/// thread does under load; returns how many items fired.
fn drain_by_ticks(w: &mut Wheel<u64>, from: u64) -> usize {
    let mut fired = 0usize;
    let mut now = from;
    while now < from + SPREAD_MS {
        now += TICK_MS;
        w.advance(now, |x| {
            black_box(x);
            fired += 1;
        });
    }
    fired
}

fn wheel(c: &mut Criterion) {
    let ds = deadlines();
    let mut g = c.benchmark_group("wheel_1M_over_1h");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    // Cold: includes growing the chunk pool from nothing.
    g.bench_function("insert_cold", |b| {
        b.iter_batched(
            || Wheel::<u64>::new(0),
            |mut w| {
                for (i, &d) in ds.iter().enumerate() {
                    w.insert(d, i as u64);
                }
                assert_eq!(w.len(), N);
                w
            },
            BatchSize::LargeInput,
        );
    });

    // Warm: the pool has already held 1 M timers, as in a running server.
    g.bench_function("insert_warm", |b| {
        b.iter_batched(
            || {
                let mut w = filled(&ds);
                assert_eq!(drain_by_ticks(&mut w, 0), N);
                w
            },
            |mut w| {
                for (i, &d) in ds.iter().enumerate() {
                    w.insert(SPREAD_MS + d, i as u64);
                }
                assert_eq!(w.len(), N);
                w
            },
            BatchSize::LargeInput,
        );
    });

    // Cascade and fire everything, advancing tick by tick (360 000 advances).
    g.bench_function("advance_fire", |b| {
        b.iter_batched(
            || filled(&ds),
            |mut w| {
                assert_eq!(drain_by_ticks(&mut w, 0), N);
                w
            },
            BatchSize::LargeInput,
        );
    });

    // Steady state: every binding is refreshed as it fires (re-armed an hour ahead);
    // one iteration is one simulated hour = 1 M fires + 1 M inserts, no allocation.
    g.bench_function("steady_rearm", |b| {
        let mut w = filled(&ds);
        let mut now = 0u64;
        let mut rearm = Vec::with_capacity(4096);
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut fired = 0usize;
                let end = now + SPREAD_MS;
                while now < end {
                    now += TICK_MS;
                    w.advance(now, |x| rearm.push(x));
                    fired += rearm.len();
                    for x in rearm.drain(..) {
                        w.insert(now + SPREAD_MS, x);
                    }
                }
                assert_eq!(fired, N);
            }
            start.elapsed()
        });
    });

    // Baseline: the same insert + fire-in-order with a binary heap.
    g.bench_function("binary_heap_insert_pop", |b| {
        b.iter_batched(
            || BinaryHeap::<Reverse<(u64, u64)>>::with_capacity(N),
            |mut h| {
                for (i, &d) in ds.iter().enumerate() {
                    h.push(Reverse((d, i as u64)));
                }
                let mut fired = 0usize;
                let mut now = 0;
                while now < SPREAD_MS {
                    now += TICK_MS;
                    while h.peek().is_some_and(|Reverse((d, _))| *d <= now) {
                        if let Some(Reverse((_, x))) = h.pop() {
                            black_box(x);
                            fired += 1;
                        }
                    }
                }
                assert_eq!(fired, N);
                h
            },
            BatchSize::LargeInput,
        );
    });

    // The wheel doing the same as the heap baseline, in one measurement.
    g.bench_function("wheel_insert_fire", |b| {
        b.iter_batched(
            || Wheel::<u64>::new(0),
            |mut w| {
                for (i, &d) in ds.iter().enumerate() {
                    w.insert(d, i as u64);
                }
                assert_eq!(drain_by_ticks(&mut w, 0), N);
                w
            },
            BatchSize::LargeInput,
        );
    });

    g.finish();
}

criterion_group!(benches, wheel);
criterion_main!(benches);
