//! Blocks that arrive out of order or not at all: proposals whose parent is unknown are kept
//! (bounded) until the parent arrives, and a block this replica holds a QC for but lacks is
//! fetched by hash from the QC's signers.
//!
//! Why both are needed for liveness (not safety, which never depends on having a block): with
//! messages delayed by different amounts, a replica can receive the proposal of view `v + 1`
//! before that of `v`. Dropping it leaves the replica without block `v + 1`; if it leads
//! `v + 2`, it forms the QC for `v + 1` from the votes but cannot extend a block it does not
//! have, and block sync cannot help, since servers send blocks only up to their own highest QC
//! and the stalled leader is the only one holding that QC. The whole chain would wait for the
//! view timeout. Kept orphans cover reordering; fetching by hash covers loss: every signer of
//! a QC voted for its block, so it holds it (until it commits, when block sync takes over).
//!
//! Fetching by hash also pieces the chain together after a crash of every replica at once. A
//! driver may make other proposers' blocks and commits durable after `Persisted` (only a
//! replica's safety state and its own proposals must be durable before, see
//! [`Action::Persist`]); then every replica may come back without the blocks between its
//! committed tip and its high QC, and no one can serve the whole chain by block sync. Each
//! of those blocks is still durable at its proposer, whose store hands it back in
//! `Recovered::blocks` even though its parent is gone: such blocks are kept (`recovered`),
//! served by hash, and joined to the tree when their parent arrives. A fetch asks the
//! leader of the block's view (its proposer) besides the QC's signers, and a fetched block
//! whose parent is missing has that parent fetched in turn, however far below the high QC it
//! is.

use super::Replica;
use crate::action::{Action, SyncTimer};
use crate::block::Block;
use crate::block_tree::Validity;
use crate::certificate::QuorumCertificate;
use crate::error::InputError;
use crate::message::{Message, Proposal};
use crate::pacemaker::Pacemaker;
use crate::types::{BlockHash, PublicKey, View};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

/// Most proposals kept while their parent is missing (one per view, the lowest views kept).
pub(super) const MAX_ORPHANS: usize = 32;
/// Most blocks asked for by hash at once (blocks received and waiting for their parent do not
/// count; they are bounded by `config.max_uncommitted_blocks`).
pub(super) const MAX_FETCHING: usize = 16;
/// A fetch is given up after this many ticks of `config.fetch_delay` (requests go out at
/// ticks 1, 2, 4, 8, ...); block sync and the view timer take over.
const MAX_FETCH_TICKS: u32 = 64;
/// Most `(peer, block)` pairs remembered as served, so a peer gets each uncommitted block at
/// most once (a bound on the bandwidth a peer can draw with requests).
const MAX_SERVED: usize = 4096;
/// How many views above the highest block this replica has a missing certified block may be
/// and still be fetched by hash; beyond it block sync fetches ranges.
const FETCH_SPAN: u64 = 8;

/// A block wanted by hash.
#[derive(Clone, Debug)]
pub(super) struct Fetch {
    /// The verified QC that certifies the wanted block.
    qc: QuorumCertificate,
    /// The block, once received, if its own parent is still missing.
    block: Option<Block>,
    /// Timer ticks since the fetch started.
    ticks: u32,
}

impl<P: Pacemaker> Replica<P> {
    /// Keeps a checked proposal whose parent is unknown until the parent arrives (at most one
    /// per view, [`MAX_ORPHANS`] in all, the lowest views first).
    pub(super) fn keep_orphan(&mut self, from: PublicKey, p: Proposal) {
        let view = p.block.view;
        if self.orphans.contains_key(&view) {
            return;
        }
        if self.orphans.len() >= MAX_ORPHANS {
            match self.orphans.last_key_value() {
                Some((top, _)) if *top > view => {
                    let top = *top;
                    self.orphans.remove(&top);
                }
                _ => return,
            }
        }
        self.orphans.insert(view, (from, p));
    }

    /// A verified QC certifies `qc.block`, which this replica lacks: unless it is far ahead
    /// (block sync's case), fetch it by hash if it has not arrived within `fetch_delay`.
    pub(super) fn want_block(&mut self, qc: &QuorumCertificate) {
        self.want(qc, true);
    }

    /// As [`Replica::want_block`], however far above this replica's blocks `qc` is: for a
    /// fetched block's parent, and for the recovered high QC at start.
    pub(super) fn want_block_unbounded(&mut self, qc: &QuorumCertificate) {
        self.want(qc, false);
    }

    fn want(&mut self, qc: &QuorumCertificate, bounded: bool) {
        if qc.view <= self.tree.root().view
            || self.tree.contains(&qc.block)
            || self.fetching.contains_key(&qc.block)
        {
            return;
        }
        if let Some(block) = self.recovered.remove(&qc.block) {
            // This replica's own store has it: taken as if fetched (checked the same way).
            self.fetching.insert(qc.block, Fetch { qc: qc.clone(), block: None, ticks: 0 });
            if self.handle_fetched_block(block).is_err() {
                self.fetching.remove(&qc.block);
            }
            return;
        }
        let top =
            self.tree.iter().map(|(_, e)| e.block.view).max().unwrap_or_default().max(self.tree.root().view);
        let asked = self.fetching.values().filter(|f| f.block.is_none()).count();
        if (bounded && qc.view.0 > top.0.saturating_add(FETCH_SPAN))
            || asked >= MAX_FETCHING
            || self.fetching.len() >= self.config.max_uncommitted_blocks
        {
            return;
        }
        self.fetching.insert(qc.block, Fetch { qc: qc.clone(), block: None, ticks: 0 });
        self.arm_fetch_timer();
    }

    fn arm_fetch_timer(&mut self) {
        if !self.fetch_timer_armed {
            self.fetch_timer_armed = true;
            self.emit(Action::SetSyncTimer { timer: SyncTimer::Fetch, after: self.config.fetch_delay });
        }
    }

    /// The fetch timer fired: ask for every block still missing (with back-off), from signers
    /// of its QC worth more than a third of the power (so at least one is honest), rotating
    /// over the signers from one request to the next, and from the leader of its view (its
    /// proposer, which made it durable before sending it: after a crash of every replica the
    /// signers may all have lost it).
    pub(super) fn fetch_tick(&mut self) {
        self.fetch_timer_armed = false;
        let root = self.tree.root().view;
        self.fetching.retain(|_, f| f.qc.view > root && (f.block.is_some() || f.ticks < MAX_FETCH_TICKS));
        let me = self.key.public();
        let threshold = self.epoch.validators.validity_threshold();
        let leaders: BTreeMap<View, PublicKey> = self
            .fetching
            .values()
            .filter(|f| f.block.is_none())
            .map(|f| (f.qc.view, self.leader(f.qc.view)))
            .collect();
        let mut sends = Vec::new();
        for (hash, f) in &mut self.fetching {
            f.ticks += 1;
            if f.block.is_some() || !f.ticks.is_power_of_two() {
                continue;
            }
            let mut to: Vec<PublicKey> = Vec::new();
            let signers: Vec<PublicKey> =
                f.qc.signatures.iter().map(|(k, _)| *k).filter(|k| *k != me).collect();
            if !signers.is_empty() {
                let start = (self.fetch_rotation % signers.len() as u64) as usize;
                self.fetch_rotation = self.fetch_rotation.wrapping_add(1);
                let mut power = 0u64;
                for k in signers.iter().cycle().skip(start).take(signers.len()) {
                    to.push(*k);
                    power = power.saturating_add(self.epoch.validators.power(k).unwrap_or(1));
                    if power >= threshold {
                        break;
                    }
                }
            }
            if let Some(leader) = leaders.get(&f.qc.view).filter(|l| **l != me && !to.contains(l)) {
                to.push(*leader);
            }
            sends.extend(to.into_iter().map(|k| (k, *hash)));
        }
        for (to, hash) in sends {
            self.emit(Action::Send { to, message: Message::BlockRequest(hash) });
        }
        if self.fetching.values().any(|f| f.block.is_none()) {
            self.arm_fetch_timer();
        }
    }

    /// A block this replica can serve by hash: in the tree (uncommitted), recovered from its
    /// store without its parent, or fetched and waiting for its parent.
    fn held_block(&self, hash: &BlockHash) -> Option<&Block> {
        self.tree
            .get(hash)
            .map(|e| &e.block)
            .or_else(|| self.recovered.get(hash))
            .or_else(|| self.fetching.get(hash).and_then(|f| f.block.as_ref()))
    }

    /// A peer asks for a block by hash: send it if this replica holds it uncommitted (see
    /// [`Replica::held_block`]), at most once per peer and block. A block this replica lacks or
    /// has committed is not an error (the request may simply be late); the requester falls
    /// back to block sync.
    pub(super) fn handle_block_request(
        &mut self,
        from: PublicKey,
        hash: BlockHash,
    ) -> Result<(), InputError> {
        if from == self.key.public() {
            return Err(InputError::UnexpectedBlock(hash));
        }
        if self.held_block(&hash).is_none() {
            return Ok(());
        }
        if self.fetch_served.len() >= MAX_SERVED {
            let held: BTreeSet<BlockHash> =
                self.fetch_served.iter().map(|(_, h)| *h).filter(|h| self.held_block(h).is_some()).collect();
            self.fetch_served.retain(|(_, h)| held.contains(h));
        }
        if self.fetch_served.len() >= MAX_SERVED || self.fetch_served.contains(&(from, hash)) {
            return Err(InputError::Duplicate);
        }
        let Some(block) = self.held_block(&hash).cloned() else { return Ok(()) };
        self.fetch_served.insert((from, hash));
        self.emit(Action::Send { to: from, message: Message::Block(block) });
        Ok(())
    }

    /// A fetched block: accepted only if this replica asked for its hash (which a verified QC
    /// certifies). If its parent is known it joins the tree (as certified, like a synced block);
    /// otherwise it is kept and its parent, certified by its justify QC, is fetched in turn.
    pub(super) fn handle_fetched_block(&mut self, block: Block) -> Result<(), InputError> {
        let hash = block.hash();
        let Some(f) = self.fetching.get(&hash) else { return Err(InputError::UnexpectedBlock(hash)) };
        if f.block.is_some() {
            return Err(InputError::Duplicate);
        }
        if block.epoch != self.epoch.epoch || block.view != f.qc.view {
            return Err(InputError::BadFetchedBlock("epoch or view differs from its QC's"));
        }
        if block.justify.view >= block.view {
            return Err(InputError::BadFetchedBlock("justify QC not below the block's view"));
        }
        if self.tree.position(&block.parent()).is_some() {
            self.check_fetched(&block)?;
            self.insert_fetched(hash, block);
            return Ok(());
        }
        if block.justify.view <= self.tree.root().view {
            return Err(InputError::BadFetchedBlock("extends a block below the committed one"));
        }
        let digest = self.check_qc(&block.justify)?;
        // Accepted: keep it until its parent arrives, and fetch that parent.
        let justify = block.justify.clone();
        if let Some(f) = self.fetching.get_mut(&hash) {
            f.block = Some(block);
        }
        self.remember_verified(justify.view, digest);
        self.want_block_unbounded(&justify);
        Ok(())
    }

    /// Checks a fetched block against its (known) parent, as block sync checks its blocks.
    fn check_fetched(&self, block: &Block) -> Result<(), InputError> {
        let Some((parent_view, parent_height)) = self.tree.position(&block.parent()) else {
            return Err(InputError::UnknownParent(block.parent()));
        };
        if block.justify.view != parent_view || block.view <= parent_view {
            return Err(InputError::BadFetchedBlock("views inconsistent with the parent"));
        }
        if block.height.0 != parent_height.0.saturating_add(1) {
            return Err(InputError::BadFetchedBlock("height is not the parent's plus one"));
        }
        if self.tree.len() >= self.config.max_uncommitted_blocks {
            return Err(InputError::TreeFull);
        }
        Ok(())
    }

    /// Adds a checked fetched block to the tree, takes in the QC that certifies it again (the
    /// commit rule needs the block), and asks the app to validate it.
    fn insert_fetched(&mut self, hash: BlockHash, block: Block) {
        let Some(f) = self.fetching.remove(&hash) else { return };
        self.tree.insert(hash, block, Validity::Waiting, true);
        let digest = f.qc.digest();
        self.observe_qc(&f.qc, digest);
        self.request_validation(hash);
        self.block_added(hash);
    }

    /// A block joined the tree: kept proposals and fetched blocks waiting for it as their
    /// parent are taken in now (each fully checked again; one that no longer fits is dropped).
    pub(super) fn block_added(&mut self, hash: BlockHash) {
        let fetched: Vec<(BlockHash, Block)> = self
            .fetching
            .iter()
            .filter_map(|(h, f)| f.block.as_ref().filter(|b| b.parent() == hash).map(|b| (*h, b.clone())))
            .collect();
        for (h, b) in fetched {
            if self.check_fetched(&b).is_ok() {
                self.insert_fetched(h, b);
            } else {
                self.fetching.remove(&h);
            }
        }
        let recovered: Vec<BlockHash> =
            self.recovered.iter().filter(|(_, b)| b.parent() == hash).map(|(h, _)| *h).collect();
        for h in recovered {
            if let Some(block) = self.recovered.remove(&h) {
                // A block that joined the tree by another way (block sync) is not added twice.
                if !self.tree.contains(&h) && self.check_fetched(&block).is_ok() {
                    self.insert_recovered(h, block);
                }
            }
        }
        let views: Vec<View> =
            self.orphans.iter().filter(|(_, (_, p))| p.block.parent() == hash).map(|(v, _)| *v).collect();
        for v in views {
            if let Some((from, p)) = self.orphans.remove(&v) {
                // Checked again in full: the view, leader and tree may have moved since.
                let _ = self.handle_proposal(from, p);
            }
        }
    }

    /// Adds a recovered block (checked against its parent, which just joined the tree) to be
    /// validated again (its parent is not valid yet, and a block may be valid only on a valid
    /// parent: its app state is read through its ancestors), and takes in the high QC again
    /// if it certifies it (the commit rule needs the block).
    fn insert_recovered(&mut self, hash: BlockHash, block: Block) {
        let view = block.view;
        self.tree.insert(hash, block, Validity::Waiting, false);
        self.proposals_seen.entry(view).or_insert(hash);
        self.request_validation(hash);
        if self.safety.high_qc.block == hash {
            let qc = self.safety.high_qc.clone();
            let digest = qc.digest();
            self.observe_qc(&qc, digest);
        }
        self.block_added(hash);
    }

    /// Drops kept proposals, fetches, recovered blocks and served-request records that a
    /// commit made useless.
    pub(super) fn prune_fetch_state(&mut self) {
        let root = self.tree.root().view;
        self.orphans = self.orphans.split_off(&root.next());
        self.fetching.retain(|_, f| f.qc.view > root);
        self.recovered.retain(|_, b| b.view > root);
        let held: BTreeSet<BlockHash> =
            self.fetch_served.iter().map(|(_, h)| *h).filter(|h| self.held_block(h).is_some()).collect();
        self.fetch_served.retain(|(_, h)| held.contains(h));
    }
}
