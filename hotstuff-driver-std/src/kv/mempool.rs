//! The kv app's mempool: transactions waiting to be proposed by this node.

use super::payload::{Tx, MAX_KEY, MAX_VALUE};
use hotstuff_core::{CommittedBlock, PublicKey, View};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Why a transaction was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The mempool holds its capacity.
    #[error("mempool full")]
    Full,
    /// An empty or oversized key or value.
    #[error("invalid transaction (key 1..={MAX_KEY} bytes, value <= {MAX_VALUE} bytes)")]
    Invalid,
}

/// Transactions waiting to be proposed by this node, and its commit statistics. Clone it to
/// submit from other threads.
#[derive(Clone)]
pub struct Mempool(Arc<Mutex<Pool>>);

struct Pool {
    queue: VecDeque<(Tx, Instant)>,
    /// Transactions this node proposed, by the view of their block.
    in_flight: BTreeMap<View, Vec<(Tx, Instant)>>,
    me: Option<PublicKey>,
    capacity: usize,
    committed: u64,
    latencies: Vec<Duration>,
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
}

impl Mempool {
    /// An empty mempool holding at most `capacity` transactions.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Mempool(Arc::new(Mutex::new(Pool {
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            me: None,
            capacity,
            committed: 0,
            latencies: Vec::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a transaction.
    pub fn submit(&self, tx: Tx) -> Result<(), SubmitError> {
        if !tx.valid() {
            return Err(SubmitError::Invalid);
        }
        let mut p = self.lock();
        if p.queue.len() + p.in_flight.values().map(Vec::len).sum::<usize>() >= p.capacity {
            return Err(SubmitError::Full);
        }
        p.queue.push_back((tx, Instant::now()));
        Ok(())
    }

    /// Commit counts and the latencies recorded since the last call.
    pub fn take_stats(&self) -> MempoolStats {
        let mut p = self.lock();
        let pending = p.queue.len() + p.in_flight.values().map(Vec::len).sum::<usize>();
        MempoolStats { committed: p.committed, latencies: std::mem::take(&mut p.latencies), pending }
    }

    /// Takes up to `max` transactions for a block of `view`.
    pub(super) fn take(&self, me: PublicKey, view: View, max: usize) -> Vec<Tx> {
        let mut p = self.lock();
        p.me = Some(me);
        let n = p.queue.len().min(max);
        let batch: Vec<(Tx, Instant)> = p.queue.drain(..n).collect();
        let txs = batch.iter().map(|(t, _)| t.clone()).collect();
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
                    let lat = batch.iter().map(|(_, at)| now.duration_since(*at));
                    p.latencies.extend(lat);
                }
            }
        }
        if let Some(last) = blocks.last() {
            let keep = p.in_flight.split_off(&last.block.view.next());
            let abandoned = std::mem::replace(&mut p.in_flight, keep);
            for (_, batch) in abandoned.into_iter().rev() {
                for item in batch.into_iter().rev() {
                    p.queue.push_front(item);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotstuff_core::{AppOutcome, Block, BlockHash, Epoch, Height, QuorumCertificate};

    fn committed(view: u64, proposer: PublicKey) -> CommittedBlock {
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
        assert_eq!(pool.submit(put("d")), Err(SubmitError::Full));
        assert_eq!(pool.submit(Tx::Delete { key: Vec::new() }), Err(SubmitError::Invalid));

        assert_eq!(pool.take(me, View(5), 2), vec![put("a"), put("b")]);
        assert_eq!(pool.take(me, View(9), 2), vec![put("c")]);
        assert!(pool.take(me, View(10), 2).is_empty(), "in-flight transactions are not proposed twice");

        // Another leader's block at view 7 commits: our block of view 5 can no longer commit, so
        // its transactions go back to the front of the queue; the one of view 9 stays in flight.
        pool.committed(&[committed(7, other)]);
        let s = pool.take_stats();
        assert_eq!((s.committed, s.pending), (0, 3));
        assert_eq!(pool.take(me, View(11), 5), vec![put("a"), put("b")]);

        // Our blocks of views 9 and 11 commit: three transactions with their latencies.
        pool.committed(&[committed(9, me), committed(11, me)]);
        let s = pool.take_stats();
        assert_eq!((s.committed, s.pending, s.latencies.len()), (3, 0, 3));
        assert!(pool.take_stats().latencies.is_empty(), "latencies are handed out once");
    }
}
