//! The consensus loop: one thread that feeds the replica and performs its actions.
//!
//! Each turn: take one input (a local reply first, then a due timer, then the inbox with a
//! deadline at the next timer), hand it to the replica, drain every action and perform it.
//! Persists and commits of one drain are written in one store transaction (fsync) before the
//! `Persisted` acknowledgement is fed back, so no vote, timeout vote or proposal leaves before
//! the state it was signed under is on disk (the core holds them until then).

use super::builder::Handler;
use super::{NodeError, Status};
use crate::app::{App, BlockContext};
use crate::error::StoreError;
use crate::event::Event;
use crate::net::{CoreMsg, Frame, NetEvent, Network};
use crate::storage::{Storage, WriteBatch};
use hotstuff_core::action::SyncTimer;
use hotstuff_core::{Action, BlockHash, Envelope, Height, Input, InputError, Message, Replica, View};
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A `ProduceBlock` whose empty answer waits for the idle delay.
#[derive(Clone, Copy)]
struct Deferred {
    view: View,
    parent: BlockHash,
    height: Height,
    at: Instant,
}

pub(super) struct Loop<A: App> {
    pub(super) replica: Replica,
    pub(super) app: A,
    pub(super) store: Arc<dyn Storage>,
    pub(super) net: Box<dyn Network>,
    pub(super) rx: Receiver<CoreMsg>,
    pub(super) handlers: Vec<Handler>,
    pub(super) idle_block_delay: Duration,
    pub(super) status: Arc<Mutex<Status>>,
    pub(super) turn: TurnState,
}

/// What the loop keeps between turns.
#[derive(Default)]
pub(super) struct TurnState {
    /// The latest view timer asked for (a timer for an older view is obsolete).
    timer: Option<(View, Instant)>,
    /// Block-sync timers (a few at most).
    sync_timers: BTreeMap<SyncTimer, Instant>,
    deferred: Option<Deferred>,
    /// Inputs produced locally (acknowledgements, app replies), handled before the inbox.
    local: VecDeque<Input>,
    /// Writes of the current drain not yet in the store, and the highest Persist seq in them.
    batch: WriteBatch,
    batch_seq: Option<u64>,
}

impl<A: App> Loop<A> {
    pub(super) fn run(mut self) -> Result<(), NodeError> {
        let span = tracing::info_span!("node", id = %self.replica.id());
        let _entered = span.enter();
        let result = self.turns();
        if let Err(e) = &result {
            tracing::error!(error = %e, "consensus loop stopped on a store failure");
            self.emit(&Event::Fatal { error: e.to_string() });
        }
        // Network threads may be blocked delivering into a full inbox: close it first, so
        // their sends fail and they can be joined.
        let (_, closed) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, closed));
        self.net.shutdown();
        self.status.lock().unwrap_or_else(PoisonError::into_inner).running = false;
        result.map_err(NodeError::from)
    }

    fn turns(&mut self) -> Result<(), StoreError> {
        loop {
            self.drain()?;
            self.publish_status();
            if let Some(input) = self.turn.local.pop_front() {
                self.handle(input);
                continue;
            }
            let now = Instant::now();
            if let Some((view, _)) = self.turn.timer.filter(|(_, at)| *at <= now) {
                self.turn.timer = None;
                self.handle(Input::TimerFired { view });
                continue;
            }
            if let Some(timer) = self.turn.sync_timers.iter().find(|(_, at)| **at <= now).map(|(t, _)| *t) {
                self.turn.sync_timers.remove(&timer);
                self.handle(Input::SyncTimerFired { timer });
                continue;
            }
            if let Some(d) = self.turn.deferred.filter(|d| d.at <= now) {
                self.turn.deferred = None;
                self.produce(d.view, d.parent, d.height, false);
                continue;
            }
            let deadline = [self.turn.timer.map(|(_, at)| at), self.turn.deferred.map(|d| d.at)]
                .into_iter()
                .flatten()
                .chain(self.turn.sync_timers.values().copied())
                .min();
            let msg = match deadline {
                Some(at) => match self.rx.recv_timeout(at.saturating_duration_since(now)) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                },
                None => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => return Ok(()),
                },
            };
            match msg {
                CoreMsg::Message { from, message } => {
                    if let Err(error) = self.replica.handle(Input::Message { from, message }) {
                        tracing::debug!(peer = %from, %error, "message refused");
                        self.emit(&Event::MessageRefused { from, error });
                    }
                }
                CoreMsg::Net(event) => self.on_net(event),
                CoreMsg::Shutdown => return Ok(()),
            }
        }
    }

    /// Hands a local input to the replica. An app reply overtaken by a view change is refused
    /// as unexpected; that is normal.
    fn handle(&mut self, input: Input) {
        let what = match &input {
            Input::Persisted { .. } => "persisted",
            Input::TimerFired { .. } | Input::SyncTimerFired { .. } => "timer",
            _ => "app reply",
        };
        match self.replica.handle(input) {
            Ok(()) | Err(InputError::UnexpectedReply) => {}
            Err(error) => tracing::warn!(%error, what, "local input refused"),
        }
    }

    fn publish_status(&self) {
        let r = &self.replica;
        let view = r.view();
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = Status {
            view,
            leader: r.leader(view),
            committed: r.committed_height(),
            high_qc: r.high_qc().view,
            running: true,
        };
    }

    /// Performs every action the replica has, then writes what they asked to persist.
    fn drain(&mut self) -> Result<(), StoreError> {
        let actions: Vec<Action> = std::iter::from_fn(|| self.replica.poll_action()).collect();
        // Commits first: the replica's block tree already reflects every commit of this drain
        // (committed blocks leave `pending_updates`), so the store must hold them before the
        // app reads state. The core lists app requests after every other action of an input;
        // this keeps the app's view right even for actions left from earlier inputs.
        let (commits, rest): (Vec<Action>, Vec<Action>) =
            actions.into_iter().partition(|a| matches!(a, Action::Commit { .. }));
        for action in commits.into_iter().chain(rest) {
            self.perform(action)?;
        }
        self.flush()
    }

    fn perform(&mut self, action: Action) -> Result<(), StoreError> {
        match action {
            Action::Persist { seq, safety, blocks } => {
                if safety.is_some() {
                    self.turn.batch.safety = safety;
                }
                self.turn.batch.blocks.extend(blocks);
                self.turn.batch_seq = Some(seq);
            }
            Action::Commit { blocks } => self.turn.batch.commits.extend(blocks),
            Action::Send { to, message } => {
                let frame = self.frame(message);
                self.net.send(to, frame);
            }
            Action::Broadcast { message } => {
                let frame = self.frame(message);
                self.net.broadcast(frame);
            }
            Action::SetTimer { view, after } => self.turn.timer = Some((view, Instant::now() + after)),
            Action::SetSyncTimer { timer, after } => {
                self.turn.sync_timers.insert(timer, Instant::now() + after);
            }
            Action::ProduceBlock { view, parent, height } => {
                // The app reads committed state: what this drain committed must be in the store.
                self.flush()?;
                self.produce(view, parent, height, true);
            }
            Action::ValidateBlock { hash, block, for_sync } => {
                self.flush()?;
                let ctx =
                    context(&self.replica, self.store.as_ref(), block.view, block.height, block.parent());
                let outcome = if for_sync {
                    self.app.validate_block_for_sync(&ctx, &block)
                } else {
                    self.app.validate_block(&ctx, &block)
                };
                if outcome.is_none() {
                    tracing::info!(%hash, height = %block.height, "the app rejected a block");
                }
                self.turn.local.push_back(Input::BlockValidated { hash, outcome });
            }
            Action::ServeSync { to, request } => {
                self.flush()?;
                let store = &self.store;
                // Bounded by the request (at most `limits.max_sync_blocks` point reads).
                let response = self.replica.sync_response(&request, |h| match store.committed_block(h) {
                    Ok(b) => b,
                    Err(error) => {
                        tracing::error!(%error, height = %h, "cannot read a committed block for sync");
                        None
                    }
                });
                tracing::debug!(peer = %to, from = %request.from_height, blocks = response.blocks.len(), "serving sync");
                let frame = self.frame(Message::SyncResponse(response));
                self.net.send(to, frame);
            }
            Action::Event(event) => {
                log_core_event(&event);
                self.emit(&Event::Core(event));
            }
        }
        Ok(())
    }

    /// Writes the pending batch in one durable transaction, then acknowledges its Persists
    /// and tells the app what committed.
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.turn.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.turn.batch);
        self.store.write(&batch)?;
        if let Some(seq) = self.turn.batch_seq.take() {
            self.turn.local.push_back(Input::Persisted { seq });
        }
        if !batch.commits.is_empty() {
            self.app.committed(&batch.commits);
            if batch.commits.iter().any(|c| c.epoch_change.is_some()) {
                self.net.validators_changed(self.replica.validators());
            }
        }
        Ok(())
    }

    fn frame(&self, message: Message) -> Frame {
        Arc::new(Envelope::new(self.replica.config().chain, message).encode())
    }

    /// Asks the app for a block; an empty one waits for the idle delay if nothing uncommitted
    /// is waiting for descendants to commit.
    fn produce(&mut self, view: View, parent: BlockHash, height: Height, may_wait: bool) {
        let ctx = context(&self.replica, self.store.as_ref(), view, height, parent);
        let idle = ctx.pending.iter().all(|u| u.is_empty());
        let produced = self.app.produce_block(&ctx);
        if may_wait && idle && produced.is_empty() && !self.idle_block_delay.is_zero() {
            self.turn.deferred =
                Some(Deferred { view, parent, height, at: Instant::now() + self.idle_block_delay });
            return;
        }
        self.turn.local.push_back(Input::BlockProduced {
            view,
            parent,
            payload: produced.payload,
            outcome: produced.outcome,
        });
    }

    fn on_net(&mut self, event: NetEvent) {
        match &event {
            NetEvent::Connected { peer, addr, outbound } => {
                tracing::info!(%peer, %addr, outbound, "peer connected");
            }
            NetEvent::Disconnected { peer, reason } => tracing::info!(%peer, reason, "peer disconnected"),
            NetEvent::Refused { addr, peer, error } => {
                tracing::warn!(?addr, peer = ?peer, %error, "connection refused");
            }
        }
        self.emit(&Event::Net(event));
    }

    fn emit(&self, event: &Event) {
        for h in &self.handlers {
            h(event);
        }
    }
}

/// What the app sees for a block at `height` in `view` on `parent`.
fn context<'a>(
    replica: &'a Replica,
    store: &'a dyn Storage,
    view: View,
    height: Height,
    parent: BlockHash,
) -> BlockContext<'a> {
    BlockContext {
        view,
        height,
        parent,
        me: replica.id(),
        validators: replica.validators(),
        store,
        pending: replica.pending_updates(&parent),
    }
}

fn log_core_event(event: &hotstuff_core::Event) {
    use hotstuff_core::Event as E;
    match event {
        E::Committed { view, height, hash } => tracing::debug!(%view, %height, %hash, "committed"),
        E::ViewTimedOut { view } => tracing::info!(%view, "view timed out"),
        E::TcFormed { view } => tracing::info!(%view, "timeout certificate formed"),
        E::SyncRequested { peer, from_height } => tracing::info!(%peer, %from_height, "block sync requested"),
        E::SyncReceived { peer, blocks } => tracing::info!(%peer, blocks, "block sync received"),
        E::EpochChanged { epoch, height, validators, total_power } => {
            tracing::info!(%epoch, %height, validators, total_power, "validator set changed");
        }
        E::SyncPeerAvoided { peer, reason } => tracing::warn!(%peer, reason, "avoiding a sync server"),
        E::NoProgress { height } => tracing::info!(%height, "no progress; block sync starts"),
        E::BlockRejected { hash } => tracing::warn!(%hash, "block rejected by the app"),
        other => tracing::trace!(event = ?other, "consensus event"),
    }
}
