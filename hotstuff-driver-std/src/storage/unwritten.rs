//! Committed blocks handed to the background writer and not yet written: what a [`Reader`]
//! sees before the store does.
//!
//! The writer lets jobs accumulate for [`super::writer::COALESCE`] before one transaction, so the
//! store lags the replica's commits by up to that window and the transaction's time. A node's
//! [`Reader`]s (client `GET`, `WAIT` and `STATUS`) and its block-sync answers look here first, so
//! they see a commit as soon as the consensus loop hands it over. So does the app: the engine
//! puts the held commits' updates ([`Unwritten::app_updates`]) between the uncommitted
//! ancestors' and the store in every `BlockContext`.
//!
//! Only commits the writer takes go through here; a commit that ends an epoch is written by the
//! consensus loop itself, after the writer's queue is empty, so the blocks here never change the
//! validator set. [`super::StoreWriter::submit`] adds a batch's commits before it queues the
//! batch, and the writer drops them once its transaction is visible to reads: a committed block
//! is always in the store, here, or both.
//!
//! [`Reader`]: crate::Reader

use super::CommittedEntry;
use hotstuff_core::{AppStateUpdates, CommittedBlock, CommittedTip, Height};
use std::collections::VecDeque;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

/// See the [module docs](self). Shared by the writer, the consensus loop and the readers.
#[derive(Debug, Default)]
pub struct Unwritten {
    /// Lowest height first, consecutive.
    blocks: RwLock<VecDeque<CommittedBlock>>,
}

impl Unwritten {
    /// Adds commits handed to the writer (oldest first, above every block held).
    pub(crate) fn push(&self, commits: &[CommittedBlock]) {
        if commits.is_empty() {
            return;
        }
        let mut blocks = self.blocks.write().unwrap_or_else(PoisonError::into_inner);
        for c in commits {
            if blocks.back().is_none_or(|b| b.block.height < c.block.height) {
                blocks.push_back(c.clone());
            }
        }
    }

    /// The writer's transaction up to `tip` is visible to reads: drops what it wrote.
    pub(crate) fn written(&self, tip: Height) {
        let mut blocks = self.blocks.write().unwrap_or_else(PoisonError::into_inner);
        while blocks.front().is_some_and(|b| b.block.height <= tip) {
            blocks.pop_front();
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, VecDeque<CommittedBlock>> {
        self.blocks.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest commit held, if any.
    #[must_use]
    pub fn tip(&self) -> Option<CommittedTip> {
        self.read().back().map(|c| CommittedTip { hash: c.hash, view: c.block.view, height: c.block.height })
    }

    /// The committed block at `height`, if held.
    #[must_use]
    pub fn block(&self, height: Height) -> Option<CommittedEntry> {
        let blocks = self.read();
        let first = blocks.front()?.block.height;
        let c = blocks.get(usize::try_from(height.0.checked_sub(first.0)?).ok()?)?;
        (c.block.height == height).then(|| (c.block.clone(), c.certificate.clone(), None))
    }

    /// The value of `key` after the newest held commit that changes it: `Some(None)` if that
    /// commit deletes it, `None` if no held commit changes it (the store has its value).
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.read().iter().rev().find_map(|c| c.outcome.app_updates.get(key).map(|v| v.map(<[u8]>::to_vec)))
    }

    /// The app-state updates of the held commits that change anything, newest first (cheap:
    /// each is a shared map). A snapshot: a commit written meanwhile is then in both, and
    /// reading its updates over a store that has them gives the same values (updates set or
    /// delete whole keys).
    #[must_use]
    pub fn app_updates(&self) -> Vec<AppStateUpdates> {
        self.read().iter().rev().map(|c| &c.outcome.app_updates).filter(|u| !u.is_empty()).cloned().collect()
    }

    /// How many commits are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True if none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotstuff_core::{AppOutcome, Block, BlockHash, Epoch, PublicKey, QuorumCertificate, View};

    fn commit(height: u64, updates: &[(&[u8], Option<&[u8]>)]) -> CommittedBlock {
        let mut u = AppStateUpdates::default();
        for (k, v) in updates {
            match v {
                Some(v) => u.insert(k.to_vec(), v.to_vec()),
                None => u.delete(k.to_vec()),
            }
        }
        let qc = QuorumCertificate::genesis(BlockHash::default());
        let block = Block {
            epoch: Epoch(0),
            view: View(height),
            height: Height(height),
            justify: qc.clone(),
            proposer: PublicKey([1; 32]),
            payload: Vec::new(),
        };
        CommittedBlock {
            hash: BlockHash([height as u8; 32]),
            block,
            certificate: qc,
            outcome: AppOutcome { app_updates: u, ..AppOutcome::default() },
            epoch_change: None,
        }
    }

    #[test]
    fn reads_see_the_newest_held_commit_until_it_is_written() {
        let u = Unwritten::default();
        assert_eq!(u.tip(), None);
        u.push(&[commit(5, &[(b"a", Some(b"1")), (b"b", Some(b"1"))]), commit(6, &[(b"a", Some(b"2"))])]);
        u.push(&[commit(7, &[(b"b", None)])]);
        assert_eq!(u.tip().map(|t| t.height), Some(Height(7)));
        assert_eq!(u.get(b"a"), Some(Some(b"2".to_vec())));
        assert_eq!(u.get(b"b"), Some(None), "a delete in a held commit hides the stored value");
        assert_eq!(u.get(b"c"), None, "a key no held commit changes is read from the store");
        assert_eq!(u.block(Height(6)).map(|(b, _, _)| b.height), Some(Height(6)));
        assert_eq!(u.block(Height(4)), None);
        assert_eq!(u.block(Height(8)), None);
        let updates = u.app_updates();
        assert_eq!(updates.len(), 3);
        assert_eq!((updates[0].get(b"b"), updates[1].get(b"a")), (Some(None), Some(Some(&b"2"[..]))));
        u.written(Height(6));
        assert_eq!((u.len(), u.get(b"a")), (1, None), "written commits are the store's to answer");
        assert_eq!(u.get(b"b"), Some(None));
        // A commit at or below the newest held is not added twice.
        u.push(&[commit(7, &[(b"c", Some(b"x"))])]);
        assert_eq!((u.len(), u.get(b"c")), (1, None));
        u.written(Height(7));
        assert!(u.is_empty() && u.tip().is_none());
    }
}
