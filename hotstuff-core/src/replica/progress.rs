//! The protocol rules shared by every handler: certificates moving the view, the voting,
//! locking, commit and timeout rules, proposing, and handing blocks to the app.
//!
//! Rule names follow DiemBFT v4 ("DiemBFT v4: State Machine Replication in the Diem
//! Blockchain", 2021, §4 "Safety" and §5 "Pacemaker", functions `safe_to_vote`,
//! `safe_to_extend`, `safe_to_timeout`, `process_certificates`) and Jolteon ("Jolteon and Ditto:
//! Network-Adaptive Efficient Consensus with Asynchronous Fallback", Gelashvili et al., FC 2022,
//! Figure 2 "Jolteon protocol for replica i").

use super::Replica;
use crate::action::{Action, CommittedBlock};
use crate::block_tree::Validity;
use crate::certificate::{QuorumCertificate, TimeoutCertificate};
use crate::event::{Event, ViewChange};
use crate::message::{Message, Vote};
use crate::pacemaker::Pacemaker;
use crate::types::{BlockHash, View};
use alloc::vec::Vec;

/// How a view was entered.
pub(super) use crate::event::ViewChange as Entry;

/// DiemBFT v4 `safe_to_vote(block_round, qc_round, tc)`, with `safe_to_extend` inlined:
/// a replica votes for a block of view `r` extending a QC of view `q` iff
/// `r > max(highest_vote_round, q)` and either `r == q + 1` (Jolteon Fig. 2 "vote rule" first
/// case) or the previous view ended with a TC `tc` (`r == tc.view + 1`) and
/// `q >= max(tc.high_qc_views)` (Jolteon Fig. 2 second case: extend the highest QC a quorum
/// reported, which is at least every honest lock).
#[must_use]
pub fn safe_to_vote(
    block_view: View,
    qc_view: View,
    highest_voted: View,
    tc: Option<&TimeoutCertificate>,
) -> bool {
    if block_view <= highest_voted.max(qc_view) {
        return false;
    }
    if block_view == qc_view.next() {
        return true;
    }
    match tc {
        Some(tc) if block_view == tc.view.next() => qc_view >= tc.max_high_qc_view(),
        _ => false,
    }
}

/// DiemBFT v4 `safe_to_timeout(round, qc_round, tc)`: a replica signs a timeout vote for view
/// `r` reporting high QC `q` iff `q >= highest_qc_round` (never report below its lock),
/// `r > max(highest_vote_round - 1, q)` (it may time out a view it voted in, not an older one),
/// and it entered `r` legitimately: `r == q + 1` or `r == tc.view + 1`.
#[must_use]
pub fn safe_to_timeout(
    view: View,
    qc_view: View,
    locked_view: View,
    highest_voted: View,
    tc: Option<&TimeoutCertificate>,
) -> bool {
    if qc_view < locked_view || view <= View(highest_voted.0.saturating_sub(1)).max(qc_view) {
        return false;
    }
    view == qc_view.next() || tc.is_some_and(|tc| view == tc.view.next())
}

impl<P: Pacemaker> Replica<P> {
    /// Emits what entering the current view requires: its timer, the event, and a
    /// `ProduceBlock` if this replica leads it.
    pub(super) fn start_view(&mut self, reason: ViewChange) {
        let view = self.safety.view;
        match reason {
            ViewChange::Qc => self.consecutive_failures = 0,
            ViewChange::Tc => self.consecutive_failures = self.consecutive_failures.saturating_add(1),
            ViewChange::Start => {}
        }
        let after = self.pacemaker.view_timeout(view, self.consecutive_failures);
        self.emit(Action::SetTimer { view, after });
        let leader = self.leader(view);
        self.emit(Action::Event(Event::ViewEntered { view, leader, reason }));
        // Collected votes and timeouts below the previous view can no longer matter.
        let keep_from = View(view.0.saturating_sub(1));
        self.votes = self.votes.split_off(&keep_from);
        self.timeouts = self.timeouts.split_off(&keep_from);
        self.producing = None;
        self.try_propose();
    }

    /// Pacemaker rule (DiemBFT v4 §5 `advance_round_qc` / `advance_round_tc`; Jolteon Fig. 2
    /// "advance round"): a certificate for view `v >= current` moves the replica to `v + 1`.
    pub(super) fn advance_to(&mut self, view: View, reason: ViewChange) {
        if view <= self.safety.view {
            return;
        }
        self.safety.view = view;
        self.staged.safety_dirty = true;
        self.start_view(reason);
    }

    /// Takes in a verified QC (DiemBFT v4 `process_certificates` / Jolteon Fig. 2 "upon
    /// receiving a QC"): raise the high QC, apply the commit rule, advance the view.
    pub(super) fn observe_qc(&mut self, qc: &QuorumCertificate, digest: BlockHash) {
        if qc.epoch != self.epoch.epoch {
            // Checked under an epoch that has since ended (earlier in this same input): it can
            // no longer count. The new epoch's root QC is already the high QC.
            return;
        }
        self.remember_verified(qc.view, digest);
        if qc.view > self.safety.high_qc.view {
            self.safety.high_qc = qc.clone();
            self.staged.safety_dirty = true;
            // A block asked for on the old high QC can no longer be proposed (blocks extend the
            // high QC, and `BlockProduced` for the old parent is refused): ask again on the new
            // one below rather than lose this leader's turn.
            if self.producing == Some(self.safety.view) {
                self.producing = None;
            }
        }
        self.apply_commit_rule(qc);
        self.advance_to(qc.view.next(), ViewChange::Qc);
        self.try_propose();
        if !self.tree.contains(&qc.block) {
            self.want_block(qc);
            if self.far_behind(qc.view) {
                self.request_sync(None);
            }
        }
    }

    /// Takes in a verified TC: its high QC, then the view after it.
    pub(super) fn observe_tc(&mut self, tc: &TimeoutCertificate, digests: (BlockHash, BlockHash)) {
        if tc.epoch != self.epoch.epoch {
            return; // as in `observe_qc`
        }
        self.remember_verified(tc.view, digests.0);
        self.observe_qc(&tc.high_qc, digests.1);
        if self.safety.last_tc.as_ref().is_none_or(|t| t.view < tc.view) {
            self.safety.last_tc = Some(tc.clone());
            self.staged.safety_dirty = true;
        }
        self.advance_to(tc.view.next(), ViewChange::Tc);
    }

    /// Two-chain commit rule (Jolteon Fig. 2 "commit rule"; DiemBFT v4 §4 "commit rule"): when a
    /// QC certifies a block `b1` whose parent `b0` is in the directly preceding view
    /// (`b1.view == b0.view + 1`), `b0` and all its ancestors are committed.
    fn apply_commit_rule(&mut self, qc: &QuorumCertificate) {
        let Some(b1) = self.tree.get(&qc.block) else { return };
        #[cfg(hotstuff_planted_bug)]
        {
            // Planted bug (negative control only; production builds never set this cfg):
            // commit a block as soon as it is certified (one-chain), ignoring the two-chain rule.
            // The simulator's safety oracle must catch the forks this causes.
            if b1.block.height > self.tree.root().height {
                self.commit_target =
                    Some(super::CommitTarget { block: qc.block, qc: qc.clone(), proof: qc.clone() });
                self.drain_commits();
            }
            return;
        }
        #[allow(unreachable_code)]
        let b0 = b1.block.parent();
        if b1.block.justify.view.next() != b1.block.view {
            return; // not consecutive views: no two-chain, nothing commits
        }
        let Some((_, b0_height)) = self.tree.position(&b0) else { return };
        if b0_height <= self.tree.root().height {
            return; // already committed
        }
        if self
            .commit_target
            .as_ref()
            .is_some_and(|t| self.tree.position(&t.block).is_some_and(|(_, th)| th >= b0_height))
        {
            return;
        }
        self.commit_target =
            Some(super::CommitTarget { block: b0, qc: b1.block.justify.clone(), proof: qc.clone() });
        self.drain_commits();
    }

    /// Hands over, oldest first, the blocks up to the commit target whose app outcomes are
    /// known, and prunes the tree. A block whose validation is still outstanding holds back
    /// itself and its descendants until the app answers.
    pub(super) fn drain_commits(&mut self) {
        let Some(super::CommitTarget { block: target, qc: target_qc, proof: proof_qc }) =
            self.commit_target.clone()
        else {
            return;
        };
        let Some(path) = self.tree.path_from_root(&target) else {
            self.commit_target = None;
            return;
        };
        // Commit the longest prefix of the path whose blocks are all validated, but no further
        // than the first block that changes the validator set: it ends the epoch, and the
        // blocks after it in this epoch (empty suffix blocks) never commit.
        let mut upto = None;
        let mut ends_epoch = false;
        for h in &path {
            match self.tree.get(h).map(|e| &e.validity) {
                Some(Validity::Valid(o)) => {
                    upto = Some(*h);
                    if !o.validator_updates.is_empty() {
                        ends_epoch = true;
                        break;
                    }
                }
                _ => break,
            }
        }
        let Some(upto) = upto else { return };
        // The epoch's proof of commit: the suffix blocks from just after `upto` to the block
        // the commit QC certifies, and that QC.
        let epoch_proof = ends_epoch.then(|| {
            let mut blocks: Vec<crate::block::Block> = path
                .iter()
                .skip_while(|h| **h != upto)
                .skip(1)
                .filter_map(|h| self.tree.get(h).map(|e| e.block.clone()))
                .collect();
            if let Some(b1) = self.tree.get(&proof_qc.block) {
                if b1.block.parent() == target {
                    blocks.push(b1.block.clone());
                }
            }
            crate::action::EpochProof { blocks, qc: proof_qc.clone() }
        });
        // The QC for each block is the justify of its child on the path; for the target it is
        // the QC the commit rule saw. Gather them before the tree drops the committed blocks.
        let certificates: Vec<QuorumCertificate> = path
            .iter()
            .skip(1)
            .filter_map(|h| self.tree.get(h).map(|e| e.block.justify.clone()))
            .chain(core::iter::once(target_qc))
            .collect();
        let entries = self.tree.commit(&upto);
        let mut blocks = Vec::with_capacity(entries.len());
        for ((hash, entry), certificate) in entries.into_iter().zip(certificates) {
            let Validity::Valid(outcome) = entry.validity else { continue };
            self.history.push(&entry.block);
            self.emit(Action::Event(Event::Committed {
                epoch: entry.block.epoch,
                view: entry.block.view,
                height: entry.block.height,
                hash,
            }));
            blocks.push(CommittedBlock {
                block: entry.block,
                hash,
                certificate,
                outcome,
                epoch_change: None,
            });
        }
        if upto == target || ends_epoch {
            self.commit_target = None;
        }
        if let (Some(proof), Some(last)) = (epoch_proof, blocks.last_mut()) {
            let change = self.end_epoch(last, proof);
            last.epoch_change = change;
        }
        let root_view = self.tree.root().view;
        self.prune_fetch_state();
        self.proposals_seen = self.proposals_seen.split_off(&root_view.next());
        self.verified = self.verified.split_off(&root_view);
        if !blocks.is_empty() {
            self.emit(Action::Commit { blocks });
        }
    }

    /// Leader rule (Jolteon Fig. 2 "propose"; DiemBFT v4 `process_new_round_event`): the leader
    /// of the current view asks the app for a block extending its highest QC, once, and only
    /// when that QC's block is known and valid (so the app can read its speculative state).
    pub(super) fn try_propose(&mut self) {
        let view = self.safety.view;
        if !self.is_validator()
            || self.leader(view) != self.key.public()
            || self.safety.last_proposed_view >= view
            || self.producing == Some(view)
        {
            return;
        }
        let parent = self.safety.high_qc.block;
        if !self.tree.is_valid_or_root(&parent) {
            return; // retried when the parent is validated
        }
        let Some((_, height)) = self.tree.position(&parent) else { return };
        // Jolteon: a leader that entered by a TC must be able to justify extending high_qc. At
        // the start of an epoch nothing is certified yet, and its first block extends the root
        // QC in any view (see `epoch_start`).
        if self.safety.high_qc.view.next() != view
            && self.safety.last_tc.as_ref().is_none_or(|tc| tc.view.next() != view)
            && !self.epoch_start(&self.safety.high_qc.block)
        {
            return;
        }
        self.producing = Some(view);
        if self.in_suffix(&parent) {
            // After a block that changes the validator set, this epoch's blocks are empty: they
            // only carry the certificates that commit it. The app is not asked.
            self.propose(view, parent, Vec::new(), crate::app::AppOutcome::default());
            return;
        }
        self.emit(Action::ProduceBlock {
            view,
            parent,
            height: crate::types::Height(height.0.saturating_add(1)),
        });
    }

    /// Asks the app to validate `hash` if its parent is valid; otherwise it waits.
    pub(super) fn request_validation(&mut self, hash: BlockHash) {
        let Some(entry) = self.tree.get(&hash) else { return };
        if entry.validity != Validity::Waiting || !self.tree.is_valid_or_root(&entry.block.parent()) {
            return;
        }
        let block = entry.block.clone();
        let for_sync = entry.via_sync;
        if self.in_suffix(&block.parent()) {
            // A suffix block is valid iff it is empty; the app has nothing to say about it.
            let outcome = block.payload.is_empty().then(crate::app::AppOutcome::default);
            if let Some(e) = self.tree.get_mut(&hash) {
                e.validity = Validity::Validating;
            }
            self.settle_validation(hash, block, outcome);
            return;
        }
        if let Some(e) = self.tree.get_mut(&hash) {
            e.validity = Validity::Validating;
        }
        self.emit(Action::ValidateBlock { hash, block, for_sync });
    }

    /// Votes for a valid block of the current view if the voting rule allows it
    /// (DiemBFT v4 `make_vote`): raise `highest_vote_round` to the block's view and the lock
    /// (`highest_qc_round`) to its QC, persist, and send the vote to the next leader once
    /// durable.
    pub(super) fn try_vote(&mut self, hash: BlockHash) {
        if !self.is_validator() {
            return;
        }
        let Some(entry) = self.tree.get(&hash) else { return };
        let block = &entry.block;
        if block.view != self.safety.view || !matches!(entry.validity, Validity::Valid(_)) {
            return;
        }
        // Epoch-start rule: the first blocks of an epoch extend its root QC (signed by the
        // previous set, whose epoch is over) in any later view, while this replica's lock is
        // still that root QC. Once a quorum has voted for a block certifying a block of this
        // epoch, its members' locks have left the root, so no later block can bypass what this
        // epoch committed (the quorum-intersection argument of Jolteon's lemma, unchanged).
        let epoch_start = self.epoch_start(&block.justify.block)
            && self.safety.locked_qc.block == self.epoch.root_qc.block
            && block.view > self.safety.highest_voted_view.max(block.justify.view);
        if !epoch_start
            && !safe_to_vote(
                block.view,
                block.justify.view,
                self.safety.highest_voted_view,
                self.safety.last_tc.as_ref(),
            )
        {
            return;
        }
        let view = block.view;
        let justify = block.justify.clone();
        self.safety.highest_voted_view = view;
        // Locking rule (DiemBFT v4 `update_highest_qc_round`; Jolteon Fig. 2 "lock"): the lock
        // rises to the QC of the block voted for.
        if justify.view > self.safety.locked_qc.view {
            self.safety.locked_qc = justify;
        }
        let epoch = self.epoch.epoch;
        let signature = self.key.sign(
            self.config.chain,
            crate::crypto::SignKind::Vote,
            view,
            &crate::crypto::vote_subject(&hash, epoch),
        );
        let vote = Vote { epoch, view, block: hash, voter: self.key.public(), signature };
        self.safety.last_vote = Some(vote.clone());
        self.staged.safety_dirty = true;
        self.emit(Action::Event(Event::Voted { view, hash }));
        self.send_vote(vote);
    }

    /// Sends a vote to the next view's leader, or counts it if that is this replica (Jolteon
    /// Fig. 2 "vote": send to the leader of `r + 1`). Its own vote counts only once its safety
    /// state is durable (after `Persisted`), as the sends leave only then.
    ///
    /// With `broadcast_votes`, the vote goes to every other validator of the epoch (the next
    /// leader among them; not to listeners, which count no votes), and this replica counts its
    /// own vote too (once durable), as every validator does: whoever gathers 2f+1 forms the QC (DiemBFT v4
    /// `process_vote`; a QC is valid wherever it forms). The sends are gated behind the persist
    /// of the safety state the vote was signed under, like the single send.
    pub(super) fn send_vote(&mut self, vote: Vote) {
        let me = self.key.public();
        if self.config.broadcast_votes {
            let others: Vec<_> =
                self.epoch.validators.members().iter().map(|v| v.key).filter(|k| *k != me).collect();
            for to in others {
                self.staged.gated.push(Action::Send { to, message: Message::Vote(vote.clone()) });
            }
            self.staged.own_votes.push(vote);
            return;
        }
        let next_leader = self.leader(vote.view.next());
        if next_leader == me {
            // Counted once durable, like a vote that leaves (`Replica::own_votes`).
            self.staged.own_votes.push(vote);
        } else {
            self.staged.gated.push(Action::Send { to: next_leader, message: Message::Vote(vote) });
        }
    }
}
