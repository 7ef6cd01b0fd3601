//! Inputs: the app's replies (a produced block, a validation verdict).

use super::Replica;
use crate::action::Action;
use crate::app::AppOutcome;
use crate::block::Block;
use crate::block_tree::Validity;
use crate::crypto::{self, SignKind};
use crate::error::InputError;
use crate::event::Event;
use crate::message::{Message, Proposal};
use crate::pacemaker::Pacemaker;
use crate::state::BlockRecord;
use crate::types::{BlockHash, Height, View};
use alloc::vec::Vec;

impl<P: Pacemaker> Replica<P> {
    /// The app produced the payload asked for by `ProduceBlock`: build the block on the high QC
    /// (with the previous view's TC if the view was entered by timeout), sign the proposal,
    /// record the view as proposed in, vote for it, and broadcast it once durable.
    pub(super) fn handle_block_produced(
        &mut self,
        view: View,
        parent: BlockHash,
        payload: Vec<u8>,
        outcome: AppOutcome,
    ) -> Result<(), InputError> {
        if self.producing != Some(view) || view != self.safety.view || parent != self.safety.high_qc.block {
            return Err(InputError::UnexpectedReply);
        }
        let max = self.config.limits.max_payload;
        if payload.len() > max {
            return Err(InputError::PayloadTooLarge { len: payload.len(), max });
        }
        if self.tree.position(&parent).is_none() {
            return Err(InputError::UnexpectedReply);
        }
        if !outcome.validator_updates.is_empty() {
            // Building the new set decompresses every key: only for blocks that change it.
            self.epoch
                .validators
                .apply(&outcome.validator_updates)
                .map_err(InputError::BadValidatorUpdates)?;
        }
        self.propose(view, parent, payload, outcome);
        Ok(())
    }

    /// Builds, signs and records this leader's block for `view` on `parent` (the high QC's
    /// block), votes for it, and broadcasts it once durable.
    pub(super) fn propose(&mut self, view: View, parent: BlockHash, payload: Vec<u8>, outcome: AppOutcome) {
        let Some((_, parent_height)) = self.tree.position(&parent) else { return };
        let justify = self.safety.high_qc.clone();
        let tc = if justify.view.next() == view {
            None
        } else {
            self.safety.last_tc.clone().filter(|tc| tc.view.next() == view)
        };
        let block = Block {
            epoch: self.epoch.epoch,
            view,
            height: Height(parent_height.0.saturating_add(1)),
            justify,
            proposer: self.key.public(),
            payload,
        };
        let hash = block.hash();
        let signature =
            self.key.sign(self.config.chain, SignKind::Proposal, view, &crypto::block_subject(&hash));

        self.producing = None;
        self.safety.last_proposed_view = view;
        self.staged.safety_dirty = true;
        self.proposals_seen.insert(view, hash);
        self.tree.insert(hash, block.clone(), Validity::Valid(outcome.clone()), false);
        self.staged.blocks.push(BlockRecord { block: block.clone(), outcome: Some(outcome) });
        let height = block.height;
        self.staged
            .gated
            .push(Action::Broadcast { message: Message::Proposal(Proposal { block, tc, signature }) });
        self.emit(Action::Event(Event::Proposed { view, hash, height }));
        self.try_vote(hash);
        self.after_valid(hash);
        self.block_added(hash);
    }

    /// The app's verdict on a block the core asked about.
    pub(super) fn handle_block_validated(
        &mut self,
        hash: BlockHash,
        outcome: Option<AppOutcome>,
    ) -> Result<(), InputError> {
        let entry = self.tree.get(&hash).ok_or(InputError::UnknownBlock(hash))?;
        if entry.validity != Validity::Validating {
            return Err(InputError::UnexpectedReply);
        }
        let block = entry.block.clone();
        self.settle_validation(hash, block, outcome);
        Ok(())
    }

    /// Records a verdict on a block being validated. A verdict whose validator-set updates
    /// cannot be applied (an empty or oversized set) makes the block invalid: the app is
    /// deterministic, so every honest replica reaches the same verdict.
    pub(super) fn settle_validation(&mut self, hash: BlockHash, block: Block, outcome: Option<AppOutcome>) {
        let outcome = outcome.filter(|o| {
            o.validator_updates.is_empty() || self.epoch.validators.apply(&o.validator_updates).is_ok()
        });
        match outcome {
            Some(outcome) => {
                if let Some(e) = self.tree.get_mut(&hash) {
                    e.validity = Validity::Valid(outcome.clone());
                }
                self.staged.blocks.push(BlockRecord { block, outcome: Some(outcome) });
                self.try_vote(hash);
                self.after_valid(hash);
            }
            None => {
                if let Some(e) = self.tree.get_mut(&hash) {
                    e.validity = Validity::Invalid;
                }
                self.emit(Action::Event(Event::BlockRejected { hash }));
            }
        }
    }

    /// A block became valid: blocks waiting to commit may go (first, since a commit may end the
    /// epoch), its children may be validated, and the leader may now propose on it.
    fn after_valid(&mut self, hash: BlockHash) {
        self.drain_commits();
        for child in self.tree.waiting_children(&hash) {
            self.request_validation(child);
        }
        self.try_propose();
    }
}
