//! The CI batches: >= 1,000 seeded simulations across n in {4, 7} and every fault kind, Twins
//! scenarios, and the negative controls that show the oracles can fail.
//! A failure prints its seeds; replay one with
//! `cargo run --release -p hotstuff-tests --bin simulate -- --validators N --kind K --seed S`.

use hotstuff_tests::batch::{self, Summary};
use hotstuff_tests::scenario::{self, Kind};

fn check(name: &str, s: &Summary) {
    let (p50, p99, max) = s.view_percentiles();
    println!(
        "{name}: {} | {:.0} views/s | views to commit 10 after heal: p50 {p50}, p99 {p99}, max {max}",
        s.line(),
        s.views_per_sec()
    );
    assert!(
        s.safety == 0 && s.double_signs == 0 && s.liveness == 0,
        "{name}: {}\n{}",
        s.line(),
        s.failures.join("\n")
    );
    assert!(s.commits > 0, "{name}: nothing committed");
}

fn kinds(n: usize, seeds: u64) {
    let f = (n - 1) / 3;
    for (i, kind) in [Kind::Twins, Kind::Equivocate, Kind::Silent, Kind::Withhold, Kind::Replay, Kind::Mixed]
        .into_iter()
        .enumerate()
    {
        let first = 1_000_000 * (i as u64 + 1) + 10_000 * n as u64;
        check(&format!("n={n} {kind:?}"), &batch::faults(n, f, kind, first..first + seeds));
    }
}

#[test]
fn n4_every_fault_kind_120_seeds_each() {
    kinds(4, 120);
}

#[test]
fn n7_every_fault_kind_60_seeds_each() {
    kinds(7, 60);
}

#[test]
fn n4_no_byzantine_200_seeds() {
    check("n=4 crash and network faults only", &batch::faults(4, 0, Kind::None, 0..200));
}

#[test]
fn twins_scenarios_n4_one_twin_and_n7_two_twins() {
    check("twins n=4 f=1", &batch::run(0..200, |s| scenario::twins(s, 4, 1)));
    check("twins n=7 f=2", &batch::run(0..60, |s| scenario::twins(s, 7, 2)));
}

/// Negative control: with f + 1 twins (more than a third of the power Byzantine) the Twins
/// scenarios must find a fork; if they never do, the safety oracle or the scenarios are blind.
#[test]
fn negative_control_f_plus_one_twins_fork_within_300_scenarios() {
    // Scenarios in order, each stopped at its first violation, until one forks: the control
    // needs one fork, not all of them.
    let fork = (0..300).find_map(|seed| {
        let mut p = scenario::twins(seed, 4, 2);
        p.stop_on_safety_violation = true;
        let report = hotstuff_tests::Sim::new(p).run();
        report.safety_violations.first().map(|v| (seed, v.clone()))
    });
    let Some((seed, violation)) = fork else {
        panic!("no fork found with f+1 twins in 300 scenarios: the safety oracle is blind")
    };
    println!("f+1 twins: scenario {seed} forks: {violation}");
}

/// The same seed gives a byte-identical trace; a different seed a different one.
#[test]
fn same_seed_same_trace() {
    let a = hotstuff_tests::Sim::new(scenario::params(42, 4, 1, Kind::Mixed)).run();
    let b = hotstuff_tests::Sim::new(scenario::params(42, 4, 1, Kind::Mixed)).run();
    let c = hotstuff_tests::Sim::new(scenario::params(43, 4, 1, Kind::Mixed)).run();
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.max_committed, b.max_committed);
    assert_ne!(a.trace_hash, c.trace_hash);
}

/// Regression (found by the 100,000-seed long run, seed 5028690): three replicas restarted in a
/// view they had timed out of re-sent their stored timeout vote but did not count it themselves,
/// so each held two of the three votes a TC needed and no view ever ended again.
#[test]
fn restarted_replicas_count_their_own_stored_timeout_vote() {
    let report = hotstuff_tests::Sim::new(scenario::params(5_028_690, 4, 1, Kind::Mixed)).run();
    assert!(report.ok(), "{:#?}", report.liveness_failures);
}

/// Random validator-set changes (two listeners may join; keys added, removed and re-weighted,
/// Byzantine power always below a third) under random faults with a Byzantine validator, and in
/// Twins scenarios. Every commit is checked against its epoch's set (see `Sim::check_commit`).
#[test]
fn random_set_changes_under_faults_and_in_twins_scenarios() {
    check(
        "n=4 mixed + 6 set changes",
        &batch::run(0..150, |s| {
            let mut p = scenario::params(7_000_000 + s, 4, 1, Kind::Mixed);
            scenario::add_set_changes(&mut p, 7_000_000 + s, 6);
            p
        }),
    );
    check(
        "twins n=4 f=1 + 4 set changes",
        &batch::run(0..100, |s| {
            let mut p = scenario::twins(8_000_000 + s, 4, 1);
            scenario::add_set_changes(&mut p, 8_000_000 + s, 4);
            p
        }),
    );
}

/// Vote broadcast (`Config::broadcast_votes` on every node: votes go to every validator, and
/// every validator forms the QCs) under every fault kind at n = 4 and n = 7, in Twins scenarios
/// (twins count each other's votes too) and with validator-set changes.
#[test]
fn broadcast_votes_every_fault_kind_twins_and_set_changes() {
    let on = |mut p: hotstuff_tests::Params| {
        p.broadcast_votes = true;
        p
    };
    for (i, kind) in [Kind::Twins, Kind::Equivocate, Kind::Silent, Kind::Withhold, Kind::Replay, Kind::Mixed]
        .into_iter()
        .enumerate()
    {
        for n in [4, 7] {
            let first = 9_000_000 + 100_000 * i as u64 + 10_000 * n as u64;
            let seeds = if n == 4 { 40 } else { 10 };
            check(
                &format!("n={n} {kind:?} broadcast votes"),
                &batch::run(first..first + seeds, |s| on(scenario::params(s, n, (n - 1) / 3, kind))),
            );
        }
    }
    check(
        "n=4 no byzantine broadcast votes",
        &batch::run(9_900_000..9_900_060, |s| on(scenario::params(s, 4, 0, Kind::None))),
    );
    check("twins n=4 f=1 broadcast votes", &batch::run(0..50, |s| on(scenario::twins(s, 4, 1))));
    check(
        "n=4 mixed + 6 set changes broadcast votes",
        &batch::run(0..40, |s| {
            let mut p = scenario::params(9_950_000 + s, 4, 1, Kind::Mixed);
            scenario::add_set_changes(&mut p, 9_950_000 + s, 6);
            on(p)
        }),
    );
}
