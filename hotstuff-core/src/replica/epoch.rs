//! Validator-set changes: epochs that end on commit (DiemBFT v4 / Aptos "reconfiguration"),
//! and the input that carries the QC ending an epoch.
//!
//! A block whose app outcome changes the validator set is its epoch's last block `B`. The rest
//! of the epoch's blocks extend `B` with empty payloads (the "suffix"): they only carry the
//! certificates that commit `B` by the ordinary two-chain rule, and never commit themselves.
//! When `B` commits, the replica applies the updates to get the next epoch's set, makes `B` the
//! root, drops the suffix, and starts the next epoch from `B`'s QC. The crate docs give the
//! safety argument.

use super::Replica;
use crate::action::{Action, CommittedBlock, EpochChange, EpochProof};
use crate::block_tree::{BlockTree, Validity};
use crate::error::InputError;
use crate::event::Event;
use crate::message::Message;
use crate::pacemaker::Pacemaker;
use crate::state::EpochState;
use crate::types::{BlockHash, Epoch, PublicKey, View};
use crate::QuorumCertificate;

impl<P: Pacemaker> Replica<P> {
    /// Whether a block extending `parent` falls in its epoch's suffix: `parent` or one of its
    /// uncommitted ancestors changes the validator set.
    pub(super) fn in_suffix(&self, parent: &BlockHash) -> bool {
        let mut cur = *parent;
        while let Some(e) = self.tree.get(&cur) {
            if matches!(&e.validity, Validity::Valid(o) if !o.validator_updates.is_empty()) {
                return true;
            }
            cur = e.block.parent();
        }
        false
    }

    /// Whether `block` is the block this epoch began after (genesis in epoch 0), so a block
    /// extending it is one of the epoch's first blocks.
    pub(super) fn epoch_start(&self, block: &BlockHash) -> bool {
        *block == self.epoch.root_qc.block
    }

    /// Whether a certificate for `view` is more than `sync_margin` views above every block this
    /// replica has (the block-sync trigger).
    pub(super) fn far_behind(&self, view: View) -> bool {
        let top =
            self.tree.iter().map(|(_, e)| e.block.view).max().unwrap_or_default().max(self.tree.root().view);
        view.0 > top.0.saturating_add(self.config.sync_margin)
    }

    /// The committed block `last` ends the epoch: switch to the next validator set and start the
    /// new epoch from `last`'s QC. Returns what the driver must store with the commit.
    pub(super) fn end_epoch(&mut self, last: &CommittedBlock, proof: EpochProof) -> Option<EpochChange> {
        let validators = match self.epoch.validators.apply(&last.outcome.validator_updates) {
            Ok(v) => v,
            Err(_) => {
                // Validation refuses updates that do not apply (`settle_validation`), so a
                // committed block always has applicable ones.
                debug_assert!(false, "committed validator-set updates do not apply");
                return None;
            }
        };
        let state = EpochState {
            epoch: self.epoch.epoch.next(),
            previous: Some(self.epoch.validators.clone()),
            validators,
            root_qc: last.certificate.clone(),
        };
        self.epoch = state.clone();
        self.history.set_epoch_start(state.root_qc.view);
        self.epoch_end_qc = Some(proof.qc.clone());
        // The suffix never commits, and nothing of the old epoch counts in the new one.
        self.tree = BlockTree::new(*self.tree.root());
        self.commit_target = None;
        self.votes.clear();
        self.timeouts.clear();
        self.proposals_seen.clear();
        self.verified.clear();
        self.recovered.clear();
        self.producing = None;
        // The new epoch starts from the root QC; the old epoch's QCs, lock and TC are over.
        self.safety.epoch = state.epoch;
        self.safety.high_qc = state.root_qc.clone();
        self.safety.locked_qc = state.root_qc.clone();
        self.safety.last_tc = None;
        self.staged.safety_dirty = true;
        // The view does not move: a replica is in a view only by a certificate for the one
        // before (or its start), so its peers can follow it. If it already timed out in this
        // view under the old epoch, it may time out again under the new one; the two timeout
        // votes name different epochs and never count together.
        self.emit(Action::Event(Event::EpochChanged {
            epoch: state.epoch,
            height: last.block.height,
            validators: state.validators.len(),
            total_power: state.validators.total_power(),
        }));
        Some(EpochChange { state, proof })
    }

    /// A QC sent on its own ([`Message::Certificate`]): check it against the set that certified
    /// its block and take it in (which may commit an epoch's last block and switch sets).
    pub(super) fn handle_certificate(
        &mut self,
        from: PublicKey,
        qc: QuorumCertificate,
    ) -> Result<(), InputError> {
        if qc.view <= self.tree.root().view {
            return Err(InputError::Stale { view: qc.view, current: self.safety.view });
        }
        let digest = self.check_qc(&qc)?;
        if !self.tree.contains(&qc.block) {
            self.request_sync(Some(from));
        }
        self.observe_qc(&qc, digest);
        Ok(())
    }

    /// A message of another epoch arrived from `from`. A later epoch means this replica is
    /// behind: ask the sender for blocks (its certificates cannot be checked yet). An earlier
    /// one means the sender is behind: send it the QC that ended that epoch, if this replica has
    /// it. Either way the message itself is dropped.
    pub(super) fn other_epoch(&mut self, from: PublicKey, epoch: Epoch) {
        if epoch > self.epoch.epoch {
            self.request_sync(Some(from));
        } else if epoch.next() == self.epoch.epoch {
            if let Some(qc) = self.epoch_end_qc.clone() {
                self.emit(Action::Send { to: from, message: Message::Certificate(qc) });
            }
        }
    }
}
