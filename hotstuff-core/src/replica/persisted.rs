//! Input: the driver's durability acknowledgement.

use super::Replica;
use crate::error::InputError;
use crate::pacemaker::Pacemaker;

impl<P: Pacemaker> Replica<P> {
    /// Everything up to `seq` is durable: release the signed messages gated at or below it
    /// (raft-rs `on_persist_ready`). Acknowledging an old seq again is harmless.
    pub(super) fn handle_persisted(&mut self, seq: u64) -> Result<(), InputError> {
        if seq > self.persist_seq {
            return Err(InputError::UnknownSeq { seq, last: self.persist_seq });
        }
        if seq <= self.acked_seq {
            return Ok(());
        }
        self.acked_seq = seq;
        while self.gated.front().is_some_and(|(gate, _)| *gate <= seq) {
            if let Some((_, action)) = self.gated.pop_front() {
                self.ready.push_back(action);
            }
        }
        // This replica's own votes now durable count towards their QCs (which may form here).
        self.count_durable_own_votes();
        Ok(())
    }
}
