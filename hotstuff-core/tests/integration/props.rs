//! Property tests: wire encoding, quorum arithmetic, the leader schedule, and block-tree and
//! commit invariants of replicas driven through random schedules.

use crate::common;

use common::*;
use hotstuff_core::message::{SyncPruned, SyncRequest, SyncResponse};
use hotstuff_core::validators::{quorum_threshold, MAX_TOTAL_POWER};
use hotstuff_core::{
    Action, AppOutcome, Block, BlockHash, ChainId, CommittedBlock, DecodeError, DefaultPacemaker, Envelope,
    Epoch, Height, Input, Keypair, LeaderHistory, Limits, Message, Pacemaker, Proposal, PublicKey,
    QuorumCertificate, Replica, Signature, TimeoutCertificate, TimeoutVote, ValidatorSet, View, Vote,
    PROTOCOL_VERSION,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Wire encoding.
// ---------------------------------------------------------------------------------------------

fn signature() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    })
}

fn public_key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn block_hash() -> impl Strategy<Value = BlockHash> {
    any::<[u8; 32]>().prop_map(BlockHash)
}

fn view() -> impl Strategy<Value = View> {
    prop_oneof![0u64..16, any::<u64>()].prop_map(View)
}

fn qc() -> impl Strategy<Value = QuorumCertificate> {
    (view(), block_hash(), btree_map(public_key(), signature(), 0..5)).prop_map(|(view, block, sigs)| {
        QuorumCertificate { epoch: Epoch(0), view, block, signatures: sigs.into_iter().collect() }
    })
}

fn tc() -> impl Strategy<Value = TimeoutCertificate> {
    (view(), qc(), btree_map(public_key(), (view(), signature()), 0..5)).prop_map(|(view, high_qc, sigs)| {
        TimeoutCertificate {
            epoch: Epoch(0),
            view,
            high_qc,
            signatures: sigs.into_iter().map(|(k, (v, s))| (k, v, s)).collect(),
        }
    })
}

fn block() -> impl Strategy<Value = Block> {
    (view(), any::<u64>(), qc(), public_key(), vec(any::<u8>(), 0..48)).prop_map(
        |(view, height, justify, proposer, payload)| Block {
            epoch: Epoch(0),
            view,
            height: Height(height),
            justify,
            proposer,
            payload,
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (block(), proptest::option::of(tc()), signature())
            .prop_map(|(block, tc, signature)| Message::Proposal(Proposal { block, tc, signature })),
        (view(), block_hash(), public_key(), signature()).prop_map(|(view, block, voter, signature)| {
            Message::Vote(Vote { epoch: Epoch(0), view, block, voter, signature })
        }),
        (view(), qc(), public_key(), signature(), proptest::option::of(tc())).prop_map(
            |(view, high_qc, voter, signature, last_tc)| Message::Timeout(TimeoutVote {
                epoch: Epoch(0),
                view,
                high_qc,
                voter,
                signature,
                last_tc,
                vote: None,
            })
        ),
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(id, h, max_blocks)| Message::SyncRequest(
            SyncRequest { id, from_height: Height(h), max_blocks }
        )),
        (any::<u64>(), vec(block(), 0..3), proptest::option::of(qc())).prop_map(
            |(id, blocks, certificate)| { Message::SyncResponse(SyncResponse { id, blocks, certificate }) }
        ),
        (any::<u64>(), any::<u64>())
            .prop_map(|(id, h)| Message::SyncPruned(SyncPruned { id, retained_from: Height(h) })),
        block_hash().prop_map(Message::BlockRequest),
        block().prop_map(Message::Block),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (any::<u64>(), message()).prop_map(|(chain, message)| Envelope::new(ChainId(chain), message))
}

/// `(largest signer list, largest payload, sync blocks)` in a message.
fn field_sizes(m: &Message) -> (usize, usize, usize) {
    fn tc_signers(tc: &TimeoutCertificate) -> usize {
        tc.signatures.len().max(tc.high_qc.signatures.len())
    }
    match m {
        Message::Proposal(p) => (
            p.block.justify.signatures.len().max(p.tc.as_ref().map_or(0, tc_signers)),
            p.block.payload.len(),
            0,
        ),
        Message::Vote(_)
        | Message::SyncRequest(_)
        | Message::SyncPruned(_)
        | Message::BlockRequest(_)
        | Message::SnapshotRequest(_)
        | Message::SnapshotOffer(_)
        | Message::SnapshotChunk(_)
        | Message::App(_) => (0, 0, 0),
        Message::Block(b) => (b.justify.signatures.len(), b.payload.len(), 0),
        Message::Certificate(qc) => (qc.signatures.len(), 0, 0),
        Message::Timeout(t) => {
            (t.high_qc.signatures.len().max(t.last_tc.as_ref().map_or(0, tc_signers)), 0, 0)
        }
        Message::SyncResponse(r) => (
            r.blocks
                .iter()
                .map(|b| b.justify.signatures.len())
                .chain(r.certificate.iter().map(|c| c.signatures.len()))
                .max()
                .unwrap_or(0),
            r.blocks.iter().map(|b| b.payload.len()).max().unwrap_or(0),
            r.blocks.len(),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_message_round_trips(env in envelope()) {
        let bytes = env.encode();
        let decoded = Envelope::decode(&bytes, &Limits::default()).unwrap();
        prop_assert_eq!(&decoded, &env);
        prop_assert_eq!(decoded.encode(), bytes);
    }

    #[test]
    fn random_bytes_fail_or_decode_canonically(bytes in vec(any::<u8>(), 0..400)) {
        if let Ok(env) = Envelope::decode(&bytes, &Limits::default()) {
            prop_assert_eq!(env.encode(), bytes);
        }
    }

    #[test]
    fn mutated_encodings_fail_or_decode_canonically(
        env in envelope(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
    ) {
        let mut bytes = env.encode();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => bytes[i] ^= byte | 1,
                1 => bytes.insert(i, byte),
                2 if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => bytes.truncate(i),
            }
        }
        match Envelope::decode(&bytes, &Limits::default()) {
            Ok(decoded) => prop_assert_eq!(decoded.encode(), bytes),
            Err(e) => prop_assert!(matches!(
                e,
                DecodeError::Malformed(_) | DecodeError::Version(_) | DecodeError::NotCanonical(_)
            ), "{:?}", e),
        }
    }

    #[test]
    fn decoding_enforces_every_limit(
        env in envelope(),
        max_signers in 0usize..6,
        max_payload in 0usize..64,
        max_sync_blocks in 0usize..4,
    ) {
        let bytes = env.encode();
        let mut limits = Limits { max_signers, max_payload, max_sync_blocks, ..Limits::default() };
        let (signers, payload, sync_blocks) = field_sizes(&env.message);
        let within = signers <= max_signers && payload <= max_payload && sync_blocks <= max_sync_blocks;
        match Envelope::decode(&bytes, &limits) {
            Ok(decoded) => {
                prop_assert!(within, "decoded a message over the limits");
                prop_assert_eq!(decoded, env);
            }
            Err(e) => {
                prop_assert!(!within, "refused a message within the limits: {:?}", e);
                prop_assert!(matches!(e, DecodeError::FieldTooLarge { .. }), "{:?}", e);
            }
        }
        // The frame limit is checked first, on the raw length.
        limits.max_frame = bytes.len() - 1;
        prop_assert_eq!(
            Envelope::decode(&bytes, &limits),
            Err(DecodeError::TooLarge { len: bytes.len(), max: bytes.len() - 1 })
        );
    }

    #[test]
    fn other_versions_are_refused(env in envelope(), version in any::<u16>()) {
        prop_assume!(version != PROTOCOL_VERSION);
        let bytes = Envelope { version, ..env }.encode();
        prop_assert_eq!(Envelope::decode(&bytes, &Limits::default()), Err(DecodeError::Version(version)));
    }

    #[test]
    fn unsorted_signers_are_refused(mut q in qc(), i in any::<prop::sample::Index>()) {
        prop_assume!(q.signatures.len() >= 2);
        let i = i.index(q.signatures.len() - 1);
        q.signatures.swap(i, i + 1);
        let env = Envelope::new(ChainId(1), Message::Timeout(TimeoutVote {
                epoch: Epoch(0),
            view: View(1),
            high_qc: q,
            voter: PublicKey([0; 32]),
            signature: Signature([0; 64]),
            last_tc: None,
            vote: None,
        }));
        prop_assert_eq!(
            Envelope::decode(&env.encode(), &Limits::default()),
            Err(DecodeError::NotCanonical("qc.signatures"))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Quorum arithmetic.
// ---------------------------------------------------------------------------------------------

/// Distinct valid keys, `Keypair::from_secret(&[i; 32])` for `i` in `1..=16`.
fn keys() -> &'static [PublicKey] {
    static KEYS: OnceLock<Vec<PublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| (1..=16u8).map(|i| Keypair::from_secret(&[i; 32]).public()).collect())
}

fn weighted_set(powers: &[u64]) -> ValidatorSet {
    ValidatorSet::new(keys().iter().copied().zip(powers.iter().copied())).unwrap()
}

/// The power of the members selected by `mask` (bit `i` = `i`-th member in key order).
fn power_of(set: &ValidatorSet, mask: u32) -> u64 {
    set.members().iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, v)| v.power).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn quorum_is_the_least_power_above_two_thirds(total in prop_oneof![1u64..100, 1u64..=MAX_TOTAL_POWER]) {
        let q = u128::from(quorum_threshold(total));
        let t = u128::from(total);
        prop_assert!(3 * q > 2 * t, "quorum {} not above 2/3 of {}", q, t);
        prop_assert!(3 * (q - 1) <= 2 * t, "quorum {} not minimal for {}", q, t);
        prop_assert!(q <= t);
        // Two quorums overlap in at least 2q - t, which is more than a third.
        prop_assert!(3 * (2 * q - t) > t);
    }

    #[test]
    fn weighted_quorums_intersect_in_more_than_a_third(
        powers in vec(1u64..1000, 1..=12),
        masks in vec(any::<u32>(), 24),
    ) {
        let set = weighted_set(&powers);
        let total = set.total_power();
        prop_assert_eq!(total, powers.iter().sum::<u64>());
        prop_assert_eq!(set.quorum(), quorum_threshold(total));
        let all = (1u32 << set.len()) - 1;
        let masks: Vec<u32> = masks.iter().map(|m| m & all).chain([all]).collect();
        // A set of validators is a quorum exactly when it holds more than 2/3 of the power.
        for m in &masks {
            let p = power_of(&set, *m);
            prop_assert_eq!(p >= set.quorum(), 3 * u128::from(p) > 2 * u128::from(total));
            prop_assert_eq!(p >= set.validity_threshold(), 3 * u128::from(p) > u128::from(total));
        }
        let quorums: Vec<u32> = masks.into_iter().filter(|m| power_of(&set, *m) >= set.quorum()).collect();
        prop_assert!(!quorums.is_empty());
        for a in &quorums {
            for b in &quorums {
                let overlap = power_of(&set, a & b);
                prop_assert!(3 * u128::from(overlap) > u128::from(total), "overlap {} of {}", overlap, total);
            }
        }
    }

    #[test]
    fn huge_powers_keep_exact_quorums(powers in vec(1u64..=(1 << 58), 1..=12)) {
        let set = weighted_set(&powers);
        let t = u128::from(set.total_power());
        let q = u128::from(set.quorum());
        prop_assert_eq!(t, powers.iter().map(|p| u128::from(*p)).sum::<u128>());
        prop_assert!(3 * q > 2 * t && 3 * (q - 1) <= 2 * t);
    }
}

// ---------------------------------------------------------------------------------------------
// Leader schedule.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn each_validator_leads_its_power_in_every_window(
        powers in vec(1u64..=24, 1..=10),
        start in prop_oneof![0u64..1000, any::<u64>()],
    ) {
        let set = weighted_set(&powers);
        let total = set.total_power();
        let start = start.min(u64::MAX - (total - 1));
        let pm = DefaultPacemaker::round_robin();
        let none = LeaderHistory::default();
        let mut counts: BTreeMap<PublicKey, u64> = BTreeMap::new();
        for v in start..=start + (total - 1) {
            let leader = pm.leader(View(v), &set, &none);
            prop_assert!(set.contains(&leader));
            *counts.entry(leader).or_default() += 1;
        }
        for member in set.members() {
            prop_assert_eq!(counts.get(&member.key).copied().unwrap_or(0), member.power, "window from {}", start);
        }
    }

    #[test]
    fn every_leader_is_a_member(
        powers in vec(1u64..=(1 << 40), 1..=16),
        views in vec(any::<u64>(), 32),
    ) {
        let set = weighted_set(&powers);
        let pm = DefaultPacemaker::round_robin();
        let none = LeaderHistory::default();
        for v in views.into_iter().chain([0, 1, u64::MAX]) {
            prop_assert!(set.contains(&pm.leader(View(v), &set, &none)));
            // A pure function of its arguments.
            prop_assert_eq!(pm.leader(View(v), &set, &none), pm.leader(View(v), &set.clone(), &none));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replicas driven through random schedules.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Deliver the queued message at this index (modulo the queue length).
    Deliver(usize),
    /// Lose it.
    Drop(usize),
    /// Deliver it and keep it queued (a duplicate later).
    Duplicate(usize),
    /// Deliver a corrupted frame of it (byte `at` xor `x`; the original stays queued).
    Corrupt(usize, usize, u8),
    /// Fire this replica's timer for its current view.
    Timer(usize),
    /// Answer an outstanding validation request.
    Validate(usize),
    /// The Byzantine key, if it leads the current view of this replica, proposes there one of
    /// two blocks of its own (equivocation: other replicas may get the other one).
    Equivocate(usize, u8),
    /// The Byzantine key votes for this block of the receiver's tree, if the receiver collects
    /// votes for its view (double votes).
    DoubleVote(usize, usize),
}

/// The validator whose key misbehaves (its replica runs the honest core, but its key also signs
/// conflicting proposals and votes). With 4 validators, one Byzantine key is tolerated.
const BYZANTINE: usize = 0;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => any::<usize>().prop_map(Step::Deliver),
        1 => any::<usize>().prop_map(Step::Drop),
        1 => any::<usize>().prop_map(Step::Duplicate),
        1 => (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(m, at, x)| Step::Corrupt(m, at, x)),
        1 => (0usize..4).prop_map(Step::Timer),
        4 => any::<usize>().prop_map(Step::Validate),
        2 => (0usize..4, 0u8..2).prop_map(|(t, variant)| Step::Equivocate(t, variant)),
        1 => (0usize..4, any::<usize>()).prop_map(|(t, b)| Step::DoubleVote(t, b)),
    ]
}

struct Sim {
    c: Cluster,
    replicas: Vec<Replica>,
    /// `(to, from, message)`.
    net: Vec<(usize, usize, Message)>,
    /// `(replica, block)` awaiting the app's verdict.
    validations: Vec<(usize, BlockHash)>,
    /// What each replica committed, in order.
    committed: Vec<Vec<CommittedBlock>>,
    /// The block committed at each height by anyone (agreement).
    by_height: BTreeMap<u64, BlockHash>,
    /// Whether the `BYZANTINE` key misbehaves (withholds its honest proposals, equivocates).
    byzantine: bool,
}

impl Sim {
    fn new(byzantine: bool) -> Self {
        let c = Cluster::new(4);
        let replicas = (0..4).map(|i| c.replica(i)).collect();
        let mut sim = Sim {
            c,
            replicas,
            net: Vec::new(),
            validations: Vec::new(),
            committed: vec![Vec::new(); 4],
            by_height: BTreeMap::new(),
            byzantine,
        };
        for i in 0..4 {
            sim.process(i);
        }
        sim
    }

    /// Performs replica `i`'s actions until it is idle.
    fn process(&mut self, i: usize) {
        loop {
            let actions = drain(&mut self.replicas[i]);
            if actions.is_empty() {
                return;
            }
            for a in actions {
                self.perform(i, a);
            }
        }
    }

    fn perform(&mut self, i: usize, action: Action) {
        let r = &mut self.replicas[i];
        match action {
            Action::Send { to, message } => {
                let to = self.c.index(&to);
                assert_ne!(to, i, "sent to itself");
                self.net.push((to, i, message));
            }
            // The Byzantine leader's own proposals are withheld: it proposes only by
            // `Step::Equivocate`, a different block to each replica.
            Action::Broadcast { message: Message::Proposal(_) } if self.byzantine && i == BYZANTINE => {}
            Action::Broadcast { message } => {
                self.net.extend((0..4).filter(|j| *j != i).map(|j| (j, i, message.clone())));
            }
            Action::Persist { seq, .. } => r.handle(Input::Persisted { seq }).unwrap(),
            Action::ProduceBlock { view, parent, .. } => {
                if view == r.view() {
                    let payload = format!("r{i} v{}", view.0).into_bytes();
                    let outcome = AppOutcome::default();
                    let before = snapshot(r);
                    // A request superseded in the same batch (the high QC rose) is refused.
                    if let Err(e) = r.handle(Input::BlockProduced { view, parent, payload, outcome }) {
                        assert_eq!(e, hotstuff_core::InputError::UnexpectedReply);
                        assert_eq!(snapshot(r), before);
                    }
                }
            }
            Action::ValidateBlock { hash, .. } => self.validations.push((i, hash)),
            Action::SetSyncTimer { .. } => {}
            Action::ServeSync { to, request } => {
                let mine = &self.committed[i];
                let response = r.sync_response(&request, |h| {
                    let b = mine.get(usize::try_from(h.0).ok()?.checked_sub(1)?)?;
                    assert_eq!(b.block.height, h);
                    Some((
                        b.block.clone(),
                        b.certificate.clone(),
                        b.epoch_change.as_ref().map(|c| c.proof.clone()),
                    ))
                });
                self.net.push((self.c.index(&to), i, Message::SyncResponse(response)));
            }
            Action::Commit { blocks } => {
                assert!(!blocks.is_empty());
                for b in blocks {
                    let (last_hash, last_height) =
                        self.committed[i].last().map_or((self.c.genesis, 0), |l| (l.hash, l.block.height.0));
                    assert_eq!(b.block.height.0, last_height + 1, "committed heights must not skip");
                    assert_eq!(b.block.parent(), last_hash, "committed block does not extend the last one");
                    assert_eq!(b.hash, b.block.hash());
                    assert_eq!((b.certificate.block, b.certificate.view), (b.hash, b.block.view));
                    // Agreement among the honest replicas.
                    if !(self.byzantine && i == BYZANTINE) {
                        let agreed = *self.by_height.entry(b.block.height.0).or_insert(b.hash);
                        assert_eq!(agreed, b.hash, "two blocks committed at height {}", b.block.height.0);
                    }
                    self.committed[i].push(b);
                }
            }
            Action::SetTimer { .. } | Action::Event(_) => {}
        }
    }

    /// Feeds an input that may be refused; a refused input must change nothing.
    fn offer(&mut self, i: usize, input: Input) {
        let before = snapshot(&self.replicas[i]);
        if let Err(e) = self.replicas[i].handle(input) {
            assert_eq!(snapshot(&self.replicas[i]), before, "refused input ({e}) changed the replica");
            assert_eq!(self.replicas[i].poll_action(), None, "refused input ({e}) produced an action");
        }
        self.process(i);
    }

    fn step(&mut self, step: Step) {
        let queued = self.net.len();
        match step {
            Step::Deliver(_) | Step::Drop(_) | Step::Duplicate(_) | Step::Corrupt(..) if queued == 0 => {}
            Step::Deliver(k) => {
                let (to, from, message) = self.net.remove(k % queued);
                self.offer(to, Input::Message { from: self.c.pk(from), message });
            }
            Step::Drop(k) => {
                self.net.remove(k % queued);
            }
            Step::Duplicate(k) => {
                let (to, from, message) = self.net[k % queued].clone();
                self.offer(to, Input::Message { from: self.c.pk(from), message });
            }
            Step::Corrupt(k, at, x) => {
                let (to, from, message) = self.net[k % queued].clone();
                let mut bytes = Envelope::new(self.c.chain, message).encode();
                let at = at % bytes.len();
                bytes[at] ^= x | 1;
                let before = snapshot(&self.replicas[to]);
                if self.replicas[to].handle_frame(self.c.pk(from), &bytes).is_err() {
                    assert_eq!(snapshot(&self.replicas[to]), before, "refused frame changed the replica");
                    assert_eq!(self.replicas[to].poll_action(), None);
                }
                self.process(to);
            }
            Step::Timer(i) => {
                let view = self.replicas[i].view();
                self.replicas[i].handle(Input::TimerFired { view }).unwrap();
                self.process(i);
            }
            Step::Equivocate(t, variant) => self.equivocate(t, variant),
            Step::DoubleVote(t, k) => {
                let r = &self.replicas[t];
                let blocks: Vec<(View, BlockHash)> =
                    r.block_tree().iter().map(|(h, e)| (e.block.view, *h)).collect();
                if !blocks.is_empty() {
                    let (view, hash) = blocks[k % blocks.len()];
                    if self.byzantine && self.c.leader(view.0 + 1) == t && t != BYZANTINE {
                        let vote = self.c.vote(BYZANTINE, view.0, hash);
                        self.net.push((t, BYZANTINE, Message::Vote(vote)));
                    }
                }
            }
            Step::Validate(_) if self.validations.is_empty() => {}
            Step::Validate(k) => {
                let (i, hash) = self.validations.remove(k % self.validations.len());
                let input = Input::BlockValidated { hash, outcome: Some(AppOutcome::default()) };
                match self.replicas[i].handle(input) {
                    Ok(()) => {}
                    // The block was pruned (it lost to a committed fork) before the app answered.
                    Err(hotstuff_core::InputError::UnknownBlock(h)) => {
                        assert_eq!(h, hash);
                        assert!(self.replicas[i].block(&hash).is_none());
                    }
                    Err(e) => panic!("validation reply refused: {e}"),
                }
                self.process(i);
            }
        }
        for i in 0..4 {
            self.check_invariants(i);
        }
    }

    /// A proposal by the Byzantine key for `t`'s current view, built like an honest one on
    /// `t`'s high QC but with a payload of its own (one of two per view), queued for `t`.
    fn equivocate(&mut self, t: usize, variant: u8) {
        let r = &self.replicas[t];
        let view = r.view();
        if !self.byzantine || t == BYZANTINE || self.c.leader(view.0) != BYZANTINE {
            return;
        }
        let justify = r.high_qc().clone();
        let Some((_, parent_height)) = r.block_tree().position(&justify.block) else { return };
        let tc = r.last_tc().filter(|tc| tc.view.next() == view).cloned();
        if justify.view.next() != view && tc.is_none() {
            return;
        }
        let payload = format!("forged in {view} #{variant}").into_bytes();
        let block = self.c.block(view.0, parent_height.0 + 1, justify, &payload);
        let tc = if block.justify.view.next() == view { None } else { tc };
        self.net.push((t, BYZANTINE, Message::Proposal(self.c.propose(block, tc))));
    }

    fn check_invariants(&self, i: usize) {
        let r = &self.replicas[i];
        let tree = r.block_tree();
        let root = *tree.root();
        assert_eq!(root, *r.committed());
        match self.committed[i].last() {
            Some(last) => assert_eq!(
                (root.hash, root.height, root.view),
                (last.hash, last.block.height, last.block.view)
            ),
            None => assert_eq!(root, self.c.genesis_tip()),
        }
        for (hash, entry) in tree.iter() {
            let b = &entry.block;
            assert_eq!(*hash, b.hash());
            let (pview, pheight) =
                tree.position(&b.parent()).expect("parent is neither the root nor in the tree");
            assert_eq!(b.height.0, pheight.0 + 1, "height is not parent + 1");
            assert!(b.view > pview, "view not above the parent's");
            assert_eq!(b.justify.view, pview, "justify QC is not for the parent's view");
            assert!(b.height > root.height && b.view > root.view, "block at or below the root");
            let path = tree.path_from_root(hash).expect("block does not descend from the root");
            assert_eq!(path.last(), Some(hash));
            assert_eq!(path.len() as u64, b.height.0 - root.height.0);
        }
        // The safety state is internally consistent.
        let s = r.safety();
        assert!(s.locked_qc.view <= s.high_qc.view);
        assert!(s.high_qc.view < s.view);
        assert!(s.highest_voted_view <= s.view);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn block_tree_and_commit_invariants_hold(steps in vec(step(), 1..600), byzantine in any::<bool>()) {
        let mut sim = Sim::new(byzantine);
        let mut max_view = View(0);
        for s in &steps {
            sim.step(*s);
            // Views never go backwards.
            let v = sim.replicas.iter().map(Replica::view).max().unwrap();
            prop_assert!(v >= max_view);
            max_view = v;
        }
        for i in 0..4 {
            prop_assert_eq!(sim.replicas[i].committed_height().0 as usize, sim.committed[i].len());
        }
    }
}

/// The same simulator with every message delivered in order and every validation answered:
/// it commits, so the random runs above exercise commits and pruning too.
#[test]
fn simulator_commits_when_messages_flow() {
    let mut sim = Sim::new(false);
    for _ in 0..2000 {
        if !sim.validations.is_empty() {
            sim.step(Step::Validate(0));
        } else if !sim.net.is_empty() {
            sim.step(Step::Deliver(0));
        } else {
            break;
        }
    }
    for i in 0..4 {
        assert!(sim.committed[i].len() >= 20, "replica {i} committed only {}", sim.committed[i].len());
    }
}

/// With timers firing and messages lost, TCs move the views and blocks still commit.
#[test]
fn simulator_recovers_from_lost_messages_with_timeouts() {
    let mut sim = Sim::new(false);
    let mut n = 0u64;
    for _ in 0..4000 {
        n += 1;
        if n % 37 == 0 {
            for i in 0..4 {
                sim.step(Step::Timer(i));
            }
        } else if !sim.validations.is_empty() {
            sim.step(Step::Validate(0));
        } else if n % 5 == 0 && !sim.net.is_empty() {
            sim.step(Step::Drop(0));
        } else if !sim.net.is_empty() {
            sim.step(Step::Deliver(0));
        }
    }
    let min = (0..4).map(|i| sim.committed[i].len()).min().unwrap();
    assert!(min >= 5, "committed {:?}", sim.committed.iter().map(Vec::len).collect::<Vec<_>>());
    assert!(sim.replicas.iter().any(|r| r.last_tc().is_some()), "no view ever timed out");
}
