//! The kv app's [`App`] implementation: blocks proposed from the [`Mempool`], validated by
//! decoding their payload and applying the rules of [`super::auth`] to each transaction.

use super::auth::{Rules, TxError};
use super::mempool::Mempool;
use super::payload::{decode_payload, tx_count, Tx, MAX_BLOCK_TXS, TX_COUNT_KEY};
use crate::app::{App, BlockContext, Produced, StateReader};
use hotstuff_core::{AppOutcome, AppStateUpdates, Block, CommittedBlock, PublicKey, ValidatorSet};

/// The key-value app.
pub struct KvApp {
    mempool: Mempool,
    max_block_txs: usize,
    /// Signed transactions taken from the mempool whose sequence number was ahead of their
    /// client's next one when proposed (an earlier one was still in an abandoned block): tried
    /// again first in the next blocks, at most [`DEFERRED_TRIES`] times.
    deferred: Vec<(Tx, u32)>,
    /// Forwarding to other nodes over the network, if set ([`KvApp::forwarding`]).
    forwarder: Option<super::forward::PeerForwarder>,
}

/// Most transactions held back for a later block.
const MAX_DEFERRED: usize = 10_000;
/// The payload's length prefix (borsh `Vec`).
const PAYLOAD_PREFIX: usize = 4;
/// How many blocks a held-back transaction is tried in before it is dropped.
const DEFERRED_TRIES: u32 = 20;

impl KvApp {
    /// An app proposing from `mempool`, at most `max_block_txs` transactions per block (and
    /// never more than [`MAX_BLOCK_TXS`]), within the payload limit of the core (the block's
    /// `BlockContext::max_payload`) and of the mempool (`MempoolLimits::max_block_bytes`).
    #[must_use]
    pub fn new(mempool: Mempool, max_block_txs: usize) -> Self {
        KvApp {
            mempool,
            max_block_txs: max_block_txs.clamp(1, MAX_BLOCK_TXS),
            deferred: Vec::new(),
            forwarder: None,
        }
    }

    /// Forwards the mempool's transactions to the upcoming leaders over the node's own
    /// connections ([`super::forward::PeerForwarder`], connected to the mempool with this
    /// node's key `me`), and takes those other nodes forward to it. Returns the forwarder, to
    /// hand it the node's waker once the node runs.
    pub fn forward_to_peers(&mut self, me: PublicKey) -> super::forward::PeerForwarder {
        let f = super::forward::PeerForwarder::connect(&self.mempool, me);
        self.forwarder = Some(f.clone());
        f
    }

    /// The mempool the app proposes from (where a node's client server submits).
    #[must_use]
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }
}

/// The outcome of `txs` on the state of `ctx`'s parent, or the first transaction refused and
/// why (a block with it is invalid).
fn apply(ctx: &BlockContext<'_>, txs: &[Tx]) -> Result<AppOutcome, (usize, TxError)> {
    let get = |k: &[u8]| ctx.get(k);
    let mut rules = Rules::new(&get, ctx.validators).map_err(|e| (0, e.into()))?;
    let mut updates = AppStateUpdates::default();
    for (i, tx) in txs.iter().enumerate() {
        rules.apply(tx, &mut updates).map_err(|e| (i, e))?;
    }
    finish(ctx, rules, updates, txs.len()).map_err(|e| (0, e))
}

/// Adds the transaction counter to `updates`.
fn finish(
    ctx: &BlockContext<'_>,
    rules: Rules<'_>,
    mut updates: AppStateUpdates,
    txs: usize,
) -> Result<AppOutcome, TxError> {
    let count = tx_count(ctx.get(TX_COUNT_KEY)?.as_deref()) + txs as u64;
    updates.insert(TX_COUNT_KEY.to_vec(), count.to_le_bytes().to_vec());
    Ok(AppOutcome { app_updates: updates, validator_updates: rules.into_validator_updates() })
}

impl KvApp {
    /// The transactions of a new block that the rules accept, in order, and their outcome.
    /// Refused ones are dropped (and logged), except signed ones ahead of their client's
    /// sequence, which are held back for a later block.
    fn build(&mut self, ctx: &BlockContext<'_>) -> Result<(Vec<Tx>, AppOutcome), TxError> {
        let deferred = std::mem::take(&mut self.deferred);
        // (The byte limit is passed unchanged: the mempool adopts a smaller one for good.)
        let taken = self.mempool.take(
            ctx.me,
            ctx.view,
            self.max_block_txs.saturating_sub(deferred.len()).max(1),
            ctx.max_payload,
        );
        let get = |k: &[u8]| ctx.get(k);
        let mut rules = Rules::new(&get, ctx.validators)?;
        let mut updates = AppStateUpdates::default();
        let (mut accepted, mut bytes) = (Vec::new(), PAYLOAD_PREFIX);
        let candidates = deferred.into_iter().chain(taken.into_iter().map(|t| (t, 0)));
        for (tx, tries) in candidates {
            let size = tx.encoded_len();
            if accepted.len() >= self.max_block_txs || bytes + size > ctx.max_payload {
                self.defer(tx, tries);
                continue;
            }
            match rules.apply(&tx, &mut updates) {
                Ok(()) => {
                    bytes += size;
                    accepted.push(tx);
                }
                Err(TxError::OutOfOrder { .. }) => self.defer(tx, tries + 1),
                Err(TxError::Store(e)) => return Err(TxError::Store(e)),
                Err(error) => tracing::info!(%error, "transaction refused; not proposed"),
            }
        }
        let outcome = finish(ctx, rules, updates, accepted.len())?;
        Ok((accepted, outcome))
    }

    fn defer(&mut self, tx: Tx, tries: u32) {
        if tries >= DEFERRED_TRIES || self.deferred.len() >= MAX_DEFERRED {
            tracing::info!("dropping a transaction whose earlier sequence numbers never came");
        } else {
            self.deferred.push((tx, tries));
        }
    }
}

/// The forecast leaders of the two views after `ctx`'s (where transactions are forwarded).
fn upcoming_leaders(ctx: &BlockContext<'_>) -> [hotstuff_core::PublicKey; 2] {
    [ctx.leader(ctx.view.next()), ctx.leader(ctx.view.next().next())]
}

impl App for KvApp {
    fn produce_block(&mut self, ctx: &BlockContext<'_>) -> Produced {
        let built = self.build(ctx);
        let empty = built.as_ref().map_or(true, |(txs, _)| txs.is_empty());
        if empty && ctx.waits_if_empty {
            // Not proposed yet: transactions forwarded now should come here.
            self.mempool.observe_waiting(ctx.view, ctx.me);
        } else {
            self.mempool.observe(ctx.view, empty, upcoming_leaders(ctx));
        }
        match built {
            Ok((txs, _)) if txs.is_empty() => Produced::default(),
            Ok((txs, outcome)) => Produced { payload: borsh::to_vec(&txs).unwrap_or_default(), outcome },
            Err(error) => {
                tracing::error!(%error, "cannot build a block; proposing an empty block");
                Produced::default()
            }
        }
    }

    fn validate_block(&mut self, ctx: &BlockContext<'_>, block: &Block) -> Option<AppOutcome> {
        self.mempool.observe(ctx.view, block.payload.is_empty(), upcoming_leaders(ctx));
        if block.payload.is_empty() {
            return Some(AppOutcome::default());
        }
        let Some(txs) = decode_payload(&block.payload) else {
            tracing::warn!(view = block.view.0, "block refused: malformed payload");
            return None;
        };
        match apply(ctx, &txs) {
            Ok(outcome) => Some(outcome),
            Err((i, error)) => {
                tracing::warn!(view = block.view.0, tx = i, %error, "block refused");
                None
            }
        }
    }

    fn committed(&mut self, blocks: &[CommittedBlock]) {
        self.mempool.committed(blocks);
    }

    fn peer_book(&self, state: &StateReader<'_>, validators: &ValidatorSet) -> Vec<(PublicKey, String)> {
        super::governance::peer_book(state, validators)
    }

    fn outgoing(&mut self) -> Vec<(PublicKey, Vec<u8>)> {
        self.forwarder.as_ref().map(super::forward::PeerForwarder::take).unwrap_or_default()
    }

    fn on_message(&mut self, from: PublicKey, bytes: Vec<u8>) {
        if !super::forward::PeerForwarder::receive(&self.mempool, from, &bytes) {
            tracing::debug!(peer = %from, len = bytes.len(), "app message that is not a forward dropped");
        }
    }
}
