//! Block sync and listeners in the simulator.

use hotstuff_tests::{thread_cpu_seconds, NetFaults, Params, Sim};
use std::time::Instant;

/// A validator offline for 60 s (simulated) while the others commit over 1,000 blocks restarts, fetches them
/// by block sync (64 certified blocks per response) and commits again.
#[test]
fn replica_offline_for_1000_blocks_catches_up_and_commits() {
    for seed in [1, 2] {
        let mut p = Params::new(seed, 4);
        p.outages = vec![(3, 100, 60_000)];
        p.heal_at_ms = 60_000;
        let started = Instant::now();
        let cpu0 = thread_cpu_seconds();
        let report = Sim::new(p).run();
        let secs = started.elapsed().as_secs_f64();
        let cpu = thread_cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
        assert!(report.ok(), "seed {seed}: {report:#?}");
        // The liveness oracle required all four replicas, the restarted one included, to commit
        // 10 blocks after it came back.
        assert_eq!(report.views_after_heal.len(), 4, "seed {seed}");
        assert!(report.synced_blocks >= 1_000, "seed {seed}: synced only {}", report.synced_blocks);
        println!(
            "seed {seed}: synced {} blocks, max height {}, {:.0} synced blocks per second of real time, {} per second of CPU time",
            report.synced_blocks,
            report.max_committed,
            report.synced_blocks as f64 / secs,
            cpu.map_or("n/a".to_string(), |c| format!("{:.0}", report.synced_blocks as f64 / c.max(0.01)))
        );
    }
}

/// Listeners (no voting power) follow and commit the same chain under network faults.
#[test]
fn listeners_follow_the_chain_under_faults() {
    for seed in 0..20 {
        let mut p = Params::new(seed, 4);
        p.listeners = 2;
        p.faults =
            NetFaults { delay_ms: (0, 100), loss: 0.1, duplicate: 0.2, partitions: true, crashes: false };
        p.heal_at_ms = 8_000;
        let report = Sim::new(p).run();
        assert!(report.ok(), "seed {seed}: {report:#?}");
        // Four validators and two listeners each committed 10 blocks after the heal.
        assert_eq!(report.views_after_heal.len(), 6, "seed {seed}");
    }
}
