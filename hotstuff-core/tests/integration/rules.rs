//! Unit tests of the safety rules, persist-before-send, refusal of bad input, recovery and the
//! commit rule, through the public API only.

use crate::common;

use common::*;
use hotstuff_core::certificate::{verify_qc, verify_tc};
use hotstuff_core::crypto::{SignKind, SignatureError};
use hotstuff_core::message::Limits;
use hotstuff_core::{
    safe_to_timeout, safe_to_vote, Action, AppOutcome, Block, BlockHash, BlockRecord, CertificateError,
    ChainId, Config, DecodeError, Envelope, Epoch, EpochState, Event, Input, InputError, Message,
    QuorumCertificate, Recovered, Replica, TimeoutCertificate, Validity, View, PROTOCOL_VERSION,
};

// ---------------------------------------------------------------------------------------------
// The pure rules.
// ---------------------------------------------------------------------------------------------

/// A TC for `view` whose signers reported the given high-QC views (signatures are not looked at
/// by the rules).
fn tc_with(view: u64, reported: &[u64]) -> TimeoutCertificate {
    let c = Cluster::new(4);
    let max = *reported.iter().max().unwrap();
    TimeoutCertificate {
        epoch: Epoch(0),
        view: View(view),
        high_qc: QuorumCertificate {
            epoch: Epoch(0),
            view: View(max),
            block: BlockHash([1; 32]),
            signatures: Vec::new(),
        },
        signatures: reported
            .iter()
            .enumerate()
            .map(|(i, v)| (c.pk(i), View(*v), bogus_signature()))
            .collect(),
    }
}

fn vote_ok(block: u64, qc: u64, voted: u64, tc: Option<&TimeoutCertificate>) -> bool {
    safe_to_vote(View(block), View(qc), View(voted), tc)
}

fn timeout_ok(view: u64, qc: u64, lock: u64, voted: u64, tc: Option<&TimeoutCertificate>) -> bool {
    safe_to_timeout(View(view), View(qc), View(lock), View(voted), tc)
}

#[test]
fn vote_rule_accepts_block_extending_previous_view_qc() {
    assert!(vote_ok(1, 0, 0, None));
    assert!(vote_ok(5, 4, 3, None));
    assert!(vote_ok(5, 4, 0, None));
    // A TC for an unrelated view does not spoil a consecutive QC.
    assert!(vote_ok(5, 4, 3, Some(&tc_with(2, &[1, 1, 1]))));
}

#[test]
fn vote_rule_rejects_view_not_above_highest_voted() {
    assert!(!vote_ok(5, 4, 5, None), "voted in this view already");
    assert!(!vote_ok(5, 4, 6, None), "voted in a later view already");
    // Also through the TC arm.
    let tc = tc_with(5, &[3, 4, 4]);
    assert!(vote_ok(6, 4, 5, Some(&tc)));
    assert!(!vote_ok(6, 4, 6, Some(&tc)));
    assert!(!vote_ok(6, 4, 7, Some(&tc)));
}

#[test]
fn vote_rule_rejects_view_not_above_qc() {
    assert!(!vote_ok(4, 4, 0, None));
    assert!(!vote_ok(3, 4, 0, None));
    // Even a TC for the previous view does not allow it.
    assert!(!vote_ok(4, 4, 0, Some(&tc_with(3, &[2, 2, 2]))));
    assert!(!vote_ok(0, 0, 0, None));
}

#[test]
fn vote_rule_rejects_view_gap_without_tc() {
    assert!(!vote_ok(6, 4, 0, None));
    assert!(!vote_ok(100, 1, 50, None));
}

#[test]
fn vote_rule_tc_arm_accepts_qc_at_or_above_tc_high_qc() {
    // Block of view 6 extends QC 4 after a TC for view 5.
    assert!(vote_ok(6, 4, 0, Some(&tc_with(5, &[4, 2, 3]))), "qc == max reported");
    assert!(vote_ok(6, 4, 5, Some(&tc_with(5, &[1, 2, 3]))), "qc above max reported");
    assert!(vote_ok(6, 4, 4, Some(&tc_with(5, &[0, 0, 0]))));
}

#[test]
fn vote_rule_tc_arm_rejects_qc_below_tc_high_qc() {
    assert!(!vote_ok(6, 3, 0, Some(&tc_with(5, &[4, 2, 3]))));
    assert!(!vote_ok(6, 2, 0, Some(&tc_with(5, &[1, 4, 3]))), "the max, not the first, counts");
    assert!(!vote_ok(10, 0, 0, Some(&tc_with(9, &[0, 8, 0]))));
}

#[test]
fn vote_rule_rejects_tc_for_wrong_view() {
    // The TC must be for the view just before the block.
    assert!(!vote_ok(6, 4, 0, Some(&tc_with(4, &[3, 3, 3]))), "TC of an older view");
    assert!(!vote_ok(6, 4, 0, Some(&tc_with(6, &[4, 4, 4]))), "TC of the block's own view");
    assert!(!vote_ok(6, 4, 0, Some(&tc_with(7, &[4, 4, 4]))), "TC of a later view");
    // Control: the same TC arm with the right view.
    assert!(vote_ok(6, 4, 0, Some(&tc_with(5, &[4, 4, 4]))));
}

#[test]
fn timeout_rule_accepts_view_after_high_qc() {
    assert!(timeout_ok(1, 0, 0, 0, None));
    assert!(timeout_ok(5, 4, 3, 4, None));
    assert!(timeout_ok(5, 4, 4, 0, None));
}

#[test]
fn timeout_rule_accepts_view_after_tc() {
    assert!(timeout_ok(6, 4, 4, 5, Some(&tc_with(5, &[4, 4, 3]))));
    assert!(timeout_ok(9, 2, 2, 3, Some(&tc_with(8, &[2, 1, 0]))));
}

#[test]
fn timeout_rule_allows_timing_out_the_view_voted_in() {
    // Voting in view 5 and then timing it out is allowed (r > highest_voted - 1).
    assert!(timeout_ok(5, 4, 3, 5, None));
    assert!(timeout_ok(6, 4, 3, 6, Some(&tc_with(5, &[4, 4, 4]))));
}

#[test]
fn timeout_rule_rejects_view_older_than_voted() {
    assert!(!timeout_ok(5, 4, 3, 6, None), "voted in view 6 already");
    assert!(!timeout_ok(5, 4, 3, 7, None));
    assert!(!timeout_ok(6, 4, 4, 7, Some(&tc_with(5, &[4, 4, 4]))));
}

#[test]
fn timeout_rule_rejects_qc_below_lock() {
    assert!(!timeout_ok(5, 3, 4, 0, Some(&tc_with(4, &[3, 3, 3]))));
    assert!(!timeout_ok(4, 3, 4, 0, None));
    // Control: same with the lock at the QC.
    assert!(timeout_ok(5, 3, 3, 0, Some(&tc_with(4, &[3, 3, 3]))));
    assert!(timeout_ok(4, 3, 3, 0, None));
}

#[test]
fn timeout_rule_rejects_view_not_above_high_qc() {
    assert!(!timeout_ok(4, 4, 0, 0, None));
    assert!(!timeout_ok(3, 4, 0, 0, Some(&tc_with(2, &[1, 1, 1]))));
    assert!(!timeout_ok(0, 0, 0, 0, None));
}

#[test]
fn timeout_rule_rejects_view_entered_without_certificate() {
    assert!(!timeout_ok(6, 4, 0, 0, None), "no QC for view 5, no TC");
    assert!(!timeout_ok(6, 4, 0, 0, Some(&tc_with(4, &[3, 3, 3]))), "TC for the wrong view");
    assert!(!timeout_ok(6, 4, 0, 0, Some(&tc_with(6, &[4, 4, 4]))), "TC for the view itself");
}

// ---------------------------------------------------------------------------------------------
// A replica in a known state.
// ---------------------------------------------------------------------------------------------

/// Validator `r` (leader of views 1 and 5) after views 1-3: it proposed b1, voted for b2 and b3,
/// b1 is committed; view 3, high QC and lock QC(b2), b2 and b3 in the tree.
struct Setup {
    c: Cluster,
    r: usize,
    replica: Replica,
    b1: Block,
    b2: Block,
    b3: Block,
}

fn three_views() -> Setup {
    let c = Cluster::new(4);
    let r = c.leader(1);
    assert_eq!(c.leader(5), r, "the schedule repeats every 4 views");
    assert!((2..=4).all(|v| c.leader(v) != r));
    let mut replica = c.replica(r);
    let log = run(&mut replica);
    let b1 = sent_proposals(&log)[0].block.clone();
    assert_eq!((b1.view, b1.height, b1.parent()), (View(1), hotstuff_core::Height(1), c.genesis));
    let b2 = c.child(&b1, 2, b"b2");
    feed(&mut replica, c.input(c.leader(2), Message::Proposal(c.propose(b2.clone(), None))));
    let b3 = c.child(&b2, 3, b"b3");
    let log = feed(&mut replica, c.input(c.leader(3), Message::Proposal(c.propose(b3.clone(), None))));
    assert_eq!(committed_blocks(&log).iter().map(|b| b.hash).collect::<Vec<_>>(), vec![b1.hash()]);
    assert_eq!(replica.view(), View(3));
    assert_eq!(replica.committed().hash, b1.hash());
    assert_eq!(*replica.high_qc(), c.certify(&b2));
    assert_eq!(*replica.locked_qc(), c.certify(&b2));
    assert_eq!(replica.safety().highest_voted_view, View(3));
    assert_eq!(replica.block_tree().len(), 2);
    assert_eq!(replica.poll_action(), None);
    Setup { c, r, replica, b1, b2, b3 }
}

impl Setup {
    fn l4(&self) -> usize {
        self.c.leader(4)
    }

    /// The valid next proposal (view 4, extending b3).
    fn b4(&self) -> Block {
        self.c.child(&self.b3, 4, b"b4")
    }

    fn proposal(&self, p: hotstuff_core::Proposal) -> Input {
        self.c.input(self.c.index(&p.block.proposer), Message::Proposal(p))
    }

    fn reject(&mut self, input: Input, expected: InputError) {
        assert_rejected(&mut self.replica, input, expected);
    }

    /// Control: the valid view-4 proposal is accepted and moves the replica to view 4.
    fn accepts_b4(&mut self) {
        let input = self.proposal(self.c.propose(self.b4(), None));
        feed(&mut self.replica, input);
        assert_eq!(self.replica.view(), View(4));
        assert!(self.replica.block(&self.b4().hash()).is_some());
        assert_eq!(self.replica.committed().hash, self.b2.hash());
    }
}

// ---------------------------------------------------------------------------------------------
// The rules as a replica applies them.
// ---------------------------------------------------------------------------------------------

#[test]
fn replica_votes_for_block_extending_tc_high_qc() {
    let Setup { c, r, mut replica, b2, .. } = three_views();
    let tc = c.tc(3, &[(0, c.certify(&b2)), (1, c.certify(&b2)), (2, c.qc(1, b2.parent(), &[1, 2, 3]))]);
    assert_eq!(tc.max_high_qc_view(), View(2));
    let b4 = c.block(4, 3, c.certify(&b2), b"extends the TC's high QC");
    let log = feed(&mut replica, c.input(c.leader(4), Message::Proposal(c.propose(b4.clone(), Some(tc)))));
    assert_eq!(replica.view(), View(4));
    // The replica leads view 5, so it counts its own vote instead of sending it.
    assert_eq!(c.leader(5), r);
    assert!(log.iter().any(|a| matches!(a,
        Action::Event(Event::Voted { view: View(4), hash }) if *hash == b4.hash())));
    assert_eq!(replica.safety().last_vote, Some(c.vote(r, 4, b4.hash())));
    assert_eq!(replica.safety().highest_voted_view, View(4));
}

#[test]
fn replica_refuses_to_vote_for_block_below_tc_high_qc() {
    let Setup { c, mut replica, b1, b2, .. } = three_views();
    let tc = c.tc(3, &[(0, c.certify(&b2)), (1, c.certify(&b1)), (2, c.certify(&b1))]);
    assert_eq!(tc.max_high_qc_view(), View(2));
    // Extends b1 (QC of view 1) although the TC reports a QC of view 2: a leader that ignores
    // the TC's high QC. The block is well formed and stored, but the voting rule refuses it.
    let b4 = c.block(4, 2, c.certify(&b1), b"ignores the TC's high QC");
    let log = feed(&mut replica, c.input(c.leader(4), Message::Proposal(c.propose(b4.clone(), Some(tc)))));
    assert_eq!(replica.view(), View(4));
    assert!(matches!(replica.block_tree().get(&b4.hash()).map(|e| &e.validity), Some(Validity::Valid(_))));
    assert!(sent_votes(&log).is_empty(), "{log:?}");
    assert!(!log.iter().any(|a| matches!(a, Action::Event(Event::Voted { .. }))));
    assert_eq!(replica.safety().highest_voted_view, View(3));
    assert_eq!(*replica.locked_qc(), c.certify(&b2));
}

#[test]
fn replica_does_not_vote_in_a_view_it_timed_out() {
    let c = Cluster::new(4);
    let r = (0..4).find(|i| *i != c.leader(1)).unwrap();
    let mut replica = c.replica(r);
    run(&mut replica);
    let log = feed(&mut replica, Input::TimerFired { view: View(1) });
    assert_eq!(sent_timeouts(&log).len(), 1);
    assert_eq!(replica.safety().highest_voted_view, View(1));
    let b1 = c.block(1, 1, c.genesis_qc(), b"late");
    let log = feed(&mut replica, c.input(c.leader(1), Message::Proposal(c.propose(b1.clone(), None))));
    assert!(replica.block(&b1.hash()).is_some(), "the proposal itself is accepted");
    assert!(sent_votes(&log).is_empty(), "voted after timing out: {log:?}");
    assert_eq!(replica.safety().last_vote, None);
}

#[test]
fn replica_votes_once_per_view_and_locks_on_the_blocks_qc() {
    let Setup { c, replica, b2, b3, .. } = three_views();
    let vote = replica.safety().last_vote.clone().unwrap();
    assert_eq!(vote, c.vote(c.index(&vote.voter), 3, b3.hash()));
    // The lock is the QC of the block voted for (b3's justify), not b3's own QC.
    assert_eq!(*replica.locked_qc(), b3.justify);
    assert_eq!(replica.locked_qc().block, b2.hash());
}

#[test]
fn replica_timeout_vote_reports_high_qc_and_is_resent_unchanged() {
    let Setup { c, r, mut replica, b2, b3, .. } = three_views();
    let log = feed(&mut replica, Input::TimerFired { view: View(3) });
    let t = sent_timeouts(&log);
    // It voted for b3 in view 3: that vote rides along, so the view's QC can form without the
    // next leader.
    assert_eq!(t, vec![c.timeout_with_vote(r, 3, c.certify(&b2), b3.hash())]);
    // A timer for another view does nothing.
    let before = snapshot(&replica);
    assert_eq!(replica.handle(Input::TimerFired { view: View(2) }), Ok(()));
    assert_eq!(replica.poll_action(), None);
    assert_eq!(snapshot(&replica), before);
    // Firing again re-sends the same timeout vote, never a different one.
    let log = feed(&mut replica, Input::TimerFired { view: View(3) });
    assert_eq!(sent_timeouts(&log), t);
}

// ---------------------------------------------------------------------------------------------
// Persist before send.
// ---------------------------------------------------------------------------------------------

fn persists(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

/// Votes, timeout votes and proposals: the messages signed under the safety state.
fn is_signed(m: &Message) -> bool {
    matches!(m, Message::Vote(_) | Message::Timeout(_) | Message::Proposal(_))
}

/// A validator that leads neither view 1 nor view 2, so its view-1 vote goes out on the wire.
fn follower(c: &Cluster) -> usize {
    (0..4).find(|i| *i != c.leader(1) && *i != c.leader(2)).unwrap()
}

/// Feeds the view-1 proposal of block `b1` and its validation (valid): the replica votes.
/// Returns `b1` and the actions after the validation (the vote's persist among them).
fn vote_on_b1(c: &Cluster, replica: &mut hotstuff_core::Replica) -> (hotstuff_core::Block, Vec<Action>) {
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    replica.handle(c.input(c.leader(1), Message::Proposal(c.propose(b1.clone(), None)))).unwrap();
    let actions = drain(replica);
    assert!(actions.iter().any(|a| matches!(a, Action::ValidateBlock { hash, .. } if *hash == b1.hash())));
    replica.handle(Input::BlockValidated { hash: b1.hash(), outcome: Some(AppOutcome::default()) }).unwrap();
    (b1, drain(replica))
}

#[test]
fn vote_is_sent_only_after_its_persist_is_acknowledged() {
    let c = Cluster::new(4);
    let r = follower(&c);
    let mut replica = c.replica(r);
    assert!(!drain(&mut replica).iter().any(Action::is_send));
    let (b1, actions) = vote_on_b1(&c, &mut replica);
    let seqs = persists(&actions);
    assert_eq!(seqs.len(), 1);
    let Some(Action::Persist { safety: Some(safety), blocks, .. }) =
        actions.iter().find(|a| matches!(a, Action::Persist { .. }))
    else {
        panic!("no persist with safety state: {actions:?}");
    };
    let vote = c.vote(r, 1, b1.hash());
    assert_eq!(safety.last_vote.as_ref(), Some(&vote));
    assert_eq!(safety.highest_voted_view, View(1));
    assert_eq!(blocks, &vec![BlockRecord { block: b1.clone(), outcome: Some(AppOutcome::default()) }]);
    assert!(actions.iter().any(|a| matches!(a, Action::Event(Event::Voted { view: View(1), .. }))));
    assert!(!actions.iter().any(Action::is_send), "vote sent before persist: {actions:?}");
    // An acknowledgement of an older seq releases nothing.
    replica.handle(Input::Persisted { seq: seqs[0] - 1 }).unwrap();
    assert_eq!(replica.poll_action(), None);
    replica.handle(Input::Persisted { seq: seqs[0] }).unwrap();
    assert_eq!(
        drain(&mut replica),
        vec![Action::Send { to: c.pk(c.leader(2)), message: Message::Vote(vote) }]
    );
    // Acknowledging the same seq again is harmless and releases nothing new.
    replica.handle(Input::Persisted { seq: seqs[0] }).unwrap();
    assert_eq!(replica.poll_action(), None);
}

#[test]
fn timeout_vote_is_broadcast_only_after_its_persist_is_acknowledged() {
    let c = Cluster::new(4);
    let r = follower(&c);
    let mut replica = c.replica(r);
    let _ = drain(&mut replica);
    replica.handle(Input::TimerFired { view: View(1) }).unwrap();
    let actions = drain(&mut replica);
    let seqs = persists(&actions);
    assert_eq!(seqs.len(), 1, "{actions:?}");
    assert!(!actions.iter().any(Action::is_send), "timeout sent before persist: {actions:?}");
    let timeout = c.timeout(r, 1, c.genesis_qc());
    assert!(actions.iter().any(|a| matches!(a,
        Action::Persist { safety: Some(s), .. } if s.last_timeout.as_ref() == Some(&timeout))));
    replica.handle(Input::Persisted { seq: seqs[0] }).unwrap();
    assert_eq!(drain(&mut replica), vec![Action::Broadcast { message: Message::Timeout(timeout) }]);
}

#[test]
fn proposal_is_broadcast_only_after_its_persist_is_acknowledged() {
    let c = Cluster::new(4);
    let r = c.leader(1);
    let mut replica = c.replica(r);
    let actions = drain(&mut replica);
    let Some(&Action::ProduceBlock { view, parent, height }) =
        actions.iter().find(|a| matches!(a, Action::ProduceBlock { .. }))
    else {
        panic!("the leader of view 1 did not ask for a block: {actions:?}");
    };
    assert_eq!((view, parent, height), (View(1), c.genesis, hotstuff_core::Height(1)));
    let input = Input::BlockProduced { view, parent, payload: b"p".to_vec(), outcome: AppOutcome::default() };
    replica.handle(input).unwrap();
    let actions = drain(&mut replica);
    let seqs = persists(&actions);
    assert_eq!(seqs.len(), 1, "{actions:?}");
    assert!(!actions.iter().any(Action::is_send), "proposal sent before persist: {actions:?}");
    let block = c.block(1, 1, c.genesis_qc(), b"p");
    assert!(actions.iter().any(|a| matches!(a,
        Action::Persist { safety: Some(s), blocks, .. }
            if s.last_proposed_view == View(1) && blocks.iter().any(|b| b.block == block))));
    replica.handle(Input::Persisted { seq: seqs[0] }).unwrap();
    let released = drain(&mut replica);
    assert_eq!(sent_proposals(&released), vec![c.propose(block.clone(), None)]);
    // Its own vote goes out with it.
    assert_eq!(sent_votes(&released), vec![(Some(c.pk(c.leader(2))), c.vote(r, 1, block.hash()))]);
}

/// Votes for `b1` in view 1 from the first two validators other than `r`, fed to `replica`;
/// the actions they produced.
fn two_other_votes(
    c: &Cluster,
    replica: &mut hotstuff_core::Replica,
    r: usize,
    b1: &hotstuff_core::Block,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for i in (0..4).filter(|i| *i != r).take(2) {
        replica.handle(c.input(i, Message::Vote(c.vote(i, 1, b1.hash())))).unwrap();
        actions.extend(drain(replica));
    }
    actions
}

fn qc_formed(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Event(Event::QcFormed { .. })))
}

#[test]
fn a_leader_counts_its_own_vote_only_once_its_persist_is_acknowledged() {
    // The leader of view 2 collects the view-1 votes. Its own vote and two others are a
    // quorum of 4, but the QC (which would carry its signature) forms only once the persist of
    // the safety state its vote was signed under is acknowledged.
    let c = Cluster::new(4);
    let r = c.leader(2);
    let mut replica = c.replica(r);
    let _ = drain(&mut replica);
    let (b1, actions) = vote_on_b1(&c, &mut replica);
    let seqs = persists(&actions);
    assert_eq!(seqs.len(), 1);
    let actions = two_other_votes(&c, &mut replica, r, &b1);
    assert!(
        !qc_formed(&actions),
        "a QC with this replica's signature formed before its vote was durable: {actions:?}"
    );
    assert_eq!(replica.view(), View(1));
    replica.handle(Input::Persisted { seq: seqs[0] }).unwrap();
    let actions = drain(&mut replica);
    assert!(
        actions.iter().any(
            |a| matches!(a, Action::Event(Event::QcFormed { view: View(1), hash }) if *hash == b1.hash())
        ),
        "{actions:?}"
    );
    assert_eq!(replica.view(), View(2), "the QC took it to the view it leads");
    assert!(actions.iter().any(|a| matches!(a, Action::ProduceBlock { view: View(2), .. })), "{actions:?}");
}

#[test]
fn an_own_vote_riding_in_its_own_timeout_also_waits_for_its_persist() {
    // As above, but the leader of view 2 times out of view 1 before its vote's persist is
    // acknowledged: the vote rides in its timeout vote, and still does not count until then.
    let c = Cluster::new(4);
    let r = c.leader(2);
    let mut replica = c.replica(r);
    let _ = drain(&mut replica);
    let (b1, actions) = vote_on_b1(&c, &mut replica);
    let mut seqs = persists(&actions);
    replica.handle(Input::TimerFired { view: View(1) }).unwrap();
    let mut actions = drain(&mut replica);
    seqs.extend(persists(&actions));
    actions.extend(two_other_votes(&c, &mut replica, r, &b1));
    assert!(
        !qc_formed(&actions),
        "a QC with this replica's signature formed before its vote was durable: {actions:?}"
    );
    replica.handle(Input::Persisted { seq: *seqs.iter().max().unwrap() }).unwrap();
    assert!(qc_formed(&drain(&mut replica)), "the QC forms once the vote is durable");
}

#[test]
fn acknowledging_an_older_seq_releases_only_older_messages() {
    let c = Cluster::new(4);
    let r = follower(&c);
    let mut replica = c.replica(r);
    let _ = drain(&mut replica);
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    replica.handle(c.input(c.leader(1), Message::Proposal(c.propose(b1.clone(), None)))).unwrap();
    let _ = drain(&mut replica);
    replica.handle(Input::BlockValidated { hash: b1.hash(), outcome: Some(AppOutcome::default()) }).unwrap();
    let vote_seq = persists(&drain(&mut replica))[0];
    // Then its view times out: a second persist, and a timeout vote behind it.
    replica.handle(Input::TimerFired { view: View(1) }).unwrap();
    let actions = drain(&mut replica);
    let timeout_seq = persists(&actions)[0];
    assert!(timeout_seq > vote_seq);
    assert!(!actions.iter().any(Action::is_send));
    assert_eq!(replica.persist_progress(), (timeout_seq, 0));

    replica.handle(Input::Persisted { seq: vote_seq }).unwrap();
    let released = drain(&mut replica);
    assert_eq!(sent_votes(&released), vec![(Some(c.pk(c.leader(2))), c.vote(r, 1, b1.hash()))]);
    assert!(sent_timeouts(&released).is_empty(), "{released:?}");
    replica.handle(Input::Persisted { seq: timeout_seq }).unwrap();
    let released = drain(&mut replica);
    assert_eq!(sent_timeouts(&released), vec![c.timeout_with_vote(r, 1, c.genesis_qc(), b1.hash())]);
    assert!(sent_votes(&released).is_empty());
    assert_eq!(replica.persist_progress(), (timeout_seq, timeout_seq));
}

#[test]
fn acknowledging_an_unknown_seq_is_refused() {
    let c = Cluster::new(4);
    let mut replica = c.replica(follower(&c));
    let _ = drain(&mut replica);
    assert_rejected(&mut replica, Input::Persisted { seq: 1 }, InputError::UnknownSeq { seq: 1, last: 0 });
    replica.handle(Input::TimerFired { view: View(1) }).unwrap();
    let seq = persists(&drain(&mut replica))[0];
    assert_rejected(
        &mut replica,
        Input::Persisted { seq: seq + 1 },
        InputError::UnknownSeq { seq: seq + 1, last: seq },
    );
    assert_rejected(
        &mut replica,
        Input::Persisted { seq: u64::MAX },
        InputError::UnknownSeq { seq: u64::MAX, last: seq },
    );
    // The timeout vote is still held, and the right seq releases it.
    replica.handle(Input::Persisted { seq }).unwrap();
    assert_eq!(sent_timeouts(&drain(&mut replica)).len(), 1);
}

#[test]
fn no_signed_message_ever_precedes_its_persist_in_a_run() {
    // Drive the three-view set-up with a driver that acknowledges persists lazily, and check
    // the order of everything the replica emits: a send never comes before the acknowledgement
    // of every persist emitted before it.
    let c = Cluster::new(4);
    let r = c.leader(1);
    let mut replica = c.replica(r);
    let mut acked = 0u64;
    let mut emitted = 0u64;
    let mut step = |replica: &mut Replica, input: Option<Input>| -> Vec<Action> {
        if let Some(i) = input {
            replica.handle(i).unwrap();
        }
        let mut log = Vec::new();
        loop {
            let actions = drain(replica);
            if actions.is_empty() {
                break;
            }
            let mut answers = Vec::new();
            for a in &actions {
                match a {
                    Action::Persist { seq, .. } => {
                        assert!(*seq > emitted);
                        emitted = *seq;
                    }
                    Action::Send { message, .. } | Action::Broadcast { message } if is_signed(message) => {
                        assert_eq!(acked, emitted, "signed message sent before its persist: {message:?}");
                    }
                    Action::ProduceBlock { view, parent, .. } => answers.push(Input::BlockProduced {
                        view: *view,
                        parent: *parent,
                        payload: produced_payload(*view),
                        outcome: AppOutcome::default(),
                    }),
                    Action::ValidateBlock { hash, .. } => answers
                        .push(Input::BlockValidated { hash: *hash, outcome: Some(AppOutcome::default()) }),
                    _ => {}
                }
            }
            log.extend(actions);
            for a in answers {
                replica.handle(a).unwrap();
            }
            if emitted > acked {
                acked = emitted;
                replica.handle(Input::Persisted { seq: acked }).unwrap();
            }
        }
        log
    };
    let log = step(&mut replica, None);
    let b1 = sent_proposals(&log)[0].block.clone();
    let b2 = c.child(&b1, 2, b"b2");
    step(&mut replica, Some(c.input(c.leader(2), Message::Proposal(c.propose(b2.clone(), None)))));
    let b3 = c.child(&b2, 3, b"b3");
    step(&mut replica, Some(c.input(c.leader(3), Message::Proposal(c.propose(b3, None)))));
    step(&mut replica, Some(Input::TimerFired { view: View(3) }));
    assert!(emitted >= 4, "expected several persists, got {emitted}");
}

// ---------------------------------------------------------------------------------------------
// Bad input changes nothing.
// ---------------------------------------------------------------------------------------------

#[test]
fn proposal_from_wrong_leader_is_refused() {
    let mut s = three_views();
    let impostor = (0..4).find(|i| *i != s.l4()).unwrap();
    let mut b4 = s.b4();
    b4.proposer = s.c.pk(impostor);
    let p = s.c.propose(b4, None);
    s.reject(
        s.proposal(p),
        InputError::WrongLeader { view: View(4), expected: s.c.pk(s.l4()), got: s.c.pk(impostor) },
    );
    s.accepts_b4();
}

#[test]
fn proposal_with_bad_signature_is_refused() {
    let mut s = three_views();
    let leader = s.c.pk(s.l4());
    let bad = |source| InputError::BadSignature { signer: leader, source };
    // Signed by another validator.
    let other = (0..4).find(|i| *i != s.l4()).unwrap();
    let p = s.c.propose_signed_by(other, s.b4(), None);
    s.reject(s.proposal(p), bad(SignatureError::Invalid));
    // Signed by the leader, but as a vote (wrong kind).
    let mut p = s.c.propose(s.b4(), None);
    p.signature = s.c.vote(s.l4(), 4, s.b4().hash()).signature;
    s.reject(s.proposal(p), bad(SignatureError::Invalid));
    // Signed by the leader for another chain.
    let mut other_chain = Cluster::new(4);
    other_chain.chain = ChainId(CHAIN.0 + 1);
    let p = other_chain.propose(s.b4(), None);
    s.reject(s.proposal(p), bad(SignatureError::Invalid));
    // Signed for another block.
    let mut p = s.c.propose(s.b4(), None);
    p.signature = s.c.propose(s.c.child(&s.b3, 4, b"other"), None).signature;
    s.reject(s.proposal(p), bad(SignatureError::Invalid));
    // Garbage.
    let mut p = s.c.propose(s.b4(), None);
    p.signature = bogus_signature();
    s.reject(s.proposal(p), bad(SignatureError::Invalid));
    s.accepts_b4();
}

/// A new justify QC and the proposer's signature are verified in one batch; with both bad, the
/// error still names the proposer's signature, as when they were checked one after the other.
#[test]
fn proposal_with_bad_signature_and_bad_qc_names_the_proposer() {
    let mut s = three_views();
    let mut qc = s.c.certify(&s.b3);
    qc.signatures[0].1 = s.c.qc(2, s.b3.hash(), &[0, 1, 2]).signatures[0].1;
    let mut b4 = s.b4();
    b4.justify = qc;
    let other = (0..4).find(|i| *i != s.l4()).unwrap();
    let p = s.c.propose_signed_by(other, b4, None);
    s.reject(
        s.proposal(p),
        InputError::BadSignature { signer: s.c.pk(s.l4()), source: SignatureError::Invalid },
    );
    s.accepts_b4();
}

#[test]
fn vote_with_bad_signature_is_refused() {
    let mut s = three_views();
    // The replica leads view 5, so it collects view-4 votes.
    let voter = s.l4();
    let mut vote = s.c.vote(voter, 4, s.b4().hash());
    vote.signature = s.c.vote(voter, 3, s.b4().hash()).signature; // signed for another view
    let input = s.c.input(voter, Message::Vote(vote));
    s.reject(input, InputError::BadSignature { signer: s.c.pk(voter), source: SignatureError::Invalid });
    let mut vote = s.c.vote(voter, 4, s.b4().hash());
    vote.signature = s.c.vote((voter + 1) % 4, 4, s.b4().hash()).signature; // another voter's
    let input = s.c.input(voter, Message::Vote(vote));
    s.reject(input, InputError::BadSignature { signer: s.c.pk(voter), source: SignatureError::Invalid });
    // Control: the genuine vote is taken.
    let input = s.c.input(voter, Message::Vote(s.c.vote(voter, 4, s.b4().hash())));
    assert_eq!(s.replica.handle(input), Ok(()));
}

#[test]
fn timeout_with_bad_signature_is_refused() {
    let mut s = three_views();
    let qc = s.c.certify(&s.b2);
    let mut t = s.c.timeout(0, 3, qc.clone());
    // Signed over another high-QC view than the one it carries.
    t.signature = s.c.timeout(0, 3, s.c.certify(&s.b1)).signature;
    let input = s.c.input(0, Message::Timeout(t));
    s.reject(input, InputError::BadSignature { signer: s.c.pk(0), source: SignatureError::Invalid });
    let mut t = s.c.timeout(0, 3, qc.clone());
    t.signature = s.c.timeout(0, 4, qc.clone()).signature;
    let input = s.c.input(0, Message::Timeout(t));
    s.reject(input, InputError::BadSignature { signer: s.c.pk(0), source: SignatureError::Invalid });
    assert_eq!(s.replica.handle(s.c.input(0, Message::Timeout(s.c.timeout(0, 3, qc)))), Ok(()));
}

fn frame(chain: ChainId, message: Message) -> Vec<u8> {
    Envelope::new(chain, message).encode()
}

#[test]
fn frame_for_another_chain_is_refused() {
    let mut s = three_views();
    let from = s.c.pk(s.l4());
    let message = Message::Proposal(s.c.propose(s.b4(), None));
    let other = ChainId(CHAIN.0 ^ 0xffff);
    assert_frame_rejected(
        &mut s.replica,
        from,
        &frame(other, message.clone()),
        InputError::WrongChain { expected: CHAIN, got: other },
    );
    // Control: the same message framed for this chain is accepted.
    assert_eq!(s.replica.handle_frame(from, &frame(CHAIN, message)), Ok(()));
    assert_eq!(s.replica.view(), View(4));
}

#[test]
fn malformed_frames_are_refused() {
    let mut s = three_views();
    let from = s.c.pk(s.l4());
    let good = frame(CHAIN, Message::Proposal(s.c.propose(s.b4(), None)));
    let malformed = InputError::Decode(DecodeError::Malformed("envelope"));
    assert_frame_rejected(&mut s.replica, from, &[], malformed.clone());
    assert_frame_rejected(&mut s.replica, from, &[0xff; 16], malformed.clone());
    // Truncated anywhere.
    for len in [1, 2, 10, good.len() / 2, good.len() - 1] {
        assert_frame_rejected(&mut s.replica, from, &good[..len], malformed.clone());
    }
    // An unknown message kind.
    let mut bad_kind = good.clone();
    bad_kind[2 + 8] = 3;
    assert_frame_rejected(&mut s.replica, from, &bad_kind, malformed.clone());
    // An Option tag that is neither 0 nor 1 (the proposal's `tc`).
    let env = Envelope::new(CHAIN, Message::Proposal(s.c.propose(s.b4(), None)));
    let tc_tag = good.len() - 64 - 1;
    assert_eq!(good[tc_tag], 0, "layout assumption: tc tag before the signature");
    let mut bad_tag = good.clone();
    bad_tag[tc_tag] = 2;
    assert_frame_rejected(&mut s.replica, from, &bad_tag, malformed);
    // Another protocol version.
    let mut v2 = env.clone();
    v2.version = PROTOCOL_VERSION + 1;
    assert_frame_rejected(
        &mut s.replica,
        from,
        &v2.encode(),
        InputError::Decode(DecodeError::Version(PROTOCOL_VERSION + 1)),
    );
    assert_eq!(s.replica.handle_frame(from, &good), Ok(()));
}

#[test]
fn frame_with_trailing_bytes_is_refused() {
    let mut s = three_views();
    let from = s.c.pk(s.l4());
    let good = frame(CHAIN, Message::Proposal(s.c.propose(s.b4(), None)));
    for tail in [&[0u8][..], &[1], &[0, 0, 0, 0], &good[..]] {
        let mut bytes = good.clone();
        bytes.extend_from_slice(tail);
        assert_frame_rejected(
            &mut s.replica,
            from,
            &bytes,
            InputError::Decode(DecodeError::Malformed("envelope")),
        );
    }
    assert_eq!(s.replica.handle_frame(from, &good), Ok(()));
}

#[test]
fn oversized_frame_and_fields_are_refused() {
    let mut s = three_views();
    let from = s.c.pk(s.l4());
    let limits = Limits::default();
    let huge = vec![0u8; limits.max_frame + 1];
    assert_frame_rejected(
        &mut s.replica,
        from,
        &huge,
        InputError::Decode(DecodeError::TooLarge { len: limits.max_frame + 1, max: limits.max_frame }),
    );
    // A payload over the limit, inside a frame under it.
    let b4 = s.c.child(&s.b3, 4, &vec![7u8; limits.max_payload + 1]);
    let message = Message::Proposal(s.c.propose(b4, None));
    let expected = InputError::Decode(DecodeError::FieldTooLarge {
        field: "block.payload",
        len: limits.max_payload + 1,
        max: limits.max_payload,
    });
    assert_frame_rejected(&mut s.replica, from, &frame(CHAIN, message.clone()), expected.clone());
    s.reject(Input::Message { from, message }, expected);
    // Too many signers in a certificate.
    let mut qc = s.c.certify(&s.b3);
    qc.signatures = (0..=limits.max_signers)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_be_bytes());
            (hotstuff_core::PublicKey(k), bogus_signature())
        })
        .collect();
    let t = s.c.timeout(0, 3, qc);
    s.reject(
        s.c.input(0, Message::Timeout(t)),
        InputError::Decode(DecodeError::FieldTooLarge {
            field: "qc.signatures",
            len: limits.max_signers + 1,
            max: limits.max_signers,
        }),
    );
    s.accepts_b4();
}

#[test]
fn stale_messages_are_refused() {
    let mut s = three_views();
    let stale = |view| InputError::Stale { view: View(view), current: View(3) };
    // b1 is committed: a proposal for its view is stale (even the very same proposal).
    let p1 = s.c.propose_signed_by(s.r, s.b1.clone(), None);
    s.reject(s.proposal(p1), stale(1));
    let other_b1 = s.c.block(1, 1, s.c.genesis_qc(), b"too late");
    s.reject(s.proposal(s.c.propose(other_b1, None)), stale(1));
    // A vote for view 1 (its QC would lead to view 2, behind us).
    let v = s.c.vote(1, 1, s.b1.hash());
    s.reject(s.c.input(1, Message::Vote(v)), stale(1));
    // A timeout vote for a past view.
    let t = s.c.timeout(1, 2, s.c.certify(&s.b1));
    s.reject(s.c.input(1, Message::Timeout(t)), stale(2));
    s.accepts_b4();
}

#[test]
fn messages_too_far_ahead_are_refused() {
    let mut s = three_views();
    let window = s.c.config().view_window;
    let far = 3 + window + 1;
    let too_far = InputError::TooFarAhead { view: View(far), current: View(3) };
    // Proposals have no window (they prove their view with a certificate, which is how a
    // replica that was away catches up): a far proposal without a TC fails on the TC check.
    let b = s.c.block(far, 4, s.c.certify(&s.b3), b"far");
    s.reject(s.proposal(s.c.propose(b, None)), InputError::MissingTc { view: View(far) });
    let v = s.c.vote(0, far, s.b3.hash());
    s.reject(s.c.input(0, Message::Vote(v)), too_far.clone());
    let t = s.c.timeout(0, far, s.c.certify(&s.b2));
    s.reject(s.c.input(0, Message::Timeout(t)), too_far);
    s.accepts_b4();
}

#[test]
fn duplicate_messages_are_refused() {
    let mut s = three_views();
    // The proposal of a block already in the tree.
    let p3 = s.c.propose(s.b3.clone(), None);
    s.reject(s.proposal(p3), InputError::Duplicate);
    let p2 = s.c.propose(s.b2.clone(), None);
    s.reject(s.proposal(p2), InputError::Duplicate);
    // A vote counted already.
    let v = s.c.vote(0, 4, s.b4().hash());
    assert_eq!(s.replica.handle(s.c.input(0, Message::Vote(v.clone()))), Ok(()));
    assert_eq!(s.replica.poll_action(), None);
    s.reject(s.c.input(0, Message::Vote(v)), InputError::Duplicate);
    // A timeout vote counted already.
    let t = s.c.timeout(0, 3, s.c.certify(&s.b2));
    assert_eq!(s.replica.handle(s.c.input(0, Message::Timeout(t.clone()))), Ok(()));
    let _ = run(&mut s.replica);
    s.reject(s.c.input(0, Message::Timeout(t)), InputError::Duplicate);
    s.accepts_b4();
}

#[test]
fn equivocating_proposal_is_refused() {
    let mut s = three_views();
    let l3 = s.c.leader(3);
    let b3x = s.c.child(&s.b2, 3, b"a second block for view 3");
    s.reject(
        s.proposal(s.c.propose(b3x, None)),
        InputError::Equivocation { signer: s.c.pk(l3), view: View(3) },
    );
    // Also with a different parent.
    let b3y = s.c.block(3, 2, s.c.certify(&s.b1), b"fork");
    let tc = s.c.tc(2, &[(0, s.c.certify(&s.b1)), (1, s.c.certify(&s.b1)), (2, s.c.certify(&s.b1))]);
    s.reject(
        s.proposal(s.c.propose(b3y, Some(tc))),
        InputError::Equivocation { signer: s.c.pk(l3), view: View(3) },
    );
    s.accepts_b4();
}

#[test]
fn equivocating_votes_are_refused() {
    let mut s = three_views();
    let v = s.c.vote(1, 4, s.b4().hash());
    assert_eq!(s.replica.handle(s.c.input(1, Message::Vote(v))), Ok(()));
    assert_eq!(s.replica.poll_action(), None);
    let v2 = s.c.vote(1, 4, BlockHash([9; 32]));
    s.reject(s.c.input(1, Message::Vote(v2)), InputError::Equivocation { signer: s.c.pk(1), view: View(4) });
    // Timeout votes: one validator, one view, two different high QCs.
    let t = s.c.timeout(2, 3, s.c.certify(&s.b2));
    assert_eq!(s.replica.handle(s.c.input(2, Message::Timeout(t))), Ok(()));
    let _ = run(&mut s.replica);
    let t2 = s.c.timeout(2, 3, s.c.certify(&s.b1));
    s.reject(
        s.c.input(2, Message::Timeout(t2)),
        InputError::Equivocation { signer: s.c.pk(2), view: View(3) },
    );
    s.accepts_b4();
}

#[test]
fn vote_to_replica_not_leading_next_view_is_refused() {
    let mut s = three_views();
    assert_ne!(s.c.leader(4), s.r);
    let v = s.c.vote(1, 3, s.b3.hash());
    s.reject(s.c.input(1, Message::Vote(v)), InputError::NotNextLeader { view: View(3) });
    let v = s.c.vote(1, 5, s.b3.hash());
    assert_ne!(s.c.leader(6), s.r);
    s.reject(s.c.input(1, Message::Vote(v)), InputError::NotNextLeader { view: View(5) });
    s.accepts_b4();
}

#[test]
fn messages_from_non_validators_are_refused() {
    let mut s = three_views();
    let o = outsider();
    let sig = o.sign(
        CHAIN,
        SignKind::Vote,
        View(4),
        &hotstuff_core::crypto::vote_subject(&s.b4().hash(), Epoch(0)),
    );
    let v = hotstuff_core::Vote {
        epoch: Epoch(0),
        view: View(4),
        block: s.b4().hash(),
        voter: o.public(),
        signature: sig,
    };
    s.reject(
        Input::Message { from: o.public(), message: Message::Vote(v) },
        InputError::NotAValidator(o.public()),
    );
    let qc = s.c.certify(&s.b2);
    let sig =
        o.sign(CHAIN, SignKind::Timeout, View(3), &hotstuff_core::crypto::timeout_subject(qc.view, Epoch(0)));
    let t = hotstuff_core::TimeoutVote {
        epoch: Epoch(0),
        view: View(3),
        high_qc: qc,
        voter: o.public(),
        signature: sig,
        last_tc: None,
        vote: None,
    };
    s.reject(
        Input::Message { from: o.public(), message: Message::Timeout(t) },
        InputError::NotAValidator(o.public()),
    );
    s.accepts_b4();
}

/// The view-4 proposal with `justify` in place of b3's QC.
fn b4_with(s: &Setup, justify: QuorumCertificate) -> Input {
    let mut b4 = s.b4();
    b4.justify = justify;
    s.proposal(s.c.propose(b4, None))
}

#[test]
fn proposals_with_bad_qc_are_refused() {
    let mut s = three_views();
    let good = s.c.certify(&s.b3);
    // Too few signers.
    let qc = s.c.qc(3, s.b3.hash(), &[0, 1]);
    s.reject(b4_with(&s, qc), InputError::BadCertificate(CertificateError::NoQuorum { have: 2, need: 3 }));
    let qc = QuorumCertificate { signatures: Vec::new(), ..good.clone() };
    s.reject(b4_with(&s, qc), InputError::BadCertificate(CertificateError::NoQuorum { have: 0, need: 3 }));
    // Unsorted and duplicated signers are not canonical (refused while checking the message).
    let mut qc = good.clone();
    qc.signatures.reverse();
    s.reject(b4_with(&s, qc), InputError::Decode(DecodeError::NotCanonical("qc.signatures")));
    let mut qc = s.c.qc(3, s.b3.hash(), &[0, 1]);
    qc.signatures.insert(1, qc.signatures[0]);
    s.reject(b4_with(&s, qc), InputError::Decode(DecodeError::NotCanonical("qc.signatures")));
    // A signer outside the validator set (with a valid signature of its own).
    let o = outsider();
    let mut qc = good.clone();
    qc.signatures.push((
        o.public(),
        o.sign(CHAIN, SignKind::Vote, View(3), &hotstuff_core::crypto::vote_subject(&s.b3.hash(), Epoch(0))),
    ));
    qc.signatures.sort_by_key(|(k, _)| *k);
    s.reject(b4_with(&s, qc), InputError::BadCertificate(CertificateError::UnknownSigner(o.public())));
    // One bad signature among good ones, for each position.
    for i in 0..3 {
        let mut qc = good.clone();
        qc.signatures[i].1 = s.c.qc(2, s.b3.hash(), &[0, 1, 2]).signatures[i].1;
        s.reject(
            b4_with(&s, qc),
            InputError::BadCertificate(CertificateError::Signature(SignatureError::Invalid)),
        );
    }
    // Signatures of a QC for another block.
    let mut qc = s.c.qc(3, BlockHash([3; 32]), &[0, 1, 2]);
    qc.block = s.b3.hash();
    s.reject(
        b4_with(&s, qc),
        InputError::BadCertificate(CertificateError::Signature(SignatureError::Invalid)),
    );
    s.accepts_b4();
}

#[test]
fn timeouts_with_bad_qc_are_refused() {
    let mut s = three_views();
    let t = s.c.timeout(0, 3, s.c.qc(2, s.b2.hash(), &[1, 2]));
    s.reject(
        s.c.input(0, Message::Timeout(t)),
        InputError::BadCertificate(CertificateError::NoQuorum { have: 2, need: 3 }),
    );
    // A view-0 QC that is not this chain's genesis QC.
    let fake_genesis = QuorumCertificate::genesis(s.b2.hash());
    let t = s.c.timeout(0, 3, fake_genesis);
    s.reject(s.c.input(0, Message::Timeout(t)), InputError::BadCertificate(CertificateError::BadGenesis));
    // A high QC that is not below the timeout's view.
    let t = s.c.timeout(0, 3, s.c.certify(&s.b3));
    s.reject(s.c.input(0, Message::Timeout(t)), InputError::BadTimeout);
    // A TC attached as the way into the view, for another view than the previous one.
    let qc2 = s.c.certify(&s.b2);
    let tc2 = s.c.tc(2, &[(0, s.c.certify(&s.b1)), (1, s.c.certify(&s.b1)), (2, s.c.certify(&s.b1))]);
    let mut t = s.c.timeout(0, 4, qc2.clone());
    t.last_tc = Some(tc2);
    s.reject(s.c.input(0, Message::Timeout(t)), InputError::BadTimeout);
    // An attached TC that does not verify.
    let mut t = s.c.timeout(0, 4, qc2.clone());
    t.last_tc = Some(s.c.tc(3, &[(0, qc2.clone()), (1, qc2.clone())]));
    s.reject(
        s.c.input(0, Message::Timeout(t)),
        InputError::BadCertificate(CertificateError::NoQuorum { have: 2, need: 3 }),
    );
    assert_eq!(s.replica.handle(s.c.input(0, Message::Timeout(s.c.timeout(0, 3, s.c.genesis_qc())))), Ok(()));
}

#[test]
fn timeout_vote_carrying_the_tc_of_the_previous_view_moves_the_replica() {
    let mut s = three_views();
    let qc2 = s.c.certify(&s.b2);
    let tc3 = s.c.tc(3, &[(0, qc2.clone()), (1, qc2.clone()), (2, qc2.clone())]);
    let mut t = s.c.timeout(0, 4, qc2);
    t.last_tc = Some(tc3.clone());
    let input = s.c.input(0, Message::Timeout(t));
    let log = feed(&mut s.replica, input);
    assert_eq!(s.replica.view(), View(4));
    assert_eq!(s.replica.last_tc(), Some(&tc3));
    assert!(log.iter().any(|a| matches!(
        a,
        Action::Event(Event::ViewEntered { view: View(4), reason: hotstuff_core::ViewChange::Tc, .. })
    )));
    // The replica's own timeout vote for view 4 then carries the same TC.
    let log = feed(&mut s.replica, Input::TimerFired { view: View(4) });
    let t = sent_timeouts(&log);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].last_tc.as_ref(), Some(&tc3));
}

#[test]
fn proposals_with_bad_tc_are_refused() {
    let mut s = three_views();
    let qc2 = s.c.certify(&s.b2);
    let b4 = s.c.block(4, 3, qc2.clone(), b"after a timeout");
    let good = s.c.tc(3, &[(0, qc2.clone()), (1, qc2.clone()), (2, qc2.clone())]);
    // Too few signers.
    let tc = s.c.tc(3, &[(0, qc2.clone()), (1, qc2.clone())]);
    s.reject(
        s.proposal(s.c.propose(b4.clone(), Some(tc))),
        InputError::BadCertificate(CertificateError::NoQuorum { have: 2, need: 3 }),
    );
    // High QC inconsistent with the reported views.
    let mut tc = good.clone();
    tc.high_qc = s.c.certify(&s.b1);
    s.reject(
        s.proposal(s.c.propose(b4.clone(), Some(tc))),
        InputError::BadCertificate(CertificateError::InconsistentHighQc),
    );
    // A reported view that is forged (signature over another one).
    let mut tc = good.clone();
    tc.signatures[1].1 = View(1);
    tc.high_qc = qc2.clone();
    s.reject(
        s.proposal(s.c.propose(b4.clone(), Some(tc))),
        InputError::BadCertificate(CertificateError::Signature(SignatureError::Invalid)),
    );
    // Unsorted signers.
    let mut tc = good.clone();
    tc.signatures.swap(0, 2);
    s.reject(
        s.proposal(s.c.propose(b4.clone(), Some(tc))),
        InputError::Decode(DecodeError::NotCanonical("tc.signatures")),
    );
    // Control: with the good TC the block is accepted (and voted for).
    let input = s.proposal(s.c.propose(b4.clone(), Some(good)));
    feed(&mut s.replica, input);
    assert_eq!(s.replica.view(), View(4));
    assert_eq!(s.replica.safety().last_vote, Some(s.c.vote(s.r, 4, b4.hash())));
}

#[test]
fn proposal_without_the_tc_it_needs_is_refused() {
    let mut s = three_views();
    let qc2 = s.c.certify(&s.b2);
    let b4 = s.c.block(4, 3, qc2.clone(), b"skips view 3");
    s.reject(s.proposal(s.c.propose(b4.clone(), None)), InputError::MissingTc { view: View(4) });
    // A TC for the wrong view does not justify it either.
    let tc2 = s.c.tc(2, &[(0, s.c.certify(&s.b1)), (1, s.c.certify(&s.b1)), (2, s.c.certify(&s.b1))]);
    s.reject(s.proposal(s.c.propose(b4, Some(tc2.clone()))), InputError::MissingTc { view: View(4) });
    // A consecutive block carrying a TC of another view is malformed.
    s.reject(
        s.proposal(s.c.propose(s.b4(), Some(tc2))),
        InputError::MalformedBlock("TC is not for the previous view"),
    );
    s.accepts_b4();
}

#[test]
fn proposal_with_bad_structure_is_refused() {
    let mut s = three_views();
    let qc3 = s.c.certify(&s.b3);
    // Height not parent + 1.
    for h in [3, 5, 0, u64::MAX] {
        let b = s.c.block(4, h, qc3.clone(), b"bad height");
        s.reject(
            s.proposal(s.c.propose(b, None)),
            InputError::BadHeight { expected: hotstuff_core::Height(4), got: hotstuff_core::Height(h) },
        );
    }
    // Justify QC not below the block's view.
    let b = s.c.block(4, 4, s.c.qc(4, s.b3.hash(), &[0, 1, 2]), b"self justified");
    s.reject(
        s.proposal(s.c.propose(b, None)),
        InputError::MalformedBlock("justify QC not below the block's view"),
    );
    // A QC whose view is not its block's view.
    let b = s.c.block(4, 3, s.c.qc(3, s.b2.hash(), &[0, 1, 2]), b"mislabelled parent");
    s.reject(
        s.proposal(s.c.propose(b, None)),
        InputError::MalformedBlock("justify QC view differs from the parent's view"),
    );
    s.accepts_b4();
}

#[test]
fn proposal_with_unknown_parent_is_refused() {
    let mut s = three_views();
    // A certified parent at or below the committed view that is not the committed block: it
    // can never be fetched, so the proposal is refused outright.
    let unknown = BlockHash([0xab; 32]);
    let qc = s.c.qc(1, unknown, &[0, 1, 3]);
    let tc = s.c.tc(3, &[(0, qc.clone()), (1, qc.clone()), (2, qc.clone())]);
    let b = s.c.block(4, 2, qc, b"orphan");
    s.reject(s.proposal(s.c.propose(b, Some(tc))), InputError::UnknownParent(unknown));
    s.accepts_b4();
}

#[test]
fn unexpected_app_replies_are_refused() {
    let mut s = three_views();
    // No block was asked for.
    let produced = Input::BlockProduced {
        view: View(3),
        parent: s.b2.hash(),
        payload: b"unasked".to_vec(),
        outcome: AppOutcome::default(),
    };
    s.reject(produced, InputError::UnexpectedReply);
    // b3 was validated already.
    s.reject(
        Input::BlockValidated { hash: s.b3.hash(), outcome: Some(AppOutcome::default()) },
        InputError::UnexpectedReply,
    );
    s.reject(Input::BlockValidated { hash: s.b3.hash(), outcome: None }, InputError::UnexpectedReply);
    // An unknown block, and a committed one.
    let h = BlockHash([5; 32]);
    s.reject(Input::BlockValidated { hash: h, outcome: None }, InputError::UnknownBlock(h));
    s.reject(
        Input::BlockValidated { hash: s.b1.hash(), outcome: Some(AppOutcome::default()) },
        InputError::UnknownBlock(s.b1.hash()),
    );
    s.accepts_b4();
}

#[test]
fn leader_refuses_wrong_or_oversized_block_production() {
    let c = Cluster::new(4);
    let r = c.leader(1);
    let mut config = Config::new(CHAIN);
    config.limits.max_frame = 1 << 16;
    config.limits.max_payload = 1 << 10;
    let mut replica = Replica::new(config, c.key(r), c.pacemaker, c.recovered_genesis()).unwrap();
    let actions = drain(&mut replica);
    assert!(actions.contains(&Action::ProduceBlock {
        view: View(1),
        parent: c.genesis,
        height: hotstuff_core::Height(1)
    }));
    let produced = |view, parent, len| Input::BlockProduced {
        view: View(view),
        parent,
        payload: vec![1; len],
        outcome: AppOutcome::default(),
    };
    assert_rejected(
        &mut replica,
        produced(1, c.genesis, 1025),
        InputError::PayloadTooLarge { len: 1025, max: 1024 },
    );
    assert_rejected(&mut replica, produced(2, c.genesis, 1), InputError::UnexpectedReply);
    assert_rejected(&mut replica, produced(1, BlockHash([1; 32]), 1), InputError::UnexpectedReply);
    // The request is still open: the right reply is taken, once.
    assert_eq!(replica.handle(produced(1, c.genesis, 1024)), Ok(()));
    let _ = run(&mut replica);
    assert_eq!(replica.safety().last_proposed_view, View(1));
    assert_rejected(&mut replica, produced(1, c.genesis, 1), InputError::UnexpectedReply);
}

#[test]
fn certificate_verification_reports_each_defect() {
    let c = Cluster::new(4);
    let h = BlockHash([4; 32]);
    let good = c.qc(5, h, &[0, 1, 2]);
    assert_eq!(verify_qc(&good, CHAIN, &c.set, &c.genesis), Ok(()));
    assert_eq!(verify_qc(&c.qc(5, h, &[3, 1, 2, 0]), CHAIN, &c.set, &c.genesis), Ok(()));
    assert_eq!(verify_qc(&c.genesis_qc(), CHAIN, &c.set, &c.genesis), Ok(()));
    let mut unsorted = good.clone();
    unsorted.signatures.swap(0, 1);
    assert_eq!(verify_qc(&unsorted, CHAIN, &c.set, &c.genesis), Err(CertificateError::NotCanonical));
    let mut dup = good.clone();
    dup.signatures[1] = dup.signatures[0];
    assert_eq!(verify_qc(&dup, CHAIN, &c.set, &c.genesis), Err(CertificateError::NotCanonical));
    assert_eq!(
        verify_qc(&c.qc(5, h, &[2, 3]), CHAIN, &c.set, &c.genesis),
        Err(CertificateError::NoQuorum { have: 2, need: 3 })
    );
    assert_eq!(
        verify_qc(&good, ChainId(1), &c.set, &c.genesis),
        Err(CertificateError::Signature(SignatureError::Invalid))
    );
    let mut other_view = good.clone();
    other_view.view = View(6);
    assert_eq!(
        verify_qc(&other_view, CHAIN, &c.set, &c.genesis),
        Err(CertificateError::Signature(SignatureError::Invalid))
    );
    let fake_genesis = QuorumCertificate { epoch: Epoch(0), view: View(0), block: h, signatures: Vec::new() };
    assert_eq!(verify_qc(&fake_genesis, CHAIN, &c.set, &c.genesis), Err(CertificateError::BadGenesis));
    let signed_genesis =
        QuorumCertificate { epoch: Epoch(0), view: View(0), ..c.qc(0, c.genesis, &[0, 1, 2]) };
    assert_eq!(verify_qc(&signed_genesis, CHAIN, &c.set, &c.genesis), Err(CertificateError::BadGenesis));

    let tc = c.tc(6, &[(0, good.clone()), (1, c.qc(4, h, &[1, 2, 3])), (3, c.genesis_qc())]);
    assert_eq!(verify_tc(&tc, CHAIN, &c.set, &c.set, &c.genesis, false), Ok(()));
    let mut stale_report = c.tc(5, &[(0, c.qc(4, h, &[1, 2, 3])), (1, c.genesis_qc()), (2, c.genesis_qc())]);
    stale_report.signatures[1].1 = View(5); // reports a QC of the TC's own view
    assert_eq!(
        verify_tc(&stale_report, CHAIN, &c.set, &c.set, &c.genesis, false),
        Err(CertificateError::InconsistentHighQc)
    );
    let mut bad_high_qc = tc.clone();
    bad_high_qc.high_qc.signatures[0].1 = bogus_signature();
    assert_eq!(
        verify_tc(&bad_high_qc, CHAIN, &c.set, &c.set, &c.genesis, false),
        Err(CertificateError::Signature(SignatureError::Invalid))
    );
    // The embedded QC's signatures are skipped only when the caller knows it is valid.
    assert_eq!(verify_tc(&bad_high_qc, CHAIN, &c.set, &c.set, &c.genesis, true), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Recovery.
// ---------------------------------------------------------------------------------------------

/// A follower that voted for `b1` in view 1, its persisted state, and the blocks it persisted.
fn voted_in_view_1(
    c: &Cluster,
) -> (usize, Block, hotstuff_core::Vote, hotstuff_core::SafetyState, Vec<BlockRecord>) {
    let r = follower(c);
    let mut replica = c.replica(r);
    run(&mut replica);
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    let log = feed(&mut replica, c.input(c.leader(1), Message::Proposal(c.propose(b1.clone(), None))));
    let vote = c.vote(r, 1, b1.hash());
    assert_eq!(sent_votes(&log), vec![(Some(c.pk(c.leader(2))), vote.clone())]);
    let safety = last_persisted_safety(&log).unwrap();
    assert_eq!(safety, *replica.safety());
    let blocks = log
        .iter()
        .flat_map(|a| match a {
            Action::Persist { blocks, .. } => blocks.clone(),
            _ => Vec::new(),
        })
        .collect();
    (r, b1, vote, safety, blocks)
}

#[test]
fn recovered_replica_resends_its_vote_and_never_votes_for_another_block() {
    let c = Cluster::new(4);
    let (r, b1, vote, safety, _) = voted_in_view_1(&c);
    // The store kept the safety state but not the block.
    let recovered = Recovered {
        genesis: c.genesis,
        safety: safety.clone(),
        committed: c.genesis_tip(),
        epoch: EpochState::genesis(c.genesis, c.set.clone()),
        blocks: Vec::new(),
        recent: Vec::new(),
    };
    let mut replica = c.replica_from(r, recovered);
    assert_eq!(replica.view(), View(1));
    let log = run(&mut replica);
    assert_eq!(
        sent_votes(&log),
        vec![(Some(c.pk(c.leader(2))), vote.clone())],
        "the durable vote must be re-sent as is: {log:?}"
    );
    // A different block for view 1 (an equivocating leader) is stored, but not voted for.
    let other = c.block(1, 1, c.genesis_qc(), b"another block for view 1");
    let log = feed(&mut replica, c.input(c.leader(1), Message::Proposal(c.propose(other.clone(), None))));
    assert!(replica.block(&other.hash()).is_some());
    assert!(sent_votes(&log).is_empty(), "voted twice in view 1: {log:?}");
    assert!(!log.iter().any(|a| matches!(a, Action::Event(Event::Voted { .. }))));
    assert_eq!(replica.safety().last_vote.as_ref(), Some(&vote));
    assert_eq!(replica.safety().highest_voted_view, View(1));
    // The original block is now the equivocation.
    assert_rejected(
        &mut replica,
        c.input(c.leader(1), Message::Proposal(c.propose(b1, None))),
        InputError::Equivocation { signer: c.pk(c.leader(1)), view: View(1) },
    );
    // Its view-1 timeout still reports the same (genesis) QC, with the one vote it cast.
    let log = feed(&mut replica, Input::TimerFired { view: View(1) });
    assert_eq!(sent_timeouts(&log), vec![c.timeout_with_vote(r, 1, c.genesis_qc(), vote.block)]);
    assert_eq!(safety.locked_qc, *replica.locked_qc());
}

#[test]
fn recovered_replica_with_its_blocks_refuses_equivocating_proposal() {
    let c = Cluster::new(4);
    let (r, b1, vote, safety, blocks) = voted_in_view_1(&c);
    assert_eq!(blocks.len(), 1);
    let recovered = Recovered {
        genesis: c.genesis,
        safety,
        committed: c.genesis_tip(),
        epoch: EpochState::genesis(c.genesis, c.set.clone()),
        blocks,
        recent: Vec::new(),
    };
    let mut replica = c.replica_from(r, recovered);
    assert!(matches!(replica.block_tree().get(&b1.hash()).map(|e| &e.validity), Some(Validity::Valid(_))));
    let log = run(&mut replica);
    assert_eq!(sent_votes(&log), vec![(Some(c.pk(c.leader(2))), vote)]);
    let other = c.block(1, 1, c.genesis_qc(), b"another block for view 1");
    assert_rejected(
        &mut replica,
        c.input(c.leader(1), Message::Proposal(c.propose(other, None))),
        InputError::Equivocation { signer: c.pk(c.leader(1)), view: View(1) },
    );
    assert_rejected(
        &mut replica,
        c.input(c.leader(1), Message::Proposal(c.propose(b1, None))),
        InputError::Duplicate,
    );
}

#[test]
fn recovered_replica_resends_its_timeout_vote() {
    let c = Cluster::new(4);
    let r = follower(&c);
    let mut replica = c.replica(r);
    run(&mut replica);
    let log = feed(&mut replica, Input::TimerFired { view: View(1) });
    let timeout = c.timeout(r, 1, c.genesis_qc());
    assert_eq!(sent_timeouts(&log), vec![timeout.clone()]);
    let safety = last_persisted_safety(&log).unwrap();
    let recovered = Recovered { safety, ..c.recovered_genesis() };
    let mut replica = c.replica_from(r, recovered);
    let log = run(&mut replica);
    assert_eq!(sent_timeouts(&log), vec![timeout]);
    // And it does not vote in the view it timed out of.
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    let log = feed(&mut replica, c.input(c.leader(1), Message::Proposal(c.propose(b1, None))));
    assert!(sent_votes(&log).is_empty(), "{log:?}");
}

#[test]
fn recovery_rejects_inconsistent_state() {
    let c = Cluster::new(4);
    let mut safety = c.recovered_genesis().safety;
    safety.view = View(0);
    let recovered = Recovered { safety, ..c.recovered_genesis() };
    assert!(Replica::new(c.config(), c.key(0), c.pacemaker, recovered).is_err());
    let mut safety = c.recovered_genesis().safety;
    safety.locked_qc = c.qc(3, BlockHash([1; 32]), &[0, 1, 2]);
    let recovered = Recovered { safety, ..c.recovered_genesis() };
    assert!(Replica::new(c.config(), c.key(0), c.pacemaker, recovered).is_err());
}

// ---------------------------------------------------------------------------------------------
// The commit rule.
// ---------------------------------------------------------------------------------------------

#[test]
fn block_commits_only_when_its_consecutive_child_is_certified() {
    let c = Cluster::new(4);
    let r = c.leader(4);
    assert!((1..=3).all(|v| c.leader(v) != r));
    let mut replica = c.replica(r);
    run(&mut replica);
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    let b2 = c.child(&b1, 2, b"b2");
    let b3 = c.child(&b2, 3, b"b3");
    let propose = |b: &Block| c.input(c.index(&b.proposer), Message::Proposal(c.propose(b.clone(), None)));

    let log = feed(&mut replica, propose(&b1));
    assert!(committed_blocks(&log).is_empty());
    // b2 carries QC(b1): b1 is certified, but its child is not yet.
    let log = feed(&mut replica, propose(&b2));
    assert!(committed_blocks(&log).is_empty(), "{log:?}");
    assert_eq!(replica.committed_height(), hotstuff_core::Height(0));
    assert_eq!(*replica.high_qc(), c.certify(&b1));
    // b3 carries QC(b2), and b2 (view 2) is b1's (view 1) consecutive child: b1 commits.
    let log = feed(&mut replica, propose(&b3));
    let committed = committed_blocks(&log);
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].block, b1);
    assert_eq!(committed[0].hash, b1.hash());
    assert_eq!(committed[0].certificate, c.certify(&b1));
    assert_eq!(committed[0].outcome, AppOutcome::default());
    assert!(log.iter().any(|a| matches!(a,
        Action::Event(Event::Committed { view: View(1), hash, .. }) if *hash == b1.hash())));
    assert_eq!(replica.committed().hash, b1.hash());
    assert_eq!(replica.committed_height(), hotstuff_core::Height(1));
    assert_eq!(replica.block_tree().root().view, View(1));
    assert!(replica.block(&b1.hash()).is_none());
    assert!(replica.block(&b2.hash()).is_some() && replica.block(&b3.hash()).is_some());
    // The replica leads view 4: its own vote and two more for b3 form QC(b3), committing b2.
    let mut commits = Vec::new();
    for i in (0..4).filter(|i| *i != r).take(2) {
        commits.extend(committed_blocks(&feed(
            &mut replica,
            c.input(i, Message::Vote(c.vote(i, 3, b3.hash()))),
        )));
    }
    assert_eq!(commits.iter().map(|b| b.hash).collect::<Vec<_>>(), vec![b2.hash()]);
    assert_eq!(commits[0].certificate, b3.justify);
    assert_eq!(replica.high_qc().view, View(3));
    assert_eq!(replica.view(), View(4));
}

#[test]
fn non_consecutive_chain_waits_for_a_later_consecutive_pair() {
    let c = Cluster::new(4);
    // The replica leads view 2, which times out; it must lead none of 1, 3, 4, 5.
    let r = c.leader(2);
    assert!([1, 3, 4, 5].iter().all(|v| c.leader(*v) != r));
    let mut replica = c.replica(r);
    run(&mut replica);
    let propose = |b: &Block, tc: Option<TimeoutCertificate>| {
        c.input(c.index(&b.proposer), Message::Proposal(c.propose(b.clone(), tc)))
    };
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    feed(&mut replica, propose(&b1, None));
    // View 2 produced no block: a TC for view 2 reports QC(b1) as the highest.
    let qc1 = c.certify(&b1);
    let tc2 = c.tc(2, &[(0, qc1.clone()), (1, qc1.clone()), (3, c.genesis_qc())]);
    // b3 extends b1 across the gap.
    let b3 = c.child(&b1, 3, b"b3");
    let log = feed(&mut replica, propose(&b3, Some(tc2)));
    assert!(committed_blocks(&log).is_empty());
    assert_eq!(replica.view(), View(3));
    assert_eq!(sent_votes(&log).len(), 1, "votes for b3 via the TC arm: {log:?}");
    // b4 certifies b3, but b3 (view 3) is not b1's (view 1) consecutive child: nothing commits.
    let b4 = c.child(&b3, 4, b"b4");
    let log = feed(&mut replica, propose(&b4, None));
    assert!(committed_blocks(&log).is_empty(), "committed across a view gap: {log:?}");
    assert_eq!(replica.committed_height(), hotstuff_core::Height(0));
    assert_eq!(replica.view(), View(4));
    // b5 certifies b4, the consecutive child of b3: b3 commits, and b1 with it.
    let b5 = c.child(&b4, 5, b"b5");
    let log = feed(&mut replica, propose(&b5, None));
    let committed = committed_blocks(&log);
    assert_eq!(committed.iter().map(|b| b.hash).collect::<Vec<_>>(), vec![b1.hash(), b3.hash()]);
    assert_eq!(committed[0].certificate, qc1);
    assert_eq!(committed[1].certificate, c.certify(&b3));
    assert_eq!(committed.iter().map(|b| b.block.height.0).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(replica.committed().hash, b3.hash());
    assert_eq!(replica.block_tree().len(), 2);
}

#[test]
fn commit_waits_for_outstanding_validation() {
    let c = Cluster::new(4);
    let r = c.leader(4);
    let mut replica = c.replica(r);
    run(&mut replica);
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    let b2 = c.child(&b1, 2, b"b2");
    let b3 = c.child(&b2, 3, b"b3");
    // The proposals arrive, but the app has not answered for b1 yet.
    for b in [&b1, &b2, &b3] {
        replica.handle(c.input(c.index(&b.proposer), Message::Proposal(c.propose(b.clone(), None)))).unwrap();
    }
    let actions = drain(&mut replica);
    assert_eq!(
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ValidateBlock { hash, .. } => Some(*hash),
                _ => None,
            })
            .collect::<Vec<_>>(),
        vec![b1.hash()],
        "children wait for their parent's verdict"
    );
    assert!(committed_blocks(&actions).is_empty(), "committed an unvalidated block");
    assert_eq!(replica.committed_height(), hotstuff_core::Height(0));
    for a in &actions {
        if let Action::Persist { seq, .. } = a {
            replica.handle(Input::Persisted { seq: *seq }).unwrap();
        }
    }
    let log =
        feed(&mut replica, Input::BlockValidated { hash: b1.hash(), outcome: Some(AppOutcome::default()) });
    assert_eq!(committed_blocks(&log).iter().map(|b| b.hash).collect::<Vec<_>>(), vec![b1.hash()]);
    assert_eq!(replica.committed().hash, b1.hash());
    // No vote for the stale blocks of views 1 and 2; b3 (the current view) got one.
    assert_eq!(replica.safety().highest_voted_view, View(3));
}

// ---------------------------------------------------------------------------------------------
// The leader rule.
// ---------------------------------------------------------------------------------------------

#[test]
fn leader_entering_by_tc_proposes_on_a_qc_that_arrives_while_the_app_builds() {
    let c = Cluster::new(4);
    let r = c.leader(4);
    assert!((1..=3).all(|v| c.leader(v) != r));
    let mut replica = c.replica(r);
    run(&mut replica);
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    let b2 = c.child(&b1, 2, b"b2");
    let b3 = c.child(&b2, 3, b"b3");
    for b in [&b1, &b2, &b3] {
        feed(&mut replica, c.input(c.index(&b.proposer), Message::Proposal(c.propose(b.clone(), None))));
    }
    assert_eq!(replica.view(), View(3));
    // View 3 times out at the others before their votes for b3 reach the replica (which leads
    // view 4): it enters view 4 by the TC and asks for a block on its high QC, QC(b2).
    let others: Vec<usize> = (0..4).filter(|i| *i != r).collect();
    let mut actions = Vec::new();
    for &i in &others {
        replica.handle(c.input(i, Message::Timeout(c.timeout(i, 3, c.certify(&b2))))).unwrap();
        actions.extend(drain(&mut replica));
    }
    assert_eq!(replica.view(), View(4));
    assert!(actions.contains(&Action::ProduceBlock {
        view: View(4),
        parent: b2.hash(),
        height: hotstuff_core::Height(3)
    }));
    // Meanwhile the late votes for b3 arrive and form QC(b3), a higher QC.
    for &i in others.iter().take(2) {
        replica.handle(c.input(i, Message::Vote(c.vote(i, 3, b3.hash())))).unwrap();
        actions.extend(drain(&mut replica));
    }
    assert_eq!(replica.high_qc().block, b3.hash());
    for a in &actions {
        if let Action::Persist { seq, .. } = a {
            replica.handle(Input::Persisted { seq: *seq }).unwrap();
        }
    }
    actions.extend(drain(&mut replica));
    // The app now answers, in order, every request it got (the first one on b2). The core
    // builds blocks on its high QC, so it may refuse the answer on b2, but then it must have
    // asked again on QC(b3) rather than drop its turn.
    let requests: Vec<(View, BlockHash)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::ProduceBlock { view, parent, .. } => Some((*view, *parent)),
            _ => None,
        })
        .collect();
    assert_eq!(requests.first(), Some(&(View(4), b2.hash())));
    for (view, parent) in requests {
        let payload = format!("on {parent:?}").into_bytes();
        let answer = Input::BlockProduced { view, parent, payload, outcome: AppOutcome::default() };
        if let Err(e) = replica.handle(answer) {
            assert_eq!(e, InputError::UnexpectedReply);
        }
        actions.extend(run(&mut replica));
    }
    let proposals = sent_proposals(&actions);
    assert_eq!(proposals.len(), 1, "the leader of view 4 never proposed: {actions:?}");
    let p = &proposals[0];
    assert_eq!(p.block.view, View(4));
    // Either block is a valid proposal for view 4: on QC(b3) directly, or on QC(b2) with the TC.
    let consecutive = p.block.justify.view.next() == View(4) && p.tc.is_none();
    let via_tc =
        p.tc.as_ref().is_some_and(|tc| tc.view == View(3) && p.block.justify.view >= tc.max_high_qc_view());
    assert!(consecutive || via_tc, "{p:?}");
    assert!([b2.hash(), b3.hash()].contains(&p.block.parent()));
    assert_eq!(replica.safety().last_proposed_view, View(4));
}
