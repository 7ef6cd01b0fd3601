//! The simulator's app: a deterministic key-value state machine.
//!
//! A block's payload is `(proposer index, view, counter)` bytes; its outcome sets
//! `"h/<height>"` to the payload and `"last"` to the height. Validation recomputes the outcome
//! from the block alone, so every honest replica derives the same app state.

use hotstuff_core::{AppOutcome, AppStateUpdates, Block, Height, View};

/// Builds the payload a proposer produces for `view`.
#[must_use]
pub fn produce(proposer: usize, view: View, counter: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(24);
    p.extend_from_slice(&(proposer as u64).to_le_bytes());
    p.extend_from_slice(&view.0.to_le_bytes());
    p.extend_from_slice(&counter.to_le_bytes());
    p
}

/// The outcome of a block with `payload` at `height`.
#[must_use]
pub fn outcome(height: Height, payload: &[u8]) -> AppOutcome {
    let mut app_updates = AppStateUpdates::default();
    let mut key = b"h/".to_vec();
    key.extend_from_slice(&height.0.to_be_bytes());
    app_updates.insert(key, payload.to_vec());
    app_updates.insert(b"last".to_vec(), height.0.to_le_bytes().to_vec());
    AppOutcome { app_updates, validator_updates: Default::default() }
}

/// Validates a block: payloads must be exactly 24 bytes.
#[must_use]
pub fn validate(block: &Block) -> Option<AppOutcome> {
    (block.payload.len() == 24).then(|| outcome(block.height, &block.payload))
}
