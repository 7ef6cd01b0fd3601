//! Leader reputation: validators crashed for good stop being elected, so the chain keeps most of
//! its commit rate. With the plain weighted round robin, every view a dead validator leads times
//! out, and the view before it loses its direct QC path too (one validator of four down cut the
//! commit rate about 20 times on loopback).
//!
//! Each seed runs the same network twice in virtual time, with and without the crashed
//! validators, and compares the blocks committed per second after the first 30 s. A failure
//! prints its seed.

use hotstuff_core::LeaderPolicy;
use hotstuff_tests::sim::{Params, Sim};

const RUN_MS: u64 = 90_000;
const FROM_MS: u64 = 30_000;

fn params(seed: u64, n: usize, dead: &[usize], policy: LeaderPolicy) -> Params {
    let mut p = Params::new(seed, n);
    // A WAN-like network: 10-40 ms one way, nothing lost.
    p.faults.delay_ms = (10, 40);
    p.run_for_ms = Some(RUN_MS);
    p.dead = dead.to_vec();
    p.leader_policy = policy;
    p
}

/// `(healthy rate, crashed rate)` in blocks per second of virtual time after 30 s.
fn rates(seed: u64, n: usize, dead: &[usize], policy: LeaderPolicy) -> (f64, f64) {
    let healthy = Sim::new(params(seed, n, &[], policy)).run();
    let crashed = Sim::new(params(seed, n, dead, policy)).run();
    for r in [&healthy, &crashed] {
        assert!(
            r.safety_violations.is_empty() && r.double_signs.is_empty(),
            "seed {seed}: {:?} {:?}",
            r.safety_violations,
            r.double_signs
        );
    }
    (healthy.commit_rate(FROM_MS, RUN_MS), crashed.commit_rate(FROM_MS, RUN_MS))
}

fn check(n: usize, dead: &[usize], seeds: std::ops::Range<u64>) {
    let mut ratios = Vec::new();
    for seed in seeds {
        let (h, c) = rates(seed, n, dead, LeaderPolicy::REPUTATION);
        let ratio = c / h;
        println!("n={n} dead={dead:?} seed {seed}: healthy {h:.1} blocks/s, crashed {c:.1} blocks/s, ratio {ratio:.2}");
        assert!(ratio >= 0.70, "n={n} dead={dead:?} seed {seed}: ratio {ratio:.2} < 0.70");
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!("n={n} dead={dead:?}: median ratio {:.2}", ratios[ratios.len() / 2]);
}

#[test]
fn n4_one_validator_crashed_for_good_keeps_70_percent() {
    check(4, &[1], 0..3);
}

#[test]
fn n7_two_validators_crashed_for_good_keep_70_percent() {
    check(7, &[2, 5], 0..3);
}

/// The control: the plain round robin does lose most of the rate, so the test above measures
/// what reputation changes.
#[test]
fn control_round_robin_loses_most_of_the_rate_with_one_of_four_crashed() {
    let (h, c) = rates(0, 4, &[1], LeaderPolicy::RoundRobin);
    println!(
        "round robin n=4 dead=[1]: healthy {h:.1} blocks/s, crashed {c:.1} blocks/s, ratio {:.2}",
        c / h
    );
    assert!(c / h < 0.5, "round robin kept {:.2} of the rate", c / h);
}

/// A validator down for the first 20 s is skipped meanwhile and leads again once it is back:
/// it proposes committed blocks after its restart, and the chain's rate after it recovers is the
/// healthy rate.
#[test]
fn a_recovered_validator_gets_back_into_the_schedule() {
    for seed in 0..3 {
        let mut p = params(seed, 4, &[], LeaderPolicy::REPUTATION);
        p.outages = vec![(1, 0, 20_000)];
        p.heal_at_ms = 20_000;
        let r = Sim::new(p).run();
        assert!(r.ok(), "seed {seed}: {:?}", r.liveness_failures);
        let healthy = Sim::new(params(seed, 4, &[], LeaderPolicy::REPUTATION)).run();
        let ratio = r.commit_rate(40_000, RUN_MS) / healthy.commit_rate(40_000, RUN_MS);
        println!(
            "seed {seed}: validator 1 down until 20 s; proposers of committed blocks {:?}; rate from 40 s vs healthy {ratio:.2}",
            r.proposers.get(&0)
        );
        assert!(
            r.proposers.get(&0).is_some_and(|s| s.contains(&1)),
            "seed {seed}: validator 1 never led again"
        );
        assert!(ratio >= 0.9, "seed {seed}: after the recovery the rate is {ratio:.2} of the healthy one");
    }
}
