//! Block sync against servers that pruned old blocks: the server's answer
//! ([`Replica::sync_answer`]) and the requester's reaction to a `SyncPruned` (avoid, say so,
//! ask another peer), through the public API only.

use crate::common;

use common::*;
use hotstuff_core::message::{SyncPruned, SyncRequest};
use hotstuff_core::{Action, Event, Height, InputError, Message, Replica};

/// A follower that saw a certificate far ahead and asked its sender for blocks.
fn lagging(c: &Cluster) -> (Replica, usize, SyncRequest) {
    let mut r = c.replica(follower(c));
    run(&mut r);
    let blocks = chain(c, 6);
    let server = c.leader(6);
    r.handle(c.input(server, Message::Proposal(c.propose(blocks[5].clone(), None)))).unwrap();
    let requests = sync_requests(&run(&mut r));
    let (to, request) = requests.last().cloned().expect("a sync request");
    assert_eq!(to, c.pk(server));
    assert_eq!(request.from_height, Height(1));
    (r, server, request)
}

#[test]
fn a_pruned_answer_makes_the_requester_say_so_and_ask_another_peer() {
    let c = Cluster::new(4);
    let (mut r, server, request) = lagging(&c);
    let pruned = SyncPruned { id: request.id, retained_from: Height(500) };
    r.handle(c.input(server, Message::SyncPruned(pruned))).unwrap();
    let a = run(&mut r);
    assert!(
        a.contains(&Action::Event(Event::SyncBelowRetained {
            peer: c.pk(server),
            from_height: Height(1),
            retained_from: Height(500),
        })),
        "{a:?}"
    );
    assert_eq!(r.avoided_sync_peers().copied().collect::<Vec<_>>(), vec![c.pk(server)]);
    let retry = sync_requests(&a);
    assert_eq!(retry.len(), 1, "{a:?}");
    assert_ne!(retry[0].0, c.pk(server), "asked the pruned server again");
    assert_eq!(retry[0].1.from_height, Height(1));
    assert_eq!(r.committed_height(), Height(0));
}

/// A server claiming to have pruned heights it would still hold (`retained_from` at or below
/// the first height asked for) contradicts itself: it is avoided as a bad server, without the
/// "pruned" event.
#[test]
fn a_self_contradicting_pruned_answer_counts_as_a_bad_response() {
    let c = Cluster::new(4);
    let (mut r, server, request) = lagging(&c);
    let pruned = SyncPruned { id: request.id, retained_from: Height(1) };
    r.handle(c.input(server, Message::SyncPruned(pruned))).unwrap();
    let a = run(&mut r);
    assert!(!a.iter().any(|x| matches!(x, Action::Event(Event::SyncBelowRetained { .. }))), "{a:?}");
    assert!(
        a.iter().any(
            |x| matches!(x, Action::Event(Event::SyncPeerAvoided { peer, .. }) if *peer == c.pk(server))
        ),
        "{a:?}"
    );
    assert_eq!(sync_requests(&a).len(), 1, "asked another peer");
}

/// A pruned answer nobody asked for (another peer, or a stale id) is refused and changes
/// nothing.
#[test]
fn an_unsolicited_pruned_answer_is_refused() {
    let c = Cluster::new(4);
    let (mut r, server, request) = lagging(&c);
    let other = (0..4).find(|i| *i != server && c.pk(*i) != r.id()).unwrap();
    let stale = SyncPruned { id: request.id.wrapping_add(1), retained_from: Height(9) };
    assert_rejected(
        &mut r,
        c.input(server, Message::SyncPruned(stale)),
        InputError::UnexpectedSync(c.pk(server)),
    );
    let foreign = SyncPruned { id: request.id, retained_from: Height(9) };
    assert_rejected(
        &mut r,
        c.input(other, Message::SyncPruned(foreign)),
        InputError::UnexpectedSync(c.pk(other)),
    );
    assert_eq!(r.avoided_sync_peers().count(), 0);
}

/// The server side: a request below the retained range gets `SyncPruned`; one at or above it,
/// or one for heights above the committed chain, gets the usual response.
#[test]
fn a_server_answers_pruned_only_below_its_retained_range() {
    let c = Cluster::new(4);
    let me = follower(&c);
    let mut r = c.replica(me);
    run(&mut r);
    let blocks = chain(&c, 6);
    for b in &blocks {
        let _ = r.handle(c.input(c.index(&b.proposer), Message::Proposal(c.propose(b.clone(), None))));
        run(&mut r);
    }
    let tip = r.committed_height();
    assert!(tip.0 >= 3, "blocks committed: {tip}");
    let stored = |h: Height| {
        let i = usize::try_from(h.0).ok()?.checked_sub(1)?;
        let next = blocks.get(i + 1)?;
        Some((blocks.get(i)?.clone(), next.justify.clone(), None))
    };
    let ask = |from: u64| SyncRequest { id: 42, from_height: Height(from), max_blocks: 16 };
    match r.sync_answer(&ask(1), Height(3), stored) {
        Message::SyncPruned(p) => assert_eq!(p, SyncPruned { id: 42, retained_from: Height(3) }),
        other => panic!("expected SyncPruned, got {other:?}"),
    }
    match r.sync_answer(&ask(3), Height(3), stored) {
        Message::SyncResponse(resp) => {
            assert_eq!(resp.id, 42);
            assert_eq!(resp.blocks.first().map(|b| b.height), Some(Height(3)));
        }
        other => panic!("expected SyncResponse, got {other:?}"),
    }
    // Nothing pruned: the same as `sync_response`.
    assert_eq!(
        r.sync_answer(&ask(1), Height(1), stored),
        Message::SyncResponse(r.sync_response(&ask(1), stored))
    );
    // Above the committed chain the pruned range does not matter.
    let above = tip.0 + 1;
    assert!(matches!(r.sync_answer(&ask(above), Height(above + 10), stored), Message::SyncResponse(_)));
}

/// The new message survives the wire: encode, decode with limits, same value.
#[test]
fn a_pruned_answer_round_trips_on_the_wire() {
    let c = Cluster::new(4);
    let m = Message::SyncPruned(SyncPruned { id: u64::MAX, retained_from: Height(123_456) });
    let bytes = hotstuff_core::Envelope::new(c.config().chain, m.clone()).encode();
    let env = hotstuff_core::Envelope::decode(&bytes, &c.config().limits).unwrap();
    assert_eq!(env.message, m);
    // Trailing bytes are refused.
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(hotstuff_core::Envelope::decode(&longer, &c.config().limits).is_err());
}
