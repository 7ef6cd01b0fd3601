//! Errors. An input that returns an error leaves the replica exactly as it was.

use crate::certificate::CertificateError;
use crate::crypto::SignatureError;
use crate::message::DecodeError;
use crate::types::{BlockHash, ChainId, Height, PublicKey, View};
use crate::validators::ValidatorSetError;

/// Why an input was refused. The replica's state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The bytes did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A message for another chain.
    #[error("message for chain {got:?}, this replica runs chain {expected:?}")]
    WrongChain {
        /// Our chain.
        expected: ChainId,
        /// The message's chain.
        got: ChainId,
    },
    /// A signer that is not in the validator set.
    #[error("{0} is not a validator")]
    NotAValidator(PublicKey),
    /// A message signature that does not verify.
    #[error("bad signature from {signer}: {source}")]
    BadSignature {
        /// Who supposedly signed.
        signer: PublicKey,
        /// What failed.
        source: SignatureError,
    },
    /// A certificate that does not verify.
    #[error("bad certificate: {0}")]
    BadCertificate(#[from] CertificateError),
    /// A proposal from a replica that does not lead its view.
    #[error("{got} does not lead {view} ({expected} does)")]
    WrongLeader {
        /// The view.
        view: View,
        /// Its leader.
        expected: PublicKey,
        /// The proposer.
        got: PublicKey,
    },
    /// A message for a view that can no longer matter.
    #[error("message for {view} is stale (current view {current})")]
    Stale {
        /// The message's view.
        view: View,
        /// Our view.
        current: View,
    },
    /// A message for a view too far ahead to be buffered.
    #[error("message for {view} is too far ahead of {current}")]
    TooFarAhead {
        /// The message's view.
        view: View,
        /// Our view.
        current: View,
    },
    /// A message already received.
    #[error("duplicate message")]
    Duplicate,
    /// A second, different message from one signer for one view.
    #[error("{signer} equivocated in {view}")]
    Equivocation {
        /// The equivocator.
        signer: PublicKey,
        /// The view.
        view: View,
    },
    /// A vote sent to a replica that does not lead the next view.
    #[error("vote for {view} sent to a replica that does not lead the next view")]
    NotNextLeader {
        /// The vote's view.
        view: View,
    },
    /// A block whose parent is not known (and not committed).
    #[error("parent {0} is unknown")]
    UnknownParent(BlockHash),
    /// A block whose structure breaks a protocol rule.
    #[error("malformed block: {0}")]
    MalformedBlock(&'static str),
    /// A block whose height is not its parent's plus one.
    #[error("block height {got}, expected {expected}")]
    BadHeight {
        /// Parent height + 1.
        expected: Height,
        /// The block's height.
        got: Height,
    },
    /// A proposal whose justify QC is not for the previous view and that carries no TC for the
    /// previous view that allows it.
    #[error("proposal for {view} needs a TC for the previous view")]
    MissingTc {
        /// The proposal's view.
        view: View,
    },
    /// A timeout certificate of another epoch.
    #[error("certificate of epoch {got}, this replica is in epoch {expected}")]
    WrongEpoch {
        /// This replica's epoch.
        expected: crate::types::Epoch,
        /// The certificate's.
        got: crate::types::Epoch,
    },
    /// The app produced a block whose validator-set updates cannot be applied.
    #[error("the produced block's validator-set updates are invalid: {0}")]
    BadValidatorUpdates(crate::validators::ValidatorSetError),
    /// A timeout vote whose high QC is not below its view.
    #[error("timeout vote's high QC is not below its view")]
    BadTimeout,
    /// An app reply for a block or view the core did not ask about (or no longer waits for).
    #[error("unexpected app reply")]
    UnexpectedReply,
    /// An app validation reply naming a block not in the tree: never asked about, or pruned
    /// since by a commit on another branch (a driver drops such a reply).
    #[error("unknown block {0}")]
    UnknownBlock(BlockHash),
    /// A produced payload over the block size limit.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The block tree is full (too many uncommitted blocks); the block was not stored.
    #[error("too many uncommitted blocks")]
    TreeFull,
    /// A sync response nobody asked this peer for.
    #[error("unsolicited sync response from {0}")]
    UnexpectedSync(PublicKey),
    /// A sync response whose blocks do not form a certified chain from a known block.
    #[error("bad sync response: {0}")]
    BadSyncResponse(&'static str),
    /// A fetched block (`Message::Block`) nobody asked this replica for.
    #[error("unsolicited block {0}")]
    UnexpectedBlock(BlockHash),
    /// A fetched block with the hash asked for that does not fit the tree (wrong epoch, view,
    /// height or certificate): only a Byzantine quorum could have certified it.
    #[error("bad fetched block: {0}")]
    BadFetchedBlock(&'static str),
    /// A `Persisted` acknowledgement for a sequence number never emitted.
    #[error("persisted seq {seq} was never emitted (last is {last})")]
    UnknownSeq {
        /// The acknowledged seq.
        seq: u64,
        /// The last emitted seq.
        last: u64,
    },
}

/// Why a replica could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A setting out of range.
    #[error("setting `{name}`: {reason}")]
    Setting {
        /// The setting's name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The validator set is invalid.
    #[error(transparent)]
    Validators(#[from] ValidatorSetError),
    /// The recovered state contradicts itself.
    #[error("recovered state is inconsistent: {0}")]
    Inconsistent(&'static str),
}
