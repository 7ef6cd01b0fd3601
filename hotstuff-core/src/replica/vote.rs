//! Input: a vote from a peer (this replica leads the next view, or every validator counts
//! votes: `Config::broadcast_votes`).

use super::{Replica, VoteCollector};
use crate::action::Action;
use crate::certificate::QuorumCertificate;
use crate::crypto::{self, SignKind};
use crate::error::InputError;
use crate::event::Event;
use crate::message::Vote;
use crate::pacemaker::Pacemaker;

impl<P: Pacemaker> Replica<P> {
    /// Checks a vote (addressed to the next view's leader, or to any validator with
    /// `broadcast_votes` on; for a live view, from a validator, not a duplicate or a second
    /// vote, signature) before counting it. A vote for a view whose QC this replica already
    /// formed is dropped unchecked (`Ok`, nothing changes).
    pub(super) fn handle_vote(&mut self, vote: Vote) -> Result<(), InputError> {
        if vote.epoch != self.epoch.epoch {
            return Err(InputError::WrongEpoch { expected: self.epoch.epoch, got: vote.epoch });
        }
        let view = vote.view;
        let current = self.safety.view;
        if view.next() < current || view <= self.tree.root().view {
            return Err(InputError::Stale { view, current });
        }
        if view.0 > current.0.saturating_add(self.config.view_window) {
            return Err(InputError::TooFarAhead { view, current });
        }
        // Jolteon Fig. 2 sends votes to the next leader, which aggregates them. Any replica may
        // aggregate a QC from 2f+1 valid votes (a QC is valid wherever it forms; DiemBFT v4
        // `process_vote` runs at every replica that receives votes): with `broadcast_votes` every
        // validator counts the votes sent to it. Listeners count none (they are sent none).
        let counts = if self.config.broadcast_votes {
            self.is_validator()
        } else {
            self.leader(view.next()) == self.key.public()
        };
        if !counts {
            return Err(InputError::NotNextLeader { view });
        }
        let vk =
            self.epoch.validators.verifying_key(&vote.voter).ok_or(InputError::NotAValidator(vote.voter))?;
        // A view forms at most one QC here (`collect_vote`): a vote arriving after it formed
        // cannot change anything, so its signature is not checked and it is not recorded
        // (Ok, state unchanged). Honest voters beyond the quorum send such votes every view;
        // this spares the aggregator their signature checks (n - quorum of them per view).
        if let Some(collector) = self.votes.get(&view) {
            if collector.formed {
                return Ok(());
            }
            if let Some(prev) = collector.by_voter.get(&vote.voter) {
                return Err(if *prev == vote.block {
                    InputError::Duplicate
                } else {
                    InputError::Equivocation { signer: vote.voter, view }
                });
            }
        }
        self.verify_vote(vk, &vote)?;
        self.collect_vote(vote);
        Ok(())
    }

    /// Checks a vote's signature with its voter's key `vk` (a vote sent alone, or the one
    /// inside a timeout vote).
    pub(super) fn verify_vote(
        &self,
        vk: &ed25519_dalek::VerifyingKey,
        vote: &Vote,
    ) -> Result<(), InputError> {
        crypto::verify_one(
            vk,
            self.config.chain,
            SignKind::Vote,
            vote.view,
            &crypto::vote_subject(&vote.block, vote.epoch),
            &vote.signature,
        )
        .map_err(|source| InputError::BadSignature { signer: vote.voter, source })
    }

    /// Counts a checked vote; at a quorum (by power) forms the QC (Jolteon Fig. 2 "upon
    /// receiving 2f+1 votes") and takes it in, which advances to the next view.
    ///
    /// At the next leader this is the leader's aggregation. At any other validator (votes in
    /// timeout votes, or `broadcast_votes`) the QC is taken in exactly as a QC received in a
    /// proposal or a certificate (`observe_qc`: high QC, commit rule, view advance); the lock
    /// rises only when voting. Nothing here is leader-only: `observe_qc` proposes (through
    /// `try_propose`) only if this replica leads the view it enters.
    pub(super) fn collect_vote(&mut self, vote: Vote) {
        if vote.epoch != self.epoch.epoch {
            return;
        }
        let Some(power) = self.epoch.validators.power(&vote.voter) else { return };
        let quorum = self.epoch.validators.quorum();
        let collector: &mut VoteCollector = self.votes.entry(vote.view).or_default();
        if collector.by_voter.insert(vote.voter, vote.block).is_some() {
            return;
        }
        let (sum, sigs) = collector.by_block.entry(vote.block).or_default();
        sigs.insert(vote.voter, vote.signature);
        *sum = sum.saturating_add(power);
        if *sum < quorum || collector.formed {
            return;
        }
        collector.formed = true;
        let qc = QuorumCertificate {
            epoch: vote.epoch,
            view: vote.view,
            block: vote.block,
            signatures: sigs.iter().map(|(k, s)| (*k, *s)).collect(),
        };
        self.emit(Action::Event(Event::QcFormed { view: qc.view, hash: qc.block }));
        let digest = qc.digest();
        let epoch = self.epoch.epoch;
        self.observe_qc(&qc, digest);
        if self.epoch.epoch != epoch {
            // This QC committed the epoch's last block: everyone else needs it to switch too,
            // and the next proposal (by the new set's leader) will not carry it. It leaves after
            // the persist of this input, like every message carrying this replica's signatures.
            self.staged.gated.push(Action::Broadcast { message: crate::message::Message::Certificate(qc) });
        }
    }
}
