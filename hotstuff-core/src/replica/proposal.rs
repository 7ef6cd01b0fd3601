//! Input: a proposal from a peer.

use super::Replica;
use crate::action::Action;
use crate::block_tree::Validity;
use crate::crypto::{self, SignKind};
use crate::error::InputError;
use crate::event::Event;
use crate::message::Proposal;
use crate::pacemaker::Pacemaker;
use crate::types::{PublicKey, View};

impl<P: Pacemaker> Replica<P> {
    /// Checks a proposal completely (structure, leader, signature, certificates, parent) before
    /// changing anything; then takes in its certificates (which may advance the view and commit),
    /// adds the block to the tree and asks the app to validate it. The vote comes when the app
    /// accepts the block (`handle_block_validated`).
    pub(super) fn handle_proposal(&mut self, from: PublicKey, p: Proposal) -> Result<(), InputError> {
        if p.block.epoch != self.epoch.epoch {
            self.other_epoch(from, p.block.epoch);
            return Ok(());
        }
        let block = &p.block;
        let view = block.view;
        let root = *self.tree.root();
        if view <= root.view || view == View(0) {
            return Err(InputError::Stale { view, current: self.safety.view });
        }
        // No view window here: a proposal proves its view with its QC or TC (checked below),
        // which is how a replica that was away for long catches up. What is buffered (a
        // proposal whose parent is missing) is bounded in `keep_orphan`.
        if block.justify.view >= view {
            return Err(InputError::MalformedBlock("justify QC not below the block's view"));
        }
        // Jolteon Fig. 2 "propose": a block not extending the previous view's QC must carry the
        // TC of the previous view.
        let tc_ok = p.tc.as_ref().is_some_and(|tc| tc.view.next() == view);
        // ... except an epoch's first blocks, which extend its root QC in any view.
        if block.justify.view.next() != view && !tc_ok && !self.epoch_start(&block.justify.block) {
            return Err(InputError::MissingTc { view });
        }
        if p.tc.is_some() && !tc_ok {
            return Err(InputError::MalformedBlock("TC is not for the previous view"));
        }
        let hash = block.hash();
        if self.tree.contains(&hash) {
            return Err(InputError::Duplicate);
        }
        let expected = self.leader(view);
        if block.proposer != expected {
            return Err(InputError::WrongLeader { view, expected, got: block.proposer });
        }
        if self.proposals_seen.get(&view).is_some_and(|h| *h != hash) {
            return Err(InputError::Equivocation { signer: block.proposer, view });
        }
        let vk = self
            .epoch
            .validators
            .verifying_key(&block.proposer)
            .ok_or(InputError::NotAValidator(block.proposer))?;
        // Jolteon Fig. 2 "vote rule" preconditions: the block is signed by the view's leader and
        // its justify QC is valid. A QC verified before leaves the proposer's signature, checked
        // strictly. A new QC and the signature are verified in one batch; if it fails, the checks
        // run one by one (the signature strictly, then the QC) to name the culprit in the `Err`.
        let subject = crypto::block_subject(&hash);
        let proposer_sig = crypto::BatchItem {
            key: *vk,
            msg: crypto::signed_bytes(self.config.chain, SignKind::Proposal, view, &subject),
            sig: p.signature,
        };
        let qc_digest = block.justify.digest();
        let bad_signature = |source| InputError::BadSignature { signer: block.proposer, source };
        if self.is_verified(block.justify.view, &qc_digest) {
            crypto::verify_batch(core::slice::from_ref(&proposer_sig)).map_err(bad_signature)?;
        } else if !self.batch_check_qc_and_proposer(&block.justify, proposer_sig) {
            crypto::verify_one(vk, self.config.chain, SignKind::Proposal, view, &subject, &p.signature)
                .map_err(bad_signature)?;
            self.check_qc(&block.justify)?;
        }
        let tc_digests = match &p.tc {
            Some(tc) => Some(self.check_tc(tc)?),
            None => None,
        };
        let Some((parent_view, parent_height)) = self.tree.position(&block.parent()) else {
            // The parent is missing: the certificates are valid, so take them in. Far behind,
            // block sync fetches the missing blocks from the proposer. Otherwise the parent is
            // late (reordered) or lost: the proposal is kept until the parent joins the tree
            // (`block_added` handles it again then), and the parent, which the justify QC
            // certifies, is fetched by hash if it does not arrive (`want_block`).
            if block.justify.view <= root.view {
                return Err(InputError::UnknownParent(block.parent()));
            }
            let far = self.far_behind(block.justify.view);
            if far {
                self.request_sync(Some(from));
            }
            let justify = p.block.justify.clone();
            let tc = p.tc.clone();
            if view.0 <= self.safety.view.0.saturating_add(self.config.view_window) {
                self.keep_orphan(from, p);
            }
            self.observe_qc(&justify, qc_digest);
            if let (Some(tc), Some(d)) = (tc, tc_digests) {
                self.observe_tc(&tc, d);
            }
            return Ok(());
        };
        if parent_view != block.justify.view {
            return Err(InputError::MalformedBlock("justify QC view differs from the parent's view"));
        }
        if block.height.0 != parent_height.0.saturating_add(1) {
            return Err(InputError::BadHeight {
                expected: crate::types::Height(parent_height.0.saturating_add(1)),
                got: block.height,
            });
        }
        if self.tree.len() >= self.config.max_uncommitted_blocks {
            return Err(InputError::TreeFull);
        }

        // Accepted: from here on the input changes state.
        let Proposal { block, tc, .. } = p;
        let proposer = block.proposer;
        self.proposals_seen.insert(view, hash);
        self.tree.insert(hash, block.clone(), Validity::Waiting, false);
        self.emit(Action::Event(Event::ReceivedProposal { view, hash, proposer }));
        self.observe_qc(&block.justify, qc_digest);
        if let (Some(tc), Some(d)) = (tc, tc_digests) {
            self.observe_tc(&tc, d);
        }
        self.request_validation(hash);
        self.block_added(hash);
        Ok(())
    }
}
