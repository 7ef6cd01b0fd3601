//! Recovery from a store written partly in the background (`Action::Persist` lets a driver
//! write other proposers' blocks after `Persisted`): a block recovered without its parent is
//! kept, served by hash and joins the tree once the parent arrives; a block recovered with an
//! outcome is valid only on a valid parent.

use crate::common;

use common::*;
use hotstuff_core::{
    Action, AppOutcome, BlockRecord, EpochState, Input, Message, Recovered, SafetyState, SyncTimer, Validity,
    View,
};

/// The replica's durable state after it voted up to `high`: the high QC certifies `high`.
fn safety_with_high_qc(c: &Cluster, high: &hotstuff_core::Block) -> SafetyState {
    let mut s = SafetyState::genesis(c.genesis);
    s.high_qc = c.certify(high);
    s.view = View(high.view.0 + 1);
    s.highest_voted_view = high.view;
    s
}

fn validity(r: &hotstuff_core::Replica, b: &hotstuff_core::Block) -> Option<Validity> {
    r.block_tree().get(&b.hash()).map(|e| e.validity.clone())
}

fn validated(log: &[Action]) -> Vec<hotstuff_core::BlockHash> {
    log.iter()
        .filter_map(|a| match a {
            Action::ValidateBlock { hash, .. } => Some(*hash),
            _ => None,
        })
        .collect()
}

#[test]
fn a_recovered_outcome_counts_only_on_a_valid_parent() {
    let c = Cluster::new(4);
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    let b2 = c.child(&b1, 2, b"b2");
    let b3 = c.child(&b2, 3, b"b3");
    // b1's outcome was not written before the crash, b2's was (b2 is this replica's own block,
    // written before it was sent), b3 was stored without one.
    let recovered = Recovered {
        genesis: c.genesis,
        safety: safety_with_high_qc(&c, &b2),
        committed: c.genesis_tip(),
        epoch: EpochState::genesis(c.genesis, c.set.clone()),
        blocks: vec![
            BlockRecord { block: b3.clone(), outcome: None },
            BlockRecord { block: b2.clone(), outcome: Some(AppOutcome::default()) },
            BlockRecord { block: b1.clone(), outcome: None },
        ],
        recent: Vec::new(),
    };
    let me = c.index(&b2.proposer);
    let mut r = c.replica_from(me, recovered);
    // Only b1 may be validated now: b2's state is read through b1's updates, which are not
    // known yet, and b3's through b2's.
    assert_eq!(validity(&r, &b2), Some(Validity::Waiting));
    let log = drain(&mut r);
    assert_eq!(validated(&log), vec![b1.hash()], "{log:?}");
    // Once b1 is valid, b2 is validated again, then b3.
    r.handle(Input::BlockValidated { hash: b1.hash(), outcome: Some(AppOutcome::default()) }).unwrap();
    assert_eq!(validated(&drain(&mut r)), vec![b2.hash()]);
    r.handle(Input::BlockValidated { hash: b2.hash(), outcome: Some(AppOutcome::default()) }).unwrap();
    assert_eq!(validated(&drain(&mut r)), vec![b3.hash()]);
}

#[test]
fn a_block_recovered_without_its_parent_is_served_fetched_down_and_joined() {
    let c = Cluster::new(4);
    let b1 = c.block(1, 1, c.genesis_qc(), b"b1");
    let b2 = c.child(&b1, 2, b"b2");
    let me = c.index(&b2.proposer);
    assert_ne!(c.index(&b1.proposer), me, "the test needs b1 from another proposer");
    // Only this replica's own block b2 was durable; b1 (another proposer's) was lost.
    let recovered = Recovered {
        genesis: c.genesis,
        safety: safety_with_high_qc(&c, &b2),
        committed: c.genesis_tip(),
        epoch: EpochState::genesis(c.genesis, c.set.clone()),
        blocks: vec![BlockRecord { block: b2.clone(), outcome: Some(AppOutcome::default()) }],
        recent: Vec::new(),
    };
    let mut r = c.replica_from(me, recovered);
    assert!(r.block(&b2.hash()).is_none(), "b2 cannot join the tree without b1");
    drain(&mut r);

    // A peer that lost b2 in the same crash gets it by hash.
    let peer = (0..4).find(|i| *i != me).unwrap();
    r.handle(c.input(peer, Message::BlockRequest(b2.hash()))).unwrap();
    let served: Vec<Message> = sent(&drain(&mut r)).into_iter().map(|(_, m)| m).collect();
    assert_eq!(served, vec![Message::Block(b2.clone())]);

    // b1 is fetched (it is certified by b2's justify), from the QC's signers and from b1's
    // proposer, the one replica whose store surely holds it.
    r.handle(Input::SyncTimerFired { timer: SyncTimer::Fetch }).unwrap();
    let asked: Vec<_> = sent(&drain(&mut r))
        .into_iter()
        .filter(|(_, m)| *m == Message::BlockRequest(b1.hash()))
        .filter_map(|(to, _)| to)
        .collect();
    assert!(asked.contains(&b1.proposer), "b1's proposer not asked: {asked:?}");
    assert!(!asked.contains(&c.pk(me)));

    // b1 arrives: both join the tree, and b1 is validated, then b2.
    r.handle(c.input(c.index(&b1.proposer), Message::Block(b1.clone()))).unwrap();
    assert!(r.block(&b1.hash()).is_some() && r.block(&b2.hash()).is_some());
    let log = drain(&mut r);
    assert_eq!(validated(&log), vec![b1.hash()], "{log:?}");
    r.handle(Input::BlockValidated { hash: b1.hash(), outcome: Some(AppOutcome::default()) }).unwrap();
    assert_eq!(validated(&drain(&mut r)), vec![b2.hash()]);
}
