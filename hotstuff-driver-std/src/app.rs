//! The application a node replicates: the [`App`] trait and the state view it reads.

use crate::error::StoreError;
use crate::storage::Storage;
use hotstuff_core::{
    AppOutcome, AppStateUpdates, Block, BlockHash, CommittedBlock, Height, PublicKey, Replica, ValidatorSet,
    View,
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

    /// Snapshot sync: the [`commitment`](crate::kv::commitment) root of the committed app state
    /// after `block`'s parent that `block` carries, if it carries one (validated by every
    /// validator, so a QC on `block` certifies it). An app that returns `Some` must reject a
    /// block whose root is wrong, and an empty block (empty payload) must change no state. The
    /// default, `None`, means the app's blocks certify no state: its nodes can serve and fetch
    /// no snapshots.
    fn snapshot_root(&self, _block: &Block) -> Option<[u8; 32]> {
        None
    }

    /// Snapshot sync replaced the committed state (and tip) under the app: drop whatever it
    /// derived from the old committed state.
    fn state_installed(&mut self) {}

    /// Messages to other nodes ([`hotstuff_core::Message::App`], at most the block payload
    /// limit each; larger ones are dropped): the node sends them over its authenticated
    /// connections after every turn (best effort, like every message). The kv app forwards its
    /// clients' transactions to the upcoming leader this way. Called often: cheap when empty.
    fn outgoing(&mut self) -> Vec<(PublicKey, Vec<u8>)> {
        Vec::new()
    }

    /// An application message from the authenticated peer `from` (a validator or a listener):
    /// bytes from the network, to be decoded with bounds. By default ignored.
    fn on_message(&mut self, _from: PublicKey, _bytes: Vec<u8>) {}
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
    /// In [`App::produce_block`]: whether an empty answer makes the node wait (its idle delay)
    /// and ask again, rather than propose an empty block at once. While it waits, this node is
    /// the next to propose. Always `false` in validation.
    pub waits_if_empty: bool,
    /// The validator set in force.
    pub validators: &'a ValidatorSet,
    /// The largest payload the core accepts (its `Limits::max_payload`): a produced payload
    /// must not be longer, or the node proposes an empty block instead.
    pub max_payload: usize,
    pub(crate) schedule: Schedule<'a>,
    pub(crate) committed: Committed<'a>,
    /// Updates of the parent and its uncommitted ancestors, newest first.
    pub(crate) pending: Vec<&'a AppStateUpdates>,
}

/// Where a [`BlockContext`] reads the committed state.
#[derive(Clone, Copy)]
pub(crate) enum Committed<'a> {
    /// A node's store.
    Store(&'a dyn Storage),
    /// An in-memory map (an app run outside a node; see [`BlockContext::over_map`]).
    Map(&'a BTreeMap<Vec<u8>, Vec<u8>>),
}

/// Where a [`BlockContext`] reads the leader schedule.
#[derive(Clone, Copy)]
pub(crate) enum Schedule<'a> {
    /// A node's replica.
    Replica(&'a Replica),
    /// A function of the view (an app run outside a node).
    Fn(&'a dyn Fn(View) -> PublicKey),
}

impl<'a> BlockContext<'a> {
    /// A context over an in-memory committed state, for running an [`App`] outside a node: in
    /// the deterministic simulator (`hotstuff_tests::DriverApp`) or in a unit test. `pending`
    /// holds the updates of the parent and its uncommitted ancestors, newest first (as
    /// [`Replica::pending_updates`](hotstuff_core::Replica::pending_updates) returns them);
    /// `leader` gives the leader of a view (e.g. `|v| replica.leader(v)`). The app is not
    /// asked to wait when it has nothing (`waits_if_empty` is false).
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
        leader: &'a dyn Fn(View) -> PublicKey,
    ) -> Self {
        BlockContext {
            view,
            height,
            parent,
            me,
            waits_if_empty: false,
            validators,
            max_payload,
            schedule: Schedule::Fn(leader),
            committed: Committed::Map(committed),
            pending,
        }
    }
}

impl BlockContext<'_> {
    /// The leader of `view` by the schedule as this replica knows it now. For a view ahead of
    /// the current one it is a forecast: leader reputation may change it as blocks commit (an
    /// app that forwards transactions to upcoming leaders must cope with a miss).
    #[must_use]
    pub fn leader(&self, view: View) -> PublicKey {
        match self.schedule {
            Schedule::Replica(replica) => replica.leader(view),
            Schedule::Fn(leader) => leader(view),
        }
    }

    /// Visits every entry of the committed state (not the pending updates); the committed
    /// height when the state comes from a node's store.
    pub(crate) fn scan_committed(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<Option<Height>, StoreError> {
        match self.committed {
            Committed::Store(store) => store.scan_app_state(visit).map(|tip| Some(tip.height)),
            Committed::Map(map) => {
                map.iter().for_each(|(k, v)| visit(k, v));
                Ok(None)
            }
        }
    }

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
