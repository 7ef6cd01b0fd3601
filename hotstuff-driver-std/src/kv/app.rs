//! The kv app's [`App`] implementation: blocks proposed from the [`Mempool`], validated by
//! decoding their payload.

use super::mempool::Mempool;
use super::payload::{decode_payload, state_key, tx_count, Tx, MAX_BLOCK_TXS, TX_COUNT_KEY};
use crate::app::{App, BlockContext, Produced};
use crate::error::StoreError;
use hotstuff_core::{AppOutcome, AppStateUpdates, Block, CommittedBlock};

/// The key-value app.
pub struct KvApp {
    mempool: Mempool,
    max_block_txs: usize,
}

impl KvApp {
    /// An app proposing from `mempool`, at most `max_block_txs` transactions per block (and
    /// never more than [`MAX_BLOCK_TXS`]), within the payload limit of the core (the block's
    /// `BlockContext::max_payload`) and of the mempool (`MempoolLimits::max_block_bytes`).
    #[must_use]
    pub fn new(mempool: Mempool, max_block_txs: usize) -> Self {
        KvApp { mempool, max_block_txs: max_block_txs.clamp(1, MAX_BLOCK_TXS) }
    }

    /// The mempool the app proposes from (where a node's client server submits).
    #[must_use]
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }
}

/// The outcome of `txs` on the state of `ctx`'s parent.
fn apply(ctx: &BlockContext<'_>, txs: &[Tx]) -> Result<AppOutcome, StoreError> {
    let mut updates = AppStateUpdates::default();
    for tx in txs {
        match tx {
            Tx::Put { key, value } => updates.insert(state_key(key), value.clone()),
            Tx::Delete { key } => updates.delete(state_key(key)),
        }
    }
    let count = tx_count(ctx.get(TX_COUNT_KEY)?.as_deref()) + txs.len() as u64;
    updates.insert(TX_COUNT_KEY.to_vec(), count.to_le_bytes().to_vec());
    Ok(AppOutcome { app_updates: updates, validator_updates: Default::default() })
}

/// The forecast leaders of the two views after `ctx`'s (where transactions are forwarded).
fn upcoming_leaders(ctx: &BlockContext<'_>) -> [hotstuff_core::PublicKey; 2] {
    [ctx.leader(ctx.view.next()), ctx.leader(ctx.view.next().next())]
}

impl App for KvApp {
    fn produce_block(&mut self, ctx: &BlockContext<'_>) -> Produced {
        let txs = self.mempool.take(ctx.me, ctx.view, self.max_block_txs, ctx.max_payload);
        if txs.is_empty() && ctx.waits_if_empty {
            // Not proposed yet: transactions forwarded now should come here.
            self.mempool.observe_waiting(ctx.view, ctx.me);
        } else {
            self.mempool.observe(ctx.view, txs.is_empty(), upcoming_leaders(ctx));
        }
        if txs.is_empty() {
            return Produced::default();
        }
        match apply(ctx, &txs) {
            Ok(outcome) => Produced { payload: borsh::to_vec(&txs).unwrap_or_default(), outcome },
            Err(error) => {
                tracing::error!(%error, "cannot read app state; proposing an empty block");
                Produced::default()
            }
        }
    }

    fn validate_block(&mut self, ctx: &BlockContext<'_>, block: &Block) -> Option<AppOutcome> {
        self.mempool.observe(ctx.view, block.payload.is_empty(), upcoming_leaders(ctx));
        if block.payload.is_empty() {
            return Some(AppOutcome::default());
        }
        let txs = decode_payload(&block.payload)?;
        apply(ctx, &txs).map_err(|error| tracing::error!(%error, "cannot read app state")).ok()
    }

    fn committed(&mut self, blocks: &[CommittedBlock]) {
        self.mempool.committed(blocks);
    }
}
