//! What the driver feeds the core.

use crate::app::AppOutcome;
use crate::message::Message;
use crate::types::{BlockHash, PublicKey, View};
use alloc::vec::Vec;

/// An input to [`Replica::handle`](crate::Replica::handle).
// Boxing the large variants would cost an allocation per message for no gain: each value is
// moved once, from the producer to the consumer.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A message from a peer. `from` is the identity the connection was authenticated as;
    /// signed content is checked against its own signer regardless.
    Message {
        /// The sending peer.
        from: PublicKey,
        /// The message.
        message: Message,
    },
    /// The timer set by [`Action::SetTimer`](crate::Action::SetTimer) for `view` fired.
    TimerFired {
        /// Its view.
        view: View,
    },
    /// The app's answer to [`Action::ProduceBlock`](crate::Action::ProduceBlock).
    BlockProduced {
        /// The view from the request.
        view: View,
        /// The parent from the request.
        parent: BlockHash,
        /// The block payload.
        payload: Vec<u8>,
        /// What the block changes.
        outcome: AppOutcome,
    },
    /// The app's answer to [`Action::ValidateBlock`](crate::Action::ValidateBlock):
    /// `Some(outcome)` if valid, `None` if the app rejects the block.
    BlockValidated {
        /// The block from the request.
        hash: BlockHash,
        /// The verdict.
        outcome: Option<AppOutcome>,
    },
    /// A timer set by [`Action::SetSyncTimer`](crate::Action::SetSyncTimer) fired.
    SyncTimerFired {
        /// The timer.
        timer: crate::action::SyncTimer,
    },
    /// Everything up to and including the [`Action::Persist`](crate::Action::Persist) with
    /// this `seq` is durable.
    Persisted {
        /// The highest durable sequence number.
        seq: u64,
    },
}
