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
