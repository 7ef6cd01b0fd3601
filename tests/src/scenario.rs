//! Seeded scenarios: what the `simulate` runner and the CI batches run for one seed.

use crate::sim::{Behavior, NetFaults, Params};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which misbehaviour the Byzantine replicas of a batch show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Twins: honest-code pairs sharing a key, on opposite sides of partitions.
    Twins,
    /// Equivocating leaders.
    Equivocate,
    /// Silent replicas.
    Silent,
    /// Vote-withholding replicas.
    Withhold,
    /// Replicas that replay old messages.
    Replay,
    /// A kind drawn per seed among the others.
    Mixed,
    /// No Byzantine replicas.
    None,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "twins" => Kind::Twins,
            "equivocate" => Kind::Equivocate,
            "silent" => Kind::Silent,
            "withhold" => Kind::Withhold,
            "replay" => Kind::Replay,
            "mixed" => Kind::Mixed,
            "none" => Kind::None,
            other => {
                return Err(format!(
                    "unknown kind `{other}` (expected twins, equivocate, silent, withhold, replay, mixed or none)"
                ))
            }
        })
    }
}

/// The set-up of seed `seed` for `n` validators, `byzantine` of them misbehaving as `kind`:
/// faults, heal time and Byzantine placement are all drawn from the seed.
#[must_use]
pub fn params(seed: u64, n: usize, byzantine: usize, kind: Kind) -> Params {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ce7_a210);
    let mut p = Params::new(seed, n);
    p.faults = NetFaults::random(&mut rng);
    p.heal_at_ms = rng.gen_range(2_000..15_000);
    let mut keys: Vec<usize> = (0..n).collect();
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.gen_range(0..=i));
    }
    for &k in keys.iter().take(byzantine) {
        let kind = if kind == Kind::Mixed {
            [Kind::Twins, Kind::Equivocate, Kind::Silent, Kind::Withhold, Kind::Replay][rng.gen_range(0..5)]
        } else {
            kind
        };
        match kind {
            Kind::Twins => p.twins.push(k),
            Kind::Equivocate => p.byzantine.push((k, Behavior::Equivocate)),
            Kind::Silent => p.byzantine.push((k, Behavior::Silent)),
            Kind::Withhold => p.byzantine.push((k, Behavior::Withhold)),
            Kind::Replay => p.byzantine.push((k, Behavior::Replay)),
            Kind::Mixed | Kind::None => {}
        }
    }
    // No Byzantine replica: once everyone has caught up after the heal, no view may time out.
    p.strict_after_heal = p.byzantine.is_empty() && p.twins.is_empty();
    p
}

/// How many views a Twins scenario scripts (partitions and leaders) before the network heals.
pub const TWINS_VIEWS: usize = 7;

/// Twins scenario number `scenario` (Bano et al., "Twins: BFT Systems Made Robust"): `twins`
/// keys each run as two honest-code nodes; for each of the first [`TWINS_VIEWS`] views a
/// two-sided partition of the nodes (twins on opposite sides) and a leader are drawn from the
/// scenario number; then the network heals and liveness is checked. No other faults.
#[must_use]
pub fn twins(scenario: u64, n: usize, twins: usize) -> Params {
    let mut rng = ChaCha8Rng::seed_from_u64(scenario ^ 0x7a1e_5eed);
    let mut p = Params::new(scenario, n);
    p.twins = (0..twins).collect();
    let nodes = n + twins;
    // Node order in the simulator: each key's nodes are adjacent (`Params::node_keys`).
    let node_keys = p.node_keys();
    debug_assert_eq!(node_keys.len(), nodes);
    for _ in 0..TWINS_VIEWS {
        let mut sides: Vec<u8> = (0..nodes).map(|_| rng.gen_range(0..2)).collect();
        for i in 1..nodes {
            if node_keys[i] == node_keys[i - 1] {
                sides[i] = 1 - sides[i - 1];
            }
        }
        p.view_partitions.push(sides);
        p.leaders.push(rng.gen_range(0..n));
    }
    p.faults = NetFaults::none();
    p.heal_at_ms = 20_000;
    p
}

/// Adds `count` validator-set changes, drawn from `seed`, to `p`, with two listeners that may
/// join: each change adds a key, removes one, or changes a power. Every intermediate set keeps
/// the Byzantine keys (misbehaving or twinned) below a third of the power, so that every honest
/// quorum is reachable and the oracles must hold.
pub fn add_set_changes(p: &mut Params, seed: u64, count: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a2_6e5e);
    p.listeners = p.listeners.max(2);
    let keys = p.validators + p.listeners;
    let byzantine: Vec<usize> = p.byzantine.iter().map(|(k, _)| *k).chain(p.twins.iter().copied()).collect();
    let mut powers: Vec<u64> = (0..keys).map(|k| if k < p.validators { 1 } else { 0 }).collect();
    if let Some(initial) = &p.powers {
        powers[..initial.len()].copy_from_slice(initial);
    }
    // At least three members and no member with a quorum alone: a lone quorum leads and
    // certifies its own blocks with no message between replicas, which the simulator's
    // zero-time local loop would run forever.
    let acceptable = |powers: &[u64]| {
        let total: u64 = powers.iter().sum();
        let byz: u64 = byzantine.iter().map(|k| powers[*k]).sum();
        let quorum = total * 2 / 3 + 1;
        let members = powers.iter().filter(|p| **p > 0).count();
        let largest = powers.iter().copied().max().unwrap_or(0);
        members >= 3 && largest < quorum && total - byz >= quorum
    };
    let mut changes = Vec::new();
    let mut tries = 0;
    while changes.len() < count && tries < 1_000 {
        tries += 1;
        let key = rng.gen_range(0..keys);
        let power = rng.gen_range(0..=3u64);
        if powers[key] == power {
            continue;
        }
        let mut next = powers.clone();
        next[key] = power;
        if !acceptable(&next) {
            continue;
        }
        powers = next;
        let at_height = if changes.is_empty() { rng.gen_range(1..6) } else { rng.gen_range(0..4) };
        changes.push(crate::SetChange { at_height, updates: vec![(key, power)] });
    }
    p.set_changes = changes;
}
