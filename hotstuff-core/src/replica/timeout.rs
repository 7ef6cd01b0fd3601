//! Input: a timeout vote from a peer.

use super::{Replica, TimeoutCollector};
use crate::action::Action;
use crate::certificate::TimeoutCertificate;
use crate::crypto::{self, SignKind};
use crate::error::InputError;
use crate::event::Event;
use crate::message::TimeoutVote;
use crate::pacemaker::Pacemaker;
use crate::types::{PublicKey, View};

impl<P: Pacemaker> Replica<P> {
    /// Checks a timeout vote (live view, validator, no duplicate or conflicting vote, high QC
    /// below the view, signature, high QC) before taking in its high QC and counting it.
    pub(super) fn handle_timeout(&mut self, from: PublicKey, t: TimeoutVote) -> Result<(), InputError> {
        if t.epoch != self.epoch.epoch {
            self.other_epoch(from, t.epoch);
            return Ok(());
        }
        let view = t.view;
        let current = self.safety.view;
        if view < current {
            return Err(InputError::Stale { view, current });
        }
        if view.0 > current.0.saturating_add(self.config.view_window) {
            return Err(InputError::TooFarAhead { view, current });
        }
        if t.high_qc.view >= view || t.last_tc.as_ref().is_some_and(|tc| tc.view.next() != view) {
            return Err(InputError::BadTimeout);
        }
        if t.vote.as_ref().is_some_and(|v| v.voter != t.voter || v.view != view || v.epoch != t.epoch) {
            return Err(InputError::BadTimeout);
        }
        let vk = self.epoch.validators.verifying_key(&t.voter).ok_or(InputError::NotAValidator(t.voter))?;
        if let Some((prev_qc_view, _)) = self.timeouts.get(&view).and_then(|c| c.votes.get(&t.voter)) {
            return Err(if *prev_qc_view == t.high_qc.view {
                InputError::Duplicate
            } else {
                InputError::Equivocation { signer: t.voter, view }
            });
        }
        crypto::verify_one(
            vk,
            self.config.chain,
            SignKind::Timeout,
            view,
            &crypto::timeout_subject(t.high_qc.view, t.epoch),
            &t.signature,
        )
        .map_err(|source| InputError::BadSignature { signer: t.voter, source })?;
        if let Some(v) = &t.vote {
            self.verify_vote(vk, v)?;
        }
        let digest = self.check_qc(&t.high_qc)?;
        let tc_digests = match &t.last_tc {
            Some(tc) => Some(self.check_tc(tc)?),
            None => None,
        };
        // Jolteon Fig. 2 / DiemBFT v4 `process_timeout_msg`: a timeout vote's certificates are
        // taken in like any other (`process_certificates`, `advance_round_tc`).
        self.observe_qc(&t.high_qc, digest);
        if let (Some(tc), Some(d)) = (&t.last_tc, tc_digests) {
            self.observe_tc(tc, d);
        }
        self.collect_timeout(t);
        Ok(())
    }

    /// Counts a checked timeout vote; at a quorum forms the TC (Jolteon Fig. 2 "upon receiving
    /// 2f+1 timeouts", DiemBFT v4 `process_timeout_msg`) and takes it in, which advances to the
    /// next view.
    pub(super) fn collect_timeout(&mut self, t: TimeoutVote) {
        // The vote inside counts like one sent to us: enough of them form the view's QC here,
        // even if the next leader they were sent to is down.
        if let Some(v) = t.vote.clone() {
            // This replica's own vote (riding in its own timeout vote) whose persist is still
            // pending is counted when that is acknowledged (`Replica::own_votes`), not here; one
            // already durable counts now, with the timeout (waiting for the timeout's own
            // persist would let the TC form first and the view's QC be lost).
            let me = self.key.public();
            let pending = v.voter == me
                && (self.own_votes.iter().any(|(_, o)| *o == v) || self.staged.own_votes.contains(&v));
            if !pending {
                self.collect_vote(v);
            }
        }
        if t.epoch != self.epoch.epoch {
            return; // its own certificates ended its epoch while it was being handled
        }
        let Some(power) = self.epoch.validators.power(&t.voter) else { return };
        let quorum = self.epoch.validators.quorum();
        let threshold = self.epoch.validators.validity_threshold();
        let collector: &mut TimeoutCollector = self.timeouts.entry(t.view).or_default();
        if collector.votes.contains_key(&t.voter) {
            return;
        }
        collector.votes.insert(t.voter, (t.high_qc.view, t.signature));
        collector.power = collector.power.saturating_add(power);
        if collector.high_qc.as_ref().is_none_or(|q| q.view < t.high_qc.view) {
            collector.high_qc = Some(t.high_qc);
        }
        if collector.power < quorum || collector.formed {
            let join = t.view > self.safety.view && !collector.joined && collector.power >= threshold;
            if join {
                collector.joined = true;
                self.join_view(t.view);
            }
            return;
        }
        let Some(high_qc) = collector.high_qc.clone() else { return };
        collector.formed = true;
        let tc = TimeoutCertificate {
            epoch: t.epoch,
            view: t.view,
            high_qc,
            signatures: collector.votes.iter().map(|(k, (v, s))| (*k, *v, *s)).collect(),
        };
        self.emit(Action::Event(Event::TcFormed { view: tc.view }));
        let digests = (tc.digest(), tc.high_qc.digest());
        self.observe_tc(&tc, digests);
    }

    /// View synchronization (Jolteon's pacemaker: "upon f+1 timeouts for a higher round"):
    /// timeout votes worth more than a third of the power for a later view prove an honest
    /// replica is in it, so this one goes there and times it out too; with it, the quorum for
    /// the view's TC forms. Without this, replicas split across two views (each side below a
    /// quorum, and no certificate to move the lower side) stay split: that happens when they
    /// switch epochs in different views.
    fn join_view(&mut self, view: View) {
        self.advance_to(view, crate::event::ViewChange::Tc);
        if self.safety.view == view && self.is_validator() {
            self.time_out(view, true);
        }
    }
}
