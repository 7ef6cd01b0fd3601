//! The replica: one state machine per validator or listener.

mod app;
mod epoch;
mod fetch;
mod persisted;
pub(crate) mod progress;
mod proposal;
mod sync;
mod timeout;
mod timer;
mod vote;

use crate::action::Action;
use crate::app::AppStateUpdates;
use crate::block::Block;
use crate::block_tree::{BlockTree, Validity};
use crate::certificate::{self, QuorumCertificate, TimeoutCertificate};
use crate::config::Config;
use crate::crypto::{self, Keypair};
use crate::error::{ConfigError, InputError};
use crate::input::Input;
use crate::message::{Envelope, Message};
use crate::pacemaker::{DefaultPacemaker, LeaderHistory, Pacemaker};
use crate::state::{BlockRecord, CommittedTip, EpochState, Recovered, SafetyState};
use crate::types::{BlockHash, Epoch, Height, PublicKey, Signature, View};
use crate::validators::ValidatorSet;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;

/// Votes received for one view (kept only by the leader of the next view).
#[derive(Clone, Debug, Default)]
struct VoteCollector {
    /// Which block each voter voted for.
    by_voter: BTreeMap<PublicKey, BlockHash>,
    /// Per block: accumulated power and signatures.
    by_block: BTreeMap<BlockHash, (u64, BTreeMap<PublicKey, Signature>)>,
    /// A QC was formed for this view.
    formed: bool,
}

/// Timeout votes received for one view.
#[derive(Clone, Debug, Default)]
struct TimeoutCollector {
    power: u64,
    /// Per voter: its high-QC view and signature.
    votes: BTreeMap<PublicKey, (View, Signature)>,
    /// The highest QC among the votes.
    high_qc: Option<QuorumCertificate>,
    formed: bool,
    /// This replica joined the view on these votes (see `join_view`).
    joined: bool,
}

/// The highest block known to be committed, with what proves it.
#[derive(Clone, Debug)]
struct CommitTarget {
    /// `b0` of the two-chain rule.
    block: BlockHash,
    /// The QC for `b0` (the justify of its child `b1`).
    qc: QuorumCertificate,
    /// The QC for `b1`, which made `b0` committed.
    proof: QuorumCertificate,
}

/// Outputs produced while handling one input, flushed when it succeeds.
#[derive(Clone, Debug, Default)]
struct Staged {
    safety_dirty: bool,
    blocks: Vec<BlockRecord>,
    /// Signed messages that must wait for the persist of this input.
    gated: Vec<Action>,
    /// This replica's own votes, counted once the persist of this input is acknowledged.
    own_votes: Vec<crate::message::Vote>,
    /// Requests to the app (`ProduceBlock`, `ValidateBlock`), emitted after everything else of
    /// this input, so that a driver has applied this input's `Commit` before it builds the
    /// app's view of committed state plus [`Replica::pending_updates`].
    app: Vec<Action>,
}

/// A HotStuff replica (validator or listener) as a pure state machine.
///
/// Methods by role:
/// - **inputs** `handle*`: feed one [`Input`] (or a raw frame); on `Err` nothing changed;
/// - **outputs** `poll_action`: drain after every input until `None` and perform each
///   [`Action`] in order;
/// - **state** `&self` getters: view, certificates, committed tip, validator set, block tree,
///   speculative app-state updates.
pub struct Replica<P: Pacemaker = DefaultPacemaker> {
    config: Config,
    key: Keypair,
    pacemaker: P,
    /// The epoch in force: its validator set, the previous set, and its root QC.
    epoch: EpochState,
    /// The QC that ended the previous epoch (committed its last block), sent to peers still in
    /// it.
    epoch_end_qc: Option<QuorumCertificate>,
    genesis: BlockHash,
    safety: SafetyState,
    tree: BlockTree,
    /// The first proposal seen per view (equivocation detection), views above the root.
    proposals_seen: BTreeMap<View, BlockHash>,
    votes: BTreeMap<View, VoteCollector>,
    timeouts: BTreeMap<View, TimeoutCollector>,
    /// Digests of certificates already verified, by view (pruned below the root).
    verified: BTreeMap<View, BTreeSet<BlockHash>>,
    /// Views failed in a row (entered by TC) before the current one.
    consecutive_failures: u32,
    /// The view for which `ProduceBlock` is outstanding.
    producing: Option<View>,
    /// The highest block known to be committed (by the two-chain rule) and the QC certifying
    /// it; blocks up to it are handed over as soon as their outcomes are known.
    commit_target: Option<CommitTarget>,
    /// The peer a block-sync request is outstanding with, and its id.
    sync_peer: Option<(PublicKey, u64)>,
    /// The id of the last sync request.
    sync_request_id: u64,
    /// Rotates sync requests over the peers.
    sync_rotation: u64,
    /// Sync servers avoided after a bad, empty or missing response, with the generation of the
    /// `SyncTimer::Avoid` that lifts it.
    avoided: BTreeMap<PublicKey, u64>,
    avoid_generation: u64,
    /// The recent committed blocks the leader schedule reads.
    history: LeaderHistory,
    /// The committed height when the no-progress timer last fired.
    progress_mark: Height,
    /// Checked proposals whose parent is missing, by view, with their sender (see `fetch`).
    orphans: BTreeMap<View, (PublicKey, crate::message::Proposal)>,
    /// Certified blocks this replica lacks, being fetched by hash.
    fetching: BTreeMap<BlockHash, fetch::Fetch>,
    /// Blocks recovered from the store whose parent this replica no longer has (see
    /// `fetch`): served to peers by hash, joined to the tree once the parent arrives.
    recovered: BTreeMap<BlockHash, Block>,
    /// `(peer, block)` pairs already served to a `BlockRequest`.
    fetch_served: BTreeSet<(PublicKey, BlockHash)>,
    /// Rotates fetch requests over a QC's signers.
    fetch_rotation: u64,
    /// A `SyncTimer::Fetch` is pending.
    fetch_timer_armed: bool,
    ready: VecDeque<Action>,
    gated: VecDeque<(u64, Action)>,
    /// This replica's own votes with the persist seq they wait for: a vote counts towards a QC
    /// here only once its safety state is durable, as it leaves for its peers only then (a QC
    /// formed on a vote the replica could forget in a crash could commit a block here that a
    /// restarted replica, voting again in that view, helps to contradict).
    own_votes: VecDeque<(u64, crate::message::Vote)>,
    staged: Staged,
    persist_seq: u64,
    acked_seq: u64,
}

impl<P: Pacemaker> core::fmt::Debug for Replica<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Replica")
            .field("me", &self.key.public())
            .field("view", &self.safety.view)
            .field("high_qc", &self.safety.high_qc.view)
            .field("committed", &self.tree.root())
            .finish_non_exhaustive()
    }
}

/// How many certificate digests are remembered per view.
const VERIFIED_PER_VIEW: usize = 8;

impl<P: Pacemaker> Replica<P> {
    /// Builds a replica from a fresh genesis or from what the driver recovered from its store.
    /// The first actions (the view timer, and a `ProduceBlock` if it leads the view) are ready
    /// at once.
    pub fn new(
        config: Config,
        key: Keypair,
        pacemaker: P,
        recovered: Recovered,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let Recovered { genesis, safety, committed, epoch, blocks, recent } = recovered;
        let mut history = LeaderHistory::from_blocks(recent.iter().filter(|b| b.view <= committed.view));
        history.set_epoch_start(epoch.root_qc.view);
        let mut safety = safety;
        if safety.epoch > epoch.epoch {
            return Err(ConfigError::Inconsistent("safety state from a later epoch than the store's"));
        }
        if safety.epoch < epoch.epoch {
            // The commit that ended the old epoch became durable, the safety state written with
            // it did not: start the new epoch from its root QC, as the switch itself does.
            safety.epoch = epoch.epoch;
            safety.high_qc = epoch.root_qc.clone();
            safety.locked_qc = epoch.root_qc.clone();
            safety.last_tc = None;
            safety.view = safety.view.max(epoch.root_qc.view.next());
        }
        if safety.high_qc.view < safety.locked_qc.view {
            return Err(ConfigError::Inconsistent("high QC below locked QC"));
        }
        if safety.view <= safety.high_qc.view {
            return Err(ConfigError::Inconsistent("view not above the high QC"));
        }
        // The committed tip may be above the durable high QC: a driver applies commits and
        // writes the safety state independently. The replica then learns a higher QC from its
        // peers before it leads again; safety does not depend on the high QC.
        if safety.view.0 == 0 {
            return Err(ConfigError::Inconsistent("view 0"));
        }
        let mut tree = BlockTree::new(committed);
        let mut blocks = blocks;
        blocks.sort_by_key(|r| r.block.height);
        let mut to_validate = Vec::new();
        let mut recovered = BTreeMap::new();
        for BlockRecord { block, outcome } in blocks {
            let hash = block.hash();
            if block.epoch != epoch.epoch {
                continue;
            }
            let Some((pview, pheight)) = tree.position(&block.parent()) else {
                // Its parent was not durable here (a driver may write other proposers' blocks
                // and commits after `Persisted`, see `Action::Persist`). Kept for peers that
                // lack it after the same crash (a leader's own proposal is durable only here)
                // and for the tree once the parent arrives (`fetch`).
                if block.view > committed.view && recovered.len() < config.max_uncommitted_blocks {
                    recovered.insert(hash, block);
                }
                continue;
            };
            if block.height.0 != pheight.0.saturating_add(1) || block.view <= pview || tree.contains(&hash) {
                continue;
            }
            // Valid only on a valid parent (its app state is read through its ancestors): a
            // driver writing in the background may have stored a block's outcome but not its
            // parent's. It is then validated again once the parent is.
            let validity = match outcome {
                Some(o) if tree.is_valid_or_root(&block.parent()) => Validity::Valid(o),
                _ => {
                    to_validate.push(hash);
                    Validity::Waiting
                }
            };
            tree.insert(hash, block, validity, false);
        }
        let mut r = Replica {
            config,
            key,
            pacemaker,
            epoch,
            epoch_end_qc: None,
            genesis,
            safety,
            tree,
            proposals_seen: BTreeMap::new(),
            votes: BTreeMap::new(),
            timeouts: BTreeMap::new(),
            verified: BTreeMap::new(),
            consecutive_failures: 0,
            producing: None,
            commit_target: None,
            sync_peer: None,
            sync_request_id: 0,
            sync_rotation: 0,
            avoided: BTreeMap::new(),
            avoid_generation: 0,
            history,
            progress_mark: committed.height,
            orphans: BTreeMap::new(),
            fetching: BTreeMap::new(),
            recovered,
            fetch_served: BTreeSet::new(),
            fetch_rotation: 0,
            fetch_timer_armed: false,
            ready: VecDeque::new(),
            gated: VecDeque::new(),
            own_votes: VecDeque::new(),
            staged: Staged::default(),
            persist_seq: 0,
            acked_seq: 0,
        };
        let proposals: Vec<(View, BlockHash)> = r.tree.iter().map(|(h, e)| (e.block.view, *h)).collect();
        r.proposals_seen.extend(proposals);
        for h in to_validate {
            r.request_validation(h);
        }
        r.start_view(progress::Entry::Start);
        r.arm_no_progress_timer();
        // The durable high QC's block may be among the blocks whose parent was lost: start
        // piecing the chain together from it (`fetch`).
        if !r.tree.contains(&r.safety.high_qc.block) {
            let qc = r.safety.high_qc.clone();
            r.want_block_unbounded(&qc);
        }
        // What was durable before the crash may be re-sent as is. A vote is for the view the
        // replica voted in, and it stays in that view until a QC or TC for it arrives, so the
        // vote to re-send is the one for the current view.
        let view = r.safety.view;
        if let Some(vote) = r.safety.last_vote.clone().filter(|v| v.view == view) {
            r.send_vote(vote);
        }
        if let Some(t) = r.safety.last_timeout.clone().filter(|t| t.view == view && t.epoch == r.epoch.epoch)
        {
            r.staged.gated.push(Action::Broadcast { message: Message::Timeout(t.clone()) });
            r.collect_timeout(t);
        }
        r.flush();
        if r.count_durable_own_votes() {
            r.flush();
        }
        Ok(r)
    }

    /// Feeds one input. On `Err` the replica is exactly as it was (no state change, no new
    /// actions); the error says what was wrong with the input.
    pub fn handle(&mut self, input: Input) -> Result<(), InputError> {
        debug_assert!(
            self.staged.gated.is_empty() && self.staged.app.is_empty() && self.staged.blocks.is_empty()
        );
        let result = match input {
            Input::Message { from, message } => self.handle_message(from, message),
            Input::TimerFired { view } => self.handle_timer(view),
            Input::BlockProduced { view, parent, payload, outcome } => {
                self.handle_block_produced(view, parent, payload, outcome)
            }
            Input::BlockValidated { hash, outcome } => self.handle_block_validated(hash, outcome),
            Input::Persisted { seq } => self.handle_persisted(seq),
            Input::SyncTimerFired { timer } => self.handle_sync_timer(timer),
        };
        debug_assert!(
            result.is_ok()
                || (self.staged.gated.is_empty()
                    && self.staged.app.is_empty()
                    && self.staged.blocks.is_empty()
                    && !self.staged.safety_dirty),
            "a failed input must not change state"
        );
        self.flush();
        if self.count_durable_own_votes() {
            self.flush();
        }
        result
    }

    /// Decodes a frame from `from` (bounded, canonical, this chain and protocol version only)
    /// and handles the message in it.
    pub fn handle_frame(&mut self, from: PublicKey, bytes: &[u8]) -> Result<(), InputError> {
        let env = Envelope::decode(bytes, &self.config.limits)?;
        if env.chain != self.config.chain {
            return Err(InputError::WrongChain { expected: self.config.chain, got: env.chain });
        }
        self.handle(Input::Message { from, message: env.message })
    }

    fn handle_message(&mut self, from: PublicKey, message: Message) -> Result<(), InputError> {
        message.check(&self.config.limits)?;
        match message {
            Message::Proposal(p) => self.handle_proposal(from, p),
            Message::Vote(v) => self.handle_vote(v),
            Message::Timeout(t) => self.handle_timeout(from, t),
            Message::SyncRequest(r) => self.handle_sync_request(from, r),
            Message::SyncResponse(r) => self.handle_sync_response(from, r),
            Message::SyncPruned(p) => self.handle_sync_pruned(from, p),
            Message::Certificate(qc) => self.handle_certificate(from, qc),
            Message::BlockRequest(hash) => self.handle_block_request(from, hash),
            Message::Block(block) => self.handle_fetched_block(block),
            // Snapshot sync runs in the driver (it reads and installs app state, which the core
            // never touches), and app messages are the app's; a driver that passes these on has
            // a bug.
            Message::SnapshotRequest(_)
            | Message::SnapshotOffer(_)
            | Message::SnapshotChunk(_)
            | Message::App(_) => Err(InputError::NotForReplica),
        }
    }

    /// The next action for the driver, or `None` when there is nothing to do until the next
    /// input. Call it until `None` after every input.
    ///
    /// **Drain rule.** Every call to [`handle`](Self::handle) (or
    /// [`handle_frame`](Self::handle_frame)) and [`new`](Self::new) must be followed by draining
    /// this until `None` before the driver waits for the next event. Any input may release
    /// actions, not only the obvious ones: [`Input::Persisted`] releases the votes, timeout votes
    /// and proposals held back for it, a message may complete a QC, commit blocks and ask the
    /// app for a block. A driver that skips the drain after some input keeps those actions
    /// queued (no error says so) and the chain only moves on through view timeouts. Use
    /// [`has_actions`](Self::has_actions) to check the rule in a debug assertion.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.ready.pop_front()
    }

    /// Whether actions are waiting to be polled. After a full drain it is `false`; a driver may
    /// `debug_assert!(!replica.has_actions())` before it blocks for the next event (the
    /// simulator does, before every input).
    #[must_use]
    pub fn has_actions(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The peers an [`Action::Broadcast`] goes to, given the listeners the driver serves: every
    /// member of the validator set in force (which follows epoch changes: call this when
    /// performing the action, not once at start-up), then every listener that is not a member,
    /// without this replica and without repeats. The core does not know the listeners (they
    /// have no power and sign nothing), so the driver passes them.
    ///
    /// A removed validator is a listener from the driver's point of view: pass it among
    /// `listeners` if it should keep following the chain.
    pub fn broadcast_peers<'a>(
        &'a self,
        listeners: impl IntoIterator<Item = &'a PublicKey> + 'a,
    ) -> impl Iterator<Item = PublicKey> + 'a {
        let me = self.key.public();
        let set = &self.epoch.validators;
        let members = set.members().iter().map(|v| v.key);
        let mut seen = BTreeSet::new();
        members
            .chain(listeners.into_iter().copied().filter(move |k| !set.contains(k)))
            .filter(move |k| *k != me && seen.insert(*k))
    }

    /// Turns what one successful input staged into actions: one `Persist` if anything durable
    /// changed, and the signed messages gated behind it.
    fn flush(&mut self) {
        let staged = core::mem::take(&mut self.staged);
        if staged.safety_dirty || !staged.blocks.is_empty() {
            self.persist_seq += 1;
            self.ready.push_back(Action::Persist {
                seq: self.persist_seq,
                safety: staged.safety_dirty.then(|| self.safety.clone()),
                blocks: staged.blocks,
            });
        }
        for vote in staged.own_votes {
            self.own_votes.push_back((self.persist_seq, vote));
        }
        for action in staged.gated {
            // Persist before send: a signed message leaves only once the state it was signed
            // under (everything up to the latest Persist) is durable.
            if self.persist_seq <= self.acked_seq {
                self.ready.push_back(action);
            } else {
                self.gated.push_back((self.persist_seq, action));
            }
        }
        // A block asked about earlier in this input may have been pruned by a commit later in
        // it (it was on a branch that can no longer commit): the app is not asked about it.
        let tree = &self.tree;
        self.ready.extend(staged.app.into_iter().filter(|a| match a {
            Action::ValidateBlock { hash, .. } => tree.get(hash).is_some(),
            _ => true,
        }));
    }

    /// Counts this replica's own votes whose safety state is now durable (see `own_votes`);
    /// true if any was counted (their effects are staged: flush them).
    fn count_durable_own_votes(&mut self) -> bool {
        let mut counted = false;
        while self.own_votes.front().is_some_and(|(gate, _)| *gate <= self.acked_seq) {
            if let Some((_, vote)) = self.own_votes.pop_front() {
                self.collect_vote(vote);
                counted = true;
            }
        }
        counted
    }

    // ----- getters -----

    /// This replica's identity.
    #[must_use]
    pub fn id(&self) -> PublicKey {
        self.key.public()
    }

    /// The current view.
    #[must_use]
    pub fn view(&self) -> View {
        self.safety.view
    }

    /// The highest QC known.
    #[must_use]
    pub fn high_qc(&self) -> &QuorumCertificate {
        &self.safety.high_qc
    }

    /// The locked QC (DiemBFT v4 `highest_qc_round`).
    #[must_use]
    pub fn locked_qc(&self) -> &QuorumCertificate {
        &self.safety.locked_qc
    }

    /// The highest TC known.
    #[must_use]
    pub fn last_tc(&self) -> Option<&TimeoutCertificate> {
        self.safety.last_tc.as_ref()
    }

    /// The last committed block.
    #[must_use]
    pub fn committed(&self) -> &CommittedTip {
        self.tree.root()
    }

    /// The height of the last committed block.
    #[must_use]
    pub fn committed_height(&self) -> Height {
        self.tree.root().height
    }

    /// The validator set in force.
    #[must_use]
    pub fn validators(&self) -> &ValidatorSet {
        &self.epoch.validators
    }

    /// The current epoch.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch.epoch
    }

    /// The epoch in force: its set, the previous set and its root QC (what a driver stores).
    #[must_use]
    pub fn epoch_state(&self) -> &EpochState {
        &self.epoch
    }

    /// The recent committed history the leader schedule reads.
    #[must_use]
    pub fn leader_history(&self) -> &LeaderHistory {
        &self.history
    }

    /// Sync servers currently avoided.
    pub fn avoided_sync_peers(&self) -> impl Iterator<Item = &PublicKey> {
        self.avoided.keys()
    }

    /// Whether this replica votes (is in the validator set) or only listens.
    #[must_use]
    pub fn is_validator(&self) -> bool {
        self.epoch.validators.contains(&self.key.public())
    }

    /// The leader of `view`.
    #[must_use]
    pub fn leader(&self, view: View) -> PublicKey {
        self.pacemaker.leader(view, &self.epoch.validators, &self.history)
    }

    /// The safety state (as last staged; the durable one is the last acknowledged `Persist`).
    #[must_use]
    pub fn safety(&self) -> &SafetyState {
        &self.safety
    }

    /// The uncommitted block tree.
    #[must_use]
    pub fn block_tree(&self) -> &BlockTree {
        &self.tree
    }

    /// A block in the tree.
    #[must_use]
    pub fn block(&self, hash: &BlockHash) -> Option<&Block> {
        self.tree.get(hash).map(|e| &e.block)
    }

    /// The app-state updates of `hash` and its uncommitted ancestors, newest first: the
    /// speculative view of the state after `hash` is these (first hit wins) over the committed
    /// state. Use the parent's hash when validating or producing a block.
    #[must_use]
    pub fn pending_updates(&self, hash: &BlockHash) -> Vec<&AppStateUpdates> {
        self.tree.pending_updates(hash)
    }

    /// The highest sequence number emitted in a `Persist`, and the highest acknowledged.
    #[must_use]
    pub fn persist_progress(&self) -> (u64, u64) {
        (self.persist_seq, self.acked_seq)
    }

    /// The chain's genesis hash.
    #[must_use]
    pub fn genesis(&self) -> BlockHash {
        self.genesis
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- helpers shared by the handlers -----

    fn emit(&mut self, action: Action) {
        match action {
            Action::ProduceBlock { .. } | Action::ValidateBlock { .. } => self.staged.app.push(action),
            _ => self.ready.push_back(action),
        }
    }

    fn is_verified(&self, view: View, digest: &BlockHash) -> bool {
        self.verified.get(&view).is_some_and(|s| s.contains(digest))
    }

    fn remember_verified(&mut self, view: View, digest: BlockHash) {
        if view <= self.tree.root().view && view != View(0) {
            return;
        }
        let set = self.verified.entry(view).or_default();
        if set.len() < VERIFIED_PER_VIEW {
            set.insert(digest);
        }
    }

    /// The set that signed `qc`: this epoch's for a QC of this epoch; the previous epoch's only
    /// for a QC of the block this epoch began after. Any other epoch is refused: its QCs
    /// certify blocks this replica can neither use nor fetch.
    fn certifying_set(&self, qc: &QuorumCertificate) -> Result<&ValidatorSet, InputError> {
        if qc.epoch == self.epoch.epoch {
            return Ok(&self.epoch.validators);
        }
        match &self.epoch.previous {
            Some(previous) if qc.epoch.next() == self.epoch.epoch && qc.block == self.epoch.root_qc.block => {
                Ok(previous)
            }
            _ => Err(InputError::WrongEpoch { expected: self.epoch.epoch, got: qc.epoch }),
        }
    }

    /// Verifies a QC unless an identical one was verified before. Returns its digest, to be
    /// remembered once the input is accepted.
    fn check_qc(&self, qc: &QuorumCertificate) -> Result<BlockHash, InputError> {
        let digest = qc.digest();
        if !self.is_verified(qc.view, &digest) {
            certificate::verify_qc(qc, self.config.chain, self.certifying_set(qc)?, &self.genesis)?;
        }
        Ok(digest)
    }

    /// Verifies a proposal's justify QC, not verified before, and its proposer's signature
    /// `proposer` in one batch. `false` when the batch (or the QC's signer set) fails: the caller
    /// then checks both one by one ([`crypto::verify_one`], [`Self::check_qc`]), which names the
    /// signature at fault.
    fn batch_check_qc_and_proposer(&self, qc: &QuorumCertificate, proposer: crypto::BatchItem) -> bool {
        self.certifying_set(qc).is_ok_and(|set| {
            certificate::verify_qc_with(qc, self.config.chain, set, &self.genesis, proposer).is_ok()
        })
    }

    /// Verifies a TC of this epoch (and its high QC) unless identical ones were verified before.
    fn check_tc(&self, tc: &TimeoutCertificate) -> Result<(BlockHash, BlockHash), InputError> {
        if tc.epoch != self.epoch.epoch {
            return Err(InputError::WrongEpoch { expected: self.epoch.epoch, got: tc.epoch });
        }
        let digest = tc.digest();
        let qc_digest = tc.high_qc.digest();
        if !self.is_verified(tc.view, &digest) {
            let qc_known = self.is_verified(tc.high_qc.view, &qc_digest);
            certificate::verify_tc(
                tc,
                self.config.chain,
                &self.epoch.validators,
                self.certifying_set(&tc.high_qc)?,
                &self.genesis,
                qc_known,
            )?;
        }
        Ok((digest, qc_digest))
    }
}
