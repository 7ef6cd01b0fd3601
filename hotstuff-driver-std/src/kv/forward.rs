//! Transactions to the upcoming leader: how a node's [`Mempool`] hands its clients'
//! transactions to the validator that proposes next, whichever node the client used.
//!
//! The rule (see [`Mempool::set_forwarder`]): a transaction submitted to a node goes to the
//! leader of the next proposal not yet made, as the node forecasts it with
//! `BlockContext::leader` from the latest block its app saw: the leader of the view after it if
//! that block and the one before were empty (the chain is idle and that leader waits out its
//! idle delay) or if this node leads that view (it proposes once that block is certified, so
//! the next proposal not yet made is its own), else the leader two views on (the next one is
//! proposing already, or will have by the time a forward reaches it). It stays
//! in this node's own queue if that leader is this node or cannot take it (unknown, its
//! forwarded share is full, or it already holds a block's worth of transactions). A node that receives forwarded transactions but, by its own
//! (possibly newer) view of the chain, is not the next to propose passes them on once to the
//! one it forecasts (a forecast miss would otherwise cost a whole round of leaders). Exactly one node holds a transaction for proposing at any time, so forwarding adds
//! no duplicates; the forwarding node keeps a copy, counted against its own limits, until it
//! sees the transaction commit, so a client's share of a node stays bounded as before. If the
//! leader does not commit it within [`REFORWARD_AFTER_VIEWS`] views (the leader crashed or is
//! cut off), the copy goes back into the forwarding node's own queue, which proposes it when
//! it leads. A transaction whose first block commits even later than that can then commit
//! twice; the kv transactions set or delete whole keys, so a second commit of the same
//! transaction leaves the same state unless a later write to its key came in between.
//!
//! Why to one leader and not to all validators: each transaction crosses the network once
//! (not n − 1 times) and is decoded and held by one other node; a forecast miss (leader
//! reputation changed the schedule, or the leader had proposed already) costs at most one of
//! that leader's turns, not safety. The receiving leader wakes its node
//! ([`Mempool::set_waker`]) so that a leader waiting out its idle delay proposes at once.
//!
//! The transport is a [`Forwarder`]: [`LocalForwarder`] hands transactions to the other
//! mempools of one process (the `kv_cluster` examples and tests); a deployment implements it
//! over its own connection to the peers.

use super::mempool::Mempool;
use super::payload::Tx;
use hotstuff_core::PublicKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Views after which a forwarded transaction that has not committed goes back to the
/// forwarding node's own queue.
pub const REFORWARD_AFTER_VIEWS: u64 = 50;

/// A transaction on its way to a leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The transaction.
    pub tx: Tx,
    /// When its client submitted it (for the latency statistics; a transport across processes
    /// sets the arrival time).
    pub submitted: Instant,
    /// Times it was passed on by a node it was forwarded to (0 or 1).
    pub hops: u8,
}

/// Carries forwarded transactions to another validator's mempool.
pub trait Forwarder: Send + Sync + 'static {
    /// Hands `txs` (from the node `from`) to the mempool of `to`; returns those it did not
    /// take (all of them if `to` is unknown or unreachable), which the sender keeps.
    fn forward(&self, from: PublicKey, to: PublicKey, txs: Vec<Forwarded>) -> Vec<Forwarded>;
}

/// A [`Forwarder`] between the mempools of one process.
#[derive(Clone, Default)]
pub struct LocalForwarder {
    pools: Arc<RwLock<HashMap<PublicKey, Mempool>>>,
}

impl LocalForwarder {
    /// A forwarder between `pools` (each validator's key and mempool); sets itself as the
    /// forwarder of each of them (the mempools keep it).
    pub fn connect(pools: impl IntoIterator<Item = (PublicKey, Mempool)>) -> Self {
        let fwd = LocalForwarder::default();
        let pools: HashMap<PublicKey, Mempool> = pools.into_iter().collect();
        for (key, pool) in &pools {
            pool.set_forwarder(*key, Arc::new(fwd.clone()));
        }
        *fwd.pools.write().unwrap_or_else(std::sync::PoisonError::into_inner) = pools;
        fwd
    }
}

impl Forwarder for LocalForwarder {
    fn forward(&self, from: PublicKey, to: PublicKey, txs: Vec<Forwarded>) -> Vec<Forwarded> {
        let pool = self.pools.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&to).cloned();
        match pool {
            Some(pool) => pool.accept_forwarded(from, txs),
            None => txs,
        }
    }
}

/// The tag of a forward message ([`hotstuff_core::Message::App`] body): `[FORWARD_TAG, hops]`
/// then the transactions as a block payload.
pub const FORWARD_TAG: u8 = 1;
/// The most payload bytes in one forward message (a message may go over by its last
/// transaction, never over [`MAX_FORWARD_BYTES`] plus one transaction).
pub const MAX_FORWARD_BYTES: usize = 64 << 10;
/// The most transactions queued for sending; beyond it [`PeerForwarder`] takes no more (the
/// submitting node keeps them and proposes them itself).
pub const MAX_QUEUED: usize = 8 * super::MAX_BLOCK_TXS;

/// A [`Forwarder`] between nodes over their consensus connections: forwarded transactions are
/// queued here and leave as app messages ([`hotstuff_core::Message::App`]) when the node next
/// asks its app for them ([`crate::App::outgoing`]: after every turn, and when woken); the
/// receiving node's app hands them to its mempool ([`PeerForwarder::receive`]). What a
/// deployment of the kv app across processes uses (`hotstuff-node`); [`LocalForwarder`] is the
/// same within one process. A message lost on the way costs what a leader that refused would:
/// the submitting node keeps its copy and proposes it itself after
/// [`REFORWARD_AFTER_VIEWS`].
#[derive(Clone, Default)]
pub struct PeerForwarder {
    queue: Arc<std::sync::Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    by_peer: std::collections::BTreeMap<PublicKey, Vec<Forwarded>>,
    txs: usize,
    waker: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl PeerForwarder {
    /// A forwarder for `pool`, this node's (key `me`) mempool: sets itself as its forwarder.
    pub fn connect(pool: &Mempool, me: PublicKey) -> Self {
        let f = PeerForwarder::default();
        pool.set_forwarder(me, Arc::new(f.clone()));
        f
    }

    /// Calls `waker` when transactions are queued for sending (pass the node's `Node::waker`,
    /// so they leave at once rather than after the node's next turn).
    pub fn set_waker(&self, waker: impl Fn() + Send + Sync + 'static) {
        self.lock().waker = Some(Arc::new(waker));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The queued transactions as app messages, by peer.
    #[must_use]
    pub fn take(&self) -> Vec<(PublicKey, Vec<u8>)> {
        let by_peer = {
            let mut q = self.lock();
            q.txs = 0;
            std::mem::take(&mut q.by_peer)
        };
        let mut out = Vec::new();
        for (to, txs) in by_peer {
            for hops in [0u8, 1] {
                let mut batch: Vec<Tx> = Vec::new();
                let mut bytes = 0;
                for f in txs.iter().filter(|f| f.hops.min(1) == hops) {
                    bytes += f.tx.encoded_len();
                    batch.push(f.tx.clone());
                    if bytes >= MAX_FORWARD_BYTES || batch.len() >= super::MAX_BLOCK_TXS {
                        out.push((to, encode(hops, &std::mem::take(&mut batch))));
                        bytes = 0;
                    }
                }
                if !batch.is_empty() {
                    out.push((to, encode(hops, &batch)));
                }
            }
        }
        out
    }

    /// Hands the transactions of a forward message from `from` to `pool`; a message that does
    /// not decode (bounded: at most a block's worth of valid transactions) is dropped and
    /// `false` returned.
    pub fn receive(pool: &Mempool, from: PublicKey, bytes: &[u8]) -> bool {
        let (Some(&FORWARD_TAG), Some(&hops), Some(body)) = (bytes.first(), bytes.get(1), bytes.get(2..))
        else {
            return false;
        };
        let Some(txs) = super::decode_payload(body).filter(|_| hops <= 1) else { return false };
        let now = Instant::now();
        let refused = pool.accept_forwarded(
            from,
            txs.into_iter().map(|tx| Forwarded { tx, submitted: now, hops }).collect(),
        );
        if !refused.is_empty() {
            tracing::debug!(peer = %from, refused = refused.len(), "forwarded transactions refused");
        }
        true
    }
}

fn encode(hops: u8, txs: &[Tx]) -> Vec<u8> {
    let mut out = vec![FORWARD_TAG, hops];
    // Encoding into a `Vec` cannot fail.
    out.extend_from_slice(&borsh::to_vec(txs).unwrap_or_default());
    out
}

impl Forwarder for PeerForwarder {
    fn forward(&self, _from: PublicKey, to: PublicKey, txs: Vec<Forwarded>) -> Vec<Forwarded> {
        let waker = {
            let mut q = self.lock();
            if q.txs + txs.len() > MAX_QUEUED {
                return txs;
            }
            q.txs += txs.len();
            let first = q.by_peer.is_empty();
            q.by_peer.entry(to).or_default().extend(txs);
            first.then(|| q.waker.clone()).flatten()
        };
        if let Some(w) = waker {
            w();
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MempoolLimits;
    use hotstuff_core::{CommittedBlock, View};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn put(k: &str) -> Tx {
        Tx::Put { key: k.as_bytes().to_vec(), value: b"v".to_vec() }
    }

    fn block(view: u64, proposer: PublicKey, txs: &[Tx]) -> CommittedBlock {
        let mut b = crate::kv::mempool::tests::committed(view, proposer);
        if !txs.is_empty() {
            b.block.payload = borsh::to_vec(txs).unwrap();
        }
        b
    }

    /// Two connected mempools, A and B, with A forecasting B as the next leader.
    fn pair(limits: MempoolLimits) -> (PublicKey, Mempool, PublicKey, Mempool) {
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let (pa, pb) = (Mempool::with_limits(limits), Mempool::with_limits(limits));
        LocalForwarder::connect([(a, pa.clone()), (b, pb.clone())]);
        pa.observe(View(3), true, [a, a]);
        pa.observe(View(4), true, [b, a]);
        (a, pa, b, pb)
    }

    #[test]
    fn a_transaction_goes_to_the_upcoming_leader_and_the_sender_keeps_a_copy_until_it_commits() {
        let (a, pa, b, pb) = pair(MempoolLimits::default());
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        pb.set_waker(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        pa.submit(put("x")).unwrap();
        pa.submit(put("y")).unwrap();
        assert_eq!(woken.load(Ordering::Relaxed), 1, "the leader's node is woken once, by the first");
        assert!(pa.take(a, View(5), 10, usize::MAX).is_empty(), "the sender does not propose it too");
        assert_eq!(pa.take_stats().pending, 2, "the sender counts its forwarded copies");
        assert_eq!(pb.take(b, View(5), 10, usize::MAX), vec![put("x"), put("y")]);
        // The same transaction forwarded again (a retry) is held once.
        let again = vec![Forwarded { tx: put("x"), submitted: Instant::now(), hops: 0 }];
        assert!(pb.accept_forwarded(a, again).is_empty());
        assert!(pb.take(b, View(6), 10, usize::MAX).is_empty());

        let committed = [block(5, b, &[put("x"), put("y")])];
        pa.committed(&committed);
        pb.committed(&committed);
        let (sa, sb) = (pa.take_stats(), pb.take_stats());
        assert_eq!((sa.pending, sa.committed), (0, 0), "the sender drops its copies on commit");
        assert_eq!((sb.pending, sb.committed, sb.latencies.len()), (0, 2, 2), "counted at the proposer");
    }

    #[test]
    fn over_the_network_forwards_leave_as_app_messages_and_reach_the_leaders_mempool() {
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let (pa, pb) = (Mempool::new(100), Mempool::new(100));
        let fa = PeerForwarder::connect(&pa, a);
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        fa.set_waker(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        pa.observe(View(3), true, [a, a]);
        pa.observe(View(4), true, [b, a]);
        pa.submit(put("x")).unwrap();
        pa.submit(put("y")).unwrap();
        assert_eq!(woken.load(Ordering::Relaxed), 1, "the sending node is woken once, by the first");
        assert!(pa.take(a, View(5), 10, usize::MAX).is_empty(), "the sender does not propose it too");
        let out = fa.take();
        assert_eq!(out.len(), 1, "one message to the leader");
        assert!(fa.take().is_empty(), "taken once");
        let (to, bytes) = &out[0];
        assert_eq!(*to, b);
        assert!(PeerForwarder::receive(&pb, a, bytes));
        assert_eq!(pb.take(b, View(5), 10, usize::MAX), vec![put("x"), put("y")]);
        // Bad input from a peer is dropped: another tag, a hop count above 1, a body that is
        // not a block payload, trailing bytes.
        let mut bad =
            vec![vec![9, 0], vec![FORWARD_TAG, 2], vec![FORWARD_TAG, 0, 1, 2, 3], vec![FORWARD_TAG]];
        let mut trailing = bytes.clone();
        trailing.push(0);
        bad.push(trailing);
        for m in bad {
            assert!(!PeerForwarder::receive(&pb, a, &m), "{m:?} accepted");
        }
        assert!(pb.take(b, View(6), 10, usize::MAX).is_empty());
    }

    #[test]
    fn a_leader_with_a_full_share_refuses_and_the_sender_proposes_itself() {
        let (a, pa, _, pb) = pair(MempoolLimits { max_txs: 1, ..MempoolLimits::default() });
        // B holds its share of forwarded transactions (one, from a third node).
        let c = PublicKey([3; 32]);
        assert!(pb
            .accept_forwarded(c, vec![Forwarded { tx: put("c"), submitted: Instant::now(), hops: 0 }])
            .is_empty());
        let more = vec![Forwarded { tx: put("d"), submitted: Instant::now(), hops: 0 }];
        assert_eq!(pb.accept_forwarded(c, more.clone()), more, "refused, returned to the sender");
        pa.submit(put("x")).unwrap();
        assert_eq!(pa.take(a, View(6), 10, usize::MAX), vec![put("x")], "A keeps what B refused");
    }

    #[test]
    fn a_leader_holding_a_block_s_worth_refuses_more() {
        let (a, pa, b, pb) = pair(MempoolLimits::default());
        assert!(pb.take(b, View(1), 2, usize::MAX).is_empty(), "B's blocks take two");
        pb.submit(put("b1")).unwrap();
        pb.submit(put("b2")).unwrap();
        pa.submit(put("x")).unwrap();
        assert_eq!(pa.take(a, View(6), 10, usize::MAX), vec![put("x")], "A proposes it itself");
        assert_eq!(pb.take(b, View(5), 10, usize::MAX), vec![put("b1"), put("b2")]);
    }

    #[test]
    fn a_forwarded_transaction_that_does_not_commit_comes_back_to_the_sender() {
        let (a, pa, b, pb) = pair(MempoolLimits::default());
        pa.submit(put("x")).unwrap();
        assert_eq!(pb.take(b, View(5), 10, usize::MAX), vec![put("x")]);
        // B's block is lost; blocks without it commit up to the re-forward horizon.
        pa.committed(&[block(5 + REFORWARD_AFTER_VIEWS, a, &[])]);
        assert!(pa.take(a, View(60), 10, usize::MAX).is_empty(), "not yet");
        pa.committed(&[block(6 + REFORWARD_AFTER_VIEWS, a, &[])]);
        assert_eq!(pa.take(a, View(61), 10, usize::MAX), vec![put("x")]);
    }

    #[test]
    fn unless_the_chain_is_idle_transactions_go_two_views_on() {
        let (a, pa, b, pb) = pair(MempoolLimits::default());
        let (c, pc) = (PublicKey([3; 32]), Mempool::new(10));
        LocalForwarder::connect([(a, pa.clone()), (b, pb.clone()), (c, pc.clone())]);
        // An empty block after a busy one: its successor's leader (C) proposes at once.
        pa.observe(View(5), false, [a, a]);
        pa.observe(View(6), true, [c, b]);
        pa.submit(put("x")).unwrap();
        assert!(pc.take(c, View(7), 10, usize::MAX).is_empty());
        assert_eq!(pb.take(b, View(8), 10, usize::MAX), vec![put("x")]);
    }

    #[test]
    fn a_leader_that_has_not_proposed_yet_keeps_what_reaches_it() {
        let (a, pa, b, pb) = pair(MempoolLimits::default());
        let (c, pc) = (PublicKey([3; 32]), Mempool::new(10));
        LocalForwarder::connect([(a, pa.clone()), (b, pb.clone()), (c, pc.clone())]);
        // A (still) forecasts B. B has seen the busy block of view 4 and leads view 5: it
        // proposes once that block is certified, so it keeps what A forwards (it would have
        // passed it on to C, the leader two views on, which costs a view).
        pb.observe(View(4), false, [b, c]);
        pa.submit(put("x")).unwrap();
        assert!(pc.take(c, View(6), 10, usize::MAX).is_empty());
        assert_eq!(pb.take(b, View(5), 10, usize::MAX), vec![put("x")]);
        // Its own clients' transactions too.
        pb.submit(put("y")).unwrap();
        assert_eq!(pb.take(b, View(5), 10, usize::MAX), vec![put("y")]);
    }

    #[test]
    fn a_leader_that_knows_better_passes_them_on_once() {
        let (a, pa, b, pb) = pair(MempoolLimits::default());
        let (c, pc) = (PublicKey([3; 32]), Mempool::new(10));
        LocalForwarder::connect([(a, pa.clone()), (b, pb.clone()), (c, pc.clone())]);
        // B has seen a later (idle) chain: C leads next. C forecasts B, but does not pass on again.
        pb.observe(View(5), true, [a, a]);
        pb.observe(View(6), true, [c, a]);
        pc.observe(View(6), true, [a, a]);
        pc.observe(View(7), true, [b, a]);
        pa.submit(put("x")).unwrap();
        assert!(pb.take(b, View(7), 10, usize::MAX).is_empty());
        assert_eq!(pc.take(c, View(7), 10, usize::MAX), vec![put("x")]);
    }

    #[test]
    fn a_node_that_leads_next_keeps_its_transactions() {
        let (a, pa, b, _) = pair(MempoolLimits::default());
        pa.observe(View(5), false, [b, a]);
        pa.submit(put("x")).unwrap();
        assert_eq!(pa.take(a, View(6), 10, usize::MAX), vec![put("x")]);
    }
}
