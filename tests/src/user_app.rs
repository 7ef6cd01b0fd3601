//! A user's own app in the simulator: [`SimApp`], plugged in with
//! [`Sim::with_app`](crate::Sim::with_app).
//!
//! The trait has the shape of the drivers' `hotstuff_driver_std::App` (produce a block on the
//! speculative state of its parent, validate a peer's block against it), plus the two things a
//! test needs: the client transactions submitted to the node
//! ([`Sim::submit`](crate::Sim::submit)), and an invariant the simulator checks on every honest
//! replica after every committed block. It is a separate trait because the driver's
//! `BlockContext` reads a driver's store; an app written against the driver's trait adapts to
//! this one with a few lines (the two contexts offer the same `get`).
//!
//! The simulator keeps each replica's committed app state (a key-value map, the
//! [`AppOutcome::app_updates`] of its committed blocks applied in order), durable across
//! crashes like its committed chain.

use hotstuff_core::{AppOutcome, AppStateUpdates, Block, BlockHash, Height, PublicKey, ValidatorSet, View};
use std::collections::{BTreeMap, VecDeque};

/// A replica's committed app state.
pub type AppState = BTreeMap<Vec<u8>, Vec<u8>>;

/// What the app sees when it produces or validates a block.
pub struct SimContext<'a> {
    /// The simulator's node index (see [`Params::node_keys`](crate::Params::node_keys)).
    pub node: usize,
    /// The node's key.
    pub me: PublicKey,
    /// The block's view.
    pub view: View,
    /// The block's height.
    pub height: Height,
    /// Its parent.
    pub parent: BlockHash,
    /// The validator set in force.
    pub validators: &'a ValidatorSet,
    pub(crate) committed: &'a AppState,
    /// Updates of the parent and its uncommitted ancestors, newest first.
    pub(crate) pending: Vec<&'a AppStateUpdates>,
}

impl SimContext<'_> {
    /// The value of `key` in the state after the parent block: the uncommitted ancestors'
    /// updates (newest first, first hit wins) over the committed state.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        for updates in &self.pending {
            if let Some(value) = updates.get(key) {
                return value.map(<[u8]>::to_vec);
            }
        }
        self.committed.get(key).cloned()
    }
}

/// A user-supplied app, one instance per node. Must be deterministic (no clock, no entropy
/// beyond what it derives from its inputs), so that a seed replays exactly.
pub trait SimApp {
    /// Builds the payload of a block on `ctx.parent` and what it changes. `txs` holds the client
    /// transactions submitted to this node and not yet taken; take the ones the block includes.
    fn produce_block(&mut self, ctx: &SimContext<'_>, txs: &mut VecDeque<Vec<u8>>) -> (Vec<u8>, AppOutcome);

    /// Checks a peer's block against the state of its parent: `Some(outcome)` if valid, `None`
    /// to reject it. Every honest node must reach the same verdict and outcome.
    fn validate_block(&mut self, ctx: &SimContext<'_>, block: &Block) -> Option<AppOutcome>;

    /// The user's invariant, called on every honest node after each block it commits, with the
    /// node's committed state after that block. An `Err` is reported as an invariant violation
    /// (and makes [`Report::ok`](crate::Report::ok) false).
    fn check(&self, _height: Height, _state: &AppState) -> Result<(), String> {
        Ok(())
    }
}
