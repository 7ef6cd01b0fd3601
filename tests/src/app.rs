//! The simulator's app: a deterministic key-value state machine.
//!
//! A block's payload is `(proposer index, view, counter)` bytes, optionally followed by a
//! validator-set change (`'C'`, then `(key, power)` pairs; power 0 removes the key). Its outcome
//! sets `"h/<height>"` to the payload and `"last"` to the height, and carries the change.
//! Validation recomputes the outcome from the block alone, so every honest replica derives the
//! same app state and the same validator sets.

use hotstuff_core::{AppOutcome, AppStateUpdates, Block, Height, PublicKey, ValidatorSetUpdates, View};

/// Builds the payload a proposer produces for `view`.
#[must_use]
pub fn produce(proposer: usize, view: View, counter: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(24);
    p.extend_from_slice(&(proposer as u64).to_le_bytes());
    p.extend_from_slice(&view.0.to_le_bytes());
    p.extend_from_slice(&counter.to_le_bytes());
    p
}

/// Appends a validator-set change to a payload.
pub fn add_change(payload: &mut Vec<u8>, updates: &[(PublicKey, u64)]) {
    payload.push(b'C');
    for (key, power) in updates {
        payload.extend_from_slice(&key.0);
        payload.extend_from_slice(&power.to_le_bytes());
    }
}

/// The validator-set change in a payload: `Some(empty)` if there is none, `None` if malformed.
fn change(payload: &[u8]) -> Option<ValidatorSetUpdates> {
    let mut updates = ValidatorSetUpdates::default();
    let rest = payload.get(24..)?;
    let Some((&tag, mut pairs)) = rest.split_first() else { return Some(updates) };
    if tag != b'C' || pairs.is_empty() || pairs.len() % 40 != 0 {
        return None;
    }
    while let Some((pair, tail)) = pairs.split_first_chunk::<40>() {
        let key = PublicKey(pair[..32].try_into().ok()?);
        let power = u64::from_le_bytes(pair[32..].try_into().ok()?);
        updates.0.insert(key, power);
        pairs = tail;
    }
    Some(updates)
}

/// The outcome of a block with `payload` at `height`.
#[must_use]
pub fn outcome(height: Height, payload: &[u8]) -> AppOutcome {
    let mut app_updates = AppStateUpdates::default();
    let mut key = b"h/".to_vec();
    key.extend_from_slice(&height.0.to_be_bytes());
    app_updates.insert(key, payload.to_vec());
    app_updates.insert(b"last".to_vec(), height.0.to_le_bytes().to_vec());
    AppOutcome { app_updates, validator_updates: change(payload).unwrap_or_default() }
}

/// Validates a block: 24 bytes, optionally followed by a well-formed validator-set change.
#[must_use]
pub fn validate(block: &Block) -> Option<AppOutcome> {
    (block.payload.len() >= 24 && change(&block.payload).is_some())
        .then(|| outcome(block.height, &block.payload))
}
