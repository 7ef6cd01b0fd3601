//! Example, run by CI (`cargo run --release -p hotstuff-tests --example bank`; `cargo test`
//! runs its tests): a user's own app tested with the simulator's public API. A bank moves
//! money between accounts; its invariant is conservation of money. 200 seeds of four
//! validators, one of them twinned, under loss, delays, partitions and crash-restarts, with
//! client transfers submitted while the simulation is paused between steps. Asserted: the
//! user's invariant on every honest replica after every commit (checked by the simulator), and
//! agreement of every pair of honest replicas' commit logs and app states. A negative control
//! (a bank that mints money) shows the invariant check fires.

use hotstuff_core::{AppOutcome, AppStateUpdates, Block, Height};
use hotstuff_tests::scenario::{self, Kind};
use hotstuff_tests::{AppState, Params, Report, Sim, SimApp, SimContext};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};

const ACCOUNTS: u8 = 8;
const INITIAL: u64 = 1_000;
const TX_LEN: usize = 10;
const MAX_TXS: usize = 32;

/// A transfer: `[from, to, amount (u64 LE)]`.
fn transfer(from: u8, to: u8, amount: u64) -> Vec<u8> {
    let mut tx = vec![from, to];
    tx.extend_from_slice(&amount.to_le_bytes());
    tx
}

fn key(account: u8) -> Vec<u8> {
    vec![b'b', account]
}

fn balance(get: impl Fn(&[u8]) -> Option<Vec<u8>>, account: u8) -> u64 {
    get(&key(account)).and_then(|v| v.try_into().ok()).map_or(INITIAL, u64::from_le_bytes)
}

struct Bank {
    /// A bug for the negative control: a transfer of a multiple of 7 credits one unit extra.
    mints: bool,
}

impl Bank {
    /// Applies `txs` in order on the parent's state; `None` if one is invalid (unknown
    /// account, to itself, zero, or more than the balance). Returns the updates.
    fn execute(&self, ctx: &SimContext<'_>, txs: &[&[u8]]) -> Option<AppStateUpdates> {
        let mut balances: BTreeMap<u8, u64> = BTreeMap::new();
        for tx in txs {
            let (&[from, to], amount) = tx.split_first_chunk::<2>()?;
            let amount = u64::from_le_bytes(amount.try_into().ok()?);
            if from >= ACCOUNTS || to >= ACCOUNTS || from == to || amount == 0 {
                return None;
            }
            let from_balance = *balances.entry(from).or_insert_with(|| balance(|k| ctx.get(k), from));
            let to_balance = *balances.entry(to).or_insert_with(|| balance(|k| ctx.get(k), to));
            let remaining = from_balance.checked_sub(amount)?;
            let bonus = u64::from(self.mints && amount % 7 == 0);
            balances.insert(from, remaining);
            balances.insert(to, to_balance.checked_add(amount + bonus)?);
        }
        let mut updates = AppStateUpdates::default();
        for (account, b) in balances {
            updates.insert(key(account), b.to_le_bytes().to_vec());
        }
        Some(updates)
    }
}

impl SimApp for Bank {
    fn produce_block(&mut self, ctx: &SimContext<'_>, txs: &mut VecDeque<Vec<u8>>) -> (Vec<u8>, AppOutcome) {
        // Greedy: keep each transfer that is still valid after the ones already taken.
        let mut taken: Vec<Vec<u8>> = Vec::new();
        while taken.len() < MAX_TXS {
            let Some(tx) = txs.pop_front() else { break };
            let mut candidate: Vec<&[u8]> = taken.iter().map(Vec::as_slice).collect();
            candidate.push(&tx);
            if self.execute(ctx, &candidate).is_some() {
                taken.push(tx);
            }
        }
        let slices: Vec<&[u8]> = taken.iter().map(Vec::as_slice).collect();
        let app_updates = self.execute(ctx, &slices).unwrap_or_default();
        (taken.concat(), AppOutcome { app_updates, ..AppOutcome::default() })
    }

    fn validate_block(&mut self, ctx: &SimContext<'_>, block: &Block) -> Option<AppOutcome> {
        if block.payload.len() % TX_LEN != 0 || block.payload.len() > MAX_TXS * TX_LEN {
            return None;
        }
        let txs: Vec<&[u8]> = block.payload.chunks(TX_LEN).collect();
        Some(AppOutcome { app_updates: self.execute(ctx, &txs)?, ..AppOutcome::default() })
    }

    fn check(&self, _height: Height, state: &AppState) -> Result<(), String> {
        let total: u64 = (0..ACCOUNTS).map(|a| balance(|k| state.get(k).cloned(), a)).sum();
        let expected = u64::from(ACCOUNTS) * INITIAL;
        if total == expected {
            Ok(())
        } else {
            Err(format!("money is not conserved: {total} in the accounts, {expected} expected"))
        }
    }
}

/// One seed: twins plus random faults with partitions and crashes forced on; transfers
/// submitted to every node every 200 ms of virtual time until the heal, then run to the end.
fn run_seed(seed: u64, mints: bool) -> (Report, u64) {
    let mut p: Params = scenario::params(seed, 4, 1, Kind::Twins);
    p.faults.partitions = true;
    p.faults.crashes = true;
    let mut sim = Sim::with_app(p.clone(), |_| Box::new(Bank { mints }));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xba4c);
    let mut submitted = 0;
    let mut t = 0;
    while t < p.heal_at_ms {
        t += 200;
        sim.run_until(t);
        for _ in 0..3 {
            let from = rng.gen_range(0..ACCOUNTS);
            let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
            let tx = transfer(from, to, rng.gen_range(1..400));
            for n in 0..sim.node_count() {
                sim.submit(n, tx.clone());
            }
            submitted += 1;
        }
    }
    sim.run_to_end();
    (sim.finish(), submitted)
}

/// Agreement from the per-replica commit logs (the report's independent check).
fn check_agreement(r: &Report) {
    if let Err(e) = r.agreement() {
        panic!("{e}");
    }
}

fn main() {
    bank_conserves_money_under_twins_crashes_and_partitions_200_seeds();
}

#[test]
fn bank_200_seeds() {
    bank_conserves_money_under_twins_crashes_and_partitions_200_seeds();
}

fn bank_conserves_money_under_twins_crashes_and_partitions_200_seeds() {
    let started = std::time::Instant::now();
    let (mut heights, mut submitted, mut nonempty) = (0u64, 0u64, 0u64);
    for seed in 0..200 {
        let (r, s) = run_seed(seed, false);
        assert!(
            r.ok(),
            "seed {seed} (replay: run_seed({seed}, false)): {:?} {:?} {:?} {:?}",
            r.safety_violations,
            r.double_signs,
            r.liveness_failures,
            r.invariant_violations
        );
        check_agreement(&r);
        assert!(r.max_committed > 0, "seed {seed}: nothing committed");
        heights += r.max_committed;
        submitted += s;
        nonempty += u64::from(r.commit_logs.iter().any(|l| !l.is_empty()));
    }
    println!(
        "bank: 200 seeds, 0 violations, {heights} heights committed, {submitted} transfers submitted, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(nonempty, 200);
}

#[test]
fn bank_replicas_hold_the_same_money_and_a_late_node_catches_up() {
    let mut p = Params::new(7, 4);
    p.late_starts = vec![(3, 4_000)];
    p.run_for_ms = Some(12_000);
    p.record_events = true;
    let mut sim = Sim::with_app(p, |_| Box::new(Bank { mints: false }));
    sim.run_until(3_000);
    assert!(sim.replica(3).is_none(), "node 3 starts at 4 s");
    let before = sim.commit_log(0).len();
    assert!(before > 0, "the others commit meanwhile");
    for i in 0..40u64 {
        for n in 0..4 {
            sim.submit(n, transfer((i % 8) as u8, ((i + 3) % 8) as u8, 1 + i * 13 % 300));
        }
    }
    sim.run_to_end();
    let heights: Vec<usize> = (0..4).map(|n| sim.commit_log(n).len()).collect();
    let moved =
        (0..ACCOUNTS).filter(|a| balance(|k| sim.app_state(0).get(k).cloned(), *a) != INITIAL).count();
    assert!(moved > 0, "transfers were committed");
    let tallest = *heights.iter().max().unwrap_or(&0);
    assert!(heights[3] + 2 >= tallest && heights[3] > before, "the late node caught up: {heights:?}");
    let states: Vec<Vec<u64>> = (0..4)
        .map(|n| (0..ACCOUNTS).map(|a| balance(|k| sim.app_state(n).get(k).cloned(), a)).collect())
        .collect();
    assert!(sim.events(3).iter().all(|(t, _)| *t >= 4_000), "node 3 ran nothing before its start");
    let report = sim.finish();
    assert!(report.ok(), "{:?}", report.invariant_violations);
    check_agreement(&report);
    // Heights may differ by the last block or two; compare the nodes at the same height.
    for n in 1..4 {
        if heights[n] == heights[0] {
            assert_eq!(states[n], states[0], "node {n}");
        }
    }
    println!(
        "bank late start: height {before} at 3 s without node 3; at 12 s heights {heights:?}, balances {:?}, {moved} accounts moved",
        states[0]
    );
}

#[test]
fn negative_control_a_bank_that_mints_money_is_caught() {
    let caught = (0..10).filter(|seed| !run_seed(*seed, true).0.invariant_violations.is_empty()).count();
    println!("bank negative control: minting caught in {caught} of 10 seeds");
    assert!(caught >= 8, "minting caught in only {caught} of 10 seeds");
}

#[test]
fn stepping_replays_the_same_trace_as_run() {
    // The built-in app, random faults and a twin: pausing every 100 ms of virtual time until
    // the heal, then running to the end, must not change anything.
    for seed in [3, 11, 42] {
        let p = scenario::params(seed, 4, 1, Kind::Mixed);
        let whole = Sim::new(p.clone()).run();
        let mut sim = Sim::new(p.clone());
        let mut t = 0;
        while t < p.heal_at_ms {
            t += 100;
            sim.run_until(t);
            assert_eq!(sim.now_ms(), t);
        }
        sim.run_to_end();
        let stepped = sim.finish();
        assert_eq!(stepped.trace_hash, whole.trace_hash, "seed {seed}");
        assert_eq!(stepped.commit_logs, whole.commit_logs, "seed {seed}");
        assert!(whole.ok(), "seed {seed}");
    }
}

/// A user's Byzantine strategy: every vote goes out together with a second, conflicting vote
/// for another block, signed with the same key.
#[cfg(test)]
struct DoubleVoter;

#[cfg(test)]
impl hotstuff_tests::Strategy for DoubleVoter {
    fn on_send(
        &mut self,
        ctx: &hotstuff_tests::StrategyContext<'_>,
        targets: &[usize],
        message: hotstuff_core::Message,
    ) -> Vec<(usize, hotstuff_core::Message)> {
        let mut out: Vec<(usize, hotstuff_core::Message)> =
            targets.iter().map(|t| (*t, message.clone())).collect();
        if let hotstuff_core::Message::Vote(v) = &message {
            let mut other = v.block;
            other.0[0] ^= 1;
            let subject = hotstuff_core::crypto::vote_subject(&other, v.epoch);
            let signature = ctx.key.sign(ctx.chain, hotstuff_core::SignKind::Vote, v.view, &subject);
            let forged = hotstuff_core::Vote { block: other, signature, ..v.clone() };
            out.extend(targets.iter().map(|t| (*t, hotstuff_core::Message::Vote(forged.clone()))));
        }
        out
    }
}

#[test]
fn bank_with_a_user_supplied_double_voting_validator_20_seeds() {
    let (mut refused, mut invalid) = (0, 0);
    for seed in 0..20 {
        let mut p = scenario::params(seed, 4, 0, Kind::None);
        p.faults.partitions = true;
        let mut sim = Sim::with_app(p, |_| Box::new(Bank { mints: false }));
        sim.set_strategy((seed % 4) as usize, Box::new(DoubleVoter));
        for i in 0..20u8 {
            for n in 0..4 {
                sim.submit(n, transfer(i % 8, (i + 1) % 8, 5));
            }
        }
        sim.run_to_end();
        assert!(!sim.is_honest((seed % 4) as usize));
        let r = sim.finish();
        assert!(
            r.ok(),
            "seed {seed}: {:?} {:?} {:?}",
            r.safety_violations,
            r.liveness_failures,
            r.invariant_violations
        );
        check_agreement(&r);
        refused += r.refused_inputs;
        invalid += r.invalid_inputs;
    }
    println!("bank double voter: 20 seeds ok, {refused} inputs refused, {invalid} of them invalid");
    assert!(invalid > 0, "the conflicting votes were refused as invalid");
}

#[test]
fn agreement_check_names_a_fork() {
    let (mut r, _) = run_seed(1, false);
    r.agreement().unwrap();
    let honest: Vec<usize> = (0..r.honest.len()).filter(|n| r.honest[*n]).collect();
    r.commit_logs[honest[1]][0].0[0] ^= 1;
    let e = r.agreement().unwrap_err();
    assert!(e.contains("at height 1") && e.contains("seed 1"), "{e}");
}
