//! End-to-end: replicas built from the real core, wired through the simulator's network.

use hotstuff_tests::{Behavior, Params, Sim};

#[test]
fn four_replicas_commit_100_blocks_and_agree() {
    let mut p = Params::new(1, 4);
    p.commits_after_heal = 100;
    let report = Sim::new(p).run();
    assert!(report.ok(), "{report:#?}");
    assert!(report.max_committed >= 100, "committed only {}", report.max_committed);
    // Every replica reached 100 commits (views_after_heal has one entry per honest replica).
    assert_eq!(report.views_after_heal.len(), 4);
    // Fault-free: no view needs a timeout, so 100 commits take about 100 views.
    assert!(report.views_after_heal.iter().all(|v| *v <= 105), "{:?}", report.views_after_heal);
}

#[test]
fn silent_leader_views_end_in_tcs_and_others_commit() {
    let mut p = Params::new(2, 4);
    p.byzantine = vec![(0, Behavior::Silent)];
    p.commits_after_heal = 30;
    let report = Sim::new(p).run();
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.views_after_heal.len(), 3);
    // The silent validator leads a quarter of the views; each of those ends in a TC, so more
    // views than commits are needed, but every honest replica still commits 30 blocks.
    assert!(report.views_after_heal.iter().all(|v| *v > 30), "{:?}", report.views_after_heal);
}

/// With one validator crashed (silent), the leader whose view comes right before the crashed
/// leader's still gets its blocks committed: its voters' votes went to the crashed leader, but
/// they ride along in their timeout votes, and the view's QC forms from those. Without that,
/// every block of that leader is orphaned by the TC, and transactions only it holds never
/// commit.
#[test]
fn a_leader_followed_by_a_crashed_leader_still_gets_blocks_committed() {
    for seed in 0..12u64 {
        let crashed = (seed % 4) as usize;
        let mut p = hotstuff_tests::Params::new(seed, 4);
        p.byzantine = vec![(crashed, hotstuff_tests::Behavior::Silent)];
        p.commits_after_heal = 40;
        let report = hotstuff_tests::Sim::new(p).run();
        assert!(report.ok(), "seed {seed}: {report:#?}");
        let proposers = &report.proposers[&0];
        for k in (0..4).filter(|k| *k != crashed) {
            assert!(
                proposers.contains(&k),
                "seed {seed}: no block of validator {k} committed: {proposers:?}"
            );
        }
    }
}
