//! Validator-set changes in the kv app, and the peer book they commit.
//!
//! **Authority.** A chain names its governance keys in genesis (app state `meta/gov/<key>`).
//! A validator-set change is a [`SignedTx`](super::SignedTx) whose signer is one of them: any
//! one governance key may add a validator, change a power or remove one (a single operator, or
//! each of a few operators, holds such a key; an m-of-n threshold is not implemented). The one
//! exception is [`Change::SetAddress`]: a validator moves its own address, signed by its own
//! key, and nobody else can.
//!
//! **Addresses.** Every address in the peer book (`meta/peer/<key>`, a borsh [`PeerRecord`]) is
//! signed by the key it belongs to ([`address_bytes`]), so neither a governance key nor a
//! Byzantine leader can redirect a validator's traffic: [`Change::Add`] carries the new
//! validator's signature over its address, made on the joining machine.
//!
//! **Checks** (in `validate_block`, the same on every honest replica, against the set in force
//! and the changes earlier in the same block): the signer is a governance key; an added key is
//! a valid ed25519 key and not yet a member; a changed or removed key is a member; powers are
//! at least 1; an address is `host:port` within [`MAX_ADDRESS`] bytes and its signature
//! verifies; at most [`MAX_CHANGES_PER_BLOCK`] changes per block; and the resulting set is one
//! the core accepts (not empty, at most [`MAX_VALIDATORS`](hotstuff_core::MAX_VALIDATORS)
//! members, total power within bounds).

use borsh::{BorshDeserialize, BorshSerialize};
use hotstuff_core::{Keypair, Power, PublicKey, Signature, ValidatorSetError};

/// App-state prefix of the governance keys: `meta/gov/<32-byte key>` -> `[1]`.
pub const GOVERNANCE_PREFIX: &[u8] = b"meta/gov/";
/// App-state prefix of the peer book: `meta/peer/<32-byte key>` -> borsh [`PeerRecord`].
pub const PEER_PREFIX: &[u8] = b"meta/peer/";
/// Longest address (`host:port`), in bytes: a DNS name's limit plus a port.
pub const MAX_ADDRESS: usize = 253 + 6;
/// Most validator-set changes in one block.
pub const MAX_CHANGES_PER_BLOCK: usize = 64;
/// Largest power one validator may be given (the core's total-power bound is far above).
pub const MAX_POWER: Power = 1 << 40;

const ADDRESS_DOMAIN: &[u8] = b"hotstuff-kv/peer-address/v1";

/// A change to the validator set (or to a validator's address).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize)]
pub enum Change {
    /// Adds `key` with `power`, reachable at `address` (signed by `key`: `address_sig`).
    Add {
        /// The new validator's key.
        key: PublicKey,
        /// Its voting power (at least 1).
        power: Power,
        /// Where it listens for consensus connections, `host:port` (a DNS name or an IP).
        address: String,
        /// `key`'s signature over [`address_bytes`].
        address_sig: Signature,
    },
    /// Sets a member's power (at least 1).
    SetPower {
        /// The member.
        key: PublicKey,
        /// Its new power.
        power: Power,
    },
    /// Removes a member (it may keep following the chain as a listener).
    Remove {
        /// The member.
        key: PublicKey,
    },
    /// A member moves its own address; the transaction must be signed by `key` itself.
    SetAddress {
        /// The member.
        key: PublicKey,
        /// Its new address.
        address: String,
        /// `key`'s signature over [`address_bytes`].
        address_sig: Signature,
    },
}

fn invalid(msg: &'static str) -> borsh::io::Error {
    borsh::io::Error::new(borsh::io::ErrorKind::InvalidData, msg)
}

/// Reads an address: at most [`MAX_ADDRESS`] bytes of UTF-8.
fn read_address<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<String> {
    let bytes = hotstuff_core::codec::read_bytes(reader, MAX_ADDRESS)?;
    String::from_utf8(bytes).map_err(|_| invalid("address is not UTF-8"))
}

impl BorshDeserialize for Change {
    /// The derived layout, with addresses read within [`MAX_ADDRESS`].
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        Ok(match u8::deserialize_reader(reader)? {
            0 => Change::Add {
                key: PublicKey::deserialize_reader(reader)?,
                power: u64::deserialize_reader(reader)?,
                address: read_address(reader)?,
                address_sig: Signature::deserialize_reader(reader)?,
            },
            1 => Change::SetPower {
                key: PublicKey::deserialize_reader(reader)?,
                power: u64::deserialize_reader(reader)?,
            },
            2 => Change::Remove { key: PublicKey::deserialize_reader(reader)? },
            3 => Change::SetAddress {
                key: PublicKey::deserialize_reader(reader)?,
                address: read_address(reader)?,
                address_sig: Signature::deserialize_reader(reader)?,
            },
            _ => return Err(invalid("unknown validator change")),
        })
    }
}

impl Change {
    /// Its size in a block payload (its borsh encoding).
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            Change::Add { address, .. } => 1 + 32 + 8 + 4 + address.len() + 64,
            Change::SetPower { .. } => 1 + 32 + 8,
            Change::Remove { .. } => 1 + 32,
            Change::SetAddress { address, .. } => 1 + 32 + 4 + address.len() + 64,
        }
    }

    /// The key it is about.
    #[must_use]
    pub fn key(&self) -> PublicKey {
        match self {
            Change::Add { key, .. }
            | Change::SetPower { key, .. }
            | Change::Remove { key }
            | Change::SetAddress { key, .. } => *key,
        }
    }
}

/// An entry of the peer book: a validator's address and its own signature over it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize)]
pub struct PeerRecord {
    /// `host:port`.
    pub address: String,
    /// The validator's signature over [`address_bytes`].
    pub sig: Signature,
}

impl BorshDeserialize for PeerRecord {
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        Ok(PeerRecord { address: read_address(reader)?, sig: Signature::deserialize_reader(reader)? })
    }
}

impl PeerRecord {
    /// A record of `key`'s `address`, signed by `key`.
    #[must_use]
    pub fn signed(chain: u64, key: &Keypair, address: &str) -> Self {
        PeerRecord { address: address.to_string(), sig: sign_address(chain, key, address) }
    }

    /// Decodes a stored record (`None` if it does not decode canonically).
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        borsh::from_slice(bytes).ok()
    }

    /// Whether the signature is `key`'s over this address on `chain`.
    #[must_use]
    pub fn verify(&self, chain: u64, key: &PublicKey) -> bool {
        verify_address(chain, key, &self.address, &self.sig)
    }
}

/// The app-state key of `key`'s peer-book entry.
#[must_use]
pub fn peer_key(key: &PublicKey) -> Vec<u8> {
    [PEER_PREFIX, &key.0[..]].concat()
}

/// The app-state key that makes `key` a governance key.
#[must_use]
pub fn governance_key(key: &PublicKey) -> Vec<u8> {
    [GOVERNANCE_PREFIX, &key.0[..]].concat()
}

/// The bytes a validator signs to publish its address: a domain tag, the chain, its key and
/// the address.
#[must_use]
pub fn address_bytes(chain: u64, key: &PublicKey, address: &str) -> Vec<u8> {
    let mut out = ADDRESS_DOMAIN.to_vec();
    out.extend_from_slice(&chain.to_le_bytes());
    out.extend_from_slice(&key.0);
    out.extend_from_slice(address.as_bytes());
    out
}

/// `key`'s signature over its `address` on `chain`.
#[must_use]
pub fn sign_address(chain: u64, key: &Keypair, address: &str) -> Signature {
    super::auth::raw_sign(key, &address_bytes(chain, &key.public(), address))
}

/// Whether `sig` is `key`'s signature over `address` on `chain`.
#[must_use]
pub fn verify_address(chain: u64, key: &PublicKey, address: &str, sig: &Signature) -> bool {
    super::auth::raw_verify(key, &address_bytes(chain, key, address), sig)
}

/// Checks the form of an address: `host:port`, at most [`MAX_ADDRESS`] bytes, a port from 1 to
/// 65535, a host of letters, digits, `.`, `-`, `_` or `:` (an IPv6 literal in brackets).
pub fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() || address.len() > MAX_ADDRESS {
        return Err(format!("an address must have 1 to {MAX_ADDRESS} bytes"));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("`{address}` is not host:port"));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("`{port}` is not a port (1 to 65535)")),
    }
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty()
        || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    Ok(())
}

/// Why a validator-set change is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The signer is not a governance key of this chain.
    #[error("unauthorised validator-set change: {0:#} is not a governance key of this chain")]
    NotGovernance(PublicKey),
    /// An address change not signed by the validator itself.
    #[error("unauthorised address change: only {key:#} itself may move its address (signed by {signer:#})")]
    NotOwnAddress {
        /// The validator.
        key: PublicKey,
        /// Who signed.
        signer: PublicKey,
    },
    /// The key to add is already a member.
    #[error("validator {0:#} is already a member")]
    AlreadyMember(PublicKey),
    /// The key to change or remove is not a member.
    #[error("{0:#} is not a member of the validator set")]
    NotMember(PublicKey),
    /// A power of 0 (remove the member instead) or above [`MAX_POWER`].
    #[error("power {0} is out of range (1 to {MAX_POWER}; remove a validator with `remove`)")]
    BadPower(Power),
    /// The key is not a valid ed25519 key.
    #[error("{0:#} is not a valid ed25519 public key")]
    BadKey(PublicKey),
    /// A malformed address.
    #[error("bad address: {0}")]
    BadAddress(String),
    /// The address is not signed by the validator's own key.
    #[error("the address `{address}` is not signed by {key:#}'s own key")]
    AddressNotSigned {
        /// The validator.
        key: PublicKey,
        /// The address.
        address: String,
    },
    /// More than [`MAX_CHANGES_PER_BLOCK`] changes in one block.
    #[error("more than {MAX_CHANGES_PER_BLOCK} validator-set changes in one block")]
    TooManyChanges,
    /// The resulting set is not acceptable (empty, too large, too much power).
    #[error("the change would leave an unacceptable validator set: {0}")]
    BadSet(ValidatorSetError),
}

/// The peer book of `validators`: each member's committed address whose signature verifies
/// (a record that does not is skipped and logged: it was checked when committed, so this
/// means a corrupt store).
pub fn peer_book(
    state: &crate::app::StateReader<'_>,
    validators: &hotstuff_core::ValidatorSet,
) -> Vec<(PublicKey, String)> {
    let chain = match state(super::auth::AUTH_KEY) {
        Ok(v) => v.and_then(|v| <[u8; 8]>::try_from(v).ok()).map_or(0, u64::from_le_bytes),
        Err(error) => {
            tracing::error!(%error, "cannot read the peer book");
            return Vec::new();
        }
    };
    let mut book = Vec::new();
    for v in validators.members() {
        match state(&peer_key(&v.key)) {
            Ok(Some(bytes)) => match PeerRecord::decode(&bytes).filter(|r| r.verify(chain, &v.key)) {
                Some(r) => book.push((v.key, r.address)),
                None => tracing::error!(key = %v.key, "a peer-book entry does not verify; skipped"),
            },
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "cannot read the peer book"),
        }
    }
    book
}
