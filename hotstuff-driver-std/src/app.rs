//! The application a node replicates: the [`App`] trait and the state view it reads.

use crate::error::StoreError;
use crate::storage::Storage;
use hotstuff_core::{
    AppOutcome, AppStateUpdates, Block, BlockHash, CommittedBlock, Height, PublicKey, ValidatorSet, View,
};
use std::collections::BTreeMap;

/// A block payload and what it changes, produced by [`App::produce_block`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Produced {
    /// The payload (transactions), opaque to consensus.
    pub payload: Vec<u8>,
    /// The app-state and validator-set updates the payload makes.
    pub outcome: AppOutcome,
}

impl Produced {
    /// True for a block that carries and changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty() && self.outcome == AppOutcome::default()
    }
}

/// The replicated application.
///
/// The node calls it on its consensus thread, so every method must be **fast** (it holds up
/// consensus while it runs) and **deterministic**: `validate_block` must give every replica the
/// same verdict and the same outcome for the same block and state, or replicas diverge. Read
/// state only through [`BlockContext::get`] (the speculative state of the parent block), never
/// from the clock, randomness or local files.
pub trait App: Send + 'static {
    /// Builds the payload of a new block on `ctx.parent`, at most `ctx.max_payload` bytes. Returning an empty [`Produced`] when
    /// there is nothing to do lets the node wait a little (its `idle_block_delay`) before
    /// proposing an empty block, which keeps an idle chain idle.
    fn produce_block(&mut self, ctx: &BlockContext<'_>) -> Produced;

    /// Checks a block proposed by another replica against the state of its parent: `Some` with
    /// the outcome if valid, `None` to reject it.
    fn validate_block(&mut self, ctx: &BlockContext<'_>, block: &Block) -> Option<AppOutcome>;

    /// Like [`App::validate_block`] for a block that came by block sync, already certified by a
    /// quorum (it may skip checks that only matter for new proposals). Defaults to
    /// `validate_block`.
    fn validate_block_for_sync(&mut self, ctx: &BlockContext<'_>, block: &Block) -> Option<AppOutcome> {
        self.validate_block(ctx, block)
    }

    /// Blocks were committed and their updates applied to the store (oldest first). For
    /// bookkeeping such as dropping committed transactions from a mempool.
    fn committed(&mut self, _blocks: &[CommittedBlock]) {}

    /// The peer book: the addresses (`host:port`, a DNS name or an IP) of members of
    /// `validators`, read from the committed app state (`state`). The node dials them, at
    /// start and after each validator-set change, besides its configured peers. An app that
    /// commits addresses must only return ones their validators signed (so nobody can
    /// redirect a validator's traffic). Defaults to none (configured peers only).
    fn peer_book(&self, _state: &StateReader<'_>, _validators: &ValidatorSet) -> Vec<(PublicKey, String)> {
        Vec::new()
    }
}

/// Reads the committed app state by key.
pub type StateReader<'a> = dyn Fn(&[u8]) -> Result<Option<Vec<u8>>, StoreError> + 'a;

/// What the app sees when it produces or validates a block.
pub struct BlockContext<'a> {
    /// The view of the block.
    pub view: View,
    /// The height of the block.
    pub height: Height,
    /// The parent block.
    pub parent: BlockHash,
    /// This node's key.
    pub me: PublicKey,
    /// The validator set in force.
    pub validators: &'a ValidatorSet,
    /// The largest payload the core accepts (its `Limits::max_payload`): a produced payload
    /// must not be longer, or the node proposes an empty block instead.
    pub max_payload: usize,
    pub(crate) committed: Committed<'a>,
    /// Updates of the parent and its uncommitted ancestors, newest first.
    pub(crate) pending: Vec<&'a AppStateUpdates>,
}

/// Where a [`BlockContext`] reads the committed state.
pub(crate) enum Committed<'a> {
    /// A node's store.
    Store(&'a dyn Storage),
    /// An in-memory map (an app run outside a node; see [`BlockContext::over_map`]).
    Map(&'a BTreeMap<Vec<u8>, Vec<u8>>),
}

impl<'a> BlockContext<'a> {
    /// A context over an in-memory committed state, for running an [`App`] outside a node: in
    /// the deterministic simulator (`hotstuff_tests::DriverApp`) or in a unit test. `pending`
    /// holds the updates of the parent and its uncommitted ancestors, newest first (as
    /// [`Replica::pending_updates`](hotstuff_core::Replica::pending_updates) returns them).
    #[allow(clippy::too_many_arguments)]
    #[must_use]
    pub fn over_map(
        view: View,
        height: Height,
        parent: BlockHash,
        me: PublicKey,
        validators: &'a ValidatorSet,
        max_payload: usize,
        committed: &'a BTreeMap<Vec<u8>, Vec<u8>>,
        pending: Vec<&'a AppStateUpdates>,
    ) -> Self {
        BlockContext {
            view,
            height,
            parent,
            me,
            validators,
            max_payload,
            committed: Committed::Map(committed),
            pending,
        }
    }
}

impl BlockContext<'_> {
    /// The value of `key` in the state after the parent block: the updates of the uncommitted
    /// ancestors (newest first, first hit wins) over the committed state.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        for updates in &self.pending {
            if let Some(value) = updates.get(key) {
                return Ok(value.map(<[u8]>::to_vec));
            }
        }
        match self.committed {
            Committed::Store(store) => store.app_get(key),
            Committed::Map(map) => Ok(map.get(key).cloned()),
        }
    }
}
