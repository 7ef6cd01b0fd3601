//! Small value types shared by every part of the protocol.

use borsh::{BorshDeserialize, BorshSerialize};
use core::fmt;

/// A view (the "round" of the Jolteon and DiemBFT papers). View 0 belongs to the genesis block;
/// the protocol starts in view 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct View(pub u64);

impl View {
    /// The view after this one, saturating at `u64::MAX` (which no honest chain reaches).
    #[must_use]
    pub fn next(self) -> View {
        View(self.0.saturating_add(1))
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// An epoch: the stretch of the chain run by one validator set. Epoch 0 starts at genesis; each
/// committed block that changes the validator set ends its epoch (see the crate docs,
/// "Validator-set changes").
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one (saturating).
    #[must_use]
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// The height of a block in the chain. Genesis is height 0; a block is one above its parent.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

/// Identifies one chain. It is part of every signed byte string and every wire message, so
/// signatures and messages of one chain are worthless on another.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct ChainId(pub u64);

/// A blake3 digest.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct BlockHash(pub [u8; 32]);

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex_prefix(f, &self.0)
    }
}

impl fmt::Display for BlockHash {
    /// The first 6 bytes in hex; with `{:#}`, all 32 (see [`BlockHash::to_hex`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex_prefix(f, &self.0)
    }
}

impl BlockHash {
    /// The full 32 bytes as 64 lowercase hex digits (`Display` shows the first 12 digits, or
    /// all of them with `{:#}`).
    #[must_use]
    pub fn to_hex(&self) -> alloc::string::String {
        alloc::format!("{self:#}")
    }
}

/// An ed25519 public key in its 32-byte compressed form: the identity of a replica.
///
/// Whether the bytes are a valid, non-weak curve point is checked where it matters: when a
/// [`ValidatorSet`](crate::ValidatorSet) is built, and when a signature is verified.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex_prefix(f, &self.0)
    }
}

impl fmt::Display for PublicKey {
    /// The first 6 bytes in hex; with `{:#}`, all 32 (see [`PublicKey::to_hex`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex_prefix(f, &self.0)
    }
}

impl PublicKey {
    /// The full 32 bytes as 64 lowercase hex digits (`Display` shows the first 12 digits, or
    /// all of them with `{:#}`).
    #[must_use]
    pub fn to_hex(&self) -> alloc::string::String {
        alloc::format!("{self:#}")
    }
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex_prefix(f, &self.0)
    }
}

/// Voting power of one validator.
pub type Power = u64;

/// The first 6 bytes in hex (enough to tell hashes and keys apart in logs); all of them with
/// the alternate flag (`{:#}` or `{:#?}`).
fn write_hex_prefix(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let take = if f.alternate() { bytes.len() } else { 6 };
    for b in bytes.iter().take(take) {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}
