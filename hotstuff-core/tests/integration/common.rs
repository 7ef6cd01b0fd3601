//! Shared test harness: a validator set of real keys, hand-built signed messages and
//! certificates, and a driver loop that answers a replica's app and persistence requests.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use hotstuff_core::crypto::{self, SignKind};
use hotstuff_core::message::SyncRequest;
use hotstuff_core::test_util;
use hotstuff_core::{
    Action, AppOutcome, Block, BlockHash, BlockTree, ChainId, CommittedTip, Config, DefaultPacemaker, Epoch,
    Height, Input, InputError, Keypair, LeaderHistory, Message, Pacemaker, Proposal, PublicKey,
    QuorumCertificate, Recovered, Replica, SafetyState, Signature, TimeoutCertificate, TimeoutVote,
    ValidatorSet, View, Vote,
};

/// `m` in an envelope encodes, decodes to the same message and re-encodes to the same bytes;
/// a trailing byte and a missing last byte are refused.
pub fn roundtrip(m: Message) {
    let env = hotstuff_core::Envelope::new(ChainId(5), m);
    let bytes = env.encode();
    let limits = hotstuff_core::Limits::default();
    let back = hotstuff_core::Envelope::decode(&bytes, &limits).unwrap();
    assert_eq!(back, env);
    assert_eq!(back.encode(), bytes);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(hotstuff_core::Envelope::decode(&longer, &limits).is_err(), "trailing byte accepted");
    assert!(
        hotstuff_core::Envelope::decode(&bytes[..bytes.len() - 1], &limits).is_err(),
        "short frame accepted"
    );
}

/// The chain every test runs.
pub const CHAIN: ChainId = ChainId(0x5eed);

/// `n` validators with power 1 each, keys `Keypair::from_secret(&[i; 32])` for `i` in `1..=n`,
/// indexed in the validator set's (key) order.
pub struct Cluster {
    pub chain: ChainId,
    pub keys: Vec<Keypair>,
    pub set: ValidatorSet,
    pub genesis: BlockHash,
    pub pacemaker: DefaultPacemaker,
}

impl Cluster {
    pub fn new(n: u8) -> Self {
        Self::with_powers(&vec![1; usize::from(n)])
    }

    pub fn with_powers(powers: &[u64]) -> Self {
        let mut keys: Vec<Keypair> =
            (1..=powers.len()).map(|i| Keypair::from_secret(&[u8::try_from(i).unwrap(); 32])).collect();
        keys.sort_by_key(Keypair::public);
        let set = ValidatorSet::new(keys.iter().zip(powers).map(|(k, p)| (k.public(), *p))).unwrap();
        let genesis = hotstuff_core::genesis_hash(CHAIN, &set);
        Cluster { chain: CHAIN, keys, set, genesis, pacemaker: DefaultPacemaker::round_robin() }
    }

    pub fn pk(&self, i: usize) -> PublicKey {
        self.keys[i].public()
    }

    pub fn index(&self, pk: &PublicKey) -> usize {
        self.keys.iter().position(|k| k.public() == *pk).expect("not a cluster key")
    }

    /// Index of the leader of `view`.
    pub fn leader(&self, view: u64) -> usize {
        self.index(&self.pacemaker.leader(View(view), &self.set, &LeaderHistory::default()))
    }

    pub fn config(&self) -> Config {
        Config::new(self.chain)
    }

    pub fn recovered_genesis(&self) -> Recovered {
        Recovered::genesis(self.chain, self.set.clone())
    }

    /// A fresh replica for validator `i`.
    pub fn replica(&self, i: usize) -> Replica {
        self.replica_from(i, self.recovered_genesis())
    }

    pub fn replica_from(&self, i: usize, recovered: Recovered) -> Replica {
        Replica::new(self.config(), self.key(i), self.pacemaker, recovered).unwrap()
    }

    /// A fresh copy of validator `i`'s key.
    pub fn key(&self, i: usize) -> Keypair {
        Keypair::from_secret(&self.keys[i].secret())
    }

    pub fn genesis_qc(&self) -> QuorumCertificate {
        QuorumCertificate::genesis(self.genesis)
    }

    pub fn genesis_tip(&self) -> CommittedTip {
        CommittedTip { hash: self.genesis, view: View(0), height: Height(0) }
    }

    /// A QC for `block` in `view` signed by `signers` (any order; sorted here).
    pub fn qc(&self, view: u64, block: BlockHash, signers: &[usize]) -> QuorumCertificate {
        let signers: Vec<&Keypair> = signers.iter().map(|i| &self.keys[*i]).collect();
        test_util::qc(self.chain, Epoch(0), View(view), block, &signers)
    }

    /// The QC certifying `block`, signed by the first three validators.
    pub fn certify(&self, block: &Block) -> QuorumCertificate {
        self.qc(block.view.0, block.hash(), &[0, 1, 2])
    }

    /// A block for `view` by the leader of `view`.
    pub fn block(&self, view: u64, height: u64, justify: QuorumCertificate, payload: &[u8]) -> Block {
        Block {
            epoch: Epoch(0),
            view: View(view),
            height: Height(height),
            justify,
            proposer: self.pk(self.leader(view)),
            payload: payload.to_vec(),
        }
    }

    /// The child of `parent` in `view`, certified by `parent`'s default QC.
    pub fn child(&self, parent: &Block, view: u64, payload: &[u8]) -> Block {
        self.block(view, parent.height.0 + 1, self.certify(parent), payload)
    }

    /// A proposal signed by the block's proposer.
    pub fn propose(&self, block: Block, tc: Option<TimeoutCertificate>) -> Proposal {
        let i = self.index(&block.proposer);
        self.propose_signed_by(i, block, tc)
    }

    pub fn propose_signed_by(&self, i: usize, block: Block, tc: Option<TimeoutCertificate>) -> Proposal {
        let signature = self.keys[i].sign(
            self.chain,
            SignKind::Proposal,
            block.view,
            &crypto::block_subject(&block.hash()),
        );
        Proposal { block, tc, signature }
    }

    pub fn vote(&self, i: usize, view: u64, block: BlockHash) -> Vote {
        test_util::vote(&self.keys[i], self.chain, Epoch(0), View(view), block)
    }

    /// Validator `i`'s timeout vote for `view` carrying its vote in that view for `block`.
    pub fn timeout_with_vote(
        &self,
        i: usize,
        view: u64,
        high_qc: QuorumCertificate,
        block: BlockHash,
    ) -> TimeoutVote {
        TimeoutVote { vote: Some(self.vote(i, view, block)), ..self.timeout(i, view, high_qc) }
    }

    pub fn timeout(&self, i: usize, view: u64, high_qc: QuorumCertificate) -> TimeoutVote {
        test_util::timeout_vote(&self.keys[i], self.chain, View(view), high_qc)
    }

    /// A TC for `view` from `(signer, its high QC)`; its high QC is the highest of them.
    pub fn tc(&self, view: u64, votes: &[(usize, QuorumCertificate)]) -> TimeoutCertificate {
        let votes: Vec<(&Keypair, QuorumCertificate)> =
            votes.iter().map(|(i, q)| (&self.keys[*i], q.clone())).collect();
        test_util::tc(self.chain, Epoch(0), View(view), &votes).expect("at least one timeout vote")
    }

    pub fn input(&self, from: usize, message: Message) -> Input {
        Input::Message { from: self.pk(from), message }
    }
}

/// A key outside every cluster.
pub fn outsider() -> Keypair {
    Keypair::from_secret(&[0xee; 32])
}

pub fn bogus_signature() -> Signature {
    Signature([7; 64])
}

/// The payload the harness produces for a block of `view`.
pub fn produced_payload(view: View) -> Vec<u8> {
    format!("produced in view {}", view.0).into_bytes()
}

/// Drains the replica's ready actions without answering anything.
pub fn drain(r: &mut Replica) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

/// Runs the replica until it is idle, answering every `ProduceBlock` (for the current view),
/// `ValidateBlock` (valid, empty outcome) and `Persist` at once. Returns every action polled.
pub fn run(r: &mut Replica) -> Vec<Action> {
    let mut log = Vec::new();
    loop {
        let actions = drain(r);
        if actions.is_empty() {
            return log;
        }
        let mut inputs = Vec::new();
        for a in &actions {
            match a {
                Action::ProduceBlock { view, parent, .. } if *view == r.view() => {
                    inputs.push(Input::BlockProduced {
                        view: *view,
                        parent: *parent,
                        payload: produced_payload(*view),
                        outcome: AppOutcome::default(),
                    });
                }
                Action::ValidateBlock { hash, .. } => {
                    inputs.push(Input::BlockValidated { hash: *hash, outcome: Some(AppOutcome::default()) });
                }
                Action::Persist { seq, .. } => inputs.push(Input::Persisted { seq: *seq }),
                _ => {}
            }
        }
        log.extend(actions);
        for input in inputs {
            r.handle(input).unwrap();
        }
    }
}

/// Feeds `input` (which must be accepted) and runs the replica to idle.
pub fn feed(r: &mut Replica, input: Input) -> Vec<Action> {
    r.handle(input).unwrap();
    run(r)
}

/// The signed messages among `actions`: `(Some(to), m)` for sends, `(None, m)` for broadcasts.
pub fn sent(actions: &[Action]) -> Vec<(Option<PublicKey>, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, message } => Some((Some(*to), message.clone())),
            Action::Broadcast { message } => Some((None, message.clone())),
            _ => None,
        })
        .collect()
}

pub fn sent_votes(actions: &[Action]) -> Vec<(Option<PublicKey>, Vote)> {
    sent(actions)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::Vote(v) => Some((to, v)),
            _ => None,
        })
        .collect()
}

pub fn sent_proposals(actions: &[Action]) -> Vec<Proposal> {
    sent(actions)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Proposal(p) => Some(p),
            _ => None,
        })
        .collect()
}

pub fn sent_timeouts(actions: &[Action]) -> Vec<TimeoutVote> {
    sent(actions)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Timeout(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// The blocks committed by `actions`, in order.
pub fn committed_blocks(actions: &[Action]) -> Vec<hotstuff_core::CommittedBlock> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit { blocks } => Some(blocks.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The last safety state among the `Persist` actions in `actions`.
pub fn last_persisted_safety(actions: &[Action]) -> Option<SafetyState> {
    actions.iter().rev().find_map(|a| match a {
        Action::Persist { safety: Some(s), .. } => Some(s.clone()),
        _ => None,
    })
}

/// Everything observable about a replica's state.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub view: View,
    pub high_qc: QuorumCertificate,
    pub locked_qc: QuorumCertificate,
    pub last_tc: Option<TimeoutCertificate>,
    pub safety: SafetyState,
    pub committed: CommittedTip,
    pub tree: BlockTree,
    pub persist_progress: (u64, u64),
    pub validators: ValidatorSet,
}

pub fn snapshot(r: &Replica) -> Snapshot {
    Snapshot {
        view: r.view(),
        high_qc: r.high_qc().clone(),
        locked_qc: r.locked_qc().clone(),
        last_tc: r.last_tc().cloned(),
        safety: r.safety().clone(),
        committed: *r.committed(),
        tree: r.block_tree().clone(),
        persist_progress: r.persist_progress(),
        validators: r.validators().clone(),
    }
}

/// Asserts that `input` is refused with exactly `expected` and that the replica is unchanged:
/// same observable state, and no new action.
#[track_caller]
pub fn assert_rejected(r: &mut Replica, input: Input, expected: InputError) {
    assert!(r.poll_action().is_none(), "replica must be idle before the bad input");
    let before = snapshot(r);
    assert_eq!(r.handle(input), Err(expected));
    assert_eq!(snapshot(r), before, "a refused input changed the replica");
    assert_eq!(r.poll_action(), None, "a refused input produced an action");
}

/// As [`assert_rejected`], for a raw frame.
#[track_caller]
pub fn assert_frame_rejected(r: &mut Replica, from: PublicKey, bytes: &[u8], expected: InputError) {
    assert!(r.poll_action().is_none(), "replica must be idle before the bad frame");
    let before = snapshot(r);
    assert_eq!(r.handle_frame(from, bytes), Err(expected));
    assert_eq!(snapshot(r), before, "a refused frame changed the replica");
    assert_eq!(r.poll_action(), None, "a refused frame produced an action");
}

/// A chain of blocks of views 1..=n, each by its view's leader and extending the previous one.
pub fn chain(c: &Cluster, n: u64) -> Vec<Block> {
    let mut blocks = vec![c.block(1, 1, c.genesis_qc(), b"b1")];
    for v in 2..=n {
        let parent = blocks.last().unwrap().clone();
        blocks.push(c.child(&parent, v, format!("b{v}").as_bytes()));
    }
    blocks
}

/// The sync requests among `actions`, with their receivers.
pub fn sync_requests(actions: &[Action]) -> Vec<(PublicKey, SyncRequest)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, message: Message::SyncRequest(r) } => Some((*to, r.clone())),
            _ => None,
        })
        .collect()
}

/// A replica other than the leaders of views 1..=6 (so it only follows).
pub fn follower(c: &Cluster) -> usize {
    (0..4).find(|i| (1..=6).all(|v| c.leader(v) != *i)).unwrap_or(0)
}
