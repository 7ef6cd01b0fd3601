//! # hotstuff-core
//!
//! HotStuff Byzantine fault tolerant state machine replication as a pure, deterministic state
//! machine: pipelined chained HotStuff with the two-chain commit rule of Jolteon / DiemBFT v4.
//!
//! ## What the core never does
//! No I/O (sockets, files), no clock, no threads, no entropy. It is `no_std` + `alloc`. Time
//! enters as [`Input::TimerFired`], randomness never (keys are given to it), durability as
//! [`Input::Persisted`]. The same inputs in the same order always give the same actions, which is
//! what lets the deterministic simulator, the fuzzers and every driver run exactly this code.
//!
//! ## Run loop (what a driver does)
//! 1. Build the replica with [`Replica::new`] from a [`Recovered`] state
//!    ([`Recovered::genesis`] the first time, the store's contents after a restart).
//! 2. Drain [`Replica::poll_action`] until `None` and perform each [`Action`] in order; each
//!    variant's doc says what the driver must do and which [`Input`] answers it.
//! 3. Feed each event from the outside world to [`Replica::handle`] (or raw frames to
//!    [`Replica::handle_frame`]) and go to 2, **always**, whether `handle` returned `Ok` or
//!    `Err`: any input may release actions (an [`Input::Persisted`] releases the held votes),
//!    and a driver that does not drain after one of them stalls with no error (see
//!    [`Replica::poll_action`]; [`Replica::has_actions`] checks the rule in a debug
//!    assertion).
//!
//! An `Err` changed nothing. Its [`InputError::kind`] says what it means: most refusals are
//! [stale](InputErrorKind::Stale) traffic an honest peer also sends (late, duplicated,
//! reordered, from another view or epoch), which a driver may drop silently;
//! [invalid](InputErrorKind::Invalid) input comes only from a misbehaving (or incompatible)
//! peer, which a driver logs and may penalise; [local](InputErrorKind::Local) errors are bugs in
//! the driver or the app.
//!
//! An [`Action::Broadcast`] goes to every other validator of the set in force and to the
//! listeners the driver serves: [`Replica::broadcast_peers`] lists them (call it when
//! performing the action, since the set changes with the epochs).
//!
//! Hashes and keys print their first 12 hex digits; `{:#}` or `to_hex()` print all 64.
//!
//! ## Persist before send
//! Votes, timeout votes and proposals depend on the [`SafetyState`]. The core changes that state
//! in memory, emits [`Action::Persist`] with a strictly increasing `seq`, and holds every signed
//! message created under it until the driver answers [`Input::Persisted`] with a `seq` at or above
//! it. A driver must make the write durable (fsync) before answering. After a crash it rebuilds the
//! replica from the last durable state, so it never signs a second, different vote, timeout vote
//! or proposal for a view it already signed in.
//!
//! ## The safety rules
//! Views are the "rounds" of the papers. `DiemBFT v4` is "DiemBFT v4: State Machine Replication
//! in the Diem Blockchain" (2021); `Jolteon` is Gelashvili et al., "Jolteon and Ditto", FC 2022,
//! Figure 2. Each rule's code cites its source.
//! - **Voting rule** ([`safe_to_vote`]): vote for a block of view `r` whose QC has view `q` only if
//!   `r > highest_voted_view`, `r > q`, and either `r == q + 1`, or `r == tc.view + 1` for the TC of
//!   the previous view and `q >= ` the largest high-QC view in that TC (DiemBFT v4 `safe_to_vote`
//!   / `safe_to_extend`; Jolteon "vote rule"). A replica votes at most once per view.
//! - **Locking rule**: voting for a block raises the lock (`locked_qc`, DiemBFT v4
//!   `highest_qc_round`) to the block's QC. Timeout votes never report a QC below the lock, so any
//!   TC's largest high-QC view is at least the lock of every honest signer of a later QC.
//! - **Commit rule**: when a QC certifies a block `b1` whose parent `b0` was proposed in the
//!   directly preceding view (`b1.view == b0.view + 1`), `b0` and its ancestors commit
//!   (two-chain; Jolteon "commit rule", DiemBFT v4 §4).
//! - **Timeout rule** ([`safe_to_timeout`]): sign a timeout vote for view `r` reporting high QC `q`
//!   only if `q >= lock`, `r > max(highest_voted_view - 1, q)`, and `r == q + 1` or
//!   `r == tc.view + 1`; signing it raises `highest_voted_view` to `r` (DiemBFT v4
//!   `safe_to_timeout` / `make_timeout`).
//! - **Pacemaker**: a QC or TC for view `v >= current` moves the replica to `v + 1`. The leader of a
//!   view entered by a TC extends its highest QC, which is at least the TC's largest high QC, and
//!   attaches the TC. 2f+1 (by power) timeout votes form a TC; f+1 (more than a third of the
//!   power) for a later view pull a replica into that view to time it out too (Jolteon's view
//!   synchronization). A timeout vote carries the sender's vote in that view, and whoever
//!   collects timeout votes counts those votes too, so a block whose next leader is down still
//!   gets its QC. Leader choice and view timeouts are the [`Pacemaker`] trait's; the default is
//!   weighted round-robin with exponential back-off that resets on progress.
//! - **Vote routing**: a vote goes to the next view's leader, which forms the QC (Jolteon Fig. 2).
//!   With [`Config::broadcast_votes`] it goes to every validator, and each forms the QC itself
//!   and takes it in like a received one (any replica may aggregate a QC; DiemBFT v4
//!   `process_vote`): commits and view changes reach every replica one network delay sooner,
//!   for `n^2` vote messages per view.
//!
//! Safety holds while the Byzantine validators hold less than a third of the voting power.
//!
//! ## Validator-set changes (epochs that end on commit)
//! The mechanism is DiemBFT v4's / Aptos' reconfiguration ("epoch change on commit"):
//! - The app changes the set through a block: its [`AppOutcome::validator_updates`] (add a key
//!   with power, change a power, remove with power 0). Updates that cannot be applied (an empty
//!   or oversized set) make the block invalid, the same verdict on every honest replica.
//! - Such a block `B` is its epoch's last block. Its descendants in the same epoch form the
//!   *suffix*: the core proposes them itself with empty payloads (the app is not asked) and
//!   refuses non-empty ones. They only carry the QCs that commit `B` by the ordinary two-chain
//!   rule, and never commit themselves.
//! - When `B` commits, the replica applies the updates, starts epoch `e + 1` with the new set,
//!   makes `B` the root, drops the suffix, and starts the new epoch from `B`'s QC: high QC and
//!   lock are that QC, the old TC is dropped, and views continue (they never repeat). The
//!   [`Action::Commit`] that hands over `B` carries the [`EpochChange`] (the new [`EpochState`]
//!   to store, and the [`EpochProof`] for block sync).
//! - Every block, QC, vote, timeout vote and TC names its epoch, and the epoch is signed (in
//!   the block hash, the vote subject, the timeout subject), so nothing of one epoch counts in
//!   another. A QC is checked against its epoch's set: the current one, or the previous one
//!   only for the QC of `B` itself.
//! - **Epoch-start rule.** The new epoch's first blocks extend `B`'s QC in any view (there is no
//!   QC of the new epoch yet to make views consecutive). A replica votes for such a block only
//!   while its lock is still `B`'s QC, and times out reporting that QC.
//! - The leader that forms the QC committing `B` broadcasts it ([`Message::Certificate`]); a
//!   replica still in the old epoch that sends old-epoch messages is sent that QC; a replica
//!   that receives a message of a later epoch fetches the blocks by sync.
//!
//! Why it is safe: (1) the old epoch's safety is the two-chain protocol's, so every honest
//! replica that commits anything in epoch `e` commits the same chain, and `B` (the first block
//! on it that changes the set) is the same for all; so is the new set, computed from `B` by the
//! deterministic app. (2) Nothing after `B` in epoch `e` commits, so the epochs do not overlap.
//! (3) Within epoch `e + 1`, Jolteon's lemma holds unchanged: once a block `X` of the new epoch
//! is committed (QCs for `X` and its child in the next view), a quorum of the new set locked on
//! `X`'s QC, so no later block can get a quorum by the epoch-start rule (which needs the lock
//! to be `B`'s QC) or by the ordinary rules (which need a QC at least as high as that lock).
//! (4) A replica that has not committed `B` cannot verify the new set's messages and takes no
//! part in the new epoch until it has `B` and its proof. The simulator checks all of this on
//! every commit: each committed block's proposer and certificate belong to its epoch's set, and
//! every honest replica derives the same set for every epoch.
//!
//! ## Certificates and signatures
//! Every signed byte string is domain separated (chain id, kind, view, subject; see [`crypto`]).
//! QCs and TCs are checked with ed25519 batch verification, and a certificate already verified is
//! remembered (by digest) and not verified again. A proposal's signature joins its justify QC's
//! batch when that QC is new (one multiscalar multiplication per proposal); when the QC is known,
//! or the batch fails, the checks run one by one so the error names the signature at fault.
//! A signature that only a batch accepts (crafted, with a small-order component) can at most make
//! replicas disagree about that leader's own proposal, which a Byzantine leader can do anyway by
//! sending different proposals; it signs nothing a vote or certificate covers. Votes and timeouts
//! use strict verification, so anything accepted singly also passes in a certificate's batch.
//!
//! ## Example
//! ```
//! use hotstuff_core::*;
//!
//! let key = Keypair::from_secret(&[7; 32]);
//! let validators = ValidatorSet::new([(key.public(), 1)]).unwrap();
//! let chain = ChainId(1);
//! let mut replica = Replica::new(
//!     Config::new(chain),
//!     key,
//!     DefaultPacemaker::default(),
//!     Recovered::genesis(chain, validators),
//! )
//! .unwrap();
//! // A single validator leads every view, so each block certifies the previous one at once.
//! let mut committed = 0;
//! let mut inputs = Vec::new();
//! for _ in 0..10 {
//!     while let Some(action) = replica.poll_action() {
//!         match action {
//!             Action::ProduceBlock { view, parent, .. } => inputs.push(Input::BlockProduced {
//!                 view,
//!                 parent,
//!                 payload: b"tx".to_vec(),
//!                 outcome: AppOutcome::default(),
//!             }),
//!             Action::Persist { seq, .. } => inputs.push(Input::Persisted { seq }), // after fsync
//!             Action::Commit { blocks } => committed += blocks.len(),
//!             _ => {} // sends, timers, events
//!         }
//!     }
//!     for input in inputs.drain(..) {
//!         replica.handle(input).unwrap();
//!     }
//! }
//! while let Some(action) = replica.poll_action() {
//!     if let Action::Commit { blocks } = action {
//!         committed += blocks.len();
//!     }
//! }
//! assert!(committed > 0);
//! assert_eq!(replica.committed_height().0 as usize, committed);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

extern crate alloc;

pub mod action;
pub mod app;
pub mod block;
pub mod block_tree;
pub mod certificate;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod error;
pub mod event;
pub mod input;
pub mod message;
pub mod pacemaker;
mod replica;
pub mod state;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod types;
pub mod validators;

pub use action::{Action, CommittedBlock, EpochChange, EpochProof, SyncTimer};
pub use app::{AppOutcome, AppStateUpdates};
pub use block::{genesis_hash, Block};
pub use block_tree::{BlockTree, Validity};
pub use certificate::{CertificateError, QuorumCertificate, TimeoutCertificate};
pub use config::Config;
pub use crypto::Keypair;
pub use crypto::{SignKind, SignatureError};
pub use error::{ConfigError, InputError, InputErrorKind};
pub use event::{Event, ViewChange};
pub use input::Input;
pub use message::{
    ChunkSibling, DecodeError, Envelope, Limits, Message, Proposal, SnapshotAsk, SnapshotCertificate,
    SnapshotChunk, SnapshotOffer, SnapshotRequest, SyncRequest, SyncResponse, TimeoutVote, Vote,
    PROTOCOL_VERSION,
};
pub use pacemaker::{DefaultPacemaker, HistoryEntry, LeaderHistory, LeaderPolicy, Pacemaker};
pub use replica::progress::{safe_to_timeout, safe_to_vote};
pub use replica::Replica;
pub use state::{BlockRecord, CommittedTip, EpochState, Recovered, SafetyState};
pub use types::{BlockHash, ChainId, Epoch, Height, Power, PublicKey, Signature, View};
pub use validators::{Validator, ValidatorSet, ValidatorSetError, ValidatorSetUpdates};
