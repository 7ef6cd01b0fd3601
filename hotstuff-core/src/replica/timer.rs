//! Input: the view timer fired.

use super::Replica;
use crate::action::Action;
use crate::crypto::{self, SignKind};
use crate::error::InputError;
use crate::event::Event;
use crate::message::{Message, TimeoutVote};
use crate::pacemaker::Pacemaker;
use crate::types::View;

impl<P: Pacemaker> Replica<P> {
    /// A timer for an old view is ignored. For the current view: sign a timeout vote if the
    /// timeout rule allows (or re-send the one already signed), and re-arm the timer so the
    /// vote is re-sent while the view lasts.
    pub(super) fn handle_timer(&mut self, view: View) -> Result<(), InputError> {
        if view != self.safety.view {
            return Ok(());
        }
        self.emit(Action::Event(Event::ViewTimedOut { view }));
        let after = self.pacemaker.view_timeout(view, self.consecutive_failures);
        self.emit(Action::SetTimer { view, after });
        self.retry_sync();
        if !self.is_validator() {
            return Ok(());
        }
        if let Some(t) =
            self.safety.last_timeout.clone().filter(|t| t.view == view && t.epoch == self.epoch.epoch)
        {
            self.staged.gated.push(Action::Broadcast { message: Message::Timeout(t.clone()) });
            // After a restart the collector is empty: count our own vote again (a no-op if it is
            // already counted), or a quorum that needs it never forms.
            self.collect_timeout(t);
            return Ok(());
        }
        self.time_out(view, false);
        Ok(())
    }

    /// Signs, records and broadcasts a timeout vote for `view` (the current view) if the
    /// timeout rule allows, and counts it. `joined`: the replica entered `view` by f+1 timeout
    /// votes rather than a certificate.
    pub(super) fn time_out(&mut self, view: View, joined: bool) {
        let high_qc = self.safety.high_qc.clone();
        // Timeout rule: DiemBFT v4 `safe_to_timeout` (see `progress::safe_to_timeout`).
        // At the start of an epoch no QC of the epoch exists yet, so the replica is in its view
        // by neither a QC nor a TC of it; timing out is still safe (the report is the root QC,
        // the lowest possible lock, and `highest_voted_view` rises as usual).
        // Likewise a replica that joined the view on f+1 timeout votes (`join_view`): the same
        // two conditions keep its timeout vote safe.
        let relaxed = (joined || self.epoch_start(&high_qc.block))
            && high_qc.view >= self.safety.locked_qc.view
            && view > View(self.safety.highest_voted_view.0.saturating_sub(1)).max(high_qc.view);
        if !relaxed
            && !super::progress::safe_to_timeout(
                view,
                high_qc.view,
                self.safety.locked_qc.view,
                self.safety.highest_voted_view,
                self.safety.last_tc.as_ref(),
            )
        {
            return;
        }
        // DiemBFT v4 `make_timeout`: never vote in this view after timing out of it.
        self.safety.highest_voted_view = self.safety.highest_voted_view.max(view);
        let epoch = self.epoch.epoch;
        let signature = self.key.sign(
            self.config.chain,
            SignKind::Timeout,
            view,
            &crypto::timeout_subject(high_qc.view, epoch),
        );
        let last_tc = self.safety.last_tc.clone().filter(|tc| tc.view.next() == view);
        // The vote this replica cast in the view (if any) rides along, so the view's QC can still
        // form if the next leader, who was sent it, is down.
        let vote = self.safety.last_vote.clone().filter(|v| v.view == view && v.epoch == epoch);
        let t = TimeoutVote { epoch, view, high_qc, voter: self.key.public(), signature, last_tc, vote };
        self.safety.last_timeout = Some(t.clone());
        self.staged.safety_dirty = true;
        self.staged.gated.push(Action::Broadcast { message: Message::Timeout(t.clone()) });
        self.collect_timeout(t);
    }
}
