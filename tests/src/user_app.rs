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

use hotstuff_core::{
    AppOutcome, AppStateUpdates, Block, BlockHash, CommittedBlock, Height, PublicKey, ValidatorSet, View,
};
use hotstuff_driver_std::{App as DApp, BlockContext};
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
    /// The largest payload the core accepts (its `Limits::max_payload`).
    pub max_payload: usize,
    /// The leader of a view by the replica's schedule (for a later view, a forecast).
    pub leader: &'a dyn Fn(View) -> PublicKey,
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

    /// A block was committed on this node and its updates applied (the driver's
    /// `App::committed`, for bookkeeping such as dropping committed transactions).
    fn committed(&mut self, _block: &CommittedBlock) {}

    /// Snapshot sync: the state root `block` certifies (the driver's `App::snapshot_root`);
    /// `None` (the default): the app certifies none, and no snapshot can be served.
    fn snapshot_root(&self, _block: &Block) -> Option<[u8; 32]> {
        None
    }

    /// Snapshot sync replaced the node's committed state (the driver's `App::state_installed`).
    fn state_installed(&mut self) {}
}

/// Runs an app written for the drivers (`hotstuff_driver_std::App`, the trait a node ships
/// with) in the simulator, so the app tested under the simulator's faults is the one deployed.
///
/// The driver's trait has no way to submit a transaction (each app has its own intake, such as
/// the kv app's mempool), so the adapter takes a `submit` function: the transactions given to
/// [`Sim::submit`](crate::Sim::submit) reach the app through it just before it produces a
/// block. An optional invariant is checked like [`SimApp::check`].
pub struct DriverApp<A> {
    app: A,
    submit: fn(&mut A, Vec<u8>),
    invariant: Option<Invariant>,
}

/// A user invariant over a node's committed app state (see [`SimApp::check`]).
pub type Invariant = Box<dyn Fn(Height, &AppState) -> Result<(), String>>;

impl<A: DApp> DriverApp<A> {
    /// Wraps `app`; `submit` hands it a client transaction.
    pub fn new(app: A, submit: fn(&mut A, Vec<u8>)) -> Self {
        DriverApp { app, submit, invariant: None }
    }

    /// Checks `invariant` on every honest node after each block it commits.
    #[must_use]
    pub fn with_invariant(mut self, invariant: Invariant) -> Self {
        self.invariant = Some(invariant);
        self
    }

    /// The wrapped app.
    pub fn app(&self) -> &A {
        &self.app
    }
}

fn driver_context<'a>(ctx: &'a SimContext<'_>) -> BlockContext<'a> {
    BlockContext::over_map(
        ctx.view,
        ctx.height,
        ctx.parent,
        ctx.me,
        ctx.validators,
        ctx.max_payload,
        ctx.committed,
        ctx.pending.clone(),
        ctx.leader,
    )
}

impl<A: DApp> SimApp for DriverApp<A> {
    fn produce_block(&mut self, ctx: &SimContext<'_>, txs: &mut VecDeque<Vec<u8>>) -> (Vec<u8>, AppOutcome) {
        for tx in txs.drain(..) {
            (self.submit)(&mut self.app, tx);
        }
        let produced = self.app.produce_block(&driver_context(ctx));
        (produced.payload, produced.outcome)
    }

    fn validate_block(&mut self, ctx: &SimContext<'_>, block: &Block) -> Option<AppOutcome> {
        self.app.validate_block(&driver_context(ctx), block)
    }

    fn check(&self, height: Height, state: &AppState) -> Result<(), String> {
        self.invariant.as_ref().map_or(Ok(()), |check| check(height, state))
    }

    fn committed(&mut self, block: &CommittedBlock) {
        self.app.committed(core::slice::from_ref(block));
    }

    fn snapshot_root(&self, block: &Block) -> Option<[u8; 32]> {
        self.app.snapshot_root(block)
    }

    fn state_installed(&mut self) {
        self.app.state_installed();
    }
}
