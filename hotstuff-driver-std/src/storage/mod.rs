//! Durable storage: the [`Storage`] trait, the [`RedbStore`] behind it, and the [`Genesis`] a
//! new store is initialised from.
//!
//! A store holds five things: the safety state, the uncommitted blocks (as
//! [`BlockRecord`]s with their app-state updates), the committed blocks with a certificate each
//! (by height, to serve block sync, with the epoch proof of each epoch's last block; a store may
//! prune the old ones, see [`prune`]), the
//! committed tip with the epoch in force (its validator set), and the committed app state
//! (key-value). Everything the core asks to persist arrives as one
//! [`WriteBatch`], which a store applies atomically and durably.

pub mod prune;
mod redb_store;
pub mod safety_log;
pub mod unwritten;
pub mod writer;

pub use prune::{Pruner, RetainBlocks};
pub use redb_store::RedbStore;
pub use unwritten::Unwritten;
pub use writer::StoreWriter;

use crate::error::StoreError;
use hotstuff_core::{
    Block, BlockRecord, ChainId, CommittedBlock, CommittedTip, EpochProof, EpochState, Height,
    QuorumCertificate, Recovered, SafetyState, ValidatorSet,
};

/// A committed block as stored for block sync: the block, a QC for it, and for the last block
/// of an epoch the proof that it is committed.
pub type CommittedEntry = (Block, QuorumCertificate, Option<EpochProof>);

/// What a new chain starts from: its id, the initial validator set and the initial app state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    /// The chain id (part of every signature and message).
    pub chain: ChainId,
    /// The validator set in force at genesis.
    pub validators: ValidatorSet,
    /// The initial app state, key -> value.
    pub app_state: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Genesis {
    /// A genesis with an empty app state.
    #[must_use]
    pub fn new(chain: ChainId, validators: ValidatorSet) -> Self {
        Genesis { chain, validators, app_state: Vec::new() }
    }

    /// Sets the initial app state.
    #[must_use]
    pub fn with_app_state(mut self, app_state: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        self.app_state = app_state.into_iter().collect();
        self
    }
}

/// Everything a store holds for restarting a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The chain the store belongs to.
    pub chain: ChainId,
    /// The genesis validator set (it fixes the genesis hash).
    pub initial_validators: ValidatorSet,
    /// The durable safety state (`None` until the first `Persist` with one).
    pub safety: Option<SafetyState>,
    /// The last committed block.
    pub tip: CommittedTip,
    /// The epoch in force after `tip` (`None`: still epoch 0, the genesis set).
    pub epoch: Option<EpochState>,
    /// Uncommitted blocks, lowest height first.
    pub blocks: Vec<BlockRecord>,
}

impl Stored {
    /// The core's restart state ([`Recovered::resume`]).
    #[must_use]
    pub fn recovered(self) -> Recovered {
        Recovered::resume(
            self.chain,
            &self.initial_validators,
            self.safety,
            self.tip,
            self.epoch,
            self.blocks,
        )
    }
}

/// The writes of one or more `Persist` and `Commit` actions, applied in one atomic
/// transaction: first `blocks` (except those at or below the batch's new tip, which the commits
/// would drop at once: a block committed in the same batch is written once, in the committed
/// table), then `commits` in order (each applies its app-state updates, stores the block with
/// its certificate (and epoch proof) by height, stores the new epoch if it ends one, and drops
/// stored uncommitted blocks at or below it), then `safety` and the tip. Applying batches one
/// after the other or merged into one ([`WriteBatch::append`]) gives the same store.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// The newest safety state, if it changed.
    pub safety: Option<SafetyState>,
    /// Uncommitted blocks to store (new ones, or ones whose outcome is now known).
    pub blocks: Vec<BlockRecord>,
    /// Newly committed blocks, oldest first.
    pub commits: Vec<CommittedBlock>,
}

impl WriteBatch {
    /// True if there is nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.safety.is_none() && self.blocks.is_empty() && self.commits.is_empty()
    }

    /// Appends `later`, a batch written after this one: the result writes what the two would
    /// write one after the other.
    pub fn append(&mut self, later: WriteBatch) {
        if later.safety.is_some() {
            self.safety = later.safety;
        }
        self.blocks.extend(later.blocks);
        self.commits.extend(later.commits);
    }

    /// The committed tip after this batch, if it commits anything.
    #[must_use]
    pub fn tip(&self) -> Option<CommittedTip> {
        self.commits.last().map(|c| CommittedTip { hash: c.hash, view: c.block.view, height: c.block.height })
    }
}

/// A crash-safe store. Every method takes `&self`: the node's loop writes while read handles
/// ([`crate::Reader`]) read from other threads.
pub trait Storage: Send + Sync + 'static {
    /// Writes `genesis` into an empty store. On a store already initialised it checks that the
    /// store belongs to the same chain and genesis validator set (a clear error otherwise) and
    /// changes nothing.
    fn initialise(&self, genesis: &Genesis) -> Result<(), StoreError>;

    /// Everything needed to restart the replica, or `None` for a store never initialised.
    /// Undecodable data is [`StoreError::Corrupt`], never a silent reset.
    fn load(&self) -> Result<Option<Stored>, StoreError>;

    /// Applies `batch` atomically and makes it durable (fsync) before returning. Every earlier
    /// write, deferred ones included, is durable with it, except that a store may make a batch
    /// with a safety state and no commits (the consensus loop's persist barrier) durable on
    /// its own, in a log ([`RedbStore`] on disk does): earlier deferred writes then become
    /// durable with the next [`Storage::sync`] or durable write with commits.
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError>;

    /// Applies `batch` atomically, visible to reads at once, but durable only with the next
    /// [`Storage::write`] or [`Storage::sync`] (by any thread). A crash may lose deferred
    /// writes, but only as a suffix: writes become durable in the order they were made, so what
    /// a store reopens to is always the result of a prefix of its writes (and of every write
    /// made durable in a log, see [`Storage::write`]). The default makes
    /// every write durable at once (correct, only slower).
    fn write_deferred(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.write(batch)
    }

    /// Makes every earlier write durable (fsync). The default does nothing: without
    /// [`Storage::write_deferred`] of its own, a store has nothing deferred.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The committed block at `height` with a certificate for it (and its epoch proof if it
    /// ended an epoch).
    fn committed_block(&self, height: Height) -> Result<Option<CommittedEntry>, StoreError>;

    /// The lowest height from which the store holds every committed block (below it, only
    /// epochs' last blocks with their proofs are kept). The default, for a store that never
    /// prunes, is height 1.
    fn retained_from(&self) -> Result<Height, StoreError> {
        Ok(Height(1))
    }

    /// Deletes committed blocks below `below`, oldest first, at most `max_blocks` heights in
    /// one transaction, keeping every block that ended an epoch (with its proof); returns the
    /// new [`Storage::retained_from`]. It never deletes at or above the committed tip, and
    /// touches nothing else (the app state, the tip, the safety state, uncommitted blocks). The
    /// deletion need not be durable at once: a crash may undo it, never half of it. The
    /// default, for a store that never prunes, deletes nothing.
    fn prune(&self, below: Height, max_blocks: usize) -> Result<Height, StoreError> {
        let _ = (below, max_blocks);
        self.retained_from()
    }

    /// The committed app state of `key`.
    fn app_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The committed tip and the validator set in force (of the current epoch), read together.
    fn tip(&self) -> Result<Option<(CommittedTip, ValidatorSet)>, StoreError>;

    /// Visits the whole committed app state in key order, in one consistent snapshot, and
    /// returns the tip it belongs to.
    fn scan_app_state(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<CommittedTip, StoreError>;

    /// A consistent view of the committed app state taken now, to be read later (on another
    /// thread) whatever is written meanwhile: what a snapshot server builds its snapshot from.
    /// `None` (the default) if the store cannot hold one; such a store serves no snapshots.
    fn app_state_view(&self) -> Result<Option<Box<dyn AppStateView>>, StoreError> {
        Ok(None)
    }

    /// The staging area of a snapshot being fetched (see [`crate::snapshot`]): the target it
    /// was started for (opaque bytes) and the chunks staged so far, or `None` if nothing is
    /// staged. The default (a store that cannot stage) never has one.
    fn staged(&self) -> Result<Option<Staged>, StoreError> {
        Ok(None)
    }

    /// Empties the staging area and records `target` as what it is for (`None`: just empties
    /// it). Never touches the committed state.
    fn stage_reset(&self, target: Option<&[u8]>) -> Result<(), StoreError> {
        let _ = target;
        Err(StoreError::Unsupported("snapshot staging"))
    }

    /// Adds one verified chunk `(depth, index)` with its entries to the staging area, in one
    /// transaction (the chunk is staged whole or not at all). Never touches the committed state.
    fn stage_chunk(&self, depth: u8, index: u32, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        let _ = (depth, index, entries);
        Err(StoreError::Unsupported("snapshot staging"))
    }

    /// Replaces the committed state by the staged one in one durable transaction: the app
    /// state becomes the staged entries, the committed tip `install.tip` (stored with its
    /// certificate, and retained from its height), uncommitted blocks are dropped, committed
    /// blocks below the tip too (except epochs' last blocks with their proofs), the safety
    /// state becomes `install.safety`, and the staging area is emptied. A crash leaves either
    /// the old state with the staging area, or the new state.
    fn install_staged(&self, install: &SnapshotInstall) -> Result<(), StoreError> {
        let _ = install;
        Err(StoreError::Unsupported("snapshot install"))
    }
}

/// The staging area's content ([`Storage::staged`]): the target it is for (opaque bytes) and
/// the `(depth, index)` of every chunk staged.
pub type Staged = (Vec<u8>, Vec<(u8, u32)>);

/// A consistent view of the committed app state ([`Storage::app_state_view`]).
pub trait AppStateView: Send {
    /// The committed tip the view belongs to.
    fn tip(&self) -> CommittedTip;
    /// Visits every entry of the view in key order.
    fn scan(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError>;
}

/// What [`Storage::install_staged`] switches to.
#[derive(Clone, Debug)]
pub struct SnapshotInstall {
    /// The new committed tip.
    pub tip: CommittedTip,
    /// The tip's block and a QC for it.
    pub block: Block,
    /// A QC for `block`.
    pub qc: QuorumCertificate,
    /// The safety state to restart from.
    pub safety: SafetyState,
}
