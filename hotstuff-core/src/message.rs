//! Wire messages and their bounded, canonical decoding.

use crate::block::Block;
use crate::certificate::{QuorumCertificate, TimeoutCertificate};
use crate::types::{BlockHash, ChainId, Epoch, PublicKey, Signature, View};
use crate::validators::MAX_VALIDATORS;
use alloc::vec::Vec;
use borsh::{BorshDeserialize, BorshSerialize};

/// The wire protocol version carried in every [`Envelope`].
pub const PROTOCOL_VERSION: u16 = 1;

/// A leader's signed proposal of a block for its view.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Proposal {
    /// The proposed block; `block.proposer` signed this proposal.
    pub block: Block,
    /// The TC of the previous view, when the leader entered its view by a timeout
    /// (`block.justify.view + 1 != block.view`).
    pub tc: Option<TimeoutCertificate>,
    /// Proposer's signature over `(chain, Proposal, block.view, block hash)`.
    pub signature: Signature,
}

/// A vote for a block, sent to the leader of the next view.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Vote {
    /// The voter's epoch (the block's).
    pub epoch: Epoch,
    /// The view of the block voted for.
    pub view: View,
    /// The block voted for.
    pub block: BlockHash,
    /// The voter.
    pub voter: PublicKey,
    /// Signature over `(chain, Vote, view, vote_subject(block, epoch))`.
    pub signature: Signature,
}

/// A timeout vote: the sender gives up on `view` and reports its highest QC.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct TimeoutVote {
    /// The sender's epoch (signed: a timeout vote counts only in its own epoch).
    pub epoch: Epoch,
    /// The view that timed out.
    pub view: View,
    /// The sender's highest QC.
    pub high_qc: QuorumCertificate,
    /// The sender.
    pub voter: PublicKey,
    /// Signature over `(chain, Timeout, view, (high_qc.view, epoch))`.
    pub signature: Signature,
    /// The TC by which the sender entered `view`, if it did (DiemBFT v4 `TimeoutMsg`'s
    /// `last_round_tc`): lets replicas still in the previous view follow. Not signed; it is a
    /// certificate in its own right.
    pub last_tc: Option<TimeoutCertificate>,
    /// The sender's vote in `view`, if it voted before timing out. Its votes went to the next
    /// view's leader; if that leader is down, any replica collecting the timeout votes can still
    /// form the QC from these, so a correct leader's block followed by a crashed leader is not
    /// orphaned. A vote in its own right (signed separately).
    pub vote: Option<Vote>,
}

/// Asks a peer for certified blocks from `from_height` up (block sync).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SyncRequest {
    /// Chosen by the requester; the response echoes it, so stale or duplicated responses are
    /// told apart.
    pub id: u64,
    /// The first height wanted (the requester's committed height + 1).
    pub from_height: crate::types::Height,
    /// Most blocks wanted; the server sends at most `min(max_blocks, its limit)`.
    pub max_blocks: u32,
}

/// Certified blocks answering a [`SyncRequest`]: consecutive heights from the requested one,
/// each certified by the next block's `justify`, the last by `certificate`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SyncResponse {
    /// The request's id.
    pub id: u64,
    /// The blocks, oldest first (empty if the server has nothing from that height).
    pub blocks: Vec<Block>,
    /// The QC for the last block (`None` only when `blocks` is empty).
    pub certificate: Option<QuorumCertificate>,
}

/// The answer to a [`SyncRequest`] for heights the server no longer stores: its store keeps
/// committed blocks from `retained_from` up only (older ones are pruned, see the std driver's
/// retention setting). The requester cannot catch up from this server by block sync and asks
/// another one; once every server says so, it needs a state snapshot at or above
/// `retained_from - 1` (an [`Event::SyncBelowRetained`](crate::Event::SyncBelowRetained) per
/// answer tells the driver). The claim is unsigned: a server that lies only withholds its own
/// help, which an empty response could do too.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SyncPruned {
    /// The request's id.
    pub id: u64,
    /// The lowest height from which the server holds every committed block.
    pub retained_from: crate::types::Height,
}

/// The most entries in one [`SnapshotChunk`] (a server splits a chunk with more; see
/// [`SnapshotChunk::too_large`]).
pub const MAX_CHUNK_ENTRIES: usize = 1 << 16;
/// The most siblings in a chunk proof: one per level of the chunk's depth (the std driver's
/// chunks are at most 32 levels deep).
pub const MAX_CHUNK_PROOF: usize = 32;
/// The longest key in a snapshot chunk.
pub const MAX_SNAPSHOT_KEY: usize = 4096;

/// What a [`SnapshotRequest`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum SnapshotAsk {
    /// The server's current snapshot: answered by a [`SnapshotOffer`].
    Offer,
    /// One chunk of the snapshot at `height`: the entries whose key hash starts with the
    /// `depth` bits of `index`. Answered by a [`SnapshotChunk`].
    Chunk {
        /// The snapshot's committed height.
        height: crate::types::Height,
        /// How many leading key-hash bits select the chunk.
        depth: u8,
        /// The chunk's prefix (its low `depth` bits).
        index: u32,
    },
}

/// Snapshot sync (served and run by the driver, not the replica; see the std driver's
/// `snapshot` module): a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SnapshotRequest {
    /// Echoed in the answer.
    pub id: u64,
    /// What is asked for.
    pub ask: SnapshotAsk,
}

/// What certifies a snapshot: the committed block `tip` the state is after, its child `cert`
/// (in the next view, carrying the state root after `tip`), and a QC for `cert`. `cert.justify`
/// certifies `tip` and `qc` certifies `cert` in the next view, so `tip` is committed (two-chain
/// rule); the root in `cert` was checked by every honest voter against its own state.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SnapshotCertificate {
    /// The block the state is after.
    pub tip: Block,
    /// Its child, which carries the state root.
    pub cert: Block,
    /// A QC for `cert`.
    pub qc: QuorumCertificate,
    /// The number of entries in the state (the server's claim, for planning only).
    pub entries: u64,
    /// The bytes of keys and values in the state (the server's claim, for planning only).
    pub bytes: u64,
}

/// The answer to [`SnapshotAsk::Offer`].
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SnapshotOffer {
    /// The request's id.
    pub id: u64,
    /// The snapshot the server serves (`None`: none yet).
    pub snapshot: Option<SnapshotCertificate>,
}

/// A sibling subtree beside a chunk's path (see the std driver's `kv::commitment::Sibling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ChunkSibling {
    /// No entry.
    Empty,
    /// Exactly one entry: its key hash and value hash.
    Leaf([u8; 32], [u8; 32]),
    /// Two entries or more: the subtree's hash.
    Inner([u8; 32]),
}

/// The answer to [`SnapshotAsk::Chunk`].
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SnapshotChunk {
    /// The request's id.
    pub id: u64,
    /// The snapshot's height (as asked).
    pub height: crate::types::Height,
    /// The chunk's depth (as asked).
    pub depth: u8,
    /// The chunk's index (as asked).
    pub index: u32,
    /// The server does not serve this chunk whole (over its size or entry limit): the client
    /// asks for its two halves at `depth + 1`. `entries` and `proof` are then empty.
    pub too_large: bool,
    /// False if the server has no snapshot at `height` (any more).
    pub available: bool,
    /// The entries, key and value.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// One sibling per level above the chunk, root first.
    pub proof: Vec<ChunkSibling>,
}

/// Every consensus message.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Message {
    /// A leader's block proposal, broadcast to all replicas.
    Proposal(Proposal),
    /// A vote, sent to the next view's leader.
    Vote(Vote),
    /// A timeout vote, broadcast to all replicas.
    Timeout(TimeoutVote),
    /// A block-sync request.
    SyncRequest(SyncRequest),
    /// A block-sync response.
    SyncResponse(SyncResponse),
    /// A QC shared on its own. The leader that forms the QC ending an epoch (the one that
    /// commits the epoch's last block) broadcasts it, and a replica already in the next epoch
    /// sends it to a peer still voting in the old one, so every replica commits that block and
    /// switches validator set without waiting for a timeout.
    Certificate(QuorumCertificate),
    /// Asks a peer for one uncommitted block it holds, by hash. Sent by a replica that holds a
    /// QC for a block it lacks (a lost or late proposal) to some of the QC's signers, which
    /// hold the block since they voted for it. Block sync cannot serve it: servers send blocks
    /// only up to their own highest QC, and the requester may be the only one holding this QC.
    BlockRequest(BlockHash),
    /// The answer to a [`Message::BlockRequest`]: the block, unsigned. The requester accepts
    /// it only if its hash is one it asked for, so it is authenticated by the QC the requester
    /// holds for it.
    Block(Block),
    /// A block-sync answer: the requested heights are pruned on this server.
    SyncPruned(SyncPruned),
    /// Snapshot sync: a request (for the driver; the replica refuses it).
    SnapshotRequest(SnapshotRequest),
    /// Snapshot sync: the server's snapshot (for the driver).
    SnapshotOffer(SnapshotOffer),
    /// Snapshot sync: one verifiable chunk of the state (for the driver).
    SnapshotChunk(SnapshotChunk),
    /// An application message between two nodes, opaque to the protocol (at most the block
    /// payload limit): the driver hands it to its app, for example transactions forwarded to
    /// an upcoming leader. The replica refuses it.
    App(Vec<u8>),
}

impl Message {
    /// The view the message is about.
    #[must_use]
    pub fn view(&self) -> View {
        match self {
            Message::Proposal(p) => p.block.view,
            Message::Vote(v) => v.view,
            Message::Timeout(t) => t.view,
            Message::Certificate(qc) => qc.view,
            Message::Block(b) => b.view,
            Message::SyncRequest(_)
            | Message::SyncResponse(_)
            | Message::SyncPruned(_)
            | Message::SnapshotRequest(_)
            | Message::SnapshotOffer(_)
            | Message::SnapshotChunk(_)
            | Message::App(_)
            | Message::BlockRequest(_) => View(0),
        }
    }
}

/// What travels in one frame: version, chain and message.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Envelope {
    /// Must be [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Must be the receiver's chain.
    pub chain: ChainId,
    /// The message.
    pub message: Message,
}

/// Size limits that follow from the meaning of each field. Decoding refuses anything beyond them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, checked before decoding allocates anything.
    pub max_frame: usize,
    /// Largest block payload.
    pub max_payload: usize,
    /// Largest number of signatures in one certificate (the largest validator set).
    pub max_signers: usize,
    /// Most blocks in one sync response.
    pub max_sync_blocks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_frame: 64 << 20, max_payload: 4 << 20, max_signers: MAX_VALIDATORS, max_sync_blocks: 64 }
    }
}

/// Why bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than `Limits::max_frame`; nothing was allocated.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid borsh encoding of the type, or trailing bytes.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// Wrong protocol version.
    #[error("protocol version {0} is not supported (expected {PROTOCOL_VERSION})")]
    Version(u16),
    /// A field beyond its limit.
    #[error("{field} has {len} entries, limit {max}")]
    FieldTooLarge {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A signer list that is not strictly ascending.
    #[error("{0} not in canonical order")]
    NotCanonical(&'static str),
}

impl Envelope {
    /// Wraps `message` for `chain` at the current protocol version.
    #[must_use]
    pub fn new(chain: ChainId, message: Message) -> Self {
        Envelope { version: PROTOCOL_VERSION, chain, message }
    }

    /// The canonical encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    /// Decodes one frame: refuses it before decoding if it is over `limits.max_frame`, rejects
    /// trailing bytes, unknown versions, and any field over its limit or not in canonical order.
    /// Whatever decodes re-encodes to exactly the same bytes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        if bytes.len() > limits.max_frame {
            return Err(DecodeError::TooLarge { len: bytes.len(), max: limits.max_frame });
        }
        // Not `borsh::from_slice`: borsh sizes its first allocation for a `Vec<u8>` by the
        // length prefix (up to 1 MiB for a frame of a few bytes) and checks the limits only after
        // building every element. The bounded reader below reads exactly the borsh layout but
        // keeps no element of a list over its limit, and never reserves more elements than the
        // remaining bytes can hold. Errors keep their order: malformed, version, limits, order.
        let mut r = Reader { bytes, over: None };
        let version = r.u16()?;
        let chain = ChainId(r.u64()?);
        let message = r.message(limits)?;
        if !r.bytes.is_empty() {
            return Err(DecodeError::Malformed("envelope"));
        }
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(version));
        }
        if let Some(e) = r.over {
            return Err(e);
        }
        message.check(limits)?;
        Ok(Envelope { version, chain, message })
    }
}

/// Smallest encodings, used to bound how many elements the remaining bytes can hold.
const MIN_QC: usize = 8 + 8 + 32 + 4;
const MIN_BLOCK: usize = 8 + 8 + 8 + MIN_QC + 32 + 4;
const QC_SIGNER: usize = 32 + 64;
const TC_SIGNER: usize = 32 + 8 + 64;

/// A cursor over one frame that reads the borsh layout of [`Envelope`] with every length
/// prefix bounded by [`Limits`] before anything is allocated for it.
struct Reader<'a> {
    bytes: &'a [u8],
    /// The first field found over its limit; its elements are read (to find malformed frames)
    /// but not kept.
    over: Option<DecodeError>,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.bytes.split_first_chunk::<N>().ok_or(DecodeError::Malformed("envelope"))?;
        self.bytes = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = self.take::<1>()?;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn view(&mut self) -> Result<View, DecodeError> {
        Ok(View(self.u64()?))
    }

    fn hash(&mut self) -> Result<BlockHash, DecodeError> {
        Ok(BlockHash(self.take()?))
    }

    fn key(&mut self) -> Result<PublicKey, DecodeError> {
        Ok(PublicKey(self.take()?))
    }

    fn signature(&mut self) -> Result<Signature, DecodeError> {
        Ok(Signature(self.take()?))
    }

    /// A borsh `Option` tag: 0 or 1, nothing else (canonical).
    fn option(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed("envelope")),
        }
    }

    /// A length prefix and the capacity to reserve for it: none if it is over `max` (the
    /// elements are then read but not kept), otherwise no more elements than the remaining
    /// bytes can hold at `min_size` bytes each.
    fn len(
        &mut self,
        field: &'static str,
        max: usize,
        min_size: usize,
    ) -> Result<(usize, usize), DecodeError> {
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        if let Err(e) = cap(field, len, max) {
            self.over.get_or_insert(e);
            return Ok((len, 0));
        }
        Ok((len, len.min(self.bytes.len() / min_size.max(1))))
    }

    /// A borsh byte string of at most `max` bytes (over it: read, not kept).
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let (len, _) = self.len(field, max, 1)?;
        let (b, rest) = self.bytes.split_at_checked(len).ok_or(DecodeError::Malformed("envelope"))?;
        self.bytes = rest;
        Ok(if self.keep() { b.to_vec() } else { Vec::new() })
    }

    fn keep(&self) -> bool {
        self.over.is_none()
    }

    fn qc(&mut self, limits: &Limits) -> Result<QuorumCertificate, DecodeError> {
        let epoch = Epoch(self.u64()?);
        let view = self.view()?;
        let block = self.hash()?;
        let (len, reserve) = self.len("qc.signatures", limits.max_signers, QC_SIGNER)?;
        let mut signatures = Vec::with_capacity(reserve);
        for _ in 0..len {
            let item = (self.key()?, self.signature()?);
            if self.keep() {
                signatures.push(item);
            }
        }
        Ok(QuorumCertificate { epoch, view, block, signatures })
    }

    fn tc(&mut self, limits: &Limits) -> Result<TimeoutCertificate, DecodeError> {
        let epoch = Epoch(self.u64()?);
        let view = self.view()?;
        let high_qc = self.qc(limits)?;
        let (len, reserve) = self.len("tc.signatures", limits.max_signers, TC_SIGNER)?;
        let mut signatures = Vec::with_capacity(reserve);
        for _ in 0..len {
            let item = (self.key()?, self.view()?, self.signature()?);
            if self.keep() {
                signatures.push(item);
            }
        }
        Ok(TimeoutCertificate { epoch, view, high_qc, signatures })
    }

    fn opt_tc(&mut self, limits: &Limits) -> Result<Option<TimeoutCertificate>, DecodeError> {
        if self.option()? {
            Ok(Some(self.tc(limits)?))
        } else {
            Ok(None)
        }
    }

    fn block(&mut self, limits: &Limits) -> Result<Block, DecodeError> {
        let epoch = Epoch(self.u64()?);
        let view = self.view()?;
        let height = crate::types::Height(self.u64()?);
        let justify = self.qc(limits)?;
        let proposer = self.key()?;
        let (len, _) = self.len("block.payload", limits.max_payload, 1)?;
        let (payload, rest) = self.bytes.split_at_checked(len).ok_or(DecodeError::Malformed("envelope"))?;
        self.bytes = rest;
        let payload = if self.keep() { payload.to_vec() } else { Vec::new() };
        Ok(Block { epoch, view, height, justify, proposer, payload })
    }

    fn message(&mut self, limits: &Limits) -> Result<Message, DecodeError> {
        Ok(match self.u8()? {
            0 => {
                let block = self.block(limits)?;
                let tc = self.opt_tc(limits)?;
                Message::Proposal(Proposal { block, tc, signature: self.signature()? })
            }
            1 => Message::Vote(Vote {
                epoch: Epoch(self.u64()?),
                view: self.view()?,
                block: self.hash()?,
                voter: self.key()?,
                signature: self.signature()?,
            }),
            2 => Message::Timeout(TimeoutVote {
                epoch: Epoch(self.u64()?),
                view: self.view()?,
                high_qc: self.qc(limits)?,
                voter: self.key()?,
                signature: self.signature()?,
                last_tc: self.opt_tc(limits)?,
                vote: if self.option()? {
                    Some(Vote {
                        epoch: Epoch(self.u64()?),
                        view: self.view()?,
                        block: self.hash()?,
                        voter: self.key()?,
                        signature: self.signature()?,
                    })
                } else {
                    None
                },
            }),
            3 => Message::SyncRequest(SyncRequest {
                id: self.u64()?,
                from_height: crate::types::Height(self.u64()?),
                max_blocks: self.u32()?,
            }),
            4 => {
                let id = self.u64()?;
                let (len, reserve) = self.len("sync.blocks", limits.max_sync_blocks, MIN_BLOCK)?;
                let mut blocks = Vec::with_capacity(reserve);
                for _ in 0..len {
                    let block = self.block(limits)?;
                    if self.keep() {
                        blocks.push(block);
                    }
                }
                let certificate = if self.option()? { Some(self.qc(limits)?) } else { None };
                Message::SyncResponse(SyncResponse { id, blocks, certificate })
            }
            5 => Message::Certificate(self.qc(limits)?),
            6 => Message::BlockRequest(self.hash()?),
            7 => Message::Block(self.block(limits)?),
            8 => Message::SyncPruned(SyncPruned {
                id: self.u64()?,
                retained_from: crate::types::Height(self.u64()?),
            }),
            9 => {
                let id = self.u64()?;
                let ask = match self.u8()? {
                    0 => SnapshotAsk::Offer,
                    1 => SnapshotAsk::Chunk {
                        height: crate::types::Height(self.u64()?),
                        depth: self.u8()?,
                        index: self.u32()?,
                    },
                    _ => return Err(DecodeError::Malformed("envelope")),
                };
                Message::SnapshotRequest(SnapshotRequest { id, ask })
            }
            10 => {
                let id = self.u64()?;
                let snapshot = if self.option()? {
                    Some(SnapshotCertificate {
                        tip: self.block(limits)?,
                        cert: self.block(limits)?,
                        qc: self.qc(limits)?,
                        entries: self.u64()?,
                        bytes: self.u64()?,
                    })
                } else {
                    None
                };
                Message::SnapshotOffer(SnapshotOffer { id, snapshot })
            }
            11 => {
                let id = self.u64()?;
                let height = crate::types::Height(self.u64()?);
                let depth = self.u8()?;
                let index = self.u32()?;
                let too_large = self.option()?;
                let available = self.option()?;
                let (len, reserve) = self.len("chunk.entries", MAX_CHUNK_ENTRIES, 8)?;
                let mut entries = Vec::with_capacity(reserve);
                for _ in 0..len {
                    let key = self.bytes("chunk.key", MAX_SNAPSHOT_KEY)?;
                    let value = self.bytes("chunk.value", limits.max_payload)?;
                    if self.keep() {
                        entries.push((key, value));
                    }
                }
                let (len, reserve) = self.len("chunk.proof", MAX_CHUNK_PROOF, 1)?;
                let mut proof = Vec::with_capacity(reserve);
                for _ in 0..len {
                    let s = match self.u8()? {
                        0 => ChunkSibling::Empty,
                        1 => ChunkSibling::Leaf(self.take()?, self.take()?),
                        2 => ChunkSibling::Inner(self.take()?),
                        _ => return Err(DecodeError::Malformed("envelope")),
                    };
                    if self.keep() {
                        proof.push(s);
                    }
                }
                Message::SnapshotChunk(SnapshotChunk {
                    id,
                    height,
                    depth,
                    index,
                    too_large,
                    available,
                    entries,
                    proof,
                })
            }
            12 => Message::App(self.bytes("app", limits.max_payload)?),
            _ => return Err(DecodeError::Malformed("envelope")),
        })
    }
}

fn cap(field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        Err(DecodeError::FieldTooLarge { field, len, max })
    } else {
        Ok(())
    }
}

fn ascending<K: Ord>(field: &'static str, keys: impl Iterator<Item = K>) -> Result<(), DecodeError> {
    let mut prev: Option<K> = None;
    for k in keys {
        if prev.as_ref().is_some_and(|p| *p >= k) {
            return Err(DecodeError::NotCanonical(field));
        }
        prev = Some(k);
    }
    Ok(())
}

impl QuorumCertificate {
    /// Checks the signature list against `limits` and canonical order.
    pub fn check(&self, limits: &Limits) -> Result<(), DecodeError> {
        cap("qc.signatures", self.signatures.len(), limits.max_signers)?;
        ascending("qc.signatures", self.signatures.iter().map(|(k, _)| k))
    }
}

impl TimeoutCertificate {
    /// Checks both signature lists against `limits` and canonical order.
    pub fn check(&self, limits: &Limits) -> Result<(), DecodeError> {
        cap("tc.signatures", self.signatures.len(), limits.max_signers)?;
        ascending("tc.signatures", self.signatures.iter().map(|(k, _, _)| k))?;
        self.high_qc.check(limits)
    }
}

impl Block {
    /// Checks the payload size and the justify QC.
    pub fn check(&self, limits: &Limits) -> Result<(), DecodeError> {
        cap("block.payload", self.payload.len(), limits.max_payload)?;
        self.justify.check(limits)
    }
}

impl Message {
    /// Checks every field of the message against `limits` and canonical order.
    pub fn check(&self, limits: &Limits) -> Result<(), DecodeError> {
        match self {
            Message::Proposal(p) => {
                p.block.check(limits)?;
                p.tc.as_ref().map_or(Ok(()), |tc| tc.check(limits))
            }
            Message::Vote(_) => Ok(()),
            Message::Timeout(t) => {
                t.high_qc.check(limits)?;
                t.last_tc.as_ref().map_or(Ok(()), |tc| tc.check(limits))
            }
            Message::SyncRequest(_) | Message::SyncPruned(_) | Message::SnapshotRequest(_) => Ok(()),
            Message::SnapshotOffer(o) => o.snapshot.as_ref().map_or(Ok(()), |s| {
                s.tip.check(limits)?;
                s.cert.check(limits)?;
                s.qc.check(limits)
            }),
            Message::SnapshotChunk(c) => {
                cap("chunk.entries", c.entries.len(), MAX_CHUNK_ENTRIES)?;
                cap("chunk.proof", c.proof.len(), MAX_CHUNK_PROOF)?;
                for (k, v) in &c.entries {
                    cap("chunk.key", k.len(), MAX_SNAPSHOT_KEY)?;
                    cap("chunk.value", v.len(), limits.max_payload)?;
                }
                Ok(())
            }
            Message::SyncResponse(r) => {
                cap("sync.blocks", r.blocks.len(), limits.max_sync_blocks)?;
                for b in &r.blocks {
                    b.check(limits)?;
                }
                r.certificate.as_ref().map_or(Ok(()), |qc| qc.check(limits))
            }
            Message::Certificate(qc) => qc.check(limits),
            Message::App(bytes) => cap("app", bytes.len(), limits.max_payload),
            Message::BlockRequest(_) => Ok(()),
            Message::Block(b) => b.check(limits),
        }
    }
}
