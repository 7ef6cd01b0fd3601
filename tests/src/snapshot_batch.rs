//! Snapshot catch-up scenarios for the simulator (the CI batch in `tests/integration/snapshot_sim.rs` and
//! `simulate --snapshots`): four validators run the kv app the node ships, wrapped in
//! [`StateCommitted`] so every block with a payload certifies its parent's state root; every
//! node prunes its committed blocks 60 below its tip and takes a snapshot every 5 heights;
//! a listener joins late (behind every peer's retained range, so block sync answers
//! "pruned" and it must catch up by snapshot), in half the seeds validator 3 is down until the
//! chain moved 70-100 heights, so it falls behind too, under the seed's network faults (delay, loss,
//! duplication, partitions, crash-restarts with lost writes), with, by seed, a Byzantine
//! snapshot server ([`Behavior::BadSnapshot`]), a Byzantine block-sync server
//! ([`Behavior::BadSync`]) or neither, and in half the seeds a crash of the joiner 0.1-3 s
//! after it starts (mid-fetch, when the timing falls so). Client writes go to the other
//! validators every 200 ms until every honest replica has committed 10 blocks past the heal
//! (the liveness oracle's end condition).

use crate::sim::{Behavior, NetFaults, Params, Report, Sim, SnapshotParams};
use crate::user_app::DriverApp;
use hotstuff_driver_std::kv::certified::StateCommitted;
use hotstuff_driver_std::kv::{KvApp, Mempool, Tx};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The late joiner (node and key index): a listener, so that the four validators make
/// progress before it starts (an absent validator's views time out and slow the chain).
pub const JOINER: usize = 4;
/// The validator that, in some seeds, is down for long enough to fall behind every peer's
/// retained range.
pub const LAGGARD: usize = 3;

type App = StateCommitted<KvApp>;

fn submit(app: &mut App, tx: Vec<u8>) {
    if let Ok(tx) = borsh::from_slice::<Tx>(&tx) {
        // A full mempool drops the write; the test counts none.
        let _ = app.inner().mempool().submit(tx);
    }
}

/// What one seed did.
#[derive(Debug)]
pub struct Outcome {
    /// The oracles' report.
    pub report: Report,
    /// The seed's set-up, for the failure message.
    pub setup: String,
    /// The joiner installed a snapshot (at least once).
    pub joiner_installed: bool,
    /// The joiner's committed height when the run ended, and the highest honest one.
    pub joiner_height: u64,
    /// The highest committed height of any honest replica at the end.
    pub max_height: u64,
}

/// When the seed's nodes leave and join (virtual ms; heights are the highest honest
/// committed height).
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// The listener starts once the chain is this high (before or after the heal).
    pub join_height: u64,
    /// It crashes this long after it starts (mid-fetch, when the timing falls so) and is down
    /// for the second figure.
    pub joiner_crash: Option<(u64, u64)>,
    /// Validator 3 crashes at this time and restarts once the chain moved this many heights
    /// (before or after the heal).
    pub laggard: Option<(u64, u64)>,
}

/// The seed's parameters and plan. With `plant_unverified` (the negative control's planted
/// bug) a run stops at its first safety violation.
#[must_use]
pub fn params(seed: u64, plant_unverified: bool) -> (Params, Plan, String) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5a9_5a9);
    let mut p = Params::new(seed, 4);
    p.listeners = 1;
    p.faults = NetFaults::random(&mut rng);
    p.heal_at_ms = rng.gen_range(15_000..25_000);
    p.commits_after_heal = 10;
    // Started by the plan (`Sim::restart`), not by time.
    p.late_starts = vec![(JOINER, u64::MAX / 4)];
    let plan = Plan {
        join_height: RETAIN + rng.gen_range(10..40),
        joiner_crash: rng.gen_bool(0.5).then(|| (rng.gen_range(100..3_000), rng.gen_range(200..2_000))),
        laggard: rng.gen_bool(0.5).then(|| (rng.gen_range(1_000..4_000), RETAIN + rng.gen_range(10..40))),
    };
    let byzantine = rng.gen_range(0..LAGGARD);
    match rng.gen_range(0..4) {
        0 | 1 => p.byzantine.push((byzantine, Behavior::BadSnapshot)),
        2 => p.byzantine.push((byzantine, Behavior::BadSync)),
        _ => {}
    }
    let setup =
        format!("faults {:?}, heal at {} ms, {plan:?}, byzantine {:?}", p.faults, p.heal_at_ms, p.byzantine);
    p.snapshots = Some(SnapshotParams { retain: RETAIN, interval: 5, plant_unverified });
    // The negative control needs its first violation only.
    p.stop_on_safety_violation = plant_unverified;
    (p, plan, setup)
}

/// Committed blocks each node keeps below its tip.
pub const RETAIN: u64 = 60;

/// Runs one seed (`plant_unverified`: the negative control's planted bug).
#[must_use]
pub fn run_seed(seed: u64, plant_unverified: bool) -> Outcome {
    let (p, plan, setup) = params(seed, plant_unverified);
    let mut o = run_params(p, plan);
    o.setup = setup;
    o
}

/// Runs one seed's parameters and plan (as [`params`] gives them, perhaps changed).
#[must_use]
pub fn run_params(p: Params, plan: Plan) -> Outcome {
    let seed = p.seed;
    let setup = String::new();
    let heal = p.heal_at_ms;
    let mut sim = Sim::with_app(p, |_| {
        Box::new(DriverApp::new(StateCommitted::new(KvApp::new(Mempool::new(10_000), 64)), submit))
    });
    let writers: Vec<usize> = (0..LAGGARD).filter(|n| sim.is_honest(*n)).collect();
    let honest: Vec<usize> = (0..sim.node_count()).filter(|n| sim.is_honest(*n)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b76);
    let height = |s: &Sim, n: usize| s.replica(n).map_or(0, |r| r.committed_height().0);
    let top = |s: &Sim| honest.iter().map(|n| height(s, *n)).max().unwrap_or(0);
    let (mut t, mut written) = (0u64, 0u64);
    let (mut joined_at, mut joiner_back_at, mut laggard_from) = (None, None, None);
    // Writes go on until every honest replica has committed `commits_after_heal` blocks past
    // the highest height at the heal (an idle chain's empty blocks certify no state, so a
    // replica still behind then could never catch up).
    while t < heal + 120_000 {
        t += 100;
        sim.run_until(t);
        let h = top(&sim);
        if joined_at.is_none() && h >= plan.join_height {
            sim.restart(JOINER);
            joined_at = Some(t);
        }
        if let (Some(at), Some((after, down))) = (joined_at, plan.joiner_crash) {
            if t == at + after / 100 * 100 + 100 {
                sim.crash(JOINER);
                joiner_back_at = Some(t + down);
            }
        }
        if joiner_back_at.is_some_and(|b| t >= b) {
            sim.restart(JOINER);
            joiner_back_at = None;
        }
        if let Some((at, moved)) = plan.laggard {
            if t == at / 100 * 100 {
                sim.crash(LAGGARD);
                laggard_from = Some(h);
            }
            if laggard_from.is_some_and(|f| h >= f + moved) {
                sim.restart(LAGGARD);
                laggard_from = None;
            } else if laggard_from.is_some() && sim.replica(LAGGARD).is_some() {
                // The heal restarted it: it stays down (as a crash right after).
                sim.crash(LAGGARD);
            }
        }
        if joined_at.is_some() && sim.honest_done() {
            break;
        }
        if !sim.report().ok() {
            break;
        }
        if t % 200 == 0 {
            for _ in 0..2 {
                let tx = Tx::Put { key: format!("k{written}").into_bytes(), value: vec![rng.gen(); 8] };
                sim.submit(writers[rng.gen_range(0..writers.len())], borsh::to_vec(&tx).expect("encodes"));
                written += 1;
            }
        }
    }
    sim.run_to_end();
    let joiner_height = height(&sim, JOINER);
    let max_height = top(&sim);
    let report = sim.finish();
    let joiner_installed = report.snapshot_installs.iter().any(|(n, _, _)| *n == JOINER);
    Outcome { report, setup, joiner_installed, joiner_height, max_height }
}
