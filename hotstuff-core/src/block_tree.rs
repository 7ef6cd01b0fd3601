//! The tree of uncommitted blocks above the last committed block.
//!
//! Invariants (checked by `debug_assert!` and by the block-tree proptests):
//! - every block's parent is the root or another block in the tree, and its height is the
//!   parent's plus one;
//! - every block is above the root (height > root height, view > root view);
//! - after a commit, only descendants of the new root remain.

use crate::app::{AppOutcome, AppStateUpdates};
use crate::block::Block;
use crate::state::CommittedTip;
use crate::types::{BlockHash, Height, View};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Where a block stands with the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Waiting for its parent to be validated first.
    Waiting,
    /// The app was asked (`Action::ValidateBlock`).
    Validating,
    /// The app accepted it with this outcome.
    Valid(AppOutcome),
    /// The app rejected it.
    Invalid,
}

/// One block in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The block.
    pub block: Block,
    /// Its validity.
    pub validity: Validity,
    /// It arrived by block sync (already certified) rather than as a proposal.
    pub via_sync: bool,
}

/// Uncommitted blocks keyed by hash, rooted at the last committed block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockTree {
    root: CommittedTip,
    blocks: BTreeMap<BlockHash, Entry>,
}

impl BlockTree {
    /// An empty tree above `root`.
    #[must_use]
    pub fn new(root: CommittedTip) -> Self {
        BlockTree { root, blocks: BTreeMap::new() }
    }

    /// The last committed block.
    #[must_use]
    pub fn root(&self) -> &CommittedTip {
        &self.root
    }

    /// Number of uncommitted blocks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// True if there are no uncommitted blocks.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The entry for `hash`.
    #[must_use]
    pub fn get(&self, hash: &BlockHash) -> Option<&Entry> {
        self.blocks.get(hash)
    }

    pub(crate) fn get_mut(&mut self, hash: &BlockHash) -> Option<&mut Entry> {
        self.blocks.get_mut(hash)
    }

    /// Whether `hash` is the root or in the tree.
    #[must_use]
    pub fn contains(&self, hash: &BlockHash) -> bool {
        *hash == self.root.hash || self.blocks.contains_key(hash)
    }

    /// `(view, height)` of the root or of a block in the tree.
    #[must_use]
    pub fn position(&self, hash: &BlockHash) -> Option<(View, Height)> {
        if *hash == self.root.hash {
            return Some((self.root.view, self.root.height));
        }
        self.blocks.get(hash).map(|e| (e.block.view, e.block.height))
    }

    /// Whether `hash` can serve as a parent for validation: the root, or a valid block.
    #[must_use]
    pub fn is_valid_or_root(&self, hash: &BlockHash) -> bool {
        *hash == self.root.hash
            || matches!(self.blocks.get(hash), Some(Entry { validity: Validity::Valid(_), .. }))
    }

    /// Inserts a block whose parent is in the tree (the caller checked it).
    pub(crate) fn insert(&mut self, hash: BlockHash, block: Block, validity: Validity, via_sync: bool) {
        debug_assert!(self.position(&block.parent()).is_some_and(|(_, h)| h.0 + 1 == block.height.0));
        self.blocks.insert(hash, Entry { block, validity, via_sync });
    }

    /// Blocks waiting for `parent` to be validated.
    pub(crate) fn waiting_children(&self, parent: &BlockHash) -> Vec<BlockHash> {
        self.blocks
            .iter()
            .filter(|(_, e)| e.block.parent() == *parent && e.validity == Validity::Waiting)
            .map(|(h, _)| *h)
            .collect()
    }

    /// The blocks from just above the root up to `hash`, oldest first; `None` if `hash` is not
    /// in the tree.
    #[must_use]
    pub fn path_from_root(&self, hash: &BlockHash) -> Option<Vec<BlockHash>> {
        let mut path = Vec::new();
        let mut cur = *hash;
        while cur != self.root.hash {
            let e = self.blocks.get(&cur)?;
            path.push(cur);
            cur = e.block.parent();
        }
        path.reverse();
        Some(path)
    }

    /// The app-state updates of `hash` and its uncommitted ancestors, newest first. Reading a
    /// key through them (first hit wins) and then the committed state gives the speculative
    /// state after `hash`. Blocks not yet validated contribute nothing.
    #[must_use]
    pub fn pending_updates(&self, hash: &BlockHash) -> Vec<&AppStateUpdates> {
        let mut out = Vec::new();
        let mut cur = *hash;
        while let Some(e) = self.blocks.get(&cur) {
            if let Validity::Valid(o) = &e.validity {
                out.push(&o.app_updates);
            }
            cur = e.block.parent();
        }
        out
    }

    /// Makes `new_root` (a block in the tree) the root and drops every block that does not
    /// descend from it. Returns the removed entries of the path (oldest first) so the caller
    /// can hand them over as committed.
    pub(crate) fn commit(&mut self, new_root: &BlockHash) -> Vec<(BlockHash, Entry)> {
        let Some(path) = self.path_from_root(new_root) else { return Vec::new() };
        let mut committed = Vec::with_capacity(path.len());
        for h in &path {
            if let Some(e) = self.blocks.remove(h) {
                committed.push((*h, e));
            }
        }
        if let Some((h, e)) = committed.last() {
            self.root = CommittedTip { hash: *h, view: e.block.view, height: e.block.height };
        }
        self.prune();
        committed
    }

    /// Drops every block that does not descend from the root.
    fn prune(&mut self) {
        let mut by_height: Vec<(Height, BlockHash, BlockHash)> =
            self.blocks.iter().map(|(h, e)| (e.block.height, *h, e.block.parent())).collect();
        by_height.sort();
        let mut keep = alloc::collections::BTreeSet::new();
        keep.insert(self.root.hash);
        for (height, hash, parent) in by_height {
            if height > self.root.height && keep.contains(&parent) {
                keep.insert(hash);
            }
        }
        self.blocks.retain(|h, _| keep.contains(h));
    }

    /// All entries (for persistence and tests).
    pub fn iter(&self) -> impl Iterator<Item = (&BlockHash, &Entry)> {
        self.blocks.iter()
    }
}
