//! The embedding API: error kinds, the drain rule's getter, broadcast peers, full-length hash
//! display, the epoch in `Event::Committed`.

use crate::common;

use common::*;
use hotstuff_core::{
    Action, BlockHash, Epoch, Event, Input, InputError, InputErrorKind, Message, PublicKey, SyncRequest,
    SyncResponse, View,
};

/// Votes go to the leader of the next view: the index of the replica that collects view 1's
/// votes.
fn collector(c: &Cluster) -> usize {
    c.leader(2)
}

#[test]
fn duplicate_vote_is_stale_bad_signature_is_invalid() {
    let c = Cluster::new(4);
    let me = collector(&c);
    let mut r = c.replica(me);
    drain(&mut r);
    let block = c.block(1, 1, c.genesis_qc(), b"x");
    let voter = (me + 1) % 4;
    let vote = c.vote(voter, 1, block.hash());
    // The block is unknown to the replica, but the vote is counted all the same.
    r.handle(c.input(voter, Message::Vote(vote.clone()))).unwrap();
    drain(&mut r);
    let err = r.handle(c.input(voter, Message::Vote(vote.clone()))).unwrap_err();
    assert_eq!(err, InputError::Duplicate);
    assert!(err.is_stale() && !err.is_invalid());
    assert!(!r.has_actions(), "a refused input releases nothing");

    let mut forged = c.vote((me + 2) % 4, 1, block.hash());
    forged.signature = bogus_signature();
    let err = r.handle(c.input((me + 2) % 4, Message::Vote(forged))).unwrap_err();
    assert!(matches!(err, InputError::BadSignature { .. }), "{err}");
    assert_eq!(err.kind(), InputErrorKind::Invalid);

    let err = r.handle(Input::Persisted { seq: 1_000 }).unwrap_err();
    assert_eq!(err.kind(), InputErrorKind::Local);
}

#[test]
fn every_variant_has_a_kind_the_docs_name() {
    let stale = [
        InputError::Stale { view: View(1), current: View(2) },
        InputError::Duplicate,
        InputError::TooFarAhead { view: View(100), current: View(2) },
        InputError::WrongEpoch { expected: Epoch(1), got: Epoch(0) },
        InputError::NotNextLeader { view: View(3) },
        InputError::UnknownParent(BlockHash::default()),
        InputError::TreeFull,
        InputError::UnexpectedSync(PublicKey::default()),
        InputError::UnexpectedBlock(BlockHash::default()),
        InputError::UnexpectedReply,
        InputError::UnknownBlock(BlockHash::default()),
    ];
    for e in &stale {
        assert!(e.is_stale(), "{e:?}");
    }
    let invalid = [
        InputError::NotAValidator(PublicKey::default()),
        InputError::Equivocation { signer: PublicKey::default(), view: View(1) },
        InputError::MalformedBlock("x"),
        InputError::BadTimeout,
        InputError::BadSyncResponse("x"),
        InputError::BadFetchedBlock("x"),
        InputError::MissingTc { view: View(3) },
    ];
    for e in &invalid {
        assert_eq!(e.kind(), InputErrorKind::Invalid, "{e:?}");
    }
    assert_eq!(InputError::PayloadTooLarge { len: 2, max: 1 }.kind(), InputErrorKind::Local);
}

#[test]
fn has_actions_follows_the_drain() {
    let c = Cluster::new(4);
    let mut r = c.replica(0);
    assert!(r.has_actions(), "a new replica asks for its view timer");
    drain(&mut r);
    assert!(!r.has_actions());
    r.handle(Input::TimerFired { view: View(1) }).unwrap();
    assert!(r.has_actions(), "a timeout vote and its persist are waiting");
    drain(&mut r);
    assert!(!r.has_actions());
}

#[test]
fn broadcast_peers_are_the_set_plus_listeners_without_self_or_repeats() {
    let c = Cluster::new(4);
    let r = c.replica(1);
    let listener = outsider().public();
    let listeners = [listener, c.pk(2), listener, c.pk(1)];
    let peers: Vec<PublicKey> = r.broadcast_peers(&listeners).collect();
    let mut expected: Vec<PublicKey> = (0..4).filter(|i| *i != 1).map(|i| c.pk(i)).collect();
    expected.push(listener);
    assert_eq!(peers, expected);
    assert_eq!(r.broadcast_peers(&[]).count(), 3);
}

#[test]
fn hashes_and_keys_print_in_full_on_request() {
    let h = BlockHash([0xab; 32]);
    assert_eq!(format!("{h}"), "ab".repeat(6));
    assert_eq!(format!("{h:#}"), "ab".repeat(32));
    assert_eq!(h.to_hex(), "ab".repeat(32));
    let k = PublicKey([0x01; 32]);
    assert_eq!(k.to_hex().len(), 64);
    assert_eq!(format!("{k:?}"), "01".repeat(6));
}

#[test]
fn committed_event_carries_the_epoch() {
    let c = Cluster::new(1);
    let mut r = c.replica(0);
    // One validator certifies its own blocks at once: answer a bounded number of rounds.
    let mut actions = Vec::new();
    for _ in 0..10 {
        let round = drain(&mut r);
        for a in &round {
            let input = match a {
                Action::ProduceBlock { view, parent, .. } => Input::BlockProduced {
                    view: *view,
                    parent: *parent,
                    payload: produced_payload(*view),
                    outcome: hotstuff_core::AppOutcome::default(),
                },
                Action::Persist { seq, .. } => Input::Persisted { seq: *seq },
                _ => continue,
            };
            r.handle(input).unwrap();
        }
        actions.extend(round);
    }
    let committed: Vec<Epoch> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(Event::Committed { epoch, .. }) => Some(*epoch),
            _ => None,
        })
        .collect();
    assert!(!committed.is_empty());
    assert!(committed.iter().all(|e| *e == Epoch(0)));
}

#[test]
fn wire_types_are_reachable_from_the_crate_root() {
    let req = SyncRequest { id: 1, from_height: hotstuff_core::Height(1), max_blocks: 4 };
    let _ = Message::SyncRequest(req);
    let resp = SyncResponse { id: 1, blocks: Vec::new(), certificate: None };
    let _ = Message::SyncResponse(resp);
    let _: Option<hotstuff_core::HistoryEntry> = None;
    let _ = hotstuff_core::SignKind::Vote;
}
