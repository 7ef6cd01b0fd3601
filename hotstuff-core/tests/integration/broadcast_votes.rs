//! `Config::broadcast_votes`: every validator sends its vote to every validator and counts the
//! votes it receives, so a replica that does not lead the next view forms the QC itself and
//! commits one network delay sooner. Off, a vote to a replica that does not lead the next view
//! is refused as before.

use crate::common;

use common::*;
use hotstuff_core::crypto::SignatureError;
use hotstuff_core::{
    Action, AppOutcome, Block, Config, Event, Input, InputError, Keypair, Message, Replica, View,
};

fn broadcast_config(c: &Cluster) -> Config {
    Config { broadcast_votes: true, ..c.config() }
}

fn broadcast_replica(c: &Cluster, i: usize) -> Replica {
    Replica::new(broadcast_config(c), c.key(i), c.pacemaker, c.recovered_genesis()).unwrap()
}

fn propose(c: &Cluster, b: &Block) -> Input {
    c.input(c.index(&b.proposer), Message::Proposal(c.propose(b.clone(), None)))
}

/// Leader-only outputs: asking the app for a block, or sending a proposal.
fn leads(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::ProduceBlock { .. })) || !sent_proposals(actions).is_empty()
}

fn qcs_formed(actions: &[Action]) -> Vec<View> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(Event::QcFormed { view, .. }) => Some(*view),
            _ => None,
        })
        .collect()
}

/// The replica that leads view 4 (none of views 1-3) follows views 1-3. With broadcast on, its
/// vote goes to every other validator (after its persist), it forms QC(b1) and QC(b2) from the
/// votes it receives, and b1 commits on the votes for b2, before the proposal of b3 (which
/// carries QC(b2)) exists. It never acts as a leader before view 4.
#[test]
fn non_leader_forms_the_qc_and_commits_without_the_next_proposal() {
    let c = Cluster::new(4);
    let r = c.leader(4);
    assert!((1..=3).all(|v| c.leader(v) != r));
    let others: Vec<usize> = (0..4).filter(|i| *i != r).collect();
    let mut replica = broadcast_replica(&c, r);
    assert!(!leads(&run(&mut replica)));
    let b = chain(&c, 3);
    let (b1, b2, b3) = (&b[0], &b[1], &b[2]);

    // Its vote for b1 goes to the three others, none before the persist of its safety state.
    replica.handle(propose(&c, b1)).unwrap();
    let actions = drain(&mut replica);
    assert!(!actions.iter().any(Action::is_send));
    replica.handle(Input::BlockValidated { hash: b1.hash(), outcome: Some(AppOutcome::default()) }).unwrap();
    let actions = drain(&mut replica);
    assert!(!actions.iter().any(Action::is_send), "vote sent before its persist: {actions:?}");
    let seq = persists_in(&actions);
    replica.handle(Input::Persisted { seq }).unwrap();
    let mut sent = sent_votes(&drain(&mut replica));
    sent.sort_by_key(|(to, _)| *to);
    let mut expected: Vec<_> = others.iter().map(|i| (Some(c.pk(*i)), c.vote(r, 1, b1.hash()))).collect();
    expected.sort_by_key(|(to, _)| *to);
    assert_eq!(sent, expected, "one send per other validator, the next leader among them");

    // Its own vote and two more form QC(b1) here, though leader(2) is another replica.
    let log = feed(&mut replica, c.input(others[0], Message::Vote(c.vote(others[0], 1, b1.hash()))));
    assert!(qcs_formed(&log).is_empty(), "two votes of four are no quorum");
    assert_eq!(replica.view(), View(1));
    let log = feed(&mut replica, c.input(others[1], Message::Vote(c.vote(others[1], 1, b1.hash()))));
    assert_eq!(qcs_formed(&log), vec![View(1)]);
    assert_eq!(replica.high_qc().view, View(1));
    assert_eq!(replica.high_qc().block, b1.hash());
    assert_eq!(replica.view(), View(2), "the formed QC moves the view like a received one");
    assert_eq!(replica.locked_qc().view, View(0), "the lock rises only when voting");
    assert!(!leads(&log), "forming a QC does not make a non-leader propose: {log:?}");
    assert!(committed_blocks(&log).is_empty());
    // Once view 1's QC formed, further votes for it are dropped unchecked (Ok, nothing
    // changes, no second QC): the fourth vote, a repeat of it, and one with a bad signature.
    let mut forged = c.vote(others[2], 1, b1.hash());
    forged.signature = c.vote(others[1], 1, b1.hash()).signature;
    let late = c.vote(others[2], 1, b1.hash());
    for vote in [late.clone(), late, forged] {
        let before = snapshot(&replica);
        assert_eq!(replica.handle(c.input(others[2], Message::Vote(vote))), Ok(()));
        assert_eq!(snapshot(&replica), before, "a late vote changed the replica");
        assert!(drain(&mut replica).is_empty(), "a late vote produced an action");
    }

    // b2 (carrying QC(b1)) arrives; it votes; the votes for b2 commit b1 at once.
    let log = feed(&mut replica, propose(&c, b2));
    assert_eq!(sent_votes(&log).len(), 3);
    assert!(committed_blocks(&log).is_empty());
    feed(&mut replica, c.input(others[0], Message::Vote(c.vote(others[0], 2, b2.hash()))));
    let log = feed(&mut replica, c.input(others[1], Message::Vote(c.vote(others[1], 2, b2.hash()))));
    assert_eq!(qcs_formed(&log), vec![View(2)]);
    let committed = committed_blocks(&log);
    assert_eq!(committed.len(), 1, "{log:?}");
    assert_eq!(committed[0].hash, b1.hash());
    assert_eq!(committed[0].certificate.block, b1.hash());
    assert_eq!(replica.committed().hash, b1.hash());
    assert_eq!(replica.view(), View(3));
    assert!(!leads(&log));

    // The proposal of b3 (carrying a QC(b2) with other signers) is still taken in and voted
    // for; b1 does not commit twice.
    let log = feed(&mut replica, propose(&c, b3));
    assert!(committed_blocks(&log).is_empty());
    assert_eq!(sent_votes(&log).len(), 3);
    assert!(replica.block(&b3.hash()).is_some());
    // The votes for b3 move it into view 4, which it leads: now it asks for a block.
    feed(&mut replica, c.input(others[0], Message::Vote(c.vote(others[0], 3, b3.hash()))));
    let log = feed(&mut replica, c.input(others[1], Message::Vote(c.vote(others[1], 3, b3.hash()))));
    assert_eq!(committed_blocks(&log).iter().map(|b| b.hash).collect::<Vec<_>>(), vec![b2.hash()]);
    assert_eq!(replica.view(), View(4));
    assert_eq!(sent_proposals(&log).len(), 1, "the leader of view 4 proposes: {log:?}");
    assert_eq!(sent_proposals(&log)[0].block.justify.view, View(3));
}

/// With broadcast off (the default), the same vote to a replica that does not lead the next
/// view is refused and changes nothing; with it on, the vote is counted.
#[test]
fn vote_to_non_leader_is_refused_only_with_broadcast_off() {
    let c = Cluster::new(4);
    let r = c.leader(4);
    let voter = (0..4).find(|i| *i != r).unwrap();
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    for on in [false, true] {
        let config = Config { broadcast_votes: on, ..c.config() };
        let mut replica = Replica::new(config, c.key(r), c.pacemaker, c.recovered_genesis()).unwrap();
        run(&mut replica);
        feed(&mut replica, propose(&c, &b1));
        let vote = c.input(voter, Message::Vote(c.vote(voter, 1, b1.hash())));
        if on {
            feed(&mut replica, vote);
        } else {
            assert_rejected(&mut replica, vote, InputError::NotNextLeader { view: View(1) });
        }
    }
}

/// With broadcast on, every other check still applies at a non-leader: epoch-independent
/// refusals (stale, too far ahead, not a validator, bad signature, equivocation), each leaving
/// the replica unchanged.
#[test]
fn broadcast_votes_keep_every_other_check() {
    let c = Cluster::new(4);
    let r = c.leader(4);
    let others: Vec<usize> = (0..4).filter(|i| *i != r).collect();
    let mut replica = broadcast_replica(&c, r);
    run(&mut replica);
    let b = chain(&c, 3);
    for blk in &b {
        feed(&mut replica, propose(&c, blk));
    }
    assert_eq!(replica.view(), View(3));
    assert_eq!(replica.committed().hash, b[0].hash());
    let o = outsider();
    let outsider_vote =
        hotstuff_core::test_util::vote(&o, c.chain, hotstuff_core::Epoch(0), View(3), b[2].hash());
    assert_rejected(
        &mut replica,
        Input::Message { from: o.public(), message: Message::Vote(outsider_vote) },
        InputError::NotAValidator(o.public()),
    );
    let v = others[0];
    assert_rejected(
        &mut replica,
        c.input(v, Message::Vote(c.vote(v, 1, b[0].hash()))),
        InputError::Stale { view: View(1), current: View(3) },
    );
    let far = 3 + replica.config().view_window + 1;
    assert_rejected(
        &mut replica,
        c.input(v, Message::Vote(c.vote(v, far, b[2].hash()))),
        InputError::TooFarAhead { view: View(far), current: View(3) },
    );
    let mut forged = c.vote(v, 3, b[2].hash());
    forged.signature = bogus_signature();
    assert!(matches!(
        replica.handle(c.input(v, Message::Vote(forged))),
        Err(InputError::BadSignature { .. })
    ));
    assert_eq!(replica.poll_action(), None);
    feed(&mut replica, c.input(v, Message::Vote(c.vote(v, 3, b[2].hash()))));
    assert_rejected(
        &mut replica,
        c.input(v, Message::Vote(c.vote(v, 3, b[1].hash()))),
        InputError::Equivocation { signer: c.pk(v), view: View(3) },
    );
}

/// A listener (no voting power) with broadcast on is sent no votes and counts none.
#[test]
fn listener_refuses_votes_with_broadcast_on() {
    let c = Cluster::new(4);
    let key = Keypair::from_secret(&outsider().secret());
    let mut listener = Replica::new(broadcast_config(&c), key, c.pacemaker, c.recovered_genesis()).unwrap();
    run(&mut listener);
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    let log = feed(&mut listener, propose(&c, &b1));
    assert!(sent_votes(&log).is_empty(), "a listener does not vote");
    assert_rejected(
        &mut listener,
        c.input(0, Message::Vote(c.vote(0, 1, b1.hash()))),
        InputError::NotNextLeader { view: View(1) },
    );
}

/// A cluster of four broadcast replicas wired to each other (every send delivered at once, in
/// order) commits a chain, every replica forming each QC, and all commit the same blocks.
#[test]
fn four_broadcast_replicas_agree() {
    let c = Cluster::new(4);
    let mut replicas: Vec<Replica> = (0..4).map(|i| broadcast_replica(&c, i)).collect();
    let mut queue: std::collections::VecDeque<(usize, usize, Message)> = Default::default();
    let mut committed: Vec<Vec<hotstuff_core::BlockHash>> = vec![Vec::new(); 4];
    let mut formed = vec![0usize; 4];
    let step = |i: usize,
                log: Vec<Action>,
                queue: &mut std::collections::VecDeque<(usize, usize, Message)>,
                committed: &mut Vec<Vec<hotstuff_core::BlockHash>>,
                formed: &mut Vec<usize>| {
        committed[i].extend(committed_blocks(&log).iter().map(|b| b.hash));
        formed[i] += qcs_formed(&log).len();
        for (to, m) in sent(&log) {
            match to {
                Some(to) => queue.push_back((i, c.index(&to), m)),
                None => (0..4).filter(|j| *j != i).for_each(|j| queue.push_back((i, j, m.clone()))),
            }
        }
    };
    for (i, r) in replicas.iter_mut().enumerate() {
        let log = run(r);
        step(i, log, &mut queue, &mut committed, &mut formed);
    }
    let mut steps = 0;
    while let Some((from, to, m)) = queue.pop_front() {
        steps += 1;
        if steps > 20_000 || committed.iter().all(|c| c.len() >= 20) {
            break;
        }
        // Late or repeated messages may be refused (stale, duplicate); the rest is accepted.
        if replicas[to].handle(c.input(from, m)).is_ok() {
            let log = run(&mut replicas[to]);
            step(to, log, &mut queue, &mut committed, &mut formed);
        }
    }
    let shortest = committed.iter().map(Vec::len).min().unwrap();
    assert!(shortest >= 20, "commits per replica: {:?}", committed.iter().map(Vec::len).collect::<Vec<_>>());
    for c in &committed {
        assert_eq!(c[..shortest], committed[0][..shortest]);
    }
    assert!(formed.iter().all(|f| *f >= 20), "every replica forms the QCs: {formed:?}");
}

/// The seq of the (single) `Persist` among `actions`.
fn persists_in(actions: &[Action]) -> u64 {
    let seqs: Vec<u64> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs.len(), 1, "{actions:?}");
    seqs[0]
}

/// A replica counts its own vote only once the safety state it was signed under is durable
/// (as its sends leave only then): two other votes and its unacknowledged own vote form no QC;
/// the acknowledgement forms it.
#[test]
fn own_vote_counts_only_once_durable() {
    let c = Cluster::new(4);
    let r = c.leader(4);
    let others: Vec<usize> = (0..4).filter(|i| *i != r).collect();
    let mut replica = broadcast_replica(&c, r);
    run(&mut replica);
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    replica.handle(propose(&c, &b1)).unwrap();
    drain(&mut replica);
    replica.handle(Input::BlockValidated { hash: b1.hash(), outcome: Some(AppOutcome::default()) }).unwrap();
    let seq = persists_in(&drain(&mut replica));
    for i in &others[..2] {
        replica.handle(c.input(*i, Message::Vote(c.vote(*i, 1, b1.hash())))).unwrap();
        assert!(qcs_formed(&drain(&mut replica)).is_empty(), "QC formed on a vote not yet durable");
    }
    assert_eq!(replica.view(), View(1));
    replica.handle(Input::Persisted { seq }).unwrap();
    let actions = drain(&mut replica);
    assert_eq!(qcs_formed(&actions), vec![View(1)]);
    assert_eq!(sent_votes(&actions).len(), 3, "the vote leaves with the same acknowledgement");
    assert_eq!(replica.view(), View(2));
}

/// A proposal whose justify QC this replica formed itself from broadcast votes takes the
/// one-by-one path (the QC is known; only the proposer's signature is verified, strictly): a
/// forged signature is still refused, naming the proposer, and the genuine proposal is accepted.
#[test]
fn proposal_carrying_a_qc_formed_here_still_has_its_signature_checked() {
    let c = Cluster::new(4);
    let r = c.leader(4);
    let others: Vec<usize> = (0..4).filter(|i| *i != r).collect();
    let mut replica = broadcast_replica(&c, r);
    run(&mut replica);
    let b = chain(&c, 2);
    let b1 = &b[0];
    feed(&mut replica, propose(&c, b1)); // validated, persisted, voted
    for i in &others[..2] {
        feed(&mut replica, c.input(*i, Message::Vote(c.vote(*i, 1, b1.hash()))));
    }
    assert_eq!(replica.high_qc().view, View(1), "QC(b1) formed here");
    // b2 carries exactly the QC this replica formed (same signers, same digest).
    let mut b2 = b[1].clone();
    b2.justify = replica.high_qc().clone();
    let leader2 = c.index(&b2.proposer);
    let forger = others.iter().copied().find(|i| *i != leader2).unwrap();
    let forged = c.input(leader2, Message::Proposal(c.propose_signed_by(forger, b2.clone(), None)));
    assert_rejected(
        &mut replica,
        forged,
        InputError::BadSignature { signer: b2.proposer, source: SignatureError::Invalid },
    );
    replica.handle(propose(&c, &b2)).unwrap();
    assert!(replica.block(&b2.hash()).is_some());
}
