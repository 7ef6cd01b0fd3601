//! The app the node ships, tested under the simulator: the kv app (`hotstuff_driver_std::kv`,
//! the `App` that `hotstuff-node` runs) plugged into the simulator through [`DriverApp`], with a
//! twin, loss, partitions and crash-restarts. Asserted from the per-replica logs and app states:
//! agreement of every pair of honest replicas, every client write committed on every honest
//! replica once the network heals, and the user invariant that the app's transaction counter
//! equals the number of distinct keys written (each write goes to a key of its own, so a
//! transaction executed twice or lost would break it).

use hotstuff_core::Height;
use hotstuff_driver_std::kv::{KvApp, Mempool, Tx};
use hotstuff_tests::scenario::{self, Kind};
use hotstuff_tests::{AppState, DriverApp, Report, Sim};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KEY_PREFIX: &[u8] = b"kv/";

fn submit(app: &mut KvApp, tx: Vec<u8>) {
    // Only well-formed transactions are submitted by this test; a bad one would be a test bug.
    let tx: Tx = borsh::from_slice(&tx).expect("the test submits valid transactions");
    app.mempool().submit(tx).expect("the mempool has room");
}

fn written_keys(state: &AppState) -> usize {
    state.keys().filter(|k| k.starts_with(KEY_PREFIX)).count()
}

fn tx_counter(state: &AppState) -> u64 {
    state
        .get(hotstuff_driver_std::kv::TX_COUNT_KEY)
        .and_then(|v| v.as_slice().try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The counter of executed transactions equals the number of keys written.
fn no_lost_or_repeated_execution(_height: Height, state: &AppState) -> Result<(), String> {
    let (count, keys) = (tx_counter(state), written_keys(state) as u64);
    if count == keys {
        Ok(())
    } else {
        Err(format!("{count} transactions executed but {keys} keys written"))
    }
}

/// The negative control's bug: a client intake that submits each transaction twice.
fn submit_twice(app: &mut KvApp, tx: Vec<u8>) {
    submit(app, tx.clone());
    submit(app, tx);
}

fn run_seed(seed: u64) -> (Report, Vec<AppState>, Vec<bool>, u64) {
    run_seed_with(seed, submit)
}

fn run_seed_with(seed: u64, submit: fn(&mut KvApp, Vec<u8>)) -> (Report, Vec<AppState>, Vec<bool>, u64) {
    let mut p = scenario::params(seed, 4, 1, Kind::Twins);
    p.faults.partitions = true;
    p.faults.crashes = true;
    let heal = p.heal_at_ms;
    let mut sim = Sim::with_app(p, |_| {
        Box::new(
            DriverApp::new(KvApp::new(Mempool::new(10_000), 64), submit)
                .with_invariant(Box::new(no_lost_or_repeated_execution)),
        )
    });
    let honest: Vec<usize> = (0..sim.node_count()).filter(|n| sim.is_honest(*n)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b76);
    let (mut t, mut written) = (0, 0u64);
    while t < heal {
        t += 200;
        sim.run_until(t);
        for _ in 0..4 {
            let tx = Tx::Put { key: format!("{written}").into_bytes(), value: vec![rng.gen(); 16] };
            sim.submit(honest[rng.gen_range(0..honest.len())], borsh::to_vec(&tx).expect("encodes"));
            written += 1;
        }
    }
    // After the heal, run on until every honest replica has committed past the writes.
    let done = sim.run_until_pred(heal + 60_000, |s| {
        honest.iter().all(|n| written_keys(s.app_state(*n)) as u64 == written)
    });
    assert!(done, "seed {seed}: not every write committed within 60 s of the heal");
    // Then to the liveness oracle's end condition.
    sim.run_to_end();
    let states = (0..sim.node_count()).map(|n| sim.app_state(n).clone()).collect();
    let honest_mask = (0..sim.node_count()).map(|n| sim.is_honest(n)).collect();
    (sim.finish(), states, honest_mask, written)
}

#[test]
fn the_shipped_kv_app_under_twins_crashes_and_partitions_30_seeds() {
    let (mut writes, mut heights) = (0, 0);
    for seed in 0..30 {
        let (r, states, honest, written) = run_seed(seed);
        assert!(
            r.ok(),
            "seed {seed} (replay: run_seed({seed})): {:?} {:?} {:?} {:?}",
            r.safety_violations,
            r.double_signs,
            r.liveness_failures,
            r.invariant_violations
        );
        if let Err(e) = r.agreement() {
            panic!("{e}");
        }
        let first = honest.iter().position(|h| *h).expect("an honest node");
        for n in (0..states.len()).filter(|n| honest[*n]) {
            assert_eq!(written_keys(&states[n]) as u64, written, "seed {seed}: node {n}");
            let keys = |s: &AppState| {
                s.iter()
                    .filter(|(k, _)| k.starts_with(KEY_PREFIX))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(keys(&states[n]), keys(&states[first]), "seed {seed}: node {n} holds other values");
        }
        writes += written;
        heights += r.max_committed;
    }
    println!("kv app in the simulator: 30 seeds, {writes} writes, all committed on every honest replica, {heights} heights");
}

#[test]
fn negative_control_a_repeated_execution_is_caught_by_the_invariant() {
    let (r, ..) = run_seed_with(1, submit_twice);
    assert!(!r.invariant_violations.is_empty(), "executing each write twice went unnoticed");
    println!("kv negative control: {}", r.invariant_violations[0]);
}
