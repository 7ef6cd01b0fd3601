//! Commit receipts: which committed block holds a transaction, found by its id
//! ([`tx_id`]) on the committed chain after the height at which it was submitted. This is what
//! the client port's `WAIT` answers: a commit of this transaction, never an earlier one of the
//! same content and never a value that happens to be equal.

use super::payload::{stored_block_txs, tx_id};
use crate::error::StoreError;
use crate::node::Reader;
use std::time::{Duration, Instant};

/// How often the committed tip is looked at while waiting.
const POLL: Duration = Duration::from_millis(5);

/// What became of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// Committed in the block at this height.
    Committed(u64),
    /// In no block committed from the submission up to this height (it may still commit, or
    /// it was lost with a node that crashed before proposing it).
    Unknown {
        /// The highest committed height looked at.
        scanned: u64,
    },
}

/// Follows the committed chain of `reader` from `since + 1` until a block holding a
/// transaction with id `id` commits, or `timeout` passes. A committed block the store no
/// longer holds (pruned) is skipped: the answer is then `Unknown` unless a later block holds it.
pub fn wait_for_commit(
    reader: &Reader,
    id: &[u8; 32],
    since: u64,
    timeout: Duration,
) -> Result<Receipt, StoreError> {
    let deadline = Instant::now() + timeout;
    let mut scanned = since;
    loop {
        let tip = reader.tip()?.height.0;
        while scanned < tip {
            scanned += 1;
            let Some((block, _, _)) = reader.block(hotstuff_core::Height(scanned))? else { continue };
            if block.payload.is_empty() {
                continue;
            }
            if stored_block_txs(&block.payload).is_some_and(|txs| txs.iter().any(|tx| tx_id(tx) == *id)) {
                return Ok(Receipt::Committed(scanned));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Receipt::Unknown { scanned });
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}
