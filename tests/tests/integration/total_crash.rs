//! A crash of every validator at once, with the std driver's background writer modelled
//! ([`Params::lazy_writes_ms`]): other proposers' blocks and committed blocks become durable
//! up to 40 ms late, so every replica comes back without the blocks it had only in memory
//! and with its committed tip behind its durable high QC. Each block is still durable at its
//! proposer (a leader persists its proposal before sending it); the chain must be pieced
//! together from them and go on committing.
//!
//! Before recovered blocks whose parent is missing were kept and served, and a missing
//! certified block was fetched from its proposer as well as its QC's signers, such a run
//! stalled for good: no replica could rebuild the chain up to the highest QC, block sync
//! served committed blocks only, and every view timed out.
//! A failure prints its seed; replay one with `scenario` and the same seed.

use hotstuff_tests::sim::{Params, Report, Sim};

/// Every validator crashes at once at each of `at`, and restarts 300 ms later.
fn scenario(seed: u64, n: usize, at: &[u64]) -> Params {
    let mut p = Params::new(seed, n);
    p.faults.delay_ms = (1, 10);
    p.lazy_writes_ms = Some(40);
    p.outages = at.iter().flat_map(|t| (0..n).map(move |node| (node, *t, t + 300))).collect();
    p.heal_at_ms = at.iter().max().map_or(0, |t| t + 300);
    p.commits_after_heal = 30;
    p
}

fn batch(name: &str, n: usize, seeds: std::ops::Range<u64>, at: &[u64]) {
    let started = std::time::Instant::now();
    let (mut runs, mut lost, mut commits) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    for seed in seeds {
        let p = scenario(seed, n, at);
        let r: Report = Sim::new(p).run();
        runs += 1;
        commits += r.max_committed;
        lost += r.lost_commits;
        if !r.ok() {
            failures.push(format!("{name} seed {seed}: {}", r.first_findings(3)));
        }
    }
    println!(
        "{name}: {runs} seeds, {commits} commits, {lost} commits lost in crashes, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{name}: {} failing seeds:\n{}", failures.len(), failures.join("\n"));
    // The scenario must bite: crashes lose commits the replicas had made.
    assert!(lost >= runs, "{name}: only {lost} commits lost in {runs} runs");
}

#[test]
fn every_validator_crashes_at_once_n4() {
    batch("total crash n=4", 4, 0..40, &[800, 2_000]);
}

#[test]
fn every_validator_crashes_at_once_n7() {
    batch("total crash n=7", 7, 0..20, &[800, 2_000]);
}
