//! What the core asks its driver to do.

use crate::app::AppOutcome;
use crate::block::Block;
use crate::certificate::QuorumCertificate;
use crate::event::Event;
use crate::message::Message;
use crate::state::{BlockRecord, EpochState, SafetyState};
use crate::types::{BlockHash, Height, PublicKey, View};
use alloc::vec::Vec;
use core::time::Duration;

/// A committed block, handed to the driver to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedBlock {
    /// The block.
    pub block: Block,
    /// Its hash.
    pub hash: BlockHash,
    /// A QC certifying it (taken from its child), for block-sync servers.
    pub certificate: QuorumCertificate,
    /// The app state and validator-set updates it makes.
    pub outcome: AppOutcome,
    /// Set when this block ends its epoch (it changes the validator set): the new epoch, which
    /// the driver MUST store atomically with this commit, and the proof that the block is
    /// committed, which it MUST keep with the block to serve block sync.
    pub epoch_change: Option<EpochChange>,
}

/// The end of an epoch: its last block committed, and the validator set it hands over to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochChange {
    /// The new epoch (to store, and to give back in [`Recovered`](crate::Recovered)).
    pub state: EpochState,
    /// Why the old epoch's last block is committed.
    pub proof: EpochProof,
}

/// Proof, by the old validator set, that an epoch's last block is committed: the blocks after
/// it (empty "suffix" blocks of the old epoch) up to a block `b1`, where `b1` and its parent are
/// in consecutive views, and the QC for `b1` (the two-chain commit rule). Block sync sends it
/// right after the epoch's last block.
#[derive(Clone, Debug, PartialEq, Eq, borsh::BorshSerialize)]
pub struct EpochProof {
    /// The old epoch's blocks after its last committed one, oldest first.
    pub blocks: Vec<Block>,
    /// The QC for the last of `blocks`.
    pub qc: QuorumCertificate,
}

impl borsh::BorshDeserialize for EpochProof {
    /// The derived layout, the blocks read by [`codec::read_vec`](crate::codec::read_vec) so
    /// memory follows the input.
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        Ok(EpochProof {
            blocks: crate::codec::read_vec(reader, usize::MAX)?,
            qc: borsh::BorshDeserialize::deserialize_reader(reader)?,
        })
    }
}

/// The block-sync timers (besides the view timer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SyncTimer {
    /// Periodic: if nothing committed since the last one, block sync starts.
    NoProgress,
    /// Ends the avoidance of a sync server, if it is still the one with this generation.
    Avoid {
        /// The avoided server.
        peer: PublicKey,
        /// Which avoidance (a later one for the same peer is not lifted by this timer).
        generation: u64,
    },
    /// Periodic while blocks are being fetched by hash (`Message::BlockRequest`): asks again
    /// for the blocks still missing, from other signers of their QCs.
    Fetch,
}

/// An obligation for the driver. Drain them with [`Replica::poll_action`](crate::Replica::poll_action)
/// after every input, and perform them in the order given.
#[must_use = "every action is an obligation for the driver"]
// Boxing the large variants would cost an allocation per message for no gain: each value is
// moved once, from the producer to the consumer.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// MUST durably write `safety` (when present) and `blocks` (fsync, and fsync the directory
    /// after a rename), then answer with [`Input::Persisted`](crate::Input::Persisted) carrying
    /// `seq` (or any higher seq already written). Writes must become durable in `seq` order.
    /// Votes, timeout votes and proposals signed under this state are held back until then.
    /// A driver MAY write the blocks other replicas proposed later, in the background (the std
    /// driver does): after a crash the replica fetches what it lost from their proposers, for
    /// whom their own blocks are durable (see [`Recovered::blocks`](crate::Recovered::blocks)).
    /// A block this replica proposed MUST be durable before `Persisted`.
    Persist {
        /// Strictly increasing sequence number.
        seq: u64,
        /// The new safety state, if it changed.
        safety: Option<SafetyState>,
        /// Blocks to store (new blocks, or blocks whose outcome is now known).
        blocks: Vec<BlockRecord>,
    },
    /// MUST send `message` to the replica `to` (best effort; no reply is expected).
    Send {
        /// The receiver.
        to: PublicKey,
        /// The message.
        message: Message,
    },
    /// MUST send `message` to every other validator and listener (best effort).
    Broadcast {
        /// The message.
        message: Message,
    },
    /// MUST answer with [`Input::TimerFired`](crate::Input::TimerFired) `{ view }` once `after`
    /// has passed, unless the replica has since asked for a timer for a later view (a timer for
    /// an old view is ignored anyway, so a driver may keep just the latest).
    SetTimer {
        /// The view the timer belongs to.
        view: View,
        /// How long from now.
        after: Duration,
    },
    /// MUST answer with [`Input::SyncTimerFired`](crate::Input::SyncTimerFired) `{ timer }` once
    /// `after` has passed. Several may be pending at once; keep each (they are few: one
    /// no-progress timer and one per avoided sync server).
    SetSyncTimer {
        /// Which timer.
        timer: SyncTimer,
        /// How long from now.
        after: Duration,
    },
    /// MUST ask the app for a block payload extending `parent` (reading the speculative state
    /// of `parent`, see [`Replica::pending_updates`](crate::Replica::pending_updates)) and
    /// answer with [`Input::BlockProduced`](crate::Input::BlockProduced). App requests come
    /// after every other action of the same input, so the input's `Commit` is applied first.
    ProduceBlock {
        /// The view to propose in.
        view: View,
        /// The parent block.
        parent: BlockHash,
        /// The new block's height.
        height: Height,
    },
    /// MUST ask the app to validate `block` against the speculative state of its parent and
    /// answer with [`Input::BlockValidated`](crate::Input::BlockValidated).
    ValidateBlock {
        /// The block's hash.
        hash: BlockHash,
        /// The block.
        block: Block,
        /// The block came by block sync, already certified by a quorum: the app may use its
        /// lighter "validate for sync" checks (for example skip checks against local time).
        for_sync: bool,
    },
    /// MUST answer the peer's block-sync request: build the answer with
    /// [`Replica::sync_answer`](crate::Replica::sync_answer) (a store that prunes) or
    /// [`Replica::sync_response`](crate::Replica::sync_response) (one that keeps every block)
    /// from the store's committed blocks and send it to `to` (a [`Message::SyncResponse`], or
    /// a [`Message::SyncPruned`] for heights pruned). The requester answers with
    /// `Input::Message`. Serve it off the consensus loop if the store is slow; dropping it
    /// under load is allowed (the client retries elsewhere).
    ServeSync {
        /// The requesting peer.
        to: PublicKey,
        /// Its request (already bounded by this replica's limits).
        request: crate::message::SyncRequest,
    },
    /// MUST apply these blocks' outcomes, oldest first, to the committed app state and store.
    /// No reply. Applying them again after a restart is harmless if the store records the
    /// committed tip with them atomically.
    Commit {
        /// The newly committed blocks, oldest first.
        blocks: Vec<CommittedBlock>,
    },
    /// MAY pass this notification to handlers and logs.
    Event(Event),
}

/// Helpers for drivers.
impl Action {
    /// True for actions that carry a signed consensus message.
    #[must_use]
    pub fn is_send(&self) -> bool {
        matches!(self, Action::Send { .. } | Action::Broadcast { .. })
    }
}
