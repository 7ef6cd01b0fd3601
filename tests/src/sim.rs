//! The deterministic simulator: real `hotstuff-core` replicas, a virtual clock, a seeded network
//! with faults, crash-restart with lost writes, Byzantine replicas, and the oracles.
//!
//! One `u64` seed decides everything. There are no threads and no wall clock: a priority queue
//! of `(virtual time, sequence number)` orders every event, so the same seed always gives the
//! same trace (and the same trace hash).
//!
//! # Use it on your own app
//! Build [`Params`], plug your app in with [`Sim::with_app`] (a [`SimApp`]: produce and
//! validate payloads on the speculative state, and an invariant checked after every commit),
//! then either [`Sim::run`] to the end, or step: [`Sim::run_until`] a virtual time,
//! [`Sim::run_until_pred`] a condition, [`Sim::step`] one event, and between steps
//! [`submit`](Sim::submit) client transactions, [`crash`](Sim::crash) or
//! [`restart`](Sim::restart) a node, [`set_partition`](Sim::set_partition), and read each
//! node's [`replica`](Sim::replica), [`commit_log`](Sim::commit_log),
//! [`app_state`](Sim::app_state) and [`events`](Sim::events). [`Sim::finish`] runs the final
//! oracles and returns the [`Report`], which carries every node's commit log too.
//!
//! # Nodes and keys
//! Keys are numbered validators first (`0..validators`), then listeners. Nodes are numbered by
//! key, and a key listed in [`Params::twins`] gets two adjacent nodes (the twin pair): with
//! `twins = [1]` and 4 validators, nodes 0, 1, 2, 3, 4 run keys 0, 1, 1, 2, 3.
//! [`Params::node_keys`] gives the mapping.
//!
//! # Snapshot sync
//! With [`Params::snapshots`] set, nodes prune their committed blocks below a retention window
//! (answering block sync below it with the core's pruned answer), serve snapshots of their
//! committed app state (a model of the std driver's server, `snapsim`), and catch up by snapshot
//! with the std driver's own `snapshot::Client` (offer checks, chunk verification against the
//! certified root, staging in a `RedbStore::in_memory`, the store's install) under the virtual
//! clock and the seeded network; see [`SnapshotParams`] for what the oracles add.

use crate::app;
use crate::snapsim::{SnapServer, UNKNOWN};
use crate::user_app::{AppState, SimApp, SimContext};
use hotstuff_core::{
    Action, Block, BlockHash, BlockRecord, ChainId, CommittedTip, Config, DefaultPacemaker, Envelope,
    EpochProof, EpochState, Event, Input, Keypair, LeaderHistory, LeaderPolicy, Message, Pacemaker, Proposal,
    PublicKey, QuorumCertificate, Recovered, Replica, SafetyState, SyncResponse, SyncTimer, ValidatorSet,
    View,
};
use hotstuff_driver_std::snapshot::{Client as SnapClient, Ctx as SnapCtx, Out as SnapOut};
use hotstuff_driver_std::storage::SnapshotInstall;
use hotstuff_driver_std::{RedbStore, Storage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How a replica misbehaves. Byzantine replicas run the honest core and distort what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Follows the protocol.
    Honest,
    /// Sends nothing at all.
    Silent,
    /// Sends everything but its votes.
    Withhold,
    /// As leader, sends two different proposals for its view to two halves of the replicas.
    Equivocate,
    /// Also re-sends old messages it has seen to random replicas.
    Replay,
    /// Answers block-sync requests with corrupt, truncated or empty responses, or not at all.
    BadSync,
    /// A user-supplied [`Strategy`], set with [`Sim::set_strategy`].
    Custom,
    /// Answers snapshot requests with forged, stale, truncated, misproved, mislabelled or
    /// oversized offers and chunks, or not at all (each answer drawn from the seed; some are honest).
    BadSnapshot,
}

/// What a user-supplied Byzantine [`Strategy`] may use: the node's key (to sign anything it
/// likes), the chain, and the time.
pub struct StrategyContext<'a> {
    /// The node.
    pub node: usize,
    /// Its key.
    pub key: &'a Keypair,
    /// The chain (for signing).
    pub chain: ChainId,
    /// Virtual time (ms).
    pub now_ms: u64,
    /// Number of nodes.
    pub nodes: usize,
}

/// A user-supplied Byzantine behaviour: the node runs the honest core, and every message the
/// core sends passes through [`Strategy::on_send`], which decides what actually goes out. The
/// node is not honest for the oracles.
pub trait Strategy {
    /// The core sends `message` to `targets` (node indices); return the `(node, message)` pairs
    /// to transmit instead (through the network model, faults included).
    fn on_send(
        &mut self,
        ctx: &StrategyContext<'_>,
        targets: &[usize],
        message: Message,
    ) -> Vec<(usize, Message)>;
}

/// A validator-set change the app makes in the first block it produces at or above
/// `at_height` (in the epoch before it: change `i` moves the chain from epoch `i` to `i + 1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetChange {
    /// The lowest height of the block that carries it.
    pub at_height: u64,
    /// `(key index, power)`; power 0 removes the key.
    pub updates: Vec<(usize, u64)>,
}

/// Network faults, active until the heal time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetFaults {
    /// Message delay range in ms (delays reorder messages).
    pub delay_ms: (u64, u64),
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Whether partitions (symmetric and one-way) open and heal.
    pub partitions: bool,
    /// Whether honest replicas crash and restart (losing unacknowledged writes).
    pub crashes: bool,
}

impl NetFaults {
    /// No faults: delays of 1-10 ms, nothing lost.
    #[must_use]
    pub fn none() -> Self {
        NetFaults { delay_ms: (1, 10), loss: 0.0, duplicate: 0.0, partitions: false, crashes: false }
    }

    /// Faults drawn from the seed within the ranges of the simulator's brief: delay 0-200 ms,
    /// loss 0-30%, duplication 0-50%, partitions and crashes each on or off.
    #[must_use]
    pub fn random(rng: &mut impl Rng) -> Self {
        let max_delay = rng.gen_range(5..=200);
        NetFaults {
            delay_ms: (0, max_delay),
            loss: rng.gen_range(0.0..0.30),
            duplicate: rng.gen_range(0.0..0.50),
            partitions: rng.gen_bool(0.5),
            crashes: rng.gen_bool(0.5),
        }
    }
}

/// One simulation's set-up.
#[derive(Clone, Debug)]
pub struct Params {
    /// The seed.
    pub seed: u64,
    /// Number of validator keys (each with power 1 unless `powers` is set).
    pub validators: usize,
    /// Voting power per key (defaults to 1 each).
    pub powers: Option<Vec<u64>>,
    /// Misbehaviour per key index (others are honest).
    pub byzantine: Vec<(usize, Behavior)>,
    /// Key indices that run as twins: two honest-code nodes sharing one key, numbered next to
    /// each other (see [`Params::node_keys`]).
    pub twins: Vec<usize>,
    /// Network and crash faults (until `heal_at_ms`).
    pub faults: NetFaults,
    /// When the network heals and crashed replicas restart.
    pub heal_at_ms: u64,
    /// Commits each honest replica must make after the heal.
    pub commits_after_heal: u64,
    /// Base view timeout.
    pub base_timeout_ms: u64,
    /// Largest view timeout.
    pub max_timeout_ms: u64,
    /// Record a human-readable trace.
    pub trace: bool,
    /// Twins scenarios: the side of every node for the messages of view `i + 1` (until the
    /// heal). Messages between different sides are dropped.
    pub view_partitions: Vec<Vec<u8>>,
    /// Twins scenarios: the leader (key index) of view `i + 1`; later views use the default
    /// weighted round robin.
    pub leaders: Vec<usize>,
    /// Replicas with no voting power that follow the chain (keys after the validators').
    pub listeners: usize,
    /// Scheduled outages `(node, from_ms, to_ms)`: the node crashes and restarts (by `to_ms`
    /// at the latest, since the heal restarts every node).
    pub outages: Vec<(usize, u64, u64)>,
    /// Validator-set changes, in order (keys may be any of validators' and listeners').
    pub set_changes: Vec<SetChange>,
    /// Core settings tweaks: block-sync margin (views).
    pub sync_margin: u64,
    /// Core setting `Config::broadcast_votes` on every node: votes go to every validator and
    /// every validator forms QCs (default off).
    pub broadcast_votes: bool,
    /// A heavy tail on top of `faults.delay_ms`: with this probability a message's delay is
    /// drawn from the second range instead (reorders messages much more than a uniform range).
    pub delay_tail: Option<(f64, (u64, u64))>,
    /// The strict oracle for fault-free runs: any view of an honest replica after the first
    /// that ends by a timeout is a liveness failure (with no faults every view must end with a
    /// QC).
    pub strict_liveness: bool,
    /// The strict oracle after the heal, for runs without Byzantine replicas: once every honest
    /// replica has caught up (committed at least 2 blocks past the highest honest height at
    /// the heal, within 2 heights of each other), a view entered after that which ends by a
    /// timeout is a liveness failure (the network no longer loses anything, so a one-view
    /// stall is a bug).
    pub strict_after_heal: bool,
    /// How leaders are picked (default: reputation, the library's default).
    pub leader_policy: LeaderPolicy,
    /// Run for this long in virtual time (ms) even once every honest replica is done.
    pub run_for_ms: Option<u64>,
    /// Validators that never start (crashed for good before the run): the liveness oracle
    /// expects nothing of them.
    pub dead: Vec<usize>,
    /// Nodes that start late `(node, at_ms)`: nothing runs on them before `at_ms` (a fresh
    /// node joining a running chain); then they catch up.
    pub late_starts: Vec<(usize, u64)>,
    /// Keep every node's core events with their virtual time ([`Sim::events`],
    /// [`Report::events`]).
    pub record_events: bool,
    /// End the run at the first safety violation an oracle records (for negative controls:
    /// a forked chain can keep committing until the liveness bound, which proves nothing more).
    pub stop_on_safety_violation: bool,
    /// Snapshot sync (see [`SnapshotParams`]); `None`: not modelled, nothing pruned.
    pub snapshots: Option<SnapshotParams>,
    /// The std driver's background writer: other proposers' blocks and committed blocks become
    /// durable up to this many ms late (a node's own proposals and its safety state are
    /// durable before `Persisted`, as always). A crash loses every such write younger than a
    /// cutoff drawn within the window: those blocks are gone from the store, and its
    /// committed tip goes back to the last commit older than the cutoff (never across a
    /// validator-set change, which the driver writes at once; the node's own proposals among
    /// the lost commits are still in the store as uncommitted blocks). Only for runs without a
    /// user app and without snapshots (their committed state is not rolled back). `None`:
    /// everything is durable when written.
    pub lazy_writes_ms: Option<u64>,
}

/// Snapshot sync in the simulator: pruning, serving, and the std driver's snapshot client.
///
/// Every node keeps its committed blocks from `retain` below its tip up (answering block-sync
/// requests below that with the core's pruned answer, [`Replica::sync_answer`]), takes a
/// snapshot of its committed app state at every multiple of `interval` (served by the model
/// in `snapsim`), and runs the driver's own `hotstuff_driver_std::snapshot::Client` over a
/// `RedbStore::in_memory` staging store, under the virtual clock: a node that every server
/// answered "pruned" gathers offers, verifies the certificate, fetches and verifies chunks
/// through the simulated network, stages them (durable at once, so a crash resumes), installs
/// them with the store's `install_staged` and restarts its replica from the installed tip, as
/// the driver's engine does. The app must certify its state root
/// ([`SimApp::snapshot_root`]): the kv app wrapped in `StateCommitted`.
///
/// Oracles: every honest replica's app state after a height has the same digest; an installed
/// state has the digest the validators had at its height, and its tip is the block they
/// committed there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotParams {
    /// Committed blocks kept below the tip.
    pub retain: u64,
    /// Snapshots are taken at the multiples of this height.
    pub interval: u64,
    /// Negative control: install the first chunk received for each part of the key space,
    /// verified or not, instead of the verified ones (a planted bug the oracles must catch).
    pub plant_unverified: bool,
}

impl Params {
    /// A fault-free run of `n` validators.
    #[must_use]
    pub fn new(seed: u64, n: usize) -> Self {
        Params {
            seed,
            validators: n,
            powers: None,
            byzantine: Vec::new(),
            twins: Vec::new(),
            faults: NetFaults::none(),
            heal_at_ms: 0,
            commits_after_heal: 10,
            base_timeout_ms: 1_000,
            max_timeout_ms: 8_000,
            trace: false,
            view_partitions: Vec::new(),
            leaders: Vec::new(),
            listeners: 0,
            outages: Vec::new(),
            set_changes: Vec::new(),
            sync_margin: 0,
            broadcast_votes: false,
            delay_tail: None,
            strict_liveness: false,
            strict_after_heal: false,
            leader_policy: LeaderPolicy::REPUTATION,
            run_for_ms: None,
            dead: Vec::new(),
            stop_on_safety_violation: false,
            late_starts: Vec::new(),
            record_events: false,
            snapshots: None,
            lazy_writes_ms: None,
        }
    }

    /// The key index each node runs, by node index: keys in order (validators, then
    /// listeners), a twinned key twice in a row.
    #[must_use]
    pub fn node_keys(&self) -> Vec<usize> {
        (0..self.validators + self.listeners)
            .flat_map(|k| std::iter::repeat_n(k, if self.twins.contains(&k) { 2 } else { 1 }))
            .collect()
    }

    /// A fault-free run checked by the strict oracle: no loss, no Byzantine replica, delays
    /// drawn from `delay_ms`, with a heavy tail if given.
    #[must_use]
    pub fn fault_free(
        seed: u64,
        n: usize,
        delay_ms: (u64, u64),
        delay_tail: Option<(f64, (u64, u64))>,
        commits: u64,
    ) -> Self {
        let mut p = Params::new(seed, n);
        p.faults.delay_ms = delay_ms;
        p.delay_tail = delay_tail;
        p.commits_after_heal = commits;
        p.strict_liveness = true;
        p
    }

    /// The longest a run may take after the heal before liveness has failed: every honest
    /// replica must commit `commits_after_heal` blocks. Each view after the heal lasts at most
    /// one max timeout (the back-off is capped), at most `f + 1` views in a row can have a
    /// faulty leader, and a commit needs two consecutive good views; the bound allows each of
    /// the required commits `2 * (f + 2)` views, plus time to recover pending state.
    #[must_use]
    pub fn liveness_bound_ms(&self) -> u64 {
        let members =
            if self.set_changes.is_empty() { self.validators } else { self.validators + self.listeners };
        let f = (members as u64).saturating_sub(1) / 3;
        // Each set change costs a few extra views (its suffix) and may need catching up.
        let changes = self.set_changes.len() as u64 * 4;
        let views = (self.commits_after_heal + 2) * 2 * (f + 2);
        (views + changes) * self.max_timeout_ms
    }
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Two honest replicas committed different blocks at one height.
    pub safety_violations: Vec<String>,
    /// An honest key signed two different votes, timeout votes or proposals for one view.
    pub double_signs: Vec<String>,
    /// An honest replica's durable voted view moved backwards, or it missed the liveness bound.
    pub liveness_failures: Vec<String>,
    /// The highest height committed by any honest replica.
    pub max_committed: u64,
    /// Per honest replica: views it took after the heal to commit `commits_after_heal` blocks.
    pub views_after_heal: Vec<u64>,
    /// Largest view reached by any replica.
    pub max_view: u64,
    /// Hash of the full event trace.
    pub trace_hash: [u8; 32],
    /// Virtual time at the end.
    pub end_ms: u64,
    /// Messages the core refused (bad input from Byzantine peers, stale messages).
    pub refused_inputs: u64,
    /// Of those, the ones no honest peer sends ([`InputError::is_invalid`](hotstuff_core::InputError::is_invalid)).
    pub invalid_inputs: u64,
    /// Blocks honest replicas added by block sync.
    pub synced_blocks: u64,
    /// Human-readable trace (if asked for).
    pub trace: Vec<String>,
    /// The highest epoch any honest replica reached.
    pub max_epoch: u64,
    /// Per honest replica and epoch change: views between the old epoch's last committed block
    /// and the new epoch's first.
    pub epoch_gaps: Vec<u64>,
    /// The largest view gap between consecutive committed blocks of one epoch (honest replicas).
    pub max_gap_within_epoch: u64,
    /// Per epoch: the keys (indices) that proposed committed blocks.
    pub proposers: BTreeMap<u64, BTreeSet<usize>>,
    /// Times an honest replica avoided a sync server.
    pub avoided_sync_servers: u64,
    /// Views after the first that an honest replica ended by its timer (`ViewTimedOut`).
    pub view_timeouts: u64,
    /// Blocks honest replicas fetched by hash (a QC for a block they lacked).
    pub fetched_blocks: u64,
    /// Virtual time (ms) at which each height was first committed by an honest replica, in
    /// height order.
    pub commit_times: Vec<u64>,
    /// Per node: the hashes it committed, `commit_logs[node][h - 1]` at height `h`.
    pub commit_logs: Vec<Vec<BlockHash>>,
    /// Per node: whether it is honest (not Byzantine, not a twin); the oracles cover these.
    pub honest: Vec<bool>,
    /// Per node: the key index it runs ([`Params::node_keys`]).
    pub node_keys: Vec<usize>,
    /// The user app's invariant failed ([`SimApp::check`]).
    pub invariant_violations: Vec<String>,
    /// Snapshots installed: `(node, height, virtual ms)`.
    pub snapshot_installs: Vec<(usize, u64, u64)>,
    /// Block-sync requests answered "pruned below" by honest nodes.
    pub pruned_answers: u64,
    /// Snapshot servers an honest node's client avoided (a bad answer, or three unanswered).
    pub avoided_snapshot_servers: u64,
    /// Distorted snapshot answers sent by [`Behavior::BadSnapshot`] servers, by kind.
    pub bad_snapshot_answers: BTreeMap<&'static str, u64>,
    /// Snapshot chunks honest servers answered.
    pub chunks_served: u64,
    /// Restarts that found a staged snapshot left by a crash mid-fetch (the client resumes it).
    pub staged_at_restart: u64,
    /// Per node, if [`Params::record_events`]: its core events with their virtual time (ms).
    pub events: Vec<Vec<(u64, Event)>>,
    /// With [`Params::lazy_writes_ms`]: commits crashes took back from honest nodes' stores.
    pub lost_commits: u64,
}

impl Report {
    /// What the oracles found: safety violations, double signs, then liveness failures.
    pub fn findings(&self) -> impl Iterator<Item = &String> {
        self.safety_violations.iter().chain(&self.double_signs).chain(&self.liveness_failures)
    }

    /// The first `n` of [`Report::findings`], joined by "; " (for a failing seed's line).
    #[must_use]
    pub fn first_findings(&self, n: usize) -> String {
        self.findings().take(n).cloned().collect::<Vec<_>>().join("; ")
    }

    /// Heights first committed within `from_ms..to_ms` of virtual time, per second.
    #[must_use]
    pub fn commit_rate(&self, from_ms: u64, to_ms: u64) -> f64 {
        let n = self.commit_times.iter().filter(|t| **t >= from_ms && **t < to_ms).count();
        n as f64 * 1000.0 / (to_ms.saturating_sub(from_ms).max(1)) as f64
    }
}

impl Report {
    /// Agreement, checked from the per-node commit logs alone (an oracle independent of the
    /// one that runs during the simulation): every two honest nodes committed the same block at
    /// every height both reached. The error names the seed, the nodes, the height and both
    /// full hashes.
    pub fn agreement(&self) -> Result<(), String> {
        let honest: Vec<usize> =
            (0..self.commit_logs.len()).filter(|n| self.honest.get(*n) == Some(&true)).collect();
        for (i, &a) in honest.iter().enumerate() {
            for &b in &honest[i + 1..] {
                let (la, lb) = (&self.commit_logs[a], &self.commit_logs[b]);
                if let Some(h) = la.iter().zip(lb).position(|(x, y)| x != y) {
                    return Err(format!(
                        "seed {}: nodes {a} and {b} committed {:#} and {:#} at height {}",
                        self.seed,
                        la[h],
                        lb[h],
                        h + 1
                    ));
                }
            }
        }
        Ok(())
    }

    /// True if no oracle fired.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.safety_violations.is_empty()
            && self.double_signs.is_empty()
            && self.liveness_failures.is_empty()
            && self.invariant_violations.is_empty()
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Deliver {
        to: usize,
        from: PublicKey,
        bytes: Rc<Vec<u8>>,
    },
    Timer {
        node: usize,
        view: View,
        incarnation: u64,
    },
    SyncTimer {
        node: usize,
        timer: SyncTimer,
        incarnation: u64,
    },
    PersistDone {
        node: usize,
        seq: u64,
        incarnation: u64,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    PartitionStart {
        sides: Vec<u8>,
        one_way: bool,
    },
    PartitionEnd,
    Heal,
    /// The snapshot client's timer (`Client::deadline`).
    SnapTick {
        node: usize,
        incarnation: u64,
    },
    /// A block-sync server answered that it pruned what the node asked for.
    SnapBelow {
        node: usize,
        retained_from: hotstuff_core::Height,
        incarnation: u64,
    },
}

/// What a node's store holds durably, and what it has been asked to write.
#[derive(Clone, Debug)]
struct Store {
    safety: Option<SafetyState>,
    blocks: BTreeMap<BlockHash, BlockRecord>,
    committed: CommittedTip,
    /// Committed chain with certificates, by height (pruned below `retained_from`).
    committed_chain: BTreeMap<u64, (Block, QuorumCertificate, Option<EpochProof>)>,
    /// The lowest height kept in `committed_chain` (1: nothing pruned).
    retained_from: u64,
    /// The epoch in force (stored with the commit that started it).
    epoch: Option<EpochState>,
    pending: VecDeque<(u64, Option<SafetyState>, Vec<BlockRecord>)>,
    /// The committed app state (a user app's; the default app's is not kept).
    app_state: AppState,
    /// The committed hashes, by height.
    log: Vec<BlockHash>,
    /// With [`Params::lazy_writes_ms`]: when each other proposer's block was written.
    lazy_blocks: BTreeMap<BlockHash, u64>,
    /// With [`Params::lazy_writes_ms`]: when each height was committed.
    commit_times: BTreeMap<u64, u64>,
}

struct Node {
    key: usize,
    behavior: Behavior,
    twin: bool,
    replica: Option<Replica<SimPacemaker>>,
    incarnation: u64,
    store: Store,
    produced: u64,
    durable_voted: View,
    /// The view of the last block this node committed, and its epoch.
    last_commit: Option<(View, u64)>,
    height_at_heal: Option<(u64, View)>,
    done_at_view: Option<View>,
    replay_log: VecDeque<Rc<Vec<u8>>>,
    /// Not started before this time (a late start).
    not_before: u64,
    /// Client transactions submitted to this node, for the user app.
    pool: VecDeque<Vec<u8>>,
    /// Core events, if recorded.
    events: Vec<(u64, Event)>,
    /// Snapshot sync, if modelled.
    snap: Option<SnapNode>,
}

/// A snapshot chunk's entries.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A node's snapshot sync: its staging store (durable across crashes, as the driver's redb
/// file), the driver's client (in memory: rebuilt from the store at restart), its server.
struct SnapNode {
    store: RedbStore,
    client: Option<SnapClient>,
    server: SnapServer,
    /// When the scheduled client tick is due (virtual ms).
    tick_at: Option<u64>,
    /// Negative control: the first chunk received for each part of the key space, by height.
    first_received: BTreeMap<(u64, u8, u32), Entries>,
}

impl Node {
    fn honest(&self) -> bool {
        self.behavior == Behavior::Honest && !self.twin
    }
}

/// The default pacemaker, with a scripted leader for the first views (Twins scenarios).
#[derive(Clone, Debug)]
pub struct SimPacemaker {
    inner: DefaultPacemaker,
    leaders: Vec<PublicKey>,
}

impl Pacemaker for SimPacemaker {
    fn leader(&self, view: View, validators: &ValidatorSet, history: &LeaderHistory) -> PublicKey {
        let scripted =
            usize::try_from(view.0).ok().and_then(|v| v.checked_sub(1)).and_then(|i| self.leaders.get(i));
        match scripted {
            Some(k) => *k,
            None => self.inner.leader(view, validators, history),
        }
    }

    fn view_timeout(&self, view: View, consecutive_failures: u32) -> Duration {
        self.inner.view_timeout(view, consecutive_failures)
    }
}

/// The simulator.
pub struct Sim {
    p: Params,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Node>,
    keys: Vec<[u8; 32]>,
    publics: Vec<PublicKey>,
    validators: ValidatorSet,
    chain: ChainId,
    faults_active: bool,
    partition: Option<(Vec<u8>, bool)>,
    /// Height -> (block, first honest node to commit it).
    commits: BTreeMap<u64, (BlockHash, usize)>,
    /// Epoch -> its validator set, as the first honest replica to reach it derived it.
    epoch_sets: BTreeMap<u64, ValidatorSet>,
    /// (key, kind, epoch, view) -> what was signed, for honest keys. A statement of one epoch
    /// never counts in another (the epoch is signed), so only same-epoch pairs conflict.
    signed: BTreeMap<(usize, u8, u64, u64), [u8; 32]>,
    report: Report,
    /// When every honest replica had caught up after the heal (see `Params::strict_after_heal`).
    caught_up_at: Option<u64>,
    /// Per node: when it entered its current view.
    view_entered_at: Vec<u64>,
    hasher: blake3::Hasher,
    /// The user's app, one per node (empty: the built-in app).
    apps: Vec<Box<dyn SimApp>>,
    /// User-supplied Byzantine strategies by node.
    strategies: BTreeMap<usize, Box<dyn Strategy>>,
    started: bool,
    deadline: u64,
    /// The `Instant` of virtual time 0 (the snapshot client reads time as `Instant`s).
    base: Instant,
    /// Snapshot oracle: height -> (digest of the committed app state after it, first honest
    /// node to reach it).
    state_digests: BTreeMap<u64, ([u8; 32], usize)>,
}

/// The secret key of validator `i` (fixed, so traces are comparable across seeds).
#[must_use]
pub fn secret(i: usize) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s[31] = 0x5a;
    s
}

impl Sim {
    /// Sets up a simulation.
    #[must_use]
    pub fn new(p: Params) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(p.seed);
        let keys: Vec<[u8; 32]> = (0..p.validators + p.listeners).map(secret).collect();
        let publics: Vec<PublicKey> = keys.iter().map(|k| Keypair::from_secret(k).public()).collect();
        let powers = p.powers.clone().unwrap_or_else(|| vec![1; p.validators]);
        let validators =
            ValidatorSet::new(publics.iter().copied().zip(powers)).expect("simulator validator set is valid");
        let chain = ChainId(0x5eed);
        let genesis = Recovered::genesis(chain, validators.clone());
        let mut nodes = Vec::new();
        for (n, key) in p.node_keys().into_iter().enumerate() {
            let behavior = p.byzantine.iter().find(|(k, _)| *k == key).map_or(Behavior::Honest, |(_, b)| *b);
            let copies = if p.twins.contains(&key) { 2 } else { 1 };
            {
                nodes.push(Node {
                    key,
                    behavior,
                    twin: copies == 2,
                    replica: None,
                    incarnation: 0,
                    store: Store {
                        safety: None,
                        blocks: BTreeMap::new(),
                        committed: genesis.committed,
                        committed_chain: BTreeMap::new(),
                        retained_from: 1,
                        epoch: None,
                        pending: VecDeque::new(),
                        app_state: AppState::new(),
                        log: Vec::new(),
                        lazy_blocks: BTreeMap::new(),
                        commit_times: BTreeMap::new(),
                    },
                    produced: 0,
                    durable_voted: View(0),
                    last_commit: None,
                    height_at_heal: None,
                    done_at_view: None,
                    replay_log: VecDeque::new(),
                    not_before: p.late_starts.iter().find(|(m, _)| *m == n).map_or(0, |(_, t)| *t),
                    pool: VecDeque::new(),
                    events: Vec::new(),
                    snap: p.snapshots.map(|_| SnapNode {
                        store: RedbStore::in_memory().expect("an in-memory store opens"),
                        client: None,
                        server: SnapServer::default(),
                        tick_at: None,
                        first_received: BTreeMap::new(),
                    }),
                });
            }
        }
        let report = Report { seed: p.seed, ..Report::default() };
        let epoch_sets = [(0, validators.clone())].into_iter().collect();
        Sim {
            p,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            keys,
            publics,
            validators,
            chain,
            faults_active: true,
            partition: None,
            commits: BTreeMap::new(),
            epoch_sets,
            signed: BTreeMap::new(),
            report,
            hasher: blake3::Hasher::new(),
            apps: Vec::new(),
            strategies: BTreeMap::new(),
            started: false,
            deadline: 0,
            caught_up_at: None,
            view_entered_at: Vec::new(),
            base: Instant::now(),
            state_digests: BTreeMap::new(),
        }
    }

    /// Sets up a simulation whose nodes run the user's app, `make(node)` for each node.
    #[must_use]
    pub fn with_app(p: Params, make: impl Fn(usize) -> Box<dyn SimApp>) -> Self {
        let mut sim = Sim::new(p);
        sim.apps = (0..sim.nodes.len()).map(make).collect();
        sim
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        if self.p.trace {
            let l = format!("{:>8} {}", self.now, line());
            self.report.trace.push(l);
        }
    }

    fn pacemaker(&self) -> SimPacemaker {
        SimPacemaker {
            inner: DefaultPacemaker {
                base_timeout: Duration::from_millis(self.p.base_timeout_ms),
                max_timeout: Duration::from_millis(self.p.max_timeout_ms),
                leaders: self.p.leader_policy,
            },
            leaders: self.p.leaders.iter().map(|k| self.publics[*k]).collect(),
        }
    }

    fn start_node(&mut self, n: usize) {
        let node = &self.nodes[n];
        let recovered = Recovered::resume(
            self.chain,
            &self.validators,
            node.store.safety.clone(),
            node.store.committed,
            node.store.epoch.clone(),
            node.store.blocks.values().cloned().collect(),
        )
        .with_recent({
            let mut recent: Vec<Block> =
                node.store.committed_chain.values().rev().take(256).map(|(b, _, _)| b.clone()).collect();
            recent.reverse();
            recent
        });
        let mut config = Config::new(self.chain);
        config.sync_margin = self.p.sync_margin;
        config.broadcast_votes = self.p.broadcast_votes;
        let replica =
            Replica::new(config, Keypair::from_secret(&self.keys[node.key]), self.pacemaker(), recovered)
                .expect("recovered state is consistent");
        let node = &mut self.nodes[n];
        node.incarnation += 1;
        node.replica = Some(replica);
        if let Some(snap) = node.snap.as_mut() {
            snap.tick_at = None;
            if snap.client.is_none() {
                // A (re)start: the client picks up what an earlier run staged.
                if snap.store.staged().is_ok_and(|s| s.is_some()) {
                    self.report.staged_at_restart += 1;
                }
                snap.client = Some(SnapClient::new(&snap.store, self.base + Duration::from_millis(self.now)));
            }
        }
        self.drain(n, VecDeque::new());
        self.schedule_snap_tick(n);
    }

    /// Runs until every honest replica has committed enough blocks after the heal, or the
    /// liveness bound passes. Returns what the oracles found.
    pub fn run(mut self) -> Report {
        self.run_to_end();
        self.finish()
    }

    /// Starts the nodes (except dead and late ones) and plans the seeded faults. The stepping
    /// methods call it on first use; calling it again does nothing.
    pub fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        for n in 0..self.nodes.len() {
            if !self.p.dead.contains(&n) && self.nodes[n].not_before == 0 {
                self.start_node(n);
            }
        }
        self.plan_faults();
        for (node, at) in self.p.late_starts.clone() {
            if at > 0 && !self.p.dead.contains(&node) {
                self.schedule(at, Ev::Restart { node });
            }
        }
        self.deadline = match self.p.run_for_ms {
            Some(t) => t,
            None => self.p.heal_at_ms + self.p.liveness_bound_ms(),
        };
    }

    /// Runs what [`Sim::run`] runs (to the end condition: every honest replica done after the
    /// heal, or `run_for_ms`, or the liveness bound), from wherever the simulation is.
    pub fn run_to_end(&mut self) {
        self.start();
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            let Some(ev) = self.events.remove(&seq) else { continue };
            if at > self.deadline {
                break;
            }
            self.now = at;
            self.hasher.update(&at.to_le_bytes());
            self.apply(ev);
            if self.p.run_for_ms.is_none() && self.now >= self.p.heal_at_ms && self.all_done() {
                break;
            }
            if self.p.stop_on_safety_violation && !self.report.safety_violations.is_empty() {
                break;
            }
        }
    }

    /// Handles the next event if it is due by `until_ms`; false if there is none (the clock
    /// then moves to `until_ms`).
    fn step_until(&mut self, until_ms: u64) -> bool {
        self.start();
        let Some(Reverse((at, seq))) = self.queue.peek().copied() else {
            self.now = self.now.max(until_ms);
            return false;
        };
        if at > until_ms {
            self.now = self.now.max(until_ms);
            return false;
        }
        self.queue.pop();
        if let Some(ev) = self.events.remove(&seq) {
            self.now = at;
            self.hasher.update(&at.to_le_bytes());
            self.apply(ev);
        }
        true
    }

    /// Handles the next scheduled event, whenever it is; false if nothing is scheduled.
    pub fn step(&mut self) -> bool {
        self.step_until(u64::MAX)
    }

    /// Handles every event due up to `t_ms` of virtual time, and sets the clock to `t_ms`.
    /// Unlike [`Sim::run_to_end`] it does not stop at the end condition; pausing with it and
    /// then calling `run_to_end` gives the same trace as [`Sim::run`] (as long as the pauses
    /// end before the heal).
    pub fn run_until(&mut self, t_ms: u64) {
        while self.step_until(t_ms) {}
    }

    /// Steps until `done(self)` holds (true) or `limit_ms` of virtual time passes (false).
    pub fn run_until_pred(&mut self, limit_ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        self.start();
        while !done(self) {
            if !self.step_until(limit_ms) {
                return done(self);
            }
        }
        true
    }

    /// Makes node `n` Byzantine with the user's `strategy` (before the run starts; the node is
    /// then not honest for the oracles).
    pub fn set_strategy(&mut self, n: usize, strategy: Box<dyn Strategy>) {
        assert!(!self.started, "set strategies before the run starts");
        self.nodes[n].behavior = Behavior::Custom;
        self.strategies.insert(n, strategy);
    }

    /// Virtual time now (ms).
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// The set-up.
    #[must_use]
    pub fn params(&self) -> &Params {
        &self.p
    }

    /// Number of nodes (twins count twice; see [`Params::node_keys`]).
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Whether node `n` is honest (the oracles cover it).
    #[must_use]
    pub fn is_honest(&self, n: usize) -> bool {
        self.nodes[n].honest()
    }

    /// The public key of key index `key`.
    #[must_use]
    pub fn public(&self, key: usize) -> PublicKey {
        self.publics[key]
    }

    /// Node `n`'s replica, `None` while it is down (crashed, dead or not started yet).
    #[must_use]
    pub fn replica(&self, n: usize) -> Option<&Replica<SimPacemaker>> {
        self.nodes[n].replica.as_ref()
    }

    /// The hashes node `n` committed, by height (`[h - 1]` at height `h`).
    #[must_use]
    pub fn commit_log(&self, n: usize) -> &[BlockHash] {
        &self.nodes[n].store.log
    }

    /// Node `n`'s committed app state (kept for a user app only).
    #[must_use]
    pub fn app_state(&self, n: usize) -> &AppState {
        &self.nodes[n].store.app_state
    }

    /// Node `n`'s core events with their virtual time, if [`Params::record_events`].
    #[must_use]
    pub fn events(&self, n: usize) -> &[(u64, Event)] {
        &self.nodes[n].events
    }

    /// The report so far (the final oracles run in [`Sim::finish`]).
    #[must_use]
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Submits a client transaction to node `n`, for its app's next block
    /// ([`SimApp::produce_block`]). The built-in app ignores transactions.
    pub fn submit(&mut self, n: usize, tx: Vec<u8>) {
        self.nodes[n].pool.push_back(tx);
    }

    /// Crashes node `n` now: its unacknowledged writes are lost (the last may be torn).
    pub fn crash(&mut self, n: usize) {
        self.crash_node(n);
    }

    /// Restarts node `n` now from its durable store (if it is down and not a late starter
    /// whose time has not come).
    pub fn restart(&mut self, n: usize) {
        self.start();
        if self.nodes[n].replica.is_none() && !self.p.dead.contains(&n) {
            self.nodes[n].not_before = self.nodes[n].not_before.min(self.now);
            self.hasher.update(&[5, n as u8]);
            self.start_node(n);
        }
    }

    /// Opens (`Some((sides, one_way))`: node `i` is on side `sides[i]`; one-way lets side 1
    /// reach side 0) or closes (`None`) a partition until changed again. The seeded faults
    /// also open and close partitions until the heal.
    pub fn set_partition(&mut self, partition: Option<(Vec<u8>, bool)>) {
        if let Some((sides, _)) = &partition {
            assert_eq!(sides.len(), self.nodes.len(), "one side per node");
        }
        self.partition = partition;
    }

    fn plan_faults(&mut self) {
        let heal = self.p.heal_at_ms;
        self.schedule(heal, Ev::Heal);
        for (node, from, to) in self.p.outages.clone() {
            self.schedule(from, Ev::Crash { node });
            self.schedule(to, Ev::Restart { node });
        }
        if self.p.faults.partitions && heal > 0 {
            let mut t = self.rng.gen_range(0..heal.max(1));
            while t < heal {
                let len = self.rng.gen_range(500..3_000);
                let sides = self.random_sides();
                let one_way = self.rng.gen_bool(0.3);
                self.schedule(t, Ev::PartitionStart { sides, one_way });
                self.schedule((t + len).min(heal), Ev::PartitionEnd);
                t += len + self.rng.gen_range(500..4_000);
            }
        }
        if self.p.faults.crashes && heal > 0 {
            let honest: Vec<usize> = (0..self.nodes.len()).filter(|n| self.nodes[*n].honest()).collect();
            let mut t = self.rng.gen_range(0..heal.max(1));
            while t < heal && !honest.is_empty() {
                let n = honest[self.rng.gen_range(0..honest.len())];
                let down = self.rng.gen_range(100..3_000);
                self.schedule(t, Ev::Crash { node: n });
                self.schedule((t + down).min(heal), Ev::Restart { node: n });
                t += down + self.rng.gen_range(200..3_000);
            }
        }
    }

    /// A random two-sided split; twins always land on different sides.
    fn random_sides(&mut self) -> Vec<u8> {
        let mut sides: Vec<u8> = (0..self.nodes.len()).map(|_| self.rng.gen_range(0..2)).collect();
        let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
        for n in 0..self.nodes.len() {
            if let Some(&first) = seen.get(&self.nodes[n].key) {
                sides[n] = 1 - sides[first];
            } else {
                seen.insert(self.nodes[n].key, n);
            }
        }
        sides
    }

    /// Whether every honest replica (not dead) has committed `commits_after_heal` blocks past
    /// the highest honest height at the heal (the liveness oracle's end condition).
    #[must_use]
    pub fn honest_done(&self) -> bool {
        self.all_done()
    }

    fn all_done(&self) -> bool {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| n.honest() && !self.p.dead.contains(i))
            .all(|(_, n)| n.done_at_view.is_some())
    }

    fn apply(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, bytes } => {
                if self.nodes[to].replica.is_none() {
                    return;
                }
                self.hasher.update(&[1, to as u8]);
                self.hasher.update(&bytes);
                if self.nodes[to].behavior == Behavior::Replay {
                    let log = &mut self.nodes[to].replay_log;
                    log.push_back(bytes.clone());
                    if log.len() > 64 {
                        log.pop_front();
                    }
                }
                if self.p.trace {
                    if let Ok(env) = Envelope::decode(&bytes, &hotstuff_core::Limits::default()) {
                        if let Message::Timeout(t) = &env.message {
                            let line = format!(
                                "n{to} gets timeout e{} v{} last_tc {:?}",
                                t.epoch.0,
                                t.view.0,
                                t.last_tc.as_ref().map(|tc| (tc.epoch.0, tc.view.0))
                            );
                            self.trace(|| line);
                        }
                    }
                }
                if self.p.snapshots.is_some() && self.deliver_snapshot(to, from, &bytes) {
                    return;
                }
                let replica = self.nodes[to].replica.as_mut().expect("checked above");
                // The drain rule: every input's actions were drained before the next input. A plain
                // `assert!` (one comparison): the batches run in release builds.
                assert!(!replica.has_actions(), "node {to}: input handled before the last drain");
                if let Err(e) = replica.handle_frame(from, &bytes) {
                    self.report.refused_inputs += 1;
                    if e.is_invalid() {
                        self.report.invalid_inputs += 1;
                    }
                    self.trace(|| format!("n{to} refused: {e}"));
                }
                self.drain(to, VecDeque::new());
            }
            Ev::Timer { node, view, incarnation } => {
                if self.nodes[node].incarnation != incarnation || self.nodes[node].replica.is_none() {
                    return;
                }
                self.hasher.update(&[2, node as u8]);
                self.hasher.update(&view.0.to_le_bytes());
                let mut inputs = VecDeque::new();
                inputs.push_back(Input::TimerFired { view });
                self.drain(node, inputs);
            }
            Ev::SyncTimer { node, timer, incarnation } => {
                if self.nodes[node].incarnation != incarnation || self.nodes[node].replica.is_none() {
                    return;
                }
                self.hasher.update(&[6, node as u8]);
                let mut inputs = VecDeque::new();
                inputs.push_back(Input::SyncTimerFired { timer });
                self.drain(node, inputs);
            }
            Ev::PersistDone { node, seq, incarnation } => {
                if self.nodes[node].incarnation != incarnation || self.nodes[node].replica.is_none() {
                    return;
                }
                self.hasher.update(&[3, node as u8]);
                self.hasher.update(&seq.to_le_bytes());
                self.make_durable(node, seq);
                let mut inputs = VecDeque::new();
                inputs.push_back(Input::Persisted { seq });
                self.drain(node, inputs);
            }
            Ev::Crash { node } => self.crash_node(node),
            Ev::Restart { node } => {
                if self.nodes[node].replica.is_none()
                    && self.now >= self.nodes[node].not_before
                    && !self.p.dead.contains(&node)
                {
                    self.trace(|| format!("n{node} restarts"));
                    self.hasher.update(&[5, node as u8]);
                    self.start_node(node);
                }
            }
            Ev::PartitionStart { sides, one_way } => {
                self.trace(|| format!("partition {sides:?} one_way={one_way}"));
                self.hasher.update(&sides);
                self.partition = Some((sides, one_way));
            }
            Ev::PartitionEnd => self.partition = None,
            Ev::Heal => self.heal(),
            Ev::SnapTick { node, incarnation } => {
                let live = self.nodes[node].incarnation == incarnation && self.nodes[node].replica.is_some();
                let snap = self.nodes[node].snap.as_mut();
                if let Some(snap) = snap.filter(|s| live && s.tick_at == Some(self.now)) {
                    snap.tick_at = None;
                    self.hasher.update(&[7, node as u8]);
                    self.snap_step(node, |c, ctx, out| c.tick(ctx, out));
                }
            }
            Ev::SnapBelow { node, retained_from, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].replica.is_some() {
                    self.hasher.update(&[8, node as u8]);
                    self.snap_step(node, |c, ctx, out| c.below_retained(ctx, retained_from, out));
                }
            }
        }
    }

    fn heal(&mut self) {
        self.trace(|| "network heals".to_string());
        self.faults_active = false;
        self.partition = None;
        for n in 0..self.nodes.len() {
            if self.nodes[n].replica.is_none()
                && !self.p.dead.contains(&n)
                && self.now >= self.nodes[n].not_before
            {
                self.start_node(n);
            }
        }
        // Every honest replica must catch up with the most advanced one and then commit
        // `commits_after_heal` more blocks.
        let h =
            self.nodes.iter().filter(|n| n.honest()).map(|n| n.store.committed.height.0).max().unwrap_or(0);
        for n in 0..self.nodes.len() {
            let v = self.nodes[n].replica.as_ref().map_or(View(0), |r| r.view());
            self.nodes[n].height_at_heal = Some((h, v));
        }
    }

    /// Writes everything up to `seq` to the durable store, checking that the durable voted view
    /// never moves backwards.
    fn make_durable(&mut self, n: usize, seq: u64) {
        while self.nodes[n].store.pending.front().is_some_and(|(s, _, _)| *s <= seq) {
            let Some((_, safety, blocks)) = self.nodes[n].store.pending.pop_front() else { break };
            self.write(n, safety, blocks);
        }
    }

    fn write(&mut self, n: usize, safety: Option<SafetyState>, blocks: Vec<BlockRecord>) {
        let node = &mut self.nodes[n];
        if let Some(s) = safety {
            if s.highest_voted_view < node.durable_voted && node.honest() {
                self.report.liveness_failures.push(format!(
                    "seed {}: node {n}: durable voted view moved back from {} to {}",
                    self.p.seed, node.durable_voted, s.highest_voted_view
                ));
            }
            node.durable_voted = node.durable_voted.max(s.highest_voted_view);
            node.store.safety = Some(s);
        }
        let me = self.publics[node.key];
        for b in blocks {
            if b.block.height > node.store.committed.height {
                let hash = b.block.hash();
                if self.p.lazy_writes_ms.is_some() && b.block.proposer != me {
                    node.store.lazy_blocks.insert(hash, self.now);
                }
                node.store.blocks.insert(hash, b);
            }
        }
    }

    /// With [`Params::lazy_writes_ms`]: a crash loses the background writes younger than a
    /// cutoff drawn within the window.
    fn lose_lazy_writes(&mut self, n: usize) {
        let Some(window) = self.p.lazy_writes_ms else { return };
        assert!(
            self.apps.is_empty() && self.p.snapshots.is_none(),
            "lazy_writes_ms models the default app without snapshots only"
        );
        let cutoff = self.now.saturating_sub(self.rng.gen_range(0..=window));
        let me = self.publics[self.nodes[n].key];
        let store = &mut self.nodes[n].store;
        let young: Vec<BlockHash> =
            store.lazy_blocks.iter().filter(|(_, t)| **t > cutoff).map(|(h, _)| *h).collect();
        for h in young {
            store.blocks.remove(&h);
            store.lazy_blocks.remove(&h);
        }
        let mut lost = 0;
        while store.committed.height.0 >= 2
            && store.commit_times.get(&store.committed.height.0).is_some_and(|t| *t > cutoff)
        {
            let h = store.committed.height.0;
            let Some((parent, _, None)) = store.committed_chain.get(&(h - 1)).cloned() else { break };
            let Some((block, _, None)) = store.committed_chain.remove(&h) else { break };
            if block.proposer == me {
                store.blocks.insert(block.hash(), BlockRecord { block, outcome: None });
            }
            store.commit_times.remove(&h);
            store.log.pop();
            store.committed = CommittedTip { hash: parent.hash(), view: parent.view, height: parent.height };
            lost += 1;
        }
        let tip = store.committed.height.0;
        if self.nodes[n].honest() {
            self.report.lost_commits += lost;
        }
        self.trace(|| {
            format!("n{n} loses its background writes after {cutoff} ({lost} commits, back to height {tip})")
        });
    }

    fn crash_node(&mut self, n: usize) {
        if self.nodes[n].replica.is_none() {
            return;
        }
        self.trace(|| format!("n{n} crashes"));
        self.hasher.update(&[4, n as u8]);
        // Unacknowledged writes are lost; the last one may be torn (some of its blocks land,
        // its safety record, written atomically, does not).
        let pending = std::mem::take(&mut self.nodes[n].store.pending);
        if let Some((_, _, blocks)) = pending.back().cloned() {
            if self.rng.gen_bool(0.5) {
                let keep = self.rng.gen_range(0..=blocks.len());
                self.write(n, None, blocks.into_iter().take(keep).collect());
            }
        }
        self.lose_lazy_writes(n);
        self.nodes[n].replica = None;
        if let Some(snap) = self.nodes[n].snap.as_mut() {
            // The client and the served snapshots live in memory; what is staged is durable.
            snap.client = None;
            snap.server.clear();
            snap.first_received.clear();
        }
    }

    /// Drains the node's actions, answering app requests at once, until nothing is left.
    fn drain(&mut self, n: usize, mut inputs: VecDeque<Input>) {
        loop {
            while let Some(action) = self.nodes[n].replica.as_mut().and_then(|r| r.poll_action()) {
                self.perform(n, action, &mut inputs);
            }
            let Some(input) = inputs.pop_front() else { break };
            let Some(replica) = self.nodes[n].replica.as_mut() else { break };
            let from_app = matches!(input, Input::BlockProduced { .. } | Input::BlockValidated { .. });
            assert!(!replica.has_actions(), "node {n}: input handled before the last drain");
            match replica.handle(input) {
                Ok(()) => {}
                // An app reply can be overtaken by a view change queued before it, or by a commit
                // on another branch that pruned its block: stale, not a bug.
                Err(e) if from_app && e.is_stale() => {}
                Err(e) => {
                    let tail = self.report.trace.len().saturating_sub(60);
                    for l in &self.report.trace[tail..] {
                        eprintln!("{l}");
                    }
                    panic!("seed {}: node {n} refused its own driver's input: {e}", self.p.seed)
                }
            }
        }
    }

    fn perform(&mut self, n: usize, action: Action, inputs: &mut VecDeque<Input>) {
        match &action {
            Action::ValidateBlock { block, .. } => {
                self.check_valid_ancestry(n, block.parent(), "validates a block")
            }
            Action::ProduceBlock { parent, .. } => self.check_valid_ancestry(n, *parent, "produces a block"),
            _ => {}
        }
        match action {
            Action::Persist { seq, safety, blocks } => {
                self.nodes[n].store.pending.push_back((seq, safety, blocks));
                let at = self.now + self.rng.gen_range(0..=2);
                let incarnation = self.nodes[n].incarnation;
                self.schedule(at, Ev::PersistDone { node: n, seq, incarnation });
            }
            Action::Send { to, message } => {
                if matches!(message, Message::Block(_)) && self.nodes[n].honest() {
                    self.report.fetched_blocks += 1;
                }
                let targets: Vec<usize> = (0..self.nodes.len())
                    .filter(|m| self.publics[self.nodes[*m].key] == to && *m != n)
                    .collect();
                self.send(n, &targets, message);
            }
            Action::Broadcast { message } => {
                let targets: Vec<usize> = (0..self.nodes.len()).filter(|m| *m != n).collect();
                self.send(n, &targets, message);
            }
            Action::SetTimer { view, after } => {
                let at = self.now + after.as_millis() as u64;
                let incarnation = self.nodes[n].incarnation;
                self.schedule(at, Ev::Timer { node: n, view, incarnation });
            }
            Action::SetSyncTimer { timer, after } => {
                let at = self.now + after.as_millis() as u64;
                let incarnation = self.nodes[n].incarnation;
                self.schedule(at, Ev::SyncTimer { node: n, timer, incarnation });
            }
            Action::ProduceBlock { view, parent, height } if !self.apps.is_empty() => {
                let node = &mut self.nodes[n];
                let Some(replica) = node.replica.as_ref() else { return };
                let leader = |v| replica.leader(v);
                let ctx = SimContext {
                    node: n,
                    me: replica.id(),
                    view,
                    height,
                    parent,
                    validators: replica.validators(),
                    max_payload: replica.config().limits.max_payload,
                    leader: &leader,
                    committed: &node.store.app_state,
                    pending: replica.pending_updates(&parent),
                };
                let (payload, outcome) = self.apps[n].produce_block(&ctx, &mut node.pool);
                inputs.push_back(Input::BlockProduced { view, parent, payload, outcome });
            }
            Action::ValidateBlock { hash, block, .. } if !self.apps.is_empty() => {
                let node = &self.nodes[n];
                let Some(replica) = node.replica.as_ref() else { return };
                let parent = block.parent();
                let leader = |v| replica.leader(v);
                let ctx = SimContext {
                    node: n,
                    me: replica.id(),
                    view: block.view,
                    height: block.height,
                    parent,
                    validators: replica.validators(),
                    max_payload: replica.config().limits.max_payload,
                    leader: &leader,
                    committed: &node.store.app_state,
                    pending: replica.pending_updates(&parent),
                };
                let outcome = self.apps[n].validate_block(&ctx, &block);
                inputs.push_back(Input::BlockValidated { hash, outcome });
            }
            Action::ProduceBlock { view, parent, .. } => {
                let node = &mut self.nodes[n];
                node.produced += 1;
                let mut payload = app::produce(node.key, view, node.produced);
                let height = hotstuff_core::Height(
                    node.replica
                        .as_ref()
                        .and_then(|r| r.block_tree().position(&parent))
                        .map_or(0, |(_, h)| h.0 + 1),
                );
                // The next scheduled validator-set change, once its height is reached.
                let epoch = node.replica.as_ref().map_or(0, |r| r.epoch().0);
                if let Some(change) = usize::try_from(epoch).ok().and_then(|e| self.p.set_changes.get(e)) {
                    if height.0 >= change.at_height {
                        let updates: Vec<(PublicKey, u64)> =
                            change.updates.iter().map(|(k, power)| (self.publics[*k], *power)).collect();
                        app::add_change(&mut payload, &updates);
                    }
                }
                let outcome = app::outcome(height, &payload);
                inputs.push_back(Input::BlockProduced { view, parent, payload, outcome });
            }
            Action::ValidateBlock { hash, block, .. } => {
                inputs.push_back(Input::BlockValidated { hash, outcome: app::validate(&block) });
            }
            Action::Commit { blocks } => {
                for b in blocks {
                    self.check_commit(n, &b);
                    self.on_commit(n, b.hash, b.block.height.0, b.block.view);
                    self.apply_app(n, &b);
                    let proof = b.epoch_change.as_ref().map(|c| c.proof.clone());
                    if let Some(change) = b.epoch_change {
                        self.on_epoch_change(n, change.state.clone());
                        self.nodes[n].store.epoch = Some(change.state);
                    }
                    let height = b.block.height.0;
                    self.nodes[n].store.committed_chain.insert(height, (b.block, b.certificate, proof));
                    self.snap_after_commit(n, height);
                }
            }
            Action::ServeSync { to, request } => {
                let node = &self.nodes[n];
                let Some(replica) = node.replica.as_ref() else { return };
                let chain = &node.store.committed_chain;
                let lookup = |h: hotstuff_core::Height| chain.get(&h.0).cloned();
                if self.p.trace {
                    let line = format!(
                        "{:>8} n{n} serves sync from {} (retained from {}, committed {})",
                        self.now,
                        request.from_height.0,
                        node.store.retained_from,
                        replica.committed_height().0
                    );
                    self.report.trace.push(line);
                }
                let mut response = if self.p.snapshots.is_some() {
                    match replica.sync_answer(
                        &request,
                        hotstuff_core::Height(node.store.retained_from),
                        lookup,
                    ) {
                        Message::SyncResponse(r) => r,
                        pruned => {
                            if node.honest() {
                                self.report.pruned_answers += 1;
                            }
                            let targets: Vec<usize> = (0..self.nodes.len())
                                .filter(|m| self.publics[self.nodes[*m].key] == to && *m != n)
                                .collect();
                            self.send(n, &targets, pruned);
                            return;
                        }
                    }
                } else {
                    replica.sync_response(&request, lookup)
                };
                if node.behavior == Behavior::BadSync {
                    match self.corrupt(response) {
                        Some(r) => response = r,
                        None => return,
                    }
                }
                let targets: Vec<usize> = (0..self.nodes.len())
                    .filter(|m| self.publics[self.nodes[*m].key] == to && *m != n)
                    .collect();
                self.send(n, &targets, Message::SyncResponse(response));
            }
            Action::Event(e) => {
                if self.p.record_events {
                    self.nodes[n].events.push((self.now, e.clone()));
                }
                if let hotstuff_core::Event::SyncReceived { blocks, .. } = e {
                    self.report.synced_blocks += blocks as u64;
                }
                if let hotstuff_core::Event::SyncBelowRetained { retained_from, .. } = e {
                    // Run the client outside the drain: an install replaces the replica.
                    let incarnation = self.nodes[n].incarnation;
                    self.schedule(self.now, Ev::SnapBelow { node: n, retained_from, incarnation });
                }
                if matches!(e, hotstuff_core::Event::SyncPeerAvoided { .. }) && self.nodes[n].honest() {
                    self.report.avoided_sync_servers += 1;
                }
                if let hotstuff_core::Event::ViewEntered { .. } = e {
                    if self.view_entered_at.len() <= n {
                        self.view_entered_at.resize(n + 1, 0);
                    }
                    self.view_entered_at[n] = self.now;
                }
                if let hotstuff_core::Event::ViewTimedOut { view } = e {
                    let entered = self.view_entered_at.get(n).copied().unwrap_or(0);
                    if self.p.strict_after_heal
                        && self.nodes[n].honest()
                        && self.caught_up_at.is_some_and(|t| entered >= t)
                    {
                        self.report.liveness_failures.push(format!(
                            "seed {}: node {n}: view {} (entered at {entered} ms, after every replica caught up at {} ms) ended by a timeout",
                            self.p.seed,
                            view.0,
                            self.caught_up_at.unwrap_or(0)
                        ));
                    }
                    if view.0 > 1 && self.nodes[n].honest() {
                        self.report.view_timeouts += 1;
                        if self.p.strict_liveness {
                            self.report.liveness_failures.push(format!(
                                "seed {}: node {n}: view {} ended by a timeout in a fault-free run (at {} ms)",
                                self.p.seed, view.0, self.now
                            ));
                        }
                    }
                }
                if self.p.trace {
                    if let (hotstuff_core::Event::ViewTimedOut { .. }, Some(r)) =
                        (&e, self.nodes[n].replica.as_ref())
                    {
                        let line = format!(
                            "n{n} epoch {} last_tc {:?} high_qc e{} v{} {} known={} root v{} h{}",
                            r.epoch().0,
                            r.last_tc().map(|t| (t.epoch.0, t.view.0)),
                            r.high_qc().epoch.0,
                            r.high_qc().view.0,
                            r.high_qc().block,
                            r.block_tree().contains(&r.high_qc().block),
                            r.committed().view.0,
                            r.committed().height.0
                        );
                        self.trace(|| line);
                    }
                }
                self.trace(|| format!("n{n} {e:?}"));
            }
        }
    }

    /// Oracles on every committed block of an honest replica: it belongs to an epoch whose set
    /// every honest replica agrees on, its proposer is in that set, and its certificate verifies
    /// against that set (the old set stops deciding once the new one takes over).
    fn check_commit(&mut self, n: usize, b: &hotstuff_core::CommittedBlock) {
        if !self.nodes[n].honest() {
            return;
        }
        let epoch = b.block.epoch.0;
        let Some(set) = self.epoch_sets.get(&epoch) else {
            self.report
                .safety_violations
                .push(format!("seed {}: node {n} committed a block of unknown epoch {epoch}", self.p.seed));
            return;
        };
        let genesis = hotstuff_core::genesis_hash(self.chain, &self.validators);
        if !set.contains(&b.block.proposer) {
            self.report.safety_violations.push(format!(
                "seed {}: node {n} committed a block of epoch {epoch} by a non-member",
                self.p.seed
            ));
        }
        if let Err(e) = hotstuff_core::certificate::verify_qc(&b.certificate, self.chain, set, &genesis) {
            self.report.safety_violations.push(format!(
                "seed {}: node {n} committed height {} whose certificate fails against epoch {epoch}'s set: {e}",
                self.p.seed, b.block.height.0
            ));
        }
        let key = self.publics.iter().position(|k| *k == b.block.proposer).unwrap_or(usize::MAX);
        self.report.proposers.entry(epoch).or_default().insert(key);
        let view = b.block.view.0;
        if let Some((last_view, last_epoch)) = self.nodes[n].last_commit {
            let gap = view.saturating_sub(last_view.0);
            if last_epoch != epoch {
                self.report.epoch_gaps.push(gap);
            } else if !self.faults_active {
                self.report.max_gap_within_epoch = self.report.max_gap_within_epoch.max(gap);
            }
        }
        self.nodes[n].last_commit = Some((b.block.view, epoch));
    }

    /// The app is asked about a block on `parent`: every uncommitted block from `parent` down
    /// to the committed one must be valid, or the app's view of the parent's state (committed
    /// state plus the ancestors' updates) misses updates.
    fn check_valid_ancestry(&mut self, n: usize, parent: BlockHash, what: &str) {
        let Some(replica) = self.nodes[n].replica.as_ref() else { return };
        if !self.nodes[n].honest() {
            return;
        }
        let tree = replica.block_tree();
        let mut cur = parent;
        while cur != tree.root().hash {
            match tree.get(&cur) {
                Some(e) if matches!(e.validity, hotstuff_core::block_tree::Validity::Valid(_)) => {
                    cur = e.block.parent();
                }
                e => {
                    let state = e.map_or_else(|| "missing".to_string(), |e| format!("{:?}", e.validity));
                    self.report.safety_violations.push(format!(
                        "seed {}: node {n} {what} on {parent:#}, whose ancestor {cur:#} is {state}",
                        self.p.seed
                    ));
                    return;
                }
            }
        }
    }

    /// Logs a committed block and, with a user app, applies its updates to the node's committed
    /// app state and checks the user's invariant (honest nodes).
    fn apply_app(&mut self, n: usize, b: &hotstuff_core::CommittedBlock) {
        let node = &mut self.nodes[n];
        node.store.log.push(b.hash);
        if self.apps.is_empty() {
            return;
        }
        for (k, v) in b.outcome.app_updates.0.iter() {
            match v {
                Some(v) => node.store.app_state.insert(k.clone(), v.clone()),
                None => node.store.app_state.remove(k),
            };
        }
        self.apps[n].committed(b);
        if self.p.snapshots.is_some() && node.honest() {
            let digest = crate::snapsim::state_digest(&node.store.app_state);
            self.check_state_digest(n, b.block.height.0, digest, "app state after");
        }
        let node = &mut self.nodes[n];
        if node.honest() {
            if let Err(e) = self.apps[n].check(b.block.height, &node.store.app_state) {
                self.report.invariant_violations.push(format!(
                    "seed {}: node {n} at height {} (block {:#}): {e}",
                    self.p.seed, b.block.height.0, b.hash
                ));
            }
        }
    }

    /// The snapshot oracle: every honest replica's app state after `height` has one digest.
    fn check_state_digest(&mut self, n: usize, height: u64, digest: [u8; 32], what: &str) {
        match self.state_digests.get(&height) {
            Some((d, other)) if *d != digest => {
                let other = *other;
                self.report.safety_violations.push(format!(
                    "seed {}: node {n}'s {what} height {height} differs from node {other}'s",
                    self.p.seed
                ));
            }
            Some(_) => {}
            None => {
                self.state_digests.insert(height, (digest, n));
            }
        }
    }

    /// After a block at `height` is committed and applied: prunes below the retention window,
    /// takes a snapshot at a multiple of the interval, looks for certifying blocks.
    fn snap_after_commit(&mut self, n: usize, height: u64) {
        let Some(sp) = self.p.snapshots else { return };
        let app = self.apps.get(n);
        let node = &mut self.nodes[n];
        let Some(snap) = node.snap.as_mut() else { return };
        let retained_from = height.saturating_sub(sp.retain).max(1);
        if retained_from > node.store.retained_from {
            node.store.committed_chain = node.store.committed_chain.split_off(&retained_from);
            node.store.retained_from = retained_from;
        }
        if sp.interval > 0 && height % sp.interval == 0 {
            snap.server.take(node.store.committed, &node.store.app_state);
        }
        let root_of = |b: &Block| app.and_then(|a| a.snapshot_root(b));
        snap.server.poll(&node.store.committed_chain, &root_of);
    }

    fn schedule_snap_tick(&mut self, n: usize) {
        let incarnation = self.nodes[n].incarnation;
        let base = self.base;
        let now = self.now;
        let Some(snap) = self.nodes[n].snap.as_mut() else { return };
        let Some(due) = snap.client.as_ref().and_then(SnapClient::deadline) else { return };
        let at = (due.saturating_duration_since(base).as_millis() as u64).max(now);
        if snap.tick_at.is_some_and(|t| t <= at) {
            return;
        }
        snap.tick_at = Some(at);
        self.schedule(at, Ev::SnapTick { node: n, incarnation });
    }

    /// Runs one step of node `n`'s snapshot client (the driver's own), then performs its
    /// output as the driver's engine does: sends, events, the install.
    fn snap_step(
        &mut self,
        n: usize,
        step: impl FnOnce(&mut SnapClient, &SnapCtx<'_, SimPacemaker>, &mut SnapOut),
    ) {
        let now = self.base + Duration::from_millis(self.now);
        let app = self.apps.get(n);
        let Node { snap, replica, .. } = &mut self.nodes[n];
        let (Some(snap), Some(replica)) = (snap.as_mut(), replica.as_ref()) else { return };
        let Some(client) = snap.client.as_mut() else { return };
        let app_root = |b: &Block| app.and_then(|a| a.snapshot_root(b));
        let ctx = SnapCtx { store: &snap.store, replica, app_root: &app_root, now };
        let mut out = SnapOut::default();
        step(client, &ctx, &mut out);
        let honest = self.nodes[n].honest();
        for e in &out.events {
            if let hotstuff_driver_std::Event::SnapshotPeerAvoided { reason, .. } = e {
                if honest {
                    self.report.avoided_snapshot_servers += 1;
                }
                let reason = *reason;
                self.trace(|| format!("n{n} avoids a snapshot server: {reason}"));
            }
        }
        if self.p.trace {
            let asks: Vec<String> = out
                .send
                .iter()
                .map(|(_, m)| match m {
                    Message::SnapshotRequest(r) => format!("{:?}", r.ask),
                    other => format!("{other:?}"),
                })
                .collect();
            if !asks.is_empty() {
                self.trace(|| format!("n{n} snapshot client asks {asks:?}"));
            }
        }
        for (to, m) in out.send {
            let targets: Vec<usize> =
                (0..self.nodes.len()).filter(|x| self.publics[self.nodes[*x].key] == to && *x != n).collect();
            self.send(n, &targets, m);
        }
        if let Some((root, install)) = out.install {
            self.install_snapshot(n, root, install);
        }
        self.schedule_snap_tick(n);
    }

    /// A snapshot message for node `to`: served or handed to its client (true), or not one
    /// (false: the replica gets it).
    fn deliver_snapshot(&mut self, to: usize, from: PublicKey, bytes: &[u8]) -> bool {
        let Ok(env) = Envelope::decode(bytes, &hotstuff_core::Limits::default()) else { return false };
        match env.message {
            Message::SnapshotRequest(r) => {
                self.serve_snapshot(to, from, r);
                true
            }
            Message::SnapshotOffer(o) => {
                let h = o.snapshot.as_ref().map(|s| s.tip.height.0);
                self.trace(|| format!("n{to} gets a snapshot offer at {h:?}"));
                self.snap_step(to, |c, ctx, out| c.on_offer(ctx, from, o, out));
                true
            }
            Message::SnapshotChunk(c) => {
                if self.p.snapshots.is_some_and(|s| s.plant_unverified) {
                    if let Some(snap) = self.nodes[to].snap.as_mut() {
                        if c.available && !c.too_large {
                            snap.first_received
                                .entry((c.height.0, c.depth, c.index))
                                .or_insert_with(|| c.entries.clone());
                        }
                    }
                }
                self.snap_step(to, |client, ctx, out| client.on_chunk(ctx, from, c, out));
                true
            }
            _ => false,
        }
    }

    /// Node `n` answers a snapshot request (honestly, or as its behaviour distorts it).
    fn serve_snapshot(&mut self, n: usize, to: PublicKey, r: hotstuff_core::SnapshotRequest) {
        let Some(snap) = self.nodes[n].snap.as_ref() else { return };
        let bad = self.nodes[n].behavior == Behavior::BadSnapshot;
        let answer = match r.ask {
            hotstuff_core::SnapshotAsk::Offer if bad => {
                let (m, kind) = crate::snapsim::bad_offer(&mut self.rng, &snap.server, r.id);
                *self.report.bad_snapshot_answers.entry(kind).or_default() += 1;
                m
            }
            hotstuff_core::SnapshotAsk::Offer => Some(snap.server.offer(r.id, false)),
            hotstuff_core::SnapshotAsk::Chunk { height, depth, index } if bad => {
                let (c, kind) =
                    crate::snapsim::bad_chunk(&mut self.rng, &snap.server, r.id, (height, depth, index));
                *self.report.bad_snapshot_answers.entry(kind).or_default() += 1;
                c.map(Message::SnapshotChunk)
            }
            hotstuff_core::SnapshotAsk::Chunk { height, depth, index } => {
                let c = snap.server.chunk(r.id, height, depth, index, None);
                if c.is_some() && self.nodes[n].honest() {
                    self.report.chunks_served += 1;
                }
                c.map(Message::SnapshotChunk)
            }
        };
        let Some(answer) = answer else { return };
        let targets: Vec<usize> =
            (0..self.nodes.len()).filter(|x| self.publics[self.nodes[*x].key] == to && *x != n).collect();
        self.send(n, &targets, answer);
    }

    /// Installs what node `n`'s client fetched and verified (the store's one transaction),
    /// checks it against the validators' state at its height, and restarts the replica from
    /// it, as the driver's engine does.
    fn install_snapshot(&mut self, n: usize, root: [u8; 32], install: SnapshotInstall) {
        // Everything pending is written first (the engine flushes before installing).
        self.make_durable(n, u64::MAX);
        let plant = self.p.snapshots.is_some_and(|s| s.plant_unverified);
        let Some(snap) = self.nodes[n].snap.as_mut() else { return };
        if let Err(e) = snap.store.install_staged(&install) {
            panic!("seed {}: node {n}: the in-memory store failed to install: {e}", self.p.seed);
        }
        let mut state = AppState::new();
        if let Err(e) = snap.store.scan_app_state(&mut |k, v| {
            state.insert(k.to_vec(), v.to_vec());
        }) {
            panic!("seed {}: node {n}: cannot read the installed state: {e}", self.p.seed);
        }
        let height = install.tip.height.0;
        if plant {
            // The planted bug: what arrived first for this snapshot, verified or not (the
            // chunks the client split or staged before a crash are taken as staged).
            let first = snap.first_received.range((height, 0, 0)..=(height, u8::MAX, u32::MAX));
            for (_, entries) in first {
                state.extend(entries.iter().cloned());
            }
        }
        snap.first_received.clear();
        self.trace(|| format!("n{n} installs a snapshot at height {height}"));
        self.hasher.update(&[9, n as u8]);
        self.hasher.update(&root);
        let honest = self.nodes[n].honest();
        if honest {
            match self.commits.get(&height) {
                Some((h, other)) if *h != install.tip.hash => {
                    let other = *other;
                    self.report.safety_violations.push(format!(
                        "seed {}: node {n} installed a snapshot at height {height} of block {:#}, node {other} committed {h:#}",
                        self.p.seed, install.tip.hash
                    ));
                }
                _ => {}
            }
            let digest = crate::snapsim::state_digest(&state);
            self.check_state_digest(n, height, digest, "installed snapshot state at");
        }
        self.report.snapshot_installs.push((n, height, self.now));
        let commits = &self.commits;
        let node = &mut self.nodes[n];
        // The heights below the snapshot are adopted, not committed here: the log takes the
        // validators' blocks (checked at the tip above).
        while (node.store.log.len() as u64) < height {
            let h = node.store.log.len() as u64 + 1;
            let hash =
                if h == height { install.tip.hash } else { commits.get(&h).map_or(UNKNOWN, |(b, _)| *b) };
            node.store.log.truncate(h as usize - 1);
            node.store.log.push(hash);
        }
        node.store.app_state = state;
        node.store.committed = install.tip;
        node.store.blocks.clear();
        node.store.committed_chain = [(height, (install.block, install.qc, None))].into_iter().collect();
        node.store.retained_from = height;
        node.last_commit = Some((install.tip.view, node.store.epoch.as_ref().map_or(0, |e| e.epoch.0)));
        self.write(n, Some(install.safety), Vec::new());
        if let Some(app) = self.apps.get_mut(n) {
            app.state_installed();
        }
        // The replica restarts from the installed state (the client stays: it is idle now).
        self.nodes[n].replica = None;
        self.start_node(n);
    }

    /// An honest replica switched epochs: its new set must match every other honest replica's.
    fn on_epoch_change(&mut self, n: usize, state: EpochState) {
        if !self.nodes[n].honest() {
            return;
        }
        let e = state.epoch.0;
        self.report.max_epoch = self.report.max_epoch.max(e);
        match self.epoch_sets.get(&e) {
            Some(set) if *set != state.validators => self.report.safety_violations.push(format!(
                "seed {}: node {n} derived a different validator set for epoch {e}",
                self.p.seed
            )),
            Some(_) => {}
            None => {
                self.trace(|| format!("n{n} starts epoch {e} with {} validators", state.validators.len()));
                self.epoch_sets.insert(e, state.validators);
            }
        }
    }

    /// What a Byzantine sync server sends instead of an honest response (`None`: nothing).
    fn corrupt(&mut self, mut r: SyncResponse) -> Option<SyncResponse> {
        match self.rng.gen_range(0..6) {
            0 => None,
            1 => Some(SyncResponse { id: r.id, blocks: Vec::new(), certificate: None }),
            2 if r.blocks.len() > 2 => {
                r.blocks.remove(1);
                Some(r)
            }
            3 if !r.blocks.is_empty() => {
                let i = self.rng.gen_range(0..r.blocks.len());
                r.blocks[i].payload.push(0xee);
                Some(r)
            }
            4 => {
                if let Some(c) = &mut r.certificate {
                    if let Some((_, sig)) = c.signatures.first_mut() {
                        sig.0[0] ^= 1;
                    }
                }
                Some(r)
            }
            _ => {
                // Truncated: only the first block, with the last block's certificate.
                r.blocks.truncate(1);
                Some(r)
            }
        }
    }

    fn on_commit(&mut self, n: usize, hash: BlockHash, height: u64, view: View) {
        self.hasher.update(&hash.0);
        let honest = self.nodes[n].honest();
        let node = &mut self.nodes[n];
        if height != node.store.committed.height.0 + 1 {
            self.report.safety_violations.push(format!(
                "seed {}: node {n} committed height {height} after {}",
                self.p.seed, node.store.committed.height.0
            ));
        }
        node.store.committed = CommittedTip { hash, view, height: hotstuff_core::Height(height) };
        node.store.blocks.retain(|_, b| b.block.height.0 > height);
        if self.p.lazy_writes_ms.is_some() {
            node.store.commit_times.insert(height, self.now);
            let store = &mut node.store;
            store.lazy_blocks.retain(|h, _| store.blocks.contains_key(h));
        }
        if honest {
            match self.commits.get(&height) {
                Some((h, other)) if *h != hash => {
                    self.report.safety_violations.push(format!(
                        "seed {}: height {height}: node {n} committed {hash:#}, node {other} committed {h:#}",
                        self.p.seed
                    ));
                }
                Some(_) => {}
                None => {
                    self.commits.insert(height, (hash, n));
                    self.report.commit_times.push(self.now);
                }
            }
            self.report.max_committed = self.report.max_committed.max(height);
            if self.caught_up_at.is_none() && self.now >= self.p.heal_at_ms {
                if let Some((h0, _)) = self.nodes[n].height_at_heal {
                    let heights: Vec<u64> = self
                        .nodes
                        .iter()
                        .enumerate()
                        .filter(|(i, m)| m.honest() && !self.p.dead.contains(i))
                        .map(|(_, m)| m.store.committed.height.0)
                        .collect();
                    let (lo, hi) = (heights.iter().min().copied(), heights.iter().max().copied());
                    if let (Some(lo), Some(hi)) = (lo, hi) {
                        if lo >= h0 + 2 && hi - lo <= 2 {
                            self.caught_up_at = Some(self.now);
                        }
                    }
                }
            }
            let node = &mut self.nodes[n];
            if let Some((h0, v0)) = node.height_at_heal {
                if node.done_at_view.is_none() && height >= h0 + self.p.commits_after_heal {
                    let v = node.replica.as_ref().map_or(View(0), |r| r.view());
                    node.done_at_view = Some(v);
                    self.report.views_after_heal.push(v.0.saturating_sub(v0.0));
                }
            }
        }
    }

    /// Records what an honest key signs, then applies the sender's behaviour and the network.
    fn send(&mut self, n: usize, targets: &[usize], message: Message) {
        if self.nodes[n].honest() {
            self.check_double_sign(n, &message);
        }
        let view = message.view();
        match self.nodes[n].behavior {
            Behavior::Custom => {
                let Some(mut strategy) = self.strategies.remove(&n) else { return };
                let key = Keypair::from_secret(&self.keys[self.nodes[n].key]);
                let ctx = StrategyContext {
                    node: n,
                    key: &key,
                    chain: self.chain,
                    now_ms: self.now,
                    nodes: self.nodes.len(),
                };
                let out = strategy.on_send(&ctx, targets, message);
                self.strategies.insert(n, strategy);
                for (to, m) in out {
                    if to < self.nodes.len() && to != n {
                        let v = m.view();
                        let bytes = Rc::new(Envelope::new(self.chain, m).encode());
                        self.transmit(n, to, v, bytes);
                    }
                }
                return;
            }
            Behavior::Silent => return,
            Behavior::Withhold if matches!(message, Message::Vote(_)) => return,
            Behavior::Equivocate => {
                if let Message::Proposal(p) = &message {
                    let other = self.equivocate(n, p);
                    let bytes_a = Rc::new(Envelope::new(self.chain, message.clone()).encode());
                    let bytes_b = Rc::new(Envelope::new(self.chain, Message::Proposal(other)).encode());
                    for (i, &m) in targets.iter().enumerate() {
                        let b = if i % 2 == 0 { bytes_a.clone() } else { bytes_b.clone() };
                        self.transmit(n, m, view, b);
                    }
                    return;
                }
            }
            Behavior::Replay => {
                let log_len = self.nodes[n].replay_log.len();
                if log_len > 0 && self.rng.gen_bool(0.5) {
                    let old = self.nodes[n].replay_log[self.rng.gen_range(0..log_len)].clone();
                    let to = self.rng.gen_range(0..self.nodes.len());
                    if to != n {
                        self.transmit(n, to, view, old);
                    }
                }
            }
            _ => {}
        }
        let bytes = Rc::new(Envelope::new(self.chain, message).encode());
        for &m in targets {
            self.transmit(n, m, view, bytes.clone());
        }
    }

    /// A second, different, correctly signed proposal for the same view.
    fn equivocate(&mut self, n: usize, p: &Proposal) -> Proposal {
        let mut block: Block = p.block.clone();
        if let Some(b) = block.payload.last_mut() {
            *b ^= 0xff;
        }
        let key = Keypair::from_secret(&self.keys[self.nodes[n].key]);
        let hash = block.hash();
        let signature = key.sign(
            self.chain,
            hotstuff_core::crypto::SignKind::Proposal,
            block.view,
            &hotstuff_core::crypto::block_subject(&hash),
        );
        Proposal { block, tc: p.tc.clone(), signature }
    }

    fn check_double_sign(&mut self, n: usize, message: &Message) {
        let key = self.nodes[n].key;
        let (kind, view, epoch, subject) = match message {
            Message::Proposal(p) => (0u8, p.block.view, p.block.epoch.0, p.block.hash().0),
            Message::Vote(v) => (1, v.view, v.epoch.0, v.block.0),
            Message::Timeout(t) => {
                (2, t.view, t.epoch.0, hotstuff_core::crypto::timeout_subject(t.high_qc.view, t.epoch))
            }
            Message::SyncRequest(_)
            | Message::SyncResponse(_)
            | Message::SyncPruned(_)
            | Message::SnapshotRequest(_)
            | Message::SnapshotOffer(_)
            | Message::SnapshotChunk(_)
            | Message::App(_)
            | Message::Certificate(_)
            | Message::BlockRequest(_)
            | Message::Block(_) => return,
        };
        match self.signed.get(&(key, kind, epoch, view.0)) {
            Some(prev) if *prev != subject => {
                self.report.double_signs.push(format!(
                    "seed {}: key {key} signed two different {} for {view}",
                    self.p.seed,
                    ["proposals", "votes", "timeout votes"][kind as usize]
                ));
            }
            Some(_) => {}
            None => {
                self.signed.insert((key, kind, epoch, view.0), subject);
            }
        }
    }

    fn reachable(&self, from: usize, to: usize, view: View) -> bool {
        if self.faults_active && !self.p.view_partitions.is_empty() {
            // Twins: a message goes by the partition of its view (sync messages by the sender's).
            let v = if view.0 == 0 {
                self.nodes[from].replica.as_ref().map_or(0, |r| r.view().0)
            } else {
                view.0
            };
            let sides = usize::try_from(v)
                .ok()
                .and_then(|v| v.checked_sub(1))
                .and_then(|i| self.p.view_partitions.get(i));
            if let Some(sides) = sides {
                // Nodes the scenario did not place (listeners) are on side 0.
                if sides.get(from).unwrap_or(&0) != sides.get(to).unwrap_or(&0) {
                    return false;
                }
            }
        }
        match &self.partition {
            None => true,
            Some((sides, one_way)) => {
                let (a, b) = (sides[from], sides[to]);
                a == b || (*one_way && a == 1)
            }
        }
    }

    fn transmit(&mut self, from: usize, to: usize, view: View, bytes: Rc<Vec<u8>>) {
        if !self.reachable(from, to, view) {
            return;
        }
        let f = self.p.faults;
        let (lo, hi) = match self.p.delay_tail {
            Some((p, range)) if self.rng.gen_bool(p) => range,
            _ => f.delay_ms,
        };
        if self.faults_active && f.loss > 0.0 && self.rng.gen_bool(f.loss) {
            return;
        }
        let copies =
            if self.faults_active && f.duplicate > 0.0 && self.rng.gen_bool(f.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.now + self.rng.gen_range(lo..=hi);
            let sender = self.publics[self.nodes[from].key];
            self.schedule(at, Ev::Deliver { to, from: sender, bytes: bytes.clone() });
        }
    }

    /// Runs the final oracles (liveness after the heal, if the run got that far) and returns
    /// the report.
    pub fn finish(mut self) -> Report {
        if self.now >= self.p.heal_at_ms || self.queue.is_empty() {
            for (i, node) in self.nodes.iter().enumerate() {
                if node.honest() && node.done_at_view.is_none() && !self.p.dead.contains(&i) {
                    let h0 = node.height_at_heal.map_or(0, |(h, _)| h);
                    self.report.liveness_failures.push(format!(
                        "seed {}: node {i} reached height {} (needs {}: the highest honest height at the heal + {}) within {} ms",
                        self.p.seed,
                        node.store.committed.height.0,
                        h0 + self.p.commits_after_heal,
                        self.p.commits_after_heal,
                        self.p.liveness_bound_ms()
                    ));
                }
            }
        }
        self.report.max_view =
            self.nodes.iter().filter_map(|n| n.replica.as_ref()).map(|r| r.view().0).max().unwrap_or(0);
        self.report.end_ms = self.now;
        self.report.trace_hash = *self.hasher.finalize().as_bytes();
        self.report.commit_logs = self.nodes.iter().map(|n| n.store.log.clone()).collect();
        self.report.honest = self.nodes.iter().map(Node::honest).collect();
        self.report.node_keys = self.nodes.iter().map(|n| n.key).collect();
        if self.p.record_events {
            self.report.events = self.nodes.iter_mut().map(|n| std::mem::take(&mut n.events)).collect();
        }
        self.report
    }
}
