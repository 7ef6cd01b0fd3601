//! Unit tests of the block-sync triggers, the avoidance of bad sync servers (and its expiry),
//! and the core's own rules for validator-set changes, through the public API only.

use crate::common;

use common::*;
use hotstuff_core::message::SyncResponse;
use hotstuff_core::{
    Action, AppOutcome, Event, Input, InputError, Message, PublicKey, Replica, SyncTimer,
    ValidatorSetUpdates, View,
};

fn replica_with_margin(c: &Cluster, i: usize, margin: u64) -> Replica {
    let mut config = c.config();
    config.sync_margin = margin;
    Replica::new(config, c.key(i), c.pacemaker, c.recovered_genesis()).unwrap()
}

#[test]
fn sync_starts_only_for_a_certificate_more_than_the_margin_ahead() {
    let c = Cluster::new(4);
    let me = follower(&c);
    let mut r = replica_with_margin(&c, me, 3);
    run(&mut r);
    let blocks = chain(&c, 6);
    // A proposal for view 3 certifies view 2: 2 views above everything this replica has (genesis,
    // view 0), within the margin of 3: no sync.
    let p3 = c.propose(blocks[2].clone(), None);
    let from3 = c.leader(3);
    r.handle(c.input(from3, Message::Proposal(p3))).unwrap();
    assert!(sync_requests(&run(&mut r)).is_empty(), "synced within the margin");
    // A proposal for view 6 certifies view 5: beyond the margin: ask its sender.
    let p6 = c.propose(blocks[5].clone(), None);
    let from6 = c.leader(6);
    r.handle(c.input(from6, Message::Proposal(p6))).unwrap();
    let requests = sync_requests(&run(&mut r));
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].0, c.pk(from6));
    assert_eq!(requests[0].1.from_height.0, 1);
}

#[test]
fn no_progress_for_the_configured_time_starts_sync() {
    let c = Cluster::new(4);
    let me = follower(&c);
    let mut r = c.replica(me);
    let first = run(&mut r);
    // The no-progress timer is armed at start with the configured period.
    let period = c.config().sync_no_progress;
    assert!(first.contains(&Action::SetSyncTimer { timer: SyncTimer::NoProgress, after: period }));
    // Nothing committed since the start: the first firing asks a peer and re-arms.
    r.handle(Input::SyncTimerFired { timer: SyncTimer::NoProgress }).unwrap();
    let a = run(&mut r);
    assert!(a.contains(&Action::Event(Event::NoProgress { height: hotstuff_core::Height(0) })), "{a:?}");
    assert_eq!(sync_requests(&a).len(), 1, "{a:?}");
    assert!(a.contains(&Action::SetSyncTimer { timer: SyncTimer::NoProgress, after: period }));
    let first = sync_requests(&a)[0].0;
    // Still nothing (the request went unanswered): it gives that request up and asks the next
    // peer, even though no view timer fired in between.
    r.handle(Input::SyncTimerFired { timer: SyncTimer::NoProgress }).unwrap();
    let a = run(&mut r);
    assert!(a.iter().any(|x| matches!(x, Action::Event(Event::NoProgress { .. }))), "{a:?}");
    let again = sync_requests(&a);
    assert_eq!(again.len(), 1, "{a:?}");
    assert_ne!(again[0].0, first, "asked the silent peer again");
    // Progress in between (blocks commit): the next firing is quiet.
    let blocks = chain(&c, 4);
    for b in &blocks {
        let _ = r.handle(c.input(c.index(&b.proposer), Message::Proposal(c.propose(b.clone(), None))));
        run(&mut r);
    }
    assert!(r.committed_height().0 >= 1, "blocks committed");
    r.handle(Input::SyncTimerFired { timer: SyncTimer::NoProgress }).unwrap();
    let a = run(&mut r);
    assert!(!a.iter().any(|x| matches!(x, Action::Event(Event::NoProgress { .. }))), "{a:?}");
}

/// A server that sends a response with a bad certificate is avoided: the next request goes
/// elsewhere even when it is the preferred peer; a timer for another generation does not lift
/// the avoidance; the timer for its own generation does, and the server is asked again.
#[test]
fn a_bad_sync_server_is_avoided_until_its_own_timer_fires() {
    let c = Cluster::new(4);
    let me = follower(&c);
    let mut r = c.replica(me);
    run(&mut r);
    let blocks = chain(&c, 6);
    let server = c.leader(6);
    r.handle(c.input(server, Message::Proposal(c.propose(blocks[5].clone(), None)))).unwrap();
    let requests = sync_requests(&run(&mut r));
    let (to, request) = requests.last().cloned().expect("a sync request");
    assert_eq!(to, c.pk(server));

    // Answer with the right blocks but a forged certificate.
    let mut cert = c.certify(&blocks[4]);
    cert.signatures[0].1 = bogus_signature();
    let bad = SyncResponse { id: request.id, blocks: blocks[..5].to_vec(), certificate: Some(cert) };
    r.handle(c.input(server, Message::SyncResponse(bad))).unwrap();
    let a = run(&mut r);
    assert!(
        a.iter().any(
            |x| matches!(x, Action::Event(Event::SyncPeerAvoided { peer, .. }) if *peer == c.pk(server))
        ),
        "{a:?}"
    );
    let generation = a
        .iter()
        .find_map(|x| match x {
            Action::SetSyncTimer { timer: SyncTimer::Avoid { peer, generation }, after }
                if *peer == c.pk(server) =>
            {
                assert_eq!(*after, c.config().sync_avoid);
                Some(*generation)
            }
            _ => None,
        })
        .expect("an avoidance timer");
    assert_eq!(r.avoided_sync_peers().copied().collect::<Vec<_>>(), vec![c.pk(server)]);
    assert_eq!(r.committed_height().0, 0, "nothing of the bad response was taken in");
    // The replica asked someone else at once.
    let retry = sync_requests(&a);
    assert_eq!(retry.len(), 1);
    assert_ne!(retry[0].0, c.pk(server));

    // A timer of another generation does not lift it (expiry does not come early) ...
    r.handle(Input::SyncTimerFired {
        timer: SyncTimer::Avoid { peer: c.pk(server), generation: generation + 1 },
    })
    .unwrap();
    run(&mut r);
    assert_eq!(r.avoided_sync_peers().count(), 1);
    // ... its own timer does (expiry comes).
    r.handle(Input::SyncTimerFired { timer: SyncTimer::Avoid { peer: c.pk(server), generation } }).unwrap();
    run(&mut r);
    assert_eq!(r.avoided_sync_peers().count(), 0);

    // Once the outstanding request times out, the formerly avoided server may be asked again.
    let good = SyncResponse {
        id: retry[0].1.id,
        blocks: blocks[..5].to_vec(),
        certificate: Some(c.certify(&blocks[4])),
    };
    let helper = c.index(&retry[0].0);
    r.handle(c.input(helper, Message::SyncResponse(good))).unwrap();
    run(&mut r);
    assert!(r.committed_height().0 >= 3, "the honest server's blocks were taken in and commit");
}

/// A follower whose no-progress timer asked a peer for blocks from height 1, and which then
/// committed further through proposals while the request was out.
fn committed_while_asking(
    c: &Cluster,
) -> (Replica, PublicKey, hotstuff_core::message::SyncRequest, Vec<hotstuff_core::Block>) {
    let mut r = c.replica(follower(c));
    run(&mut r);
    r.handle(Input::SyncTimerFired { timer: SyncTimer::NoProgress }).unwrap();
    let (to, request) = sync_requests(&run(&mut r)).last().cloned().expect("a sync request");
    assert_eq!(request.from_height.0, 1);
    let blocks = chain(c, 6);
    for b in &blocks[..4] {
        r.handle(c.input(c.index(&b.proposer), Message::Proposal(c.propose(b.clone(), None)))).unwrap();
        run(&mut r);
    }
    assert!(r.committed_height().0 >= 2, "committed through proposals: {:?}", r.committed_height());
    (r, to, request, blocks)
}

/// An honest server's answer that starts below what the replica committed meanwhile is taken
/// in from the committed height up; its server is not avoided.
#[test]
fn an_answer_overtaken_by_commits_is_taken_in_above_the_committed_height() {
    let c = Cluster::new(4);
    let (mut r, server, request, blocks) = committed_while_asking(&c);
    let resp = SyncResponse {
        id: request.id,
        blocks: blocks[..5].to_vec(),
        certificate: Some(c.certify(&blocks[4])),
    };
    r.handle(c.input(c.index(&server), Message::SyncResponse(resp))).unwrap();
    let a = run(&mut r);
    assert!(!a.iter().any(|x| matches!(x, Action::Event(Event::SyncPeerAvoided { .. }))), "{a:?}");
    assert_eq!(r.avoided_sync_peers().count(), 0);
    assert!(r.committed_height().0 >= 3, "the answer's new blocks commit: {:?}", r.committed_height());
}

/// An answer with nothing above the committed height is stale, not bad: nothing is taken in and
/// its server is not avoided.
#[test]
fn an_answer_entirely_below_the_committed_height_is_stale_not_bad() {
    let c = Cluster::new(4);
    let (mut r, server, request, blocks) = committed_while_asking(&c);
    let before = r.committed_height();
    let resp = SyncResponse {
        id: request.id,
        blocks: blocks[..1].to_vec(),
        certificate: Some(c.certify(&blocks[0])),
    };
    r.handle(c.input(c.index(&server), Message::SyncResponse(resp))).unwrap();
    let a = run(&mut r);
    assert!(!a.iter().any(|x| matches!(x, Action::Event(Event::SyncPeerAvoided { .. }))), "{a:?}");
    assert_eq!(r.avoided_sync_peers().count(), 0);
    assert_eq!(r.committed_height(), before);
    assert!(a.contains(&Action::Event(Event::SyncReceived { peer: server, blocks: 0 })), "{a:?}");
}

/// A response from a peer that was not asked (or with another id) is refused and changes nothing.
#[test]
fn an_unsolicited_sync_response_is_refused() {
    let c = Cluster::new(4);
    let mut r = c.replica(follower(&c));
    run(&mut r);
    let blocks = chain(&c, 3);
    let resp = SyncResponse { id: 7, blocks: blocks[..2].to_vec(), certificate: Some(c.certify(&blocks[1])) };
    assert_rejected(&mut r, c.input(1, Message::SyncResponse(resp)), InputError::UnexpectedSync(c.pk(1)));
}

fn updates(pairs: &[(PublicKey, u64)]) -> AppOutcome {
    AppOutcome {
        validator_updates: ValidatorSetUpdates(pairs.iter().copied().collect()),
        ..AppOutcome::default()
    }
}

/// After a block that changes the validator set, the epoch's later blocks must be empty: the
/// core judges them itself (the app is not asked), rejects one with a payload, and votes for an
/// empty one.
#[test]
fn suffix_blocks_after_a_set_change_must_be_empty() {
    let c = Cluster::new(4);
    let blocks = chain(&c, 2);
    let me = (0..4).find(|i| c.leader(2) != *i && c.leader(3) != *i).unwrap();
    let mut r = c.replica(me);
    run(&mut r);
    // Block 1 changes the set (adds an outsider).
    r.handle(c.input(c.leader(1), Message::Proposal(c.propose(blocks[0].clone(), None)))).unwrap();
    let a = drain(&mut r);
    let b1 = blocks[0].hash();
    assert!(a.iter().any(|x| matches!(x, Action::ValidateBlock { hash, .. } if *hash == b1)));
    r.handle(Input::BlockValidated { hash: b1, outcome: Some(updates(&[(outsider().public(), 1)])) })
        .unwrap();
    run(&mut r);
    // Block 2 (view 2) extends it with a payload: rejected by the core, no vote, app not asked.
    r.handle(c.input(c.leader(2), Message::Proposal(c.propose(blocks[1].clone(), None)))).unwrap();
    let a = drain(&mut r);
    let b2 = blocks[1].hash();
    assert!(!a.iter().any(|x| matches!(x, Action::ValidateBlock { .. })), "{a:?}");
    assert!(a.contains(&Action::Event(Event::BlockRejected { hash: b2 })), "{a:?}");
    assert!(sent_votes(&run(&mut r)).is_empty());
    // The same situation with an empty block 2 (on a fresh replica, since a second proposal for
    // view 2 would be an equivocation): judged valid by the core and voted for.
    let mut fresh = c.replica(me);
    run(&mut fresh);
    fresh.handle(c.input(c.leader(1), Message::Proposal(c.propose(blocks[0].clone(), None)))).unwrap();
    drain(&mut fresh);
    fresh
        .handle(Input::BlockValidated { hash: b1, outcome: Some(updates(&[(outsider().public(), 1)])) })
        .unwrap();
    run(&mut fresh);
    let empty = c.child(&blocks[0], 2, b"");
    let a = feed(&mut fresh, c.input(c.leader(2), Message::Proposal(c.propose(empty.clone(), None))));
    assert!(!a.iter().any(|x| matches!(x, Action::ValidateBlock { .. })), "{a:?}");
    let votes = sent_votes(&a);
    assert_eq!(votes.len(), 1, "{a:?}");
    assert_eq!(votes[0].1.block, empty.hash());
}

/// A leader's app that produces updates which cannot apply (removing every validator) gets
/// a typed error and nothing changes.
#[test]
fn produced_updates_that_empty_the_set_are_refused() {
    let c = Cluster::new(4);
    let leader = c.leader(1);
    let mut r = c.replica(leader);
    let a = drain(&mut r);
    let Some(Action::ProduceBlock { view, parent, .. }) =
        a.iter().find(|x| matches!(x, Action::ProduceBlock { .. })).cloned()
    else {
        panic!("the leader of view 1 is asked for a block: {a:?}");
    };
    assert_eq!(view, View(1));
    let all: Vec<(PublicKey, u64)> = (0..4).map(|i| (c.pk(i), 0)).collect();
    let input = Input::BlockProduced { view, parent, payload: b"x".to_vec(), outcome: updates(&all) };
    let before = snapshot(&r);
    let err = r.handle(input).unwrap_err();
    assert!(matches!(err, InputError::BadValidatorUpdates(_)), "{err:?}");
    assert_eq!(snapshot(&r), before);
}

/// A driver builds the app's view of a block's parent from committed state plus
/// `pending_updates`, so an input's `Commit` must come before its app requests. Here block 1's
/// late validation both commits it (block 3 already certified block 2) and lets block 2 go to
/// the app.
#[test]
fn commits_come_before_the_app_requests_of_the_same_input() {
    let c = Cluster::new(4);
    let me = follower(&c);
    let mut r = c.replica(me);
    run(&mut r);
    let blocks = chain(&c, 3);
    for b in &blocks {
        r.handle(c.input(c.index(&b.proposer), Message::Proposal(c.propose(b.clone(), None)))).unwrap();
        for a in drain(&mut r) {
            if let Action::Persist { seq, .. } = a {
                r.handle(Input::Persisted { seq }).unwrap();
            }
        }
    }
    r.handle(Input::BlockValidated { hash: blocks[0].hash(), outcome: Some(AppOutcome::default()) }).unwrap();
    let a = drain(&mut r);
    let commit = a.iter().position(|x| matches!(x, Action::Commit { .. })).expect("block 1 commits");
    let validate = a
        .iter()
        .position(|x| matches!(x, Action::ValidateBlock { hash, .. } if *hash == blocks[1].hash()))
        .expect("block 2 goes to the app");
    assert!(commit < validate, "{a:?}");
}
