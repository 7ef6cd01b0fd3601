//! The strict liveness oracle: with no faults (no loss, no crash, no Byzantine replica) every
//! view after the first must end with a QC, however much the network reorders messages.
//!
//! Before proposals with a missing parent were kept and certified blocks fetched by hash, a
//! replica that received the proposal of view v + 1 before that of v dropped it; when it led
//! v + 2 it formed the QC for v + 1 but could not extend a block it lacked, and everyone waited
//! out the view timeout (seeds 0 and 1 at n = 4 and seed 2 at n = 7 of `Params::new`, 300
//! commits; every seed of 50 with delays drawn from 1-10 ms at n = 4).
//! A failure prints its seed; replay one with `Params::fault_free` and the same arguments.

use hotstuff_tests::sim::{Params, Report, Sim};

/// Runs `seeds` fault-free simulations of `n` validators and checks the strict oracle.
fn batch(name: &str, n: usize, seeds: std::ops::Range<u64>, make: impl Fn(u64) -> Params) {
    let started = std::time::Instant::now();
    let (mut runs, mut commits, mut timeouts, mut fetched) = (0u64, 0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    for seed in seeds {
        let p = make(seed);
        assert_eq!(p.validators, n);
        let r: Report = Sim::new(p).run();
        runs += 1;
        commits += r.max_committed;
        timeouts += r.view_timeouts;
        fetched += r.fetched_blocks;
        if !r.ok() {
            failures.push(format!("{name} seed {seed}: {}", r.first_findings(3)));
        }
    }
    println!(
        "{name}: {runs} seeds, {commits} commits, {timeouts} view timeouts, {fetched} blocks fetched by hash, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{name}: {} failing seeds:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(timeouts, 0, "{name}: view timeouts in fault-free runs");
    assert!(commits >= runs * 10, "{name}: too few commits");
}

/// The seeds of the issue that found the stall, with the simulator's default fault-free
/// network (delays 1-10 ms) and 300 commits each.
#[test]
fn regression_reordered_proposals_do_not_stall_the_next_leader() {
    for (seed, n) in [(0, 4), (1, 4), (2, 7)] {
        batch(&format!("regression n={n}"), n, seed..seed + 1, |s| {
            Params::fault_free(s, n, (1, 10), None, 300)
        });
    }
}

/// Delay distributions with heavy reordering: uniform 1-10 ms, uniform 0-50 ms, and a heavy
/// tail (10% of messages take 20-80 ms instead of 1-5 ms).
type Tail = Option<(f64, (u64, u64))>;

fn shapes(seed: u64) -> ((u64, u64), Tail) {
    match seed % 3 {
        0 => ((1, 10), None),
        1 => ((0, 50), None),
        _ => ((1, 5), Some((0.1, (20, 80)))),
    }
}

#[test]
fn fault_free_n4_500_seeds_no_view_timeouts() {
    batch("fault-free n=4", 4, 0..500, |s| {
        let (d, t) = shapes(s);
        Params::fault_free(s, 4, d, t, 30)
    });
}

#[test]
fn fault_free_n7_500_seeds_no_view_timeouts() {
    batch("fault-free n=7", 7, 0..500, |s| {
        let (d, t) = shapes(s);
        Params::fault_free(s, 7, d, t, 15)
    });
}

#[test]
fn fault_free_n10_500_seeds_no_view_timeouts() {
    batch("fault-free n=10", 10, 0..500, |s| {
        let (d, t) = shapes(s);
        Params::fault_free(s, 10, d, t, 10)
    });
}
