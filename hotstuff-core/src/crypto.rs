//! Domain-separated signing and (batch) verification.
//!
//! Every signed byte string has the fixed layout
//! `DOMAIN (16 bytes) || chain id (u64 LE) || kind (1 byte) || view (u64 LE) || subject (32 bytes)`,
//! where the subject is the block hash for proposals, a digest of the block hash and the epoch
//! for votes, and for timeout votes the view of
//! the sender's highest QC (u64 LE), the sender's epoch (u64 LE) and 16 zero bytes. A signature made for one chain,
//! kind, view or subject therefore never verifies as any other.

use crate::types::{BlockHash, ChainId, Epoch, PublicKey, Signature, View};
use alloc::vec::Vec;
use ed25519_dalek::Signer as _;

/// The fixed prefix of every signed byte string.
pub const DOMAIN: &[u8; 16] = b"hotstuff-core/v1";

/// Length of every signed byte string.
pub const SIGNED_LEN: usize = 16 + 8 + 1 + 8 + 32;

/// What a signature is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SignKind {
    /// A leader's proposal of a block.
    Proposal = 1,
    /// A vote for a block.
    Vote = 2,
    /// A timeout vote for a view.
    Timeout = 3,
    /// A driver's connection handshake (view 0; the subject is a digest of both sides' nonces
    /// and keys, chosen by the driver). Never valid as a consensus signature.
    Handshake = 4,
}

/// The exact bytes that are signed for `(chain, kind, view, subject)`.
#[must_use]
pub fn signed_bytes(chain: ChainId, kind: SignKind, view: View, subject: &[u8; 32]) -> [u8; SIGNED_LEN] {
    let mut out = [0u8; SIGNED_LEN];
    let (domain, rest) = out.split_at_mut(16);
    domain.copy_from_slice(DOMAIN);
    let (chain_bytes, rest) = rest.split_at_mut(8);
    chain_bytes.copy_from_slice(&chain.0.to_le_bytes());
    let (kind_byte, rest) = rest.split_at_mut(1);
    kind_byte.copy_from_slice(&[kind as u8]);
    let (view_bytes, subject_bytes) = rest.split_at_mut(8);
    view_bytes.copy_from_slice(&view.0.to_le_bytes());
    subject_bytes.copy_from_slice(subject);
    out
}

/// The subject of a timeout vote: the view of the sender's highest QC and the sender's epoch.
#[must_use]
pub fn timeout_subject(high_qc_view: View, epoch: Epoch) -> [u8; 32] {
    let mut s = [0u8; 32];
    let (head, rest) = s.split_at_mut(8);
    head.copy_from_slice(&high_qc_view.0.to_le_bytes());
    let (epoch_bytes, _) = rest.split_at_mut(8);
    epoch_bytes.copy_from_slice(&epoch.0.to_le_bytes());
    s
}

/// The subject of a proposal: the block hash (the block names its epoch).
#[must_use]
pub fn block_subject(hash: &BlockHash) -> [u8; 32] {
    hash.0
}

/// The subject of a vote: the block hash and the voter's epoch, so a QC names the epoch whose
/// set signed it even to a replica that does not have the block.
#[must_use]
pub fn vote_subject(hash: &BlockHash, epoch: Epoch) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"hotstuff-core/vote/v1");
    h.update(&hash.0);
    h.update(&epoch.0.to_le_bytes());
    *h.finalize().as_bytes()
}

/// A replica's signing key. `Clone` copies the secret (tests and simulators run several
/// replicas, or twins, from one key); the copies are zeroized on drop.
#[derive(Clone)]
pub struct Keypair {
    key: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl core::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keypair").field("public", &self.public).finish_non_exhaustive()
    }
}

impl Keypair {
    /// Builds the keypair from a 32-byte ed25519 secret seed. The caller draws the seed from a
    /// real entropy source (drivers) or a test seed (simulator); the core never draws entropy.
    #[must_use]
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(secret);
        let public = PublicKey(key.verifying_key().to_bytes());
        Keypair { key, public }
    }

    /// The public identity of this key.
    #[must_use]
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The 32-byte secret seed (for key files; handle with care).
    #[must_use]
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Signs `(chain, kind, view, subject)` with domain separation.
    #[must_use]
    pub fn sign(&self, chain: ChainId, kind: SignKind, view: View, subject: &[u8; 32]) -> Signature {
        Signature(self.key.sign(&signed_bytes(chain, kind, view, subject)).to_bytes())
    }
}

/// Why a signature check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not a valid, non-weak ed25519 point.
    #[error("public key {0} is not a valid ed25519 key")]
    BadKey(PublicKey),
    /// The signature does not verify.
    #[error("invalid signature")]
    Invalid,
}

/// Decompresses a public key, rejecting invalid and weak (small-order) keys.
pub fn verifying_key(pk: &PublicKey) -> Result<ed25519_dalek::VerifyingKey, SignatureError> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk.0).map_err(|_| SignatureError::BadKey(*pk))?;
    if vk.is_weak() {
        return Err(SignatureError::BadKey(*pk));
    }
    Ok(vk)
}

/// Verifies one signature strictly (rejects small-order components, so that whatever passes here
/// also passes batch verification inside a certificate).
pub fn verify_one(
    vk: &ed25519_dalek::VerifyingKey,
    chain: ChainId,
    kind: SignKind,
    view: View,
    subject: &[u8; 32],
    sig: &Signature,
) -> Result<(), SignatureError> {
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    vk.verify_strict(&signed_bytes(chain, kind, view, subject), &sig).map_err(|_| SignatureError::Invalid)
}

/// One entry of a batch: key, signed bytes, signature.
pub(crate) struct BatchItem {
    pub key: ed25519_dalek::VerifyingKey,
    pub msg: [u8; SIGNED_LEN],
    pub sig: Signature,
}

/// Verifies all items at once with ed25519 batch verification.
pub(crate) fn verify_batch(items: &[BatchItem]) -> Result<(), SignatureError> {
    match items {
        [] => Ok(()),
        [one] => {
            let sig = ed25519_dalek::Signature::from_bytes(&one.sig.0);
            one.key.verify_strict(&one.msg, &sig).map_err(|_| SignatureError::Invalid)
        }
        _ => {
            let msgs: Vec<&[u8]> = items.iter().map(|i| &i.msg[..]).collect();
            let sigs: Vec<ed25519_dalek::Signature> =
                items.iter().map(|i| ed25519_dalek::Signature::from_bytes(&i.sig.0)).collect();
            let keys: Vec<ed25519_dalek::VerifyingKey> = items.iter().map(|i| i.key).collect();
            ed25519_dalek::verify_batch(&msgs, &sigs, &keys).map_err(|_| SignatureError::Invalid)
        }
    }
}

/// blake3 over `bytes`.
#[must_use]
pub fn hash(bytes: &[u8]) -> BlockHash {
    BlockHash(*blake3::hash(bytes).as_bytes())
}
