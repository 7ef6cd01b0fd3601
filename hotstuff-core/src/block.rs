//! Blocks and the genesis.

use crate::certificate::QuorumCertificate;
use crate::crypto;
use crate::types::{BlockHash, ChainId, Epoch, Height, PublicKey, View};
use crate::validators::ValidatorSet;
use alloc::vec::Vec;
use borsh::{BorshDeserialize, BorshSerialize};

/// A block: one step of the replicated log.
///
/// Its parent is the block its `justify` QC certifies (chained HotStuff: every block carries the
/// certificate of its parent, so one round trip per block in steady state).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize)]
pub struct Block {
    /// The epoch (validator set) it belongs to: its proposer and voters are that epoch's set.
    pub epoch: Epoch,
    /// The view it was proposed in.
    pub view: View,
    /// Parent height + 1.
    pub height: Height,
    /// The QC for the parent block.
    pub justify: QuorumCertificate,
    /// The leader of `view` that proposed it.
    pub proposer: PublicKey,
    /// App bytes (transactions); opaque to the core.
    pub payload: Vec<u8>,
}

impl Block {
    /// The parent's hash (the block `justify` certifies).
    #[must_use]
    pub fn parent(&self) -> BlockHash {
        self.justify.block
    }

    /// blake3 over a domain tag and the canonical borsh encoding of the whole block, payload
    /// included.
    #[must_use]
    pub fn hash(&self) -> BlockHash {
        let mut h = blake3::Hasher::new();
        h.update(b"hotstuff-core/block/v1");
        // Writing into a hasher cannot fail.
        let _ = borsh::to_writer(&mut HashWriter(&mut h), self);
        BlockHash(*h.finalize().as_bytes())
    }
}

impl BorshDeserialize for Block {
    /// The derived layout, but the payload is read with [`codec::read_bytes`](crate::codec::read_bytes)
    /// so that memory follows the bytes actually present, not the length prefix (borsh reserves
    /// up to 1 MiB from the prefix). The payload limit is checked on the wire ([`Limits`](crate::Limits)).
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        Ok(Block {
            epoch: Epoch::deserialize_reader(reader)?,
            view: View::deserialize_reader(reader)?,
            height: Height::deserialize_reader(reader)?,
            justify: QuorumCertificate::deserialize_reader(reader)?,
            proposer: PublicKey::deserialize_reader(reader)?,
            payload: crate::codec::read_bytes(reader, usize::MAX)?,
        })
    }
}

struct HashWriter<'a>(&'a mut blake3::Hasher);

impl borsh::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> borsh::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> borsh::io::Result<()> {
        Ok(())
    }
}

/// The hash of the genesis block of `chain` with initial validator set `validators`.
/// Genesis is view 0, height 0, committed by definition, and certified by the empty genesis QC.
#[must_use]
pub fn genesis_hash(chain: ChainId, validators: &ValidatorSet) -> BlockHash {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"hotstuff-core/genesis/v1");
    bytes.extend_from_slice(&chain.0.to_le_bytes());
    bytes.extend_from_slice(&borsh::to_vec(validators).unwrap_or_default());
    crypto::hash(&bytes)
}
