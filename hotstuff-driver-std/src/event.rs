//! Events passed to the handlers registered on the builder.

use crate::net::NetEvent;
use hotstuff_core::{InputError, PublicKey};

/// Something happened in the node. Handlers run on the node's consensus thread: keep them short.
#[derive(Clone, Debug)]
pub enum Event {
    /// A consensus event (proposed, voted, committed, view changed, sync, ...).
    Core(hotstuff_core::Event),
    /// A connection event, including refused connections and frames with the typed reason.
    Net(NetEvent),
    /// The core refused a message from a peer (stale, duplicate, bad signature, ...).
    MessageRefused {
        /// The peer it came from.
        from: PublicKey,
        /// Why.
        error: InputError,
    },
    /// Snapshot sync installed the committed state at `height` (fetched and verified from
    /// peers): the replica restarted from it and block-syncs from there.
    SnapshotInstalled {
        /// The new committed height.
        height: hotstuff_core::Height,
        /// The state root it was verified against.
        root: [u8; 32],
    },
    /// Snapshot sync stopped asking `peer` for chunks for the rest of this fetch: its answer
    /// was bad (`reason` says how) or it did not answer three times.
    SnapshotPeerAvoided {
        /// The snapshot server.
        peer: PublicKey,
        /// Why.
        reason: &'static str,
    },
    /// The node stopped on a fatal error (the store failed); it no longer runs consensus.
    Fatal {
        /// What failed.
        error: String,
    },
}
