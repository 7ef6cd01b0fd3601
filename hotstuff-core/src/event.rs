//! Notifications of everything significant, for user handlers and logs.

use crate::types::{BlockHash, Epoch, Height, PublicKey, View};

/// Why the replica entered a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewChange {
    /// Start or restart.
    Start,
    /// A QC for the previous view (progress; resets the back-off).
    Qc,
    /// A TC for the previous view (failure; increases the back-off).
    Tc,
}

/// Something significant happened. Events are informational: a driver may ignore them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This replica proposed a block.
    Proposed {
        /// Its view.
        view: View,
        /// Its hash.
        hash: BlockHash,
        /// Its height.
        height: Height,
    },
    /// A valid proposal was received and added to the block tree.
    ReceivedProposal {
        /// Its view.
        view: View,
        /// Its hash.
        hash: BlockHash,
        /// The leader.
        proposer: PublicKey,
    },
    /// This replica voted.
    Voted {
        /// The view.
        view: View,
        /// The block.
        hash: BlockHash,
    },
    /// This replica assembled a QC from votes: as the next view's leader, or as any validator
    /// with `Config::broadcast_votes` on (or from the votes inside timeout votes). Several
    /// replicas may report the same QC; it says nothing about who leads.
    QcFormed {
        /// The view.
        view: View,
        /// The certified block.
        hash: BlockHash,
    },
    /// This replica assembled a TC from timeout votes.
    TcFormed {
        /// The view that timed out.
        view: View,
    },
    /// The replica entered a view.
    ViewEntered {
        /// The new view.
        view: View,
        /// Its leader.
        leader: PublicKey,
        /// Why.
        reason: ViewChange,
    },
    /// The view's timer fired before the view made progress.
    ViewTimedOut {
        /// The view.
        view: View,
    },
    /// A block was committed.
    Committed {
        /// Its epoch (the epoch whose validator set certified it; a block that ends its epoch
        /// carries the old epoch).
        epoch: Epoch,
        /// Its view.
        view: View,
        /// Its height.
        height: Height,
        /// Its hash.
        hash: BlockHash,
    },
    /// Block sync asked a peer for blocks.
    SyncRequested {
        /// The peer.
        peer: PublicKey,
        /// The first height asked for.
        from_height: Height,
    },
    /// Block sync received certified blocks.
    SyncReceived {
        /// The peer.
        peer: PublicKey,
        /// New blocks added to the tree.
        blocks: usize,
    },
    /// A committed block changed the validator set: a new epoch began after it.
    EpochChanged {
        /// The new epoch.
        epoch: Epoch,
        /// The height of the old epoch's last block.
        height: Height,
        /// Members of the new set.
        validators: usize,
        /// Their total power.
        total_power: u64,
    },
    /// A sync server sent a bad response, or an empty one while blocks are missing, and is
    /// avoided for
    /// `Config::sync_avoid`.
    SyncPeerAvoided {
        /// The server.
        peer: PublicKey,
        /// What was wrong.
        reason: &'static str,
    },
    /// Nothing committed for `Config::sync_no_progress`; block sync starts.
    NoProgress {
        /// The committed height that did not move.
        height: Height,
    },
    /// The app rejected a proposed block.
    BlockRejected {
        /// The block.
        hash: BlockHash,
    },
    /// A sync server no longer stores the heights asked for (a
    /// [`SyncPruned`](crate::message::SyncPruned) answer); it is avoided and another is asked.
    /// If every server says so, block sync cannot catch this replica up: it needs a state
    /// snapshot at a height of at least `retained_from - 1`.
    SyncBelowRetained {
        /// The server.
        peer: PublicKey,
        /// The first height this replica asked for.
        from_height: Height,
        /// The lowest height from which the server holds every committed block.
        retained_from: Height,
    },
}
