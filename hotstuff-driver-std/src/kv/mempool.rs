//! The kv app's mempool: transactions waiting to be proposed by this node, bounded in count
//! and in bytes, with a quota per submitter (a client connection) so that one client cannot
//! hold the whole pool. A block is filled by bytes as well as by count and never exceeds the
//! payload limit it is given; a transaction that could never fit a block is refused at
//! submission.
//!
//! With a [`Forwarder`] ([`Mempool::set_forwarder`]) a submitted transaction goes to the
//! upcoming leader's mempool instead of waiting for this node's turn to lead: see
//! [`super::forward`].

use super::forward::{Forwarded, Forwarder, REFORWARD_AFTER_VIEWS};
use super::payload::{payload_tx_encodings, Tx, MAX_KEY, MAX_VALUE};
use hotstuff_core::{CommittedBlock, PublicKey, View};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Bytes of bookkeeping counted per held transaction on top of its encoded size, so that the
/// byte limit bounds memory also for tiny transactions.
pub const ENTRY_OVERHEAD: usize = 64;

/// Latencies kept until [`Mempool::take_stats`] hands them out (a node nobody asks keeps no
/// more than this).
const MAX_LATENCIES: usize = 1 << 18;

/// Bytes of a block payload besides its transactions (the borsh `Vec` length prefix).
const PAYLOAD_PREFIX: usize = 4;

/// Bounds of a [`Mempool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolLimits {
    /// Most transactions held, waiting or in uncommitted blocks (default 100,000).
    pub max_txs: usize,
    /// Most bytes held (default 64 MiB): each transaction counts its encoded size plus
    /// [`ENTRY_OVERHEAD`].
    pub max_bytes: usize,
    /// Largest block payload to fill (default 128 KiB). Blocks are also filled within the
    /// core's limit (`Limits::max_payload`, 4 MiB by default) the node reports, whichever is
    /// smaller, and the mempool adopts the core's limit once it sees a smaller one; a
    /// transaction that does not fit an empty block of this size is refused at submission.
    ///
    /// Why not the core's 4 MiB: every replica hashes, stores and fsyncs a block's payload
    /// (several times: the proposal, the committed block, the app state) before it votes or
    /// commits, so the block rate falls with the block size. Measured on the 2-core machine
    /// with durable stores, 4 validators flooded with 4 KiB values (`tests/abuse.rs`), against
    /// about 50 blocks/s of small blocks: 4 MiB blocks gave 1.5 blocks/s and view timeouts,
    /// 256 KiB about 68% of the block rate, 128 KiB all of it. A 2,000-transaction block of
    /// small puts (the `kv_cluster` load) is about 46 KiB, so this does not limit that load.
    pub max_block_bytes: usize,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        MempoolLimits { max_txs: 100_000, max_bytes: 64 << 20, max_block_bytes: 128 << 10 }
    }
}

/// A submitter's share of a [`Mempool`] (for example one client connection): at most
/// `max_txs` transactions and `max_bytes` bytes (counted as in [`MempoolLimits::max_bytes`])
/// held at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Who submits (unique per submitter).
    pub id: u64,
    /// Most transactions it holds at once.
    pub max_txs: usize,
    /// Most bytes it holds at once.
    pub max_bytes: usize,
}

/// Why a transaction was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The mempool holds its limit of transactions or bytes: retry once some commit.
    #[error(
        "busy: the mempool holds {held_txs} transactions, {held_bytes} bytes (limits {max_txs} \
         transactions, {max_bytes} bytes); retry later"
    )]
    Full {
        /// Transactions held.
        held_txs: usize,
        /// Bytes held.
        held_bytes: usize,
        /// The limit of transactions.
        max_txs: usize,
        /// The limit of bytes.
        max_bytes: usize,
    },
    /// The submitter holds its quota: retry once its transactions commit.
    #[error(
        "busy: this connection holds {held_txs} pending transactions, {held_bytes} bytes (limits \
         {max_txs} transactions, {max_bytes} bytes per connection); retry after they commit"
    )]
    QuotaFull {
        /// Transactions it holds.
        held_txs: usize,
        /// Bytes it holds.
        held_bytes: usize,
        /// Its limit of transactions.
        max_txs: usize,
        /// Its limit of bytes.
        max_bytes: usize,
    },
    /// An empty or oversized key or value.
    #[error("invalid transaction (key 1..={MAX_KEY} bytes, value <= {MAX_VALUE} bytes)")]
    Invalid,
    /// The transaction can never fit a block.
    #[error("transaction of {size} bytes can never fit a block payload of at most {max} bytes")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The block payload limit.
        max: usize,
    },
}

impl SubmitError {
    /// True if the mempool (or the submitter's quota) is full: the same transaction may be
    /// accepted later.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        matches!(self, SubmitError::Full { .. } | SubmitError::QuotaFull { .. })
    }
}

/// Transactions waiting to be proposed by this node, and its commit statistics. Clone it to
/// submit from other threads.
#[derive(Clone)]
pub struct Mempool(Arc<Mutex<Pool>>);

struct Entry {
    tx: Tx,
    at: Instant,
    /// Encoded size in a payload.
    size: usize,
    owner: Option<u64>,
    /// For a transaction another node forwarded: its id and the lane of that node.
    forwarded: Option<(TxId, u64)>,
}

/// A transaction's identity: a 64-bit SipHash of its encoding, for dedup among the
/// transactions a node holds or watches (not an authenticator: a collision only confuses two
/// of this node's own bookkeeping entries).
type TxId = u64;

fn tx_id(tx: &Tx) -> TxId {
    use std::hash::Hasher;
    /// Feeds the borsh encoding to the hasher without building it.
    struct Feed(std::collections::hash_map::DefaultHasher);
    impl borsh::io::Write for Feed {
        fn write(&mut self, buf: &[u8]) -> borsh::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> borsh::io::Result<()> {
            Ok(())
        }
    }
    let mut feed = Feed(std::collections::hash_map::DefaultHasher::new());
    // Writing into a hasher cannot fail.
    let _ = borsh::to_writer(&mut feed, tx);
    feed.0.finish()
}

/// [`tx_id`] of the transaction with this encoding (the hasher is fed the same bytes).
fn encoded_tx_id(encoding: &[u8]) -> TxId {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(encoding);
    h.finish()
}

/// The lane of the transactions forwarded by `from` (above every quota id in practice).
fn forwarded_lane(from: &PublicKey) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&from.0[..8]);
    u64::from_le_bytes(b) | 1 << 63
}

/// A transaction this node forwarded, kept until it commits.
struct Watched {
    entry: Entry,
    /// The view it was forwarded for.
    view: View,
}

/// The queue of transactions submitted without a quota.
const ANONYMOUS: u64 = u64::MAX;

impl Entry {
    fn lane(&self) -> u64 {
        match self.forwarded {
            Some((_, lane)) => lane,
            None => self.owner.unwrap_or(ANONYMOUS),
        }
    }

    fn held(&self) -> usize {
        self.size + ENTRY_OVERHEAD
    }
}

struct Pool {
    /// Waiting transactions, one queue per submitter (quota id; [`ANONYMOUS`] for
    /// [`Mempool::submit`]).
    lanes: BTreeMap<u64, VecDeque<Entry>>,
    /// The submitter whose turn comes first in the next block.
    next_lane: u64,
    /// Transactions this node proposed, by the view of their block.
    in_flight: BTreeMap<View, Vec<Entry>>,
    me: Option<PublicKey>,
    limits: MempoolLimits,
    held_txs: usize,
    held_bytes: usize,
    /// Transactions and bytes held per quota id.
    owners: HashMap<u64, (usize, usize)>,
    committed: u64,
    latencies: Vec<Duration>,
    forwarder: Option<Arc<dyn Forwarder>>,
    waker: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The next proposal's view and its forecast leader (from the app).
    next: Option<(View, PublicKey)>,
    /// The latest block the app saw: its view and whether it was empty.
    last_seen: Option<(View, bool)>,
    /// The most transactions a block of this node takes (from the app's last `take`).
    block_txs: usize,
    /// Transactions this node forwarded and has not seen commit, with the views they were
    /// forwarded for in order (for the re-forward).
    watch: HashMap<TxId, Watched>,
    watch_order: VecDeque<(View, TxId)>,
    /// Transactions forwarded to this node that it holds (queued or in flight), their count
    /// and bytes (bounded like this node's own, by [`MempoolLimits`]).
    forwarded_ids: HashSet<TxId>,
    forwarded_txs: usize,
    forwarded_bytes: usize,
}

impl Pool {
    /// Queues `e` in its lane; true if the queue was empty (wake the node).
    fn enqueue(&mut self, e: Entry) -> bool {
        let was_empty = self.lanes.is_empty();
        self.lanes.entry(e.lane()).or_default().push_back(e);
        was_empty
    }

    fn release(&mut self, e: &Entry) {
        if let Some((id, _)) = e.forwarded {
            self.forwarded_ids.remove(&id);
            self.forwarded_txs = self.forwarded_txs.saturating_sub(1);
            self.forwarded_bytes = self.forwarded_bytes.saturating_sub(e.held());
            return;
        }
        self.held_txs = self.held_txs.saturating_sub(1);
        self.held_bytes = self.held_bytes.saturating_sub(e.held());
        if let Some(id) = e.owner {
            if let Some((txs, bytes)) = self.owners.get_mut(&id) {
                *txs = txs.saturating_sub(1);
                *bytes = bytes.saturating_sub(e.held());
                if *txs == 0 {
                    self.owners.remove(&id);
                }
            }
        }
    }
}

/// Commit statistics of the transactions a node proposed.
#[derive(Clone, Debug, Default)]
pub struct MempoolStats {
    /// Transactions committed so far.
    pub committed: u64,
    /// Submit-to-commit latencies since the last call (at the proposer).
    pub latencies: Vec<Duration>,
    /// Transactions waiting or in uncommitted blocks.
    pub pending: usize,
    /// Bytes they hold (as counted against [`MempoolLimits::max_bytes`]).
    pub pending_bytes: usize,
}

impl Mempool {
    /// An empty mempool holding at most `capacity` transactions (and the default byte limits).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(MempoolLimits { max_txs: capacity, ..MempoolLimits::default() })
    }

    /// An empty mempool with these limits.
    #[must_use]
    pub fn with_limits(limits: MempoolLimits) -> Self {
        Mempool(Arc::new(Mutex::new(Pool {
            lanes: BTreeMap::new(),
            next_lane: 0,
            in_flight: BTreeMap::new(),
            me: None,
            limits,
            held_txs: 0,
            held_bytes: 0,
            owners: HashMap::new(),
            committed: 0,
            latencies: Vec::new(),
            forwarder: None,
            waker: None,
            next: None,
            last_seen: None,
            block_txs: usize::MAX,
            watch: HashMap::new(),
            watch_order: VecDeque::new(),
            forwarded_ids: HashSet::new(),
            forwarded_txs: 0,
            forwarded_bytes: 0,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> MempoolLimits {
        self.lock().limits
    }

    /// Queues a transaction.
    pub fn submit(&self, tx: Tx) -> Result<(), SubmitError> {
        self.queue(tx, None)
    }

    /// Queues a transaction within `quota` (see [`Quota`]).
    pub fn submit_as(&self, tx: Tx, quota: &Quota) -> Result<(), SubmitError> {
        self.queue(tx, Some(quota))
    }

    fn queue(&self, tx: Tx, quota: Option<&Quota>) -> Result<(), SubmitError> {
        if !tx.valid() {
            return Err(SubmitError::Invalid);
        }
        let size = tx.encoded_len();
        let mut p = self.lock();
        let max = p.limits.max_block_bytes;
        if size + PAYLOAD_PREFIX > max {
            return Err(SubmitError::TooLarge { size, max });
        }
        let entry = Entry { tx, at: Instant::now(), size, owner: quota.map(|q| q.id), forwarded: None };
        let l = p.limits;
        if p.held_txs >= l.max_txs || p.held_bytes + entry.held() > l.max_bytes {
            return Err(SubmitError::Full {
                held_txs: p.held_txs,
                held_bytes: p.held_bytes,
                max_txs: l.max_txs,
                max_bytes: l.max_bytes,
            });
        }
        if let Some(q) = quota {
            let (txs, bytes) = p.owners.get(&q.id).copied().unwrap_or_default();
            if txs >= q.max_txs || bytes + entry.held() > q.max_bytes {
                return Err(SubmitError::QuotaFull {
                    held_txs: txs,
                    held_bytes: bytes,
                    max_txs: q.max_txs,
                    max_bytes: q.max_bytes,
                });
            }
            let held = p.owners.entry(q.id).or_default();
            held.0 += 1;
            held.1 += entry.held();
        }
        p.held_txs += 1;
        p.held_bytes += entry.held();
        // To the upcoming leader, if that is another node (see `super::forward`).
        let route = match (&p.forwarder, p.next, p.me) {
            (Some(f), Some((view, leader)), Some(me)) if leader != me => Some((f.clone(), view, leader, me)),
            _ => None,
        };
        if let Some((forwarder, view, leader, me)) = route {
            let id = tx_id(&entry.tx);
            if let std::collections::hash_map::Entry::Vacant(slot) = p.watch.entry(id) {
                let fwd = Forwarded { tx: entry.tx.clone(), submitted: entry.at, hops: 0 };
                slot.insert(Watched { entry, view });
                p.watch_order.push_back((view, id));
                drop(p);
                let refused = forwarder.forward(me, leader, vec![fwd]);
                if !refused.is_empty() {
                    self.keep_refused(refused);
                }
                return Ok(());
            }
        }
        let wake = p.enqueue(entry);
        drop(p);
        if wake {
            self.wake();
        }
        Ok(())
    }

    /// Forwarded transactions the leader did not take: into this node's own queue.
    fn keep_refused(&self, refused: Vec<Forwarded>) {
        let mut p = self.lock();
        let mut wake = false;
        for f in refused {
            if let Some(w) = p.watch.remove(&tx_id(&f.tx)) {
                wake |= p.enqueue(w.entry);
            }
        }
        drop(p);
        if wake {
            self.wake();
        }
    }

    fn wake(&self) {
        let waker = self.lock().waker.clone();
        if let Some(w) = waker {
            w();
        }
    }

    /// Forwards this node's clients' transactions through `forwarder` to the upcoming leaders
    /// (see [`super::forward`]); `me` is this node's key.
    pub fn set_forwarder(&self, me: PublicKey, forwarder: Arc<dyn Forwarder>) {
        let mut p = self.lock();
        p.me = Some(me);
        p.forwarder = Some(forwarder);
    }

    /// Stops forwarding (see [`Mempool::set_forwarder`]); transactions already forwarded stay
    /// watched until they commit.
    pub fn clear_forwarder(&self) {
        self.lock().forwarder = None;
    }

    /// Calls `waker` when the queue gets its first transaction (pass the node's
    /// `Node::waker`, so that a leader waiting out its idle delay proposes at once).
    pub fn set_waker(&self, waker: impl Fn() + Send + Sync + 'static) {
        self.lock().waker = Some(Arc::new(waker));
    }

    /// The app saw a block of `view`, empty or not. `leaders` are the forecast leaders of the
    /// two views after it. New transactions go to the first of them if this block and the one
    /// before it (at the view before) are both empty: the chain is idle and that leader waits
    /// out its idle delay (the driver waits only while the latest committed block, here the
    /// one before, and the uncommitted ones, here this one, are empty), and wakes for them.
    /// They also stay here if this node is the first: it has not proposed yet (it proposes
    /// once the block it just saw is certified), so the next proposal not yet made is its own,
    /// and transactions forwarded to it until then make it in (passing them on would cost them
    /// a view). Otherwise they go to the second: the first is proposing already, or will have
    /// by the time they reach it.
    pub(super) fn observe(&self, view: View, empty: bool, leaders: [PublicKey; 2]) {
        let mut p = self.lock();
        let idle = empty && p.last_seen == Some((View(view.0.saturating_sub(1)), true));
        if p.last_seen.is_none_or(|(v, _)| v < view) {
            p.last_seen = Some((view, empty));
        }
        let leads_next = p.me == Some(leaders[0]);
        let next =
            if idle || leads_next { (view.next(), leaders[0]) } else { (view.next().next(), leaders[1]) };
        if p.next.is_none_or(|(v, _)| v <= next.0) {
            p.next = Some(next);
        }
    }

    /// This node leads `view` and waits out its idle delay before proposing: it is the next
    /// to propose, whatever it forecast before.
    pub(super) fn observe_waiting(&self, view: View, me: PublicKey) {
        self.lock().next = Some((view, me));
    }

    /// Takes transactions another node forwarded (see [`super::forward`]); returns those it
    /// does not take (its forwarded share is full, or they can never fit a block). A
    /// transaction it holds already is taken and dropped.
    pub fn accept_forwarded(&self, from: PublicKey, txs: Vec<Forwarded>) -> Vec<Forwarded> {
        // A forecast miss: by this node's own (newer) view of the chain another leader comes
        // first. Pass them on, once; what that leader refuses stays here.
        let onward = {
            let p = self.lock();
            match (&p.forwarder, p.next, p.me) {
                (Some(f), Some((_, leader)), Some(me)) if leader != me && leader != from => {
                    Some((f.clone(), leader))
                }
                _ => None,
            }
        };
        let txs = match onward {
            Some((forwarder, leader)) => {
                let (pass, mut keep): (Vec<_>, Vec<_>) = txs.into_iter().partition(|f| f.hops == 0);
                if !pass.is_empty() {
                    let pass = pass.into_iter().map(|f| Forwarded { hops: 1, ..f }).collect();
                    keep.extend(forwarder.forward(from, leader, pass));
                }
                keep
            }
            None => txs,
        };
        let mut p = self.lock();
        let lane = forwarded_lane(&from);
        let (mut refused, mut wake) = (Vec::new(), false);
        // A leader takes no more than its next block holds: beyond that they would wait for its
        // next turn, and the sender's own turn may come sooner (under load on every node this
        // keeps each node proposing its own clients' transactions, as without forwarding).
        let mut queued: usize = p.lanes.values().map(VecDeque::len).sum();
        for f in txs {
            let size = f.tx.encoded_len();
            let held = size + ENTRY_OVERHEAD;
            let l = p.limits;
            if !f.tx.valid()
                || size + PAYLOAD_PREFIX > l.max_block_bytes
                || p.forwarded_txs >= l.max_txs
                || p.forwarded_bytes + held > l.max_bytes
                || queued >= p.block_txs
            {
                refused.push(f);
                continue;
            }
            let id = tx_id(&f.tx);
            if !p.forwarded_ids.insert(id) {
                continue;
            }
            p.forwarded_txs += 1;
            p.forwarded_bytes += held;
            queued += 1;
            let entry = Entry { tx: f.tx, at: f.submitted, size, owner: None, forwarded: Some((id, lane)) };
            wake |= p.enqueue(entry);
        }
        drop(p);
        if wake {
            self.wake();
        }
        refused
    }

    /// Transactions held (waiting or in uncommitted blocks) and the bytes they count.
    #[must_use]
    pub fn depth(&self) -> (usize, usize) {
        let p = self.lock();
        (p.held_txs, p.held_bytes)
    }

    /// Commit counts and the latencies recorded since the last call.
    pub fn take_stats(&self) -> MempoolStats {
        let mut p = self.lock();
        let (pending, pending_bytes) = (p.held_txs + p.forwarded_txs, p.held_bytes + p.forwarded_bytes);
        MempoolStats {
            committed: p.committed,
            latencies: std::mem::take(&mut p.latencies),
            pending,
            pending_bytes,
        }
    }

    /// Takes transactions for a block of `view`: at most `max_txs` of them, as many as fit a
    /// payload of `max_bytes` (the smaller of this and [`MempoolLimits::max_block_bytes`]),
    /// prefix included. Submitters take turns (one transaction each per round, round robin
    /// across blocks; each submitter's own transactions stay in order), so a client that
    /// fills the mempool does not hold back the others' transactions for long. The mempool
    /// adopts a smaller `max_bytes` as its block limit, and drops queued transactions that can
    /// never fit it.
    pub(super) fn take(&self, me: PublicKey, view: View, max_txs: usize, max_bytes: usize) -> Vec<Tx> {
        let mut guard = self.lock();
        let p = &mut *guard;
        p.me = Some(me);
        p.block_txs = max_txs;
        if max_bytes < p.limits.max_block_bytes {
            p.limits.max_block_bytes = max_bytes;
        }
        let max_bytes = p.limits.max_block_bytes;
        let mut never_fit = Vec::new();
        for lane in p.lanes.values_mut() {
            // Queued before the limit shrank: they can never be proposed.
            while lane.front().is_some_and(|e| e.size + PAYLOAD_PREFIX > max_bytes) {
                never_fit.extend(lane.pop_front());
            }
        }
        for e in never_fit {
            tracing::warn!(size = e.size, max_bytes, "dropping a transaction that can never fit a block");
            p.release(&e);
        }
        let order: Vec<u64> =
            p.lanes.range(p.next_lane..).chain(p.lanes.range(..p.next_lane)).map(|(id, _)| *id).collect();
        let (mut batch, mut bytes, mut last) = (Vec::new(), PAYLOAD_PREFIX, None);
        'rounds: loop {
            let mut progress = false;
            for id in &order {
                if batch.len() >= max_txs {
                    break 'rounds;
                }
                let Some(lane) = p.lanes.get_mut(id) else { continue };
                if lane.front().is_none_or(|e| bytes + e.size > max_bytes) {
                    continue;
                }
                if let Some(e) = lane.pop_front() {
                    bytes += e.size;
                    batch.push(e);
                    (progress, last) = (true, Some(*id));
                }
            }
            if !progress {
                break;
            }
        }
        p.lanes.retain(|_, lane| !lane.is_empty());
        if let Some(last) = last {
            p.next_lane = last.wrapping_add(1);
        }
        let txs = batch.iter().map(|e| e.tx.clone()).collect();
        if !batch.is_empty() {
            p.in_flight.insert(view, batch);
        }
        txs
    }

    /// Records committed blocks; transactions of our blocks that can no longer commit (a view
    /// at or below the committed one that is not on the chain) go back to the queue.
    pub(super) fn committed(&self, blocks: &[CommittedBlock]) {
        let mut p = self.lock();
        let now = Instant::now();
        for b in blocks {
            if Some(b.block.proposer) == p.me {
                if let Some(batch) = p.in_flight.remove(&b.block.view) {
                    p.committed += batch.len() as u64;
                    for e in &batch {
                        p.release(e);
                        if p.latencies.len() < MAX_LATENCIES {
                            p.latencies.push(now.duration_since(e.at));
                        }
                    }
                }
            }
        }
        if !p.watch.is_empty() {
            // Our forwarded transactions that committed, in any node's block.
            // (Hashed from the payload's bytes: nothing is decoded or allocated per transaction.)
            for b in blocks.iter().filter(|b| !b.block.payload.is_empty()) {
                for encoding in payload_tx_encodings(&b.block.payload).unwrap_or_default() {
                    if let Some(w) = p.watch.remove(&encoded_tx_id(encoding)) {
                        p.release(&w.entry);
                    }
                }
            }
        }
        if let Some(last) = blocks.last() {
            // Forwarded long ago and not committed: this node proposes them itself.
            let view = last.block.view;
            while p
                .watch_order
                .front()
                .is_some_and(|(v, _)| v.0.saturating_add(REFORWARD_AFTER_VIEWS) < view.0)
            {
                if let Some((_, id)) = p.watch_order.pop_front() {
                    if let Some(w) = p.watch.remove(&id) {
                        tracing::debug!(forwarded_for = %w.view, "a forwarded transaction did not commit; proposing it here");
                        p.enqueue(w.entry);
                    }
                }
            }
            let keep = p.in_flight.split_off(&last.block.view.next());
            let abandoned = std::mem::replace(&mut p.in_flight, keep);
            for (_, batch) in abandoned.into_iter().rev() {
                for item in batch.into_iter().rev() {
                    p.lanes.entry(item.lane()).or_default().push_front(item);
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use hotstuff_core::{AppOutcome, Block, BlockHash, Epoch, Height, QuorumCertificate};

    pub(in crate::kv) fn committed(view: u64, proposer: PublicKey) -> CommittedBlock {
        let qc = QuorumCertificate::genesis(BlockHash::default());
        CommittedBlock {
            block: Block {
                epoch: Epoch(0),
                view: View(view),
                height: Height(view),
                justify: qc.clone(),
                proposer,
                payload: Vec::new(),
            },
            hash: BlockHash::default(),
            certificate: qc,
            outcome: AppOutcome::default(),
            epoch_change: None,
        }
    }

    fn put(k: &str) -> Tx {
        Tx::Put { key: k.as_bytes().to_vec(), value: b"v".to_vec() }
    }

    #[test]
    fn mempool_requeues_transactions_of_abandoned_blocks_and_counts_committed_ones() {
        let me = PublicKey([1; 32]);
        let other = PublicKey([2; 32]);
        let pool = Mempool::new(3);
        for k in ["a", "b", "c"] {
            pool.submit(put(k)).unwrap();
        }
        assert!(matches!(pool.submit(put("d")), Err(SubmitError::Full { held_txs: 3, max_txs: 3, .. })));
        assert_eq!(pool.submit(Tx::Delete { key: Vec::new() }), Err(SubmitError::Invalid));

        assert_eq!(pool.take(me, View(5), 2, usize::MAX), vec![put("a"), put("b")]);
        assert_eq!(pool.take(me, View(9), 2, usize::MAX), vec![put("c")]);
        assert!(
            pool.take(me, View(10), 2, usize::MAX).is_empty(),
            "in-flight transactions are not proposed twice"
        );

        // Another leader's block at view 7 commits: our block of view 5 can no longer commit, so
        // its transactions go back to the front of the queue; the one of view 9 stays in flight.
        pool.committed(&[committed(7, other)]);
        let s = pool.take_stats();
        assert_eq!((s.committed, s.pending), (0, 3));
        assert_eq!(pool.take(me, View(11), 5, usize::MAX), vec![put("a"), put("b")]);

        // Our blocks of views 9 and 11 commit: three transactions with their latencies.
        pool.committed(&[committed(9, me), committed(11, me)]);
        let s = pool.take_stats();
        assert_eq!((s.committed, s.pending, s.latencies.len()), (3, 0, 3));
        assert!(pool.take_stats().latencies.is_empty(), "latencies are handed out once");
    }

    #[test]
    fn blocks_are_filled_by_bytes_and_oversized_transactions_are_refused_at_submission() {
        let me = PublicKey([1; 32]);
        let big = |k: &str| Tx::Put { key: k.as_bytes().to_vec(), value: vec![7; MAX_VALUE] };
        let size = big("a").encoded_len();
        let pool =
            Mempool::with_limits(MempoolLimits { max_block_bytes: 4 + 2 * size, ..MempoolLimits::default() });
        for k in ["a", "b", "c", "d", "e"] {
            pool.submit(big(k)).unwrap();
        }
        // Two fit a payload (with its 4-byte prefix), the third does not.
        assert_eq!(pool.take(me, View(1), 100, usize::MAX), vec![big("a"), big("b")]);
        // The core's limit is smaller: one per block, and the mempool adopts it.
        assert_eq!(pool.take(me, View(2), 100, 4 + size + 10), vec![big("c")]);
        assert_eq!(pool.limits().max_block_bytes, 4 + size + 10);
        // Encoded, a block is never over its limit.
        let payload = borsh::to_vec(&pool.take(me, View(3), 100, 4 + size + 10)).unwrap();
        assert!(payload.len() <= 4 + size + 10);
        // A transaction that can never fit is refused with both sizes.
        let small = Mempool::with_limits(MempoolLimits { max_block_bytes: 100, ..MempoolLimits::default() });
        assert_eq!(small.submit(big("x")), Err(SubmitError::TooLarge { size, max: 100 }));
    }

    #[test]
    fn the_mempool_is_bounded_in_bytes_and_per_submitter() {
        let big = |k: &str| Tx::Put { key: k.as_bytes().to_vec(), value: vec![7; MAX_VALUE] };
        let held = big("a").encoded_len() + ENTRY_OVERHEAD;
        let pool = Mempool::with_limits(MempoolLimits { max_bytes: 3 * held, ..MempoolLimits::default() });
        let quota = Quota { id: 1, max_txs: 100, max_bytes: 2 * held };
        pool.submit_as(big("a"), &quota).unwrap();
        pool.submit_as(big("b"), &quota).unwrap();
        let err = pool.submit_as(big("c"), &quota).unwrap_err();
        assert!(matches!(err, SubmitError::QuotaFull { held_txs: 2, .. }) && err.is_busy(), "{err}");
        pool.submit(big("c")).unwrap();
        let err = pool.submit(big("d")).unwrap_err();
        assert!(matches!(err, SubmitError::Full { held_txs: 3, .. }) && err.is_busy(), "{err}");
        assert!(err.to_string().starts_with("busy: "), "{err}");
        assert_eq!(pool.take_stats().pending_bytes, 3 * held);
    }

    #[test]
    fn a_transaction_s_id_is_the_same_from_its_encoding() {
        for tx in
            [put("a"), Tx::Delete { key: b"k".to_vec() }, Tx::Put { key: vec![7; 300], value: vec![1; 999] }]
        {
            assert_eq!(encoded_tx_id(&borsh::to_vec(&tx).unwrap()), tx_id(&tx));
        }
    }

    #[test]
    fn submitters_take_turns_in_blocks_and_keep_their_own_order() {
        let me = PublicKey([1; 32]);
        let pool = Mempool::new(100);
        let (flood, other) = (
            Quota { id: 1, max_txs: 100, max_bytes: 1 << 20 },
            Quota { id: 2, max_txs: 100, max_bytes: 1 << 20 },
        );
        for k in ["f1", "f2", "f3", "f4", "f5"] {
            pool.submit_as(put(k), &flood).unwrap();
        }
        pool.submit_as(put("o1"), &other).unwrap();
        pool.submit_as(put("o2"), &other).unwrap();
        // The flooder came first, yet the other submitter's transactions ride in the first block.
        assert_eq!(pool.take(me, View(1), 4, usize::MAX), vec![put("f1"), put("o1"), put("f2"), put("o2")]);
        assert_eq!(pool.take(me, View(2), 4, usize::MAX), vec![put("f3"), put("f4"), put("f5")]);
    }
}
