//! The runtime-independent part of the consensus loop: an [`Engine`] owns the replica, the app,
//! the store and the outbound side of the network, and performs the replica's actions. A driver
//! only waits for the next input (the std driver on a channel with a deadline, the tokio driver
//! in a `select!`) and runs one turn:
//!
//! 1. [`Engine::poll_actions`], then [`Engine::perform`] them. What safety needs of a drain
//!    (the safety state, and this node's own proposal) is written in one small durable store
//!    write before `Input::Persisted` is queued (with [`crate::RedbStore`] on disk, one record
//!    appended to its safety log and `fdatasync`ed, not a redb commit), so no vote, timeout vote or
//!    proposal leaves before the state it was signed under is on disk (the core holds them
//!    until then). The bulk (commits with their app-state updates, other proposers' blocks)
//!    goes to the background [`StoreWriter`], which group-commits it off the loop; the app
//!    reads committed state through the engine, which overlays the commits still queued. A
//!    drain that ends an epoch is written whole and durably, after the queue. With
//!    [`crate::NodeBuilder::background_store_writes`] off, every drain is one synchronous
//!    transaction (the path before the writer). [`needs_blocking`] says which actions touch
//!    the store or the app, for runtimes that must not block.
//! 2. [`Engine::ready`]: a local reply, a due timer or a due deferred proposal, before the
//!    network; or how long the driver may wait for it.

use super::Status;
use crate::app::{App, BlockContext, Produced};
use crate::error::StoreError;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::net::{Frame, NetEvent, Outbound};
use crate::snapshot::{self, SnapshotSettings};
use crate::storage::{Pruner, SnapshotInstall, Storage, StoreWriter, WriteBatch};
use hotstuff_core::action::SyncTimer;
use hotstuff_core::{
    Action, AppOutcome, AppStateUpdates, BlockHash, DefaultPacemaker, Envelope, Height, Input, InputError,
    InputErrorKind, Keypair, Message, PublicKey, Replica, SnapshotAsk, SnapshotRequest, View,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A registered event handler.
pub type Handler = Box<dyn Fn(&Event) + Send + 'static>;

/// A `ProduceBlock` whose empty answer waits for the idle delay.
#[derive(Clone, Copy)]
struct Deferred {
    view: View,
    parent: BlockHash,
    height: Height,
    at: Instant,
}

/// What an engine is built from (made by [`crate::NodeBuilder::prepare`]).
pub struct EngineParts<A: App> {
    pub(super) replica: Replica,
    pub(super) app: A,
    pub(super) store: Arc<dyn Storage>,
    pub(super) handlers: Vec<Handler>,
    pub(super) idle_block_delay: Duration,
    pub(super) max_idle_block_delay: Duration,
    pub(super) status: Arc<Mutex<Status>>,
    /// The background writer (`None`: every drain is written synchronously).
    pub(super) writer: Option<StoreWriter>,
    /// The background pruner (`None`: the store keeps every committed block).
    pub(super) pruner: Option<Pruner>,
    /// Where to record metrics, if anywhere.
    pub(super) metrics: Option<Metrics>,
    /// Snapshot sync settings.
    pub(super) snapshots: SnapshotSettings,
    /// What a replica is re-created from after a snapshot install: the key and pacemaker.
    pub(super) rebuild: (Keypair, DefaultPacemaker),
}

/// The replica with its app, store and outbound network, and what the loop keeps between
/// turns. See the [module docs](self) for the turn a driver runs.
pub struct Engine<A: App, N: Outbound> {
    replica: Replica,
    app: A,
    store: Arc<dyn Storage>,
    net: N,
    handlers: Vec<Handler>,
    idle_block_delay: Duration,
    max_idle_block_delay: Duration,
    /// Committed empty blocks in a row (the idle back-off grows with it).
    idle_streak: u32,
    /// Set by [`Engine::wake`]: ask the app again for the deferred block.
    woken: bool,
    status: Arc<Mutex<Status>>,
    /// The latest view timer asked for (a timer for an older view is obsolete).
    timer: Option<(View, Instant)>,
    /// Block-sync timers (a few at most).
    sync_timers: BTreeMap<SyncTimer, Instant>,
    deferred: Option<Deferred>,
    /// Inputs produced locally (acknowledgements, app replies), handled before the inbox.
    local: VecDeque<Input>,
    /// The buffer [`Engine::drain`] polls actions into (kept: no allocation per drain).
    actions: Vec<Action>,
    /// Writes of the current drain not yet in the store, and the highest Persist seq in them.
    batch: WriteBatch,
    batch_seq: Option<u64>,
    writer: Option<StoreWriter>,
    /// Stopped (dropped) when the engine closes.
    pruner: Option<Pruner>,
    metrics: Option<Metrics>,
    /// The view, committed height and high QC view last published to `status`.
    published: Option<(View, Height, View)>,
    /// Serves snapshots (`None`: serves none).
    snapshot_server: Option<snapshot::Server>,
    /// Fetches snapshots (`None`: never).
    snapshot_client: Option<snapshot::Client>,
    rebuild: (Keypair, DefaultPacemaker),
    /// A store failure met where it could not be returned (a snapshot install while handling
    /// a message): returned by the next [`Engine::perform`].
    fatal: Option<StoreError>,
}

/// What [`Engine::ready`] found to do before the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Ready {
    /// A local reply or a due timer was handed to the replica: drain its actions.
    Handled,
    /// A deferred empty proposal is due: call [`Engine::produce_due`] (it calls the app and
    /// reads the store), then drain.
    ProduceDue,
    /// A snapshot-sync timer is due, or paced snapshot answers can go: call [`Engine::snapshot_tick`] (it may write the store),
    /// then drain.
    SnapshotDue,
    /// Nothing local: wait for the network until this instant (`None`: no deadline).
    Wait(Option<Instant>),
}

/// True for an action whose performance writes or reads the store or calls the app (a
/// runtime that must not block runs those off its async threads); the others only queue
/// frames, set timers or call the event handlers.
#[must_use]
pub fn needs_blocking(action: &Action) -> bool {
    !matches!(
        action,
        Action::Send { .. }
            | Action::Broadcast { .. }
            | Action::SetTimer { .. }
            | Action::SetSyncTimer { .. }
    ) && !matches!(action, Action::Event(_))
}

impl<A: App, N: Outbound> Engine<A, N> {
    /// An engine sending through `net`.
    pub fn new(parts: EngineParts<A>, net: N) -> Self {
        let EngineParts {
            replica,
            app,
            store,
            handlers,
            idle_block_delay,
            max_idle_block_delay,
            status,
            writer,
            pruner,
            metrics,
            snapshots,
            rebuild,
        } = parts;
        let snapshot_server = (snapshots.interval > 0).then(|| snapshot::Server::new(snapshots.interval));
        let snapshot_client = snapshots.fetch.then(|| snapshot::Client::new(store.as_ref(), Instant::now()));
        let mut engine = Engine {
            replica,
            app,
            store,
            net,
            handlers,
            idle_block_delay,
            max_idle_block_delay,
            idle_streak: 0,
            woken: false,
            status,
            timer: None,
            sync_timers: BTreeMap::new(),
            deferred: None,
            local: VecDeque::new(),
            actions: Vec::new(),
            batch: WriteBatch::default(),
            batch_seq: None,
            writer,
            pruner,
            metrics,
            published: None,
            snapshot_server,
            snapshot_client,
            rebuild,
            fatal: None,
        };
        engine.refresh_peers();
        engine
    }

    /// Writes everything pending and makes it durable, then stops the background writer
    /// (dropping the engine does the same, reporting a failure only in the log).
    pub fn close(&mut self) -> Result<(), StoreError> {
        self.pruner = None;
        self.flush()?;
        match self.writer.as_mut() {
            Some(writer) => writer.close(),
            None => Ok(()),
        }
    }

    /// This replica's key.
    #[must_use]
    pub fn id(&self) -> PublicKey {
        self.replica.id()
    }

    /// The outbound network.
    pub fn net_mut(&mut self) -> &mut N {
        &mut self.net
    }

    /// Hands a message from the authenticated peer `from` to the replica; a refusal is logged
    /// by its kind (stale traffic at debug level, since honest peers send it too; input no
    /// honest peer sends as a warning naming the peer) and reported as
    /// [`Event::MessageRefused`].
    pub fn handle_message(&mut self, from: PublicKey, message: Message) {
        let message = match message {
            Message::SnapshotRequest(r) => return self.serve_snapshot(from, r),
            Message::SnapshotOffer(o) => {
                return self.snapshot_step(|c, ctx, out| c.on_offer(ctx, from, o, out));
            }
            Message::SnapshotChunk(c) => {
                return self.snapshot_step(|client, ctx, out| client.on_chunk(ctx, from, c, out));
            }
            Message::App(bytes) => {
                self.app.on_message(from, bytes);
                return self.send_app_messages();
            }
            other => other,
        };
        if let Err(error) = self.replica.handle(Input::Message { from, message }) {
            match error.kind() {
                InputErrorKind::Stale => tracing::debug!(peer = %from, %error, "stale message dropped"),
                InputErrorKind::Invalid => tracing::warn!(peer = %from, %error, "invalid message refused"),
                InputErrorKind::Local => tracing::error!(peer = %from, %error, "message refused: driver bug"),
            }
            self.emit(&Event::MessageRefused { from, error });
        }
    }

    /// Every action the replica has now.
    #[must_use]
    pub fn poll_actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.replica.poll_action()).collect()
    }

    /// Performs `actions`, then writes what they asked to persist in one durable transaction
    /// and queues the `Persisted` acknowledgement.
    pub fn perform(&mut self, mut actions: Vec<Action>) -> Result<(), StoreError> {
        self.perform_all(&mut actions)
    }

    /// [`Engine::perform`] on a buffer the caller keeps (left empty).
    fn perform_all(&mut self, actions: &mut Vec<Action>) -> Result<(), StoreError> {
        if let Some(error) = self.fatal.take() {
            actions.clear();
            return Err(error);
        }
        // Commits first: the replica's block tree already reflects every commit of this drain
        // (committed blocks leave `pending_updates`), so the store must hold them before the
        // app reads state. The core lists app requests after every other action of an input;
        // this keeps the app's view right even for actions left from earlier inputs. (Moved
        // only when a commit follows another action: an action is large.)
        let is_commit = |a: &Action| matches!(a, Action::Commit { .. });
        if actions.iter().skip_while(|a| is_commit(a)).any(is_commit) {
            actions.sort_by_key(|a| !is_commit(a)); // stable
        }
        for action in actions.drain(..) {
            self.perform_one(action)?;
        }
        // With the background writer, the fsync waits while local replies are queued: the
        // Persists of the inputs they cause (the proposal after a QC, the vote after a
        // validation) join it, one fsync instead of two. Nothing signed leaves before it: the
        // core holds it until `Persisted`.
        if self.writer.is_none() || self.local.is_empty() {
            self.flush()?;
        }
        self.take_snapshot_view()?;
        self.send_app_messages();
        Ok(())
    }

    /// A snapshot server whose committed height crossed a multiple of its interval takes a
    /// view of the committed state, once every commit is in the store.
    fn take_snapshot_view(&mut self) -> Result<(), StoreError> {
        let app = &self.app;
        if let Some(s) = self.snapshot_server.as_mut() {
            s.poll(self.store.as_ref(), &|b| app.snapshot_root(b));
        }
        let h = self.replica.committed_height();
        if !self.snapshot_server.as_ref().is_some_and(|s| s.due(h)) || !self.batch.commits.is_empty() {
            return Ok(());
        }
        if let Some(w) = &self.writer {
            w.barrier()?;
        }
        match self.snapshot_server.as_mut() {
            Some(s) => s.after_commit(self.store.as_ref(), h),
            None => Ok(()),
        }
    }

    /// Queues a peer's snapshot request and answers what the serving budget covers (a node
    /// that serves none answers an offer request at once: it has none).
    fn serve_snapshot(&mut self, to: PublicKey, r: SnapshotRequest) {
        match (self.snapshot_server.as_mut(), r.ask) {
            (Some(s), _) => {
                if !s.request(to, r) {
                    tracing::debug!(peer = %to, dropped = s.dropped(), "snapshot request dropped: too many queued");
                }
                self.serve_snapshots();
            }
            (None, SnapshotAsk::Offer) => {
                let m = Message::SnapshotOffer(hotstuff_core::SnapshotOffer { id: r.id, snapshot: None });
                self.send_answer(to, m);
            }
            (None, SnapshotAsk::Chunk { .. }) => {}
        }
    }

    /// Sends what the app has for other nodes ([`App::outgoing`]).
    fn send_app_messages(&mut self) {
        for (to, bytes) in self.app.outgoing() {
            if bytes.len() > self.replica.config().limits.max_payload {
                tracing::warn!(peer = %to, len = bytes.len(), "app message over the payload limit dropped");
                continue;
            }
            self.send_answer(to, Message::App(bytes));
        }
    }

    /// Sends the snapshot answers the serving budget covers now.
    fn serve_snapshots(&mut self) {
        let answers = match self.snapshot_server.as_mut() {
            Some(s) => s.serve(Instant::now()),
            None => return,
        };
        for (to, m) in answers {
            self.send_answer(to, m);
        }
    }

    fn send_answer(&mut self, to: PublicKey, m: Message) {
        let frame = self.frame(m);
        self.count_out(frame.len(), 1);
        self.net.send(to, frame);
    }

    /// Runs one step of the snapshot client, sends what it asks, installs what it finished.
    fn snapshot_step(
        &mut self,
        step: impl FnOnce(&mut snapshot::Client, &snapshot::Ctx<'_>, &mut snapshot::Out),
    ) {
        let Some(client) = self.snapshot_client.as_mut() else { return };
        let app = &self.app;
        let app_root = |b: &hotstuff_core::Block| app.snapshot_root(b);
        let ctx = snapshot::Ctx {
            store: self.store.as_ref(),
            replica: &self.replica,
            app_root: &app_root,
            now: Instant::now(),
        };
        let mut out = snapshot::Out::default();
        step(client, &ctx, &mut out);
        for e in &out.events {
            self.emit(e);
        }
        for (to, m) in out.send {
            let frame = self.frame(m);
            self.count_out(frame.len(), 1);
            self.net.send(to, frame);
        }
        if let Some(install) = out.install {
            if let Err(error) = self.install_snapshot(install.0, &install.1) {
                self.fatal = Some(error);
            }
        }
    }

    /// Installs the staged snapshot (one store transaction) and re-creates the replica from the
    /// store, as a restart would: everything pending is written first, and what the old
    /// replica asked for (timers, app replies, acknowledgements) is dropped.
    fn install_snapshot(&mut self, root: [u8; 32], install: &SnapshotInstall) -> Result<(), StoreError> {
        self.flush()?;
        if let Some(w) = &self.writer {
            w.barrier()?;
        }
        self.store.install_staged(install)?;
        let stored = self.store.load()?.ok_or(StoreError::NotInitialised)?;
        let (key, pacemaker) = &self.rebuild;
        let replica = Replica::new(
            *self.replica.config(),
            Keypair::from_secret(&key.secret()),
            *pacemaker,
            stored.recovered(),
        )
        .map_err(|e| StoreError::Corrupt { what: "installed snapshot".into(), reason: e.to_string() })?;
        self.replica = replica;
        self.timer = None;
        self.sync_timers.clear();
        self.deferred = None;
        self.local.clear();
        self.batch = WriteBatch::default();
        self.batch_seq = None;
        self.idle_streak = 0;
        self.app.state_installed();
        tracing::info!(height = %install.tip.height, "snapshot installed; the replica restarts from it");
        self.emit(&Event::SnapshotInstalled { height: install.tip.height, root });
        self.publish_status();
        Ok(())
    }

    /// True while writes of performed actions wait for the store (a driver that skips
    /// [`Engine::perform`] for a drain without actions must still call it then).
    #[must_use]
    pub fn has_unwritten(&self) -> bool {
        !self.batch.is_empty()
    }

    /// True if the next [`Engine::perform`] may touch the store even for actions that do not
    /// ([`needs_blocking`]): writes are pending, or the snapshot server has work.
    #[must_use]
    pub fn wants_blocking(&self) -> bool {
        self.has_unwritten()
            || self.fatal.is_some()
            || self.snapshot_server.as_ref().is_some_and(|s| s.has_work(self.replica.committed_height()))
    }

    /// True for a message whose handling may read or write the store (snapshot sync: a
    /// runtime that must not block hands it to [`Engine::handle_message`] off its async
    /// threads).
    #[must_use]
    pub fn message_blocks(message: &Message) -> bool {
        matches!(message, Message::SnapshotRequest(_) | Message::SnapshotOffer(_) | Message::SnapshotChunk(_))
    }

    /// Sends the paced snapshot answers now due and runs the snapshot client's due timers (after [`Ready::SnapshotDue`]; it may write the
    /// store).
    pub fn snapshot_tick(&mut self) {
        self.serve_snapshots();
        self.snapshot_step(|c, ctx, out| c.tick(ctx, out));
    }

    /// Performs every action the replica has ([`Engine::poll_actions`] and [`Engine::perform`]).
    pub fn drain(&mut self) -> Result<(), StoreError> {
        let mut actions = std::mem::take(&mut self.actions);
        actions.extend(std::iter::from_fn(|| self.replica.poll_action()));
        let result = self.perform_all(&mut actions); // leaves it empty
        self.actions = actions;
        result
    }

    /// Hands the replica the next local input or due timer, if any (see [`Ready`]).
    pub fn ready(&mut self, now: Instant) -> Ready {
        if let Some(input) = self.local.pop_front() {
            self.handle_local(input);
            return Ready::Handled;
        }
        if let Some((view, _)) = self.timer.filter(|(_, at)| *at <= now) {
            self.timer = None;
            self.handle_local(Input::TimerFired { view });
            return Ready::Handled;
        }
        if let Some(timer) = self.sync_timers.iter().find(|(_, at)| **at <= now).map(|(t, _)| *t) {
            self.sync_timers.remove(&timer);
            self.handle_local(Input::SyncTimerFired { timer });
            return Ready::Handled;
        }
        if self.deferred.is_some_and(|d| d.at <= now || self.woken) {
            return Ready::ProduceDue;
        }
        let snapshot_due = [
            self.snapshot_client.as_ref().and_then(snapshot::Client::deadline),
            self.snapshot_server.as_ref().and_then(snapshot::Server::deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        if snapshot_due.is_some_and(|at| at <= now) {
            return Ready::SnapshotDue;
        }
        self.woken = false;
        let deadline = [self.timer.map(|(_, at)| at), self.deferred.map(|d| d.at), snapshot_due]
            .into_iter()
            .flatten()
            .chain(self.sync_timers.values().copied())
            .min();
        Ready::Wait(deadline)
    }

    /// Answers the deferred `ProduceBlock` (after [`Ready::ProduceDue`]): when its delay is
    /// over, with whatever the app has (an empty block if nothing); when woken early
    /// ([`Engine::wake`]), only if the app now has something, else it keeps waiting.
    pub fn produce_due(&mut self) {
        let woken = std::mem::take(&mut self.woken);
        if let Some(d) = self.deferred.take() {
            let keep_until = (woken && d.at > Instant::now()).then_some(d.at);
            self.produce(d.view, d.parent, d.height, keep_until);
        }
    }

    /// The app has something to propose (for example a transaction reached its mempool): a
    /// leader waiting out its idle delay asks it again at once. Cheap when nothing waits.
    pub fn wake(&mut self) {
        self.woken = self.deferred.is_some();
        // The app may have messages for other nodes (transactions to forward).
        self.send_app_messages();
    }

    /// The idle delay now: none while the latest committed block carried something (so the
    /// blocks that commit a busy one are not held back), then `idle_block_delay`, doubled per
    /// further committed empty block up to `max_idle_block_delay`.
    fn idle_delay(&self) -> Duration {
        if self.idle_streak == 0 {
            return Duration::ZERO;
        }
        let doublings = (self.idle_streak - 1).min(16);
        self.idle_block_delay
            .saturating_mul(1 << doublings)
            .min(self.max_idle_block_delay.max(self.idle_block_delay))
    }

    /// Hands a local input to the replica. An app reply overtaken by a view change is refused
    /// as unexpected; that is normal.
    fn handle_local(&mut self, input: Input) {
        let what = match &input {
            Input::Persisted { .. } => "persisted",
            Input::TimerFired { .. } | Input::SyncTimerFired { .. } => "timer",
            _ => "app reply",
        };
        match self.replica.handle(input) {
            // A reply the core no longer waits for: the view moved on, or a commit on another
            // branch pruned the block being validated.
            Ok(()) | Err(InputError::UnexpectedReply | InputError::UnknownBlock(_)) => {}
            Err(error) if error.is_stale() => tracing::debug!(%error, what, "stale local input dropped"),
            Err(error) => tracing::warn!(%error, what, "local input refused"),
        }
    }

    /// Publishes the replica's progress to the node's [`Status`]. Runs every turn, so it works
    /// (computes the leader, takes the lock) only when the view, the committed height or the
    /// high QC moved (the leader of a view depends only on the view and the committed history).
    pub fn publish_status(&mut self) {
        let r = &self.replica;
        let view = r.view();
        let progress = (view, r.committed_height(), r.high_qc().view);
        if self.published == Some(progress) {
            return;
        }
        self.published = Some(progress);
        let (view, committed, high_qc) = progress;
        let status = Status { view, leader: r.leader(view), committed, high_qc, running: true };
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// The loop ended (with `error` if the store failed): reports it and marks the status as
    /// not running.
    pub fn stopped(&self, error: Option<&StoreError>) {
        if let Some(e) = error {
            tracing::error!(error = %e, "consensus loop stopped on a store failure");
            self.emit(&Event::Fatal { error: e.to_string() });
        }
        self.status.lock().unwrap_or_else(PoisonError::into_inner).running = false;
    }

    fn perform_one(&mut self, action: Action) -> Result<(), StoreError> {
        match action {
            Action::Persist { seq, safety, blocks } => {
                if safety.is_some() {
                    self.batch.safety = safety;
                }
                self.batch.blocks.extend(blocks);
                self.batch_seq = Some(seq);
            }
            Action::Commit { blocks } => {
                for b in &blocks {
                    let empty = b.block.payload.is_empty() && b.outcome == AppOutcome::default();
                    self.idle_streak = if empty { self.idle_streak.saturating_add(1) } else { 0 };
                }
                self.batch.commits.extend(blocks);
            }
            Action::Send { to, message } => {
                let frame = self.frame(message);
                self.count_out(frame.len(), 1);
                self.net.send(to, frame);
            }
            Action::Broadcast { message } => {
                // A proposal reaches the next view's leader first: it collects the votes.
                let first = match &message {
                    Message::Proposal(p) => Some(self.replica.leader(p.block.view.next())),
                    _ => None,
                };
                let frame = self.frame(message);
                self.count_out(frame.len(), self.replica.validators().members().len().saturating_sub(1));
                match first {
                    Some(first) => self.net.broadcast_first(first, frame),
                    None => self.net.broadcast(frame),
                }
            }
            Action::SetTimer { view, after } => self.timer = Some((view, Instant::now() + after)),
            Action::SetSyncTimer { timer, after } => {
                self.sync_timers.insert(timer, Instant::now() + after);
            }
            Action::ProduceBlock { view, parent, height } => {
                // The app reads committed state: what this drain committed must be in the store
                // (or, with the background writer, in the overlay).
                self.hand_over()?;
                self.produce(view, parent, height, Some(Instant::now() + self.idle_delay()));
            }
            Action::ValidateBlock { hash, block, for_sync } => {
                self.hand_over()?;
                let queued = self.queued_updates();
                let ctx = context(
                    &self.replica,
                    self.store.as_ref(),
                    &queued,
                    block.view,
                    block.height,
                    block.parent(),
                );
                let outcome = if for_sync {
                    self.app.validate_block_for_sync(&ctx, &block)
                } else {
                    self.app.validate_block(&ctx, &block)
                };
                if outcome.is_none() {
                    tracing::info!(%hash, height = %block.height, "the app rejected a block");
                }
                self.local.push_back(Input::BlockValidated { hash, outcome });
            }
            Action::ServeSync { to, request } => {
                // Serves what the store holds and the commits queued for the writer.
                self.hand_over()?;
                let store = &self.store;
                let unwritten = self.writer.as_ref().map(StoreWriter::unwritten);
                // Bounded by the request (at most `limits.max_sync_blocks` point reads).
                let retained_from = store.retained_from()?;
                let answer = self.replica.sync_answer(&request, retained_from, |h| {
                    if let Some(entry) = unwritten.as_ref().and_then(|u| u.block(h)) {
                        return Some(entry);
                    }
                    match store.committed_block(h) {
                        Ok(b) => b,
                        Err(error) => {
                            tracing::error!(%error, height = %h, "cannot read a committed block for sync");
                            None
                        }
                    }
                });
                match &answer {
                    Message::SyncResponse(r) => {
                        tracing::debug!(peer = %to, from = %request.from_height, blocks = r.blocks.len(), "serving sync")
                    }
                    _ => {
                        tracing::debug!(peer = %to, from = %request.from_height, %retained_from, "sync below the retained range")
                    }
                }
                let frame = self.frame(answer);
                if let Some(m) = &self.metrics {
                    m.sync_served();
                }
                self.count_out(frame.len(), 1);
                self.net.send(to, frame);
            }
            Action::Event(event) => {
                if let hotstuff_core::Event::SyncBelowRetained { retained_from, .. } = event {
                    self.snapshot_step(|c, ctx, out| c.below_retained(ctx, retained_from, out));
                }
                log_core_event(&event);
                self.emit(&Event::Core(event));
            }
        }
        Ok(())
    }

    /// Before the app or block sync reads committed state: without the background writer,
    /// writes everything pending ([`Engine::flush`]); with it, hands the pending commits (and
    /// the other proposers' blocks) to the writer and the app's overlay, leaving what safety
    /// needs for the drain's fsync. A commit that ends an epoch is flushed whole at once.
    fn hand_over(&mut self) -> Result<(), StoreError> {
        let Some(writer) = &self.writer else { return self.flush() };
        if self.batch.commits.iter().any(|c| c.epoch_change.is_some()) {
            return self.flush();
        }
        let me = self.replica.id();
        let blocks = std::mem::take(&mut self.batch.blocks);
        let commits = std::mem::take(&mut self.batch.commits);
        // This node's own proposal must be on disk before it is sent (a restarted leader
        // re-proposes nothing else in that view); other proposers keep theirs.
        let (own, others): (Vec<_>, Vec<_>) = blocks.into_iter().partition(|r| r.block.proposer == me);
        self.batch.blocks = own;
        if !commits.is_empty() {
            self.app.committed(&commits);
        }
        writer.submit(WriteBatch { safety: None, blocks: others, commits })
    }

    /// Writes the pending batch (see the [module docs](self)), then acknowledges its Persists
    /// and tells the app what committed.
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let epoch_change = self.batch.commits.iter().any(|c| c.epoch_change.is_some());
        match &self.writer {
            Some(_) if !epoch_change => {
                self.hand_over()?;
                let batch = std::mem::take(&mut self.batch);
                self.write(&batch)?;
            }
            Some(writer) => {
                // The new epoch must be durable no later than any safety state of it: the
                // queue first, then the batch whole, durably.
                writer.barrier()?;
                let batch = std::mem::take(&mut self.batch);
                self.write(&batch)?;
                self.app.committed(&batch.commits);
            }
            None => {
                let batch = std::mem::take(&mut self.batch);
                self.write(&batch)?;
                self.app.committed(&batch.commits);
            }
        }
        if let Some(seq) = self.batch_seq.take() {
            self.local.push_back(Input::Persisted { seq });
        }
        if epoch_change {
            self.net.validators_changed(self.replica.validators());
            self.refresh_peers();
        }
        Ok(())
    }

    /// Hands the network the app's peer book of the set in force (committed state).
    fn refresh_peers(&mut self) {
        let store = &self.store;
        let state = |k: &[u8]| store.app_get(k);
        let peers = self.app.peer_book(&state, self.replica.validators());
        tracing::debug!(peers = peers.len(), "peer book");
        self.net.peers_changed(&peers);
    }

    /// The updates of the commits handed to the writer and not yet written, newest first
    /// (see [`context`]).
    fn queued_updates(&self) -> Vec<AppStateUpdates> {
        self.writer.as_ref().map(|w| w.unwritten().app_updates()).unwrap_or_default()
    }

    fn count_out(&self, len: usize, copies: usize) {
        if let Some(m) = &self.metrics {
            m.bytes(false, len * copies);
        }
    }

    /// Writes `batch` to the store, timing it.
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let start = Instant::now();
        self.store.write(batch)?;
        if let Some(m) = &self.metrics {
            m.store_write(start.elapsed());
        }
        Ok(())
    }

    fn frame(&self, message: Message) -> Frame {
        Arc::new(Envelope::new(self.replica.config().chain, message).encode())
    }

    /// Asks the app for a block; an empty one waits until `wait_until` (if given and still
    /// ahead) when nothing uncommitted is waiting for descendants to commit.
    fn produce(&mut self, view: View, parent: BlockHash, height: Height, wait_until: Option<Instant>) {
        let idle = self.replica.pending_updates(&parent).iter().all(|u| u.is_empty());
        let now = Instant::now();
        let wait_until = wait_until.filter(|at| *at > now && idle);
        let queued = self.queued_updates();
        let mut ctx = context(&self.replica, self.store.as_ref(), &queued, view, height, parent);
        ctx.waits_if_empty = wait_until.is_some();
        let max_payload = ctx.max_payload;
        let mut produced = self.app.produce_block(&ctx);
        if produced.payload.len() > max_payload {
            // The core would refuse the block and the view would fail; an empty block keeps
            // the chain going (the app's transactions stay its to propose again).
            tracing::error!(
                len = produced.payload.len(),
                max_payload,
                %view,
                "the app produced a payload over the limit; proposing an empty block instead"
            );
            produced = Produced::default();
        }
        if let Some(at) = wait_until.filter(|_| produced.is_empty()) {
            self.deferred = Some(Deferred { view, parent, height, at });
            return;
        }
        self.local.push_back(Input::BlockProduced {
            view,
            parent,
            payload: produced.payload,
            outcome: produced.outcome,
        });
    }

    /// Logs a connection event and passes it to the handlers.
    pub fn on_net(&mut self, event: NetEvent) {
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
        if let Some(m) = &self.metrics {
            m.event(event);
        }
        for h in &self.handlers {
            h(event);
        }
    }
}

/// What the app sees for a block at `height` in `view` on `parent`: the updates of its
/// uncommitted ancestors, then `queued`, those of the commits still queued for the store
/// (newest first, [`Unwritten::app_updates`](crate::storage::Unwritten::app_updates)), over the
/// store. Reading a queued commit's updates again over a store that has meanwhile applied them
/// gives the same values: updates set or delete whole keys.
fn context<'a>(
    replica: &'a Replica,
    store: &'a dyn Storage,
    queued: &'a [AppStateUpdates],
    view: View,
    height: Height,
    parent: BlockHash,
) -> BlockContext<'a> {
    let mut pending = replica.pending_updates(&parent);
    pending.extend(queued);
    BlockContext {
        view,
        height,
        parent,
        me: replica.id(),
        waits_if_empty: false,
        schedule: crate::app::Schedule::Replica(replica),
        max_payload: replica.config().limits.max_payload,
        validators: replica.validators(),
        committed: crate::app::Committed::Store(store),
        pending,
    }
}

fn log_core_event(event: &hotstuff_core::Event) {
    use hotstuff_core::Event as E;
    match event {
        E::Committed { epoch, view, height, hash } => {
            tracing::debug!(%epoch, %view, %height, %hash, "committed")
        }
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
        E::SyncBelowRetained { peer, from_height, retained_from } => tracing::warn!(
            %peer,
            %from_height,
            %retained_from,
            "the sync server pruned the heights asked for (a state snapshot is needed if every server did)"
        ),
        other => tracing::trace!(event = ?other, "consensus event"),
    }
}
