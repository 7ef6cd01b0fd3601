//! Errors. An input that returns an error leaves the replica exactly as it was.
//!
//! Not every refused input is an attack. [`InputError::kind`] sorts them into three
//! [`InputErrorKind`]s: *stale* input that honest peers send in the normal course of the
//! protocol (late, duplicated, reordered, or seen from another view, epoch or leader schedule),
//! which a driver may drop silently; *invalid* input that breaks a rule no honest peer breaks,
//! which a driver should log and may hold against the connection's peer; and *local* errors,
//! which name a bug in the driver or the app rather than anything a peer did.

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
    /// A vote sent to a replica that does not lead the next view (with
    /// `Config::broadcast_votes` off), or to a listener (which counts no votes either way).
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
    /// A snapshot-sync message handed to the replica: snapshot sync is the driver's (it reads
    /// and installs app state), so the driver must serve or consume it itself.
    #[error("snapshot-sync messages are for the driver, not the replica")]
    NotForReplica,
    /// A `Persisted` acknowledgement for a sequence number never emitted.
    #[error("persisted seq {seq} was never emitted (last is {last})")]
    UnknownSeq {
        /// The acknowledged seq.
        seq: u64,
        /// The last emitted seq.
        last: u64,
    },
}

/// What a refused input says about where it came from (see [`InputError::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputErrorKind {
    /// Normal traffic that came too late, twice, out of order, or from a replica that sees
    /// another view, epoch or leader: an honest peer sends it too. A driver may drop it
    /// silently (or count it at debug level).
    Stale,
    /// The input breaks a rule that no honest peer breaks (a bad signature or certificate, a
    /// malformed block, an equivocation, a forged sync response, bytes that do not decode, a
    /// message of another chain). Either the peer (the connection's identity, or the signer
    /// for signed content) misbehaves or it runs an incompatible version. A driver should log
    /// it and may penalise or disconnect the peer.
    Invalid,
    /// The driver or its app broke the contract (a `Persisted` for a seq never emitted, a
    /// produced block over the size limit or with inapplicable validator-set updates). Not a
    /// peer's doing: a bug to fix.
    Local,
}

impl InputError {
    /// Sorts the error into stale traffic, invalid input and local bugs.
    ///
    /// Stale: [`Stale`](Self::Stale), [`Duplicate`](Self::Duplicate),
    /// [`TooFarAhead`](Self::TooFarAhead) (a replica far behind), [`WrongEpoch`](Self::WrongEpoch)
    /// (a peer on either side of an epoch change), [`WrongLeader`](Self::WrongLeader) and
    /// [`NotNextLeader`](Self::NotNextLeader) (replicas with different committed histories may
    /// compute different leaders; see the [`pacemaker`](crate::pacemaker) docs),
    /// [`UnknownParent`](Self::UnknownParent), [`TreeFull`](Self::TreeFull) (a local bound, not
    /// a proof of misbehaviour), [`UnexpectedSync`](Self::UnexpectedSync) and
    /// [`UnexpectedBlock`](Self::UnexpectedBlock) (a reply that arrives after the core stopped
    /// waiting, or a second copy), and the app replies the core no longer waits for,
    /// [`UnexpectedReply`](Self::UnexpectedReply) and [`UnknownBlock`](Self::UnknownBlock)
    /// (overtaken by a view change or pruned by a commit).
    ///
    /// Local: [`UnknownSeq`](Self::UnknownSeq), [`NotForReplica`](Self::NotForReplica), [`PayloadTooLarge`](Self::PayloadTooLarge),
    /// [`BadValidatorUpdates`](Self::BadValidatorUpdates).
    ///
    /// Every other variant is [`InputErrorKind::Invalid`].
    #[must_use]
    pub fn kind(&self) -> InputErrorKind {
        match self {
            InputError::Stale { .. }
            | InputError::Duplicate
            | InputError::TooFarAhead { .. }
            | InputError::WrongEpoch { .. }
            | InputError::WrongLeader { .. }
            | InputError::NotNextLeader { .. }
            | InputError::UnknownParent(_)
            | InputError::TreeFull
            | InputError::UnexpectedSync(_)
            | InputError::UnexpectedBlock(_)
            | InputError::UnexpectedReply
            | InputError::UnknownBlock(_) => InputErrorKind::Stale,
            InputError::UnknownSeq { .. }
            | InputError::NotForReplica
            | InputError::PayloadTooLarge { .. }
            | InputError::BadValidatorUpdates(_) => InputErrorKind::Local,
            InputError::Decode(_)
            | InputError::WrongChain { .. }
            | InputError::NotAValidator(_)
            | InputError::BadSignature { .. }
            | InputError::BadCertificate(_)
            | InputError::Equivocation { .. }
            | InputError::MalformedBlock(_)
            | InputError::BadHeight { .. }
            | InputError::MissingTc { .. }
            | InputError::BadTimeout
            | InputError::BadSyncResponse(_)
            | InputError::BadFetchedBlock(_) => InputErrorKind::Invalid,
        }
    }

    /// True for normal traffic an honest peer also sends (late, duplicated, reordered, or from
    /// another view, epoch or leader schedule): a driver may drop it without logging.
    #[must_use]
    pub fn is_stale(&self) -> bool {
        self.kind() == InputErrorKind::Stale
    }

    /// True for input no honest peer sends: the peer misbehaves (or runs an incompatible
    /// version).
    #[must_use]
    pub fn is_invalid(&self) -> bool {
        self.kind() == InputErrorKind::Invalid
    }
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
