//! Validator sets weighted by voting power, and the quorum arithmetic over them.

use crate::crypto::{self, SignatureError};
use crate::types::{Power, PublicKey};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use borsh::{BorshDeserialize, BorshSerialize};
use once_cell::race::OnceBox;

/// The largest validator set the library accepts. It bounds every signature list on the wire.
pub const MAX_VALIDATORS: usize = 1024;

/// The largest total voting power. Keeping it below `2^62` makes every quorum sum exact in u64
/// and leaves room for the leader schedule's 128-bit arithmetic.
pub const MAX_TOTAL_POWER: u64 = 1 << 62;

/// One member of a validator set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validator {
    /// Identity and signature key.
    pub key: PublicKey,
    /// Voting power, always > 0.
    pub power: Power,
}

/// Why a validator set (or an update to one) is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    /// No validators, or all with zero power.
    #[error("validator set is empty")]
    Empty,
    /// More than [`MAX_VALIDATORS`] members.
    #[error("validator set has {0} members, more than the maximum {MAX_VALIDATORS}")]
    TooMany(usize),
    /// A member with zero power (use an update with power 0 to remove a member).
    #[error("validator {0} has zero power")]
    ZeroPower(PublicKey),
    /// The same key listed twice.
    #[error("validator {0} is listed twice")]
    Duplicate(PublicKey),
    /// Total power above [`MAX_TOTAL_POWER`].
    #[error("total voting power exceeds {MAX_TOTAL_POWER}")]
    PowerOverflow,
    /// A key that is not a valid ed25519 point.
    #[error(transparent)]
    BadKey(#[from] SignatureError),
}

/// A set of validators, each with voting power. Members are kept sorted by key, so two sets with
/// the same members are equal and encode to the same bytes.
///
/// Every key is checked to be a valid ed25519 point when the set is built or decoded, but the
/// decompressed keys that signature verification needs (about 200 bytes each, five times the
/// 40 bytes a member takes on the wire) are built only on the set's first verification, once
/// (a clone made after that copies them). So decoding a set allocates in proportion to its
/// encoding, and a set that is only stored or compared never holds them.
#[derive(Clone, Debug)]
pub struct ValidatorSet {
    members: Vec<Validator>,
    total: u64,
    /// `verifying[i]` is `members[i]`'s decompressed key (`None` cannot happen: every key was
    /// checked when the set was built).
    verifying: OnceBox<Vec<Option<ed25519_dalek::VerifyingKey>>>,
}

impl PartialEq for ValidatorSet {
    fn eq(&self, other: &Self) -> bool {
        // The key cache is derived from the members.
        self.members == other.members
    }
}

impl Eq for ValidatorSet {}

impl ValidatorSet {
    /// Builds a set from `(key, power)` pairs in any order.
    pub fn new(members: impl IntoIterator<Item = (PublicKey, Power)>) -> Result<Self, ValidatorSetError> {
        let mut map = BTreeMap::new();
        for (key, power) in members {
            if power == 0 {
                return Err(ValidatorSetError::ZeroPower(key));
            }
            if map.insert(key, power).is_some() {
                return Err(ValidatorSetError::Duplicate(key));
            }
            if map.len() > MAX_VALIDATORS {
                return Err(ValidatorSetError::TooMany(map.len()));
            }
        }
        Self::from_map(map)
    }

    fn from_map(map: BTreeMap<PublicKey, Power>) -> Result<Self, ValidatorSetError> {
        Self::from_sorted(map.into_iter().collect())
    }

    /// Builds a set from pairs already sorted strictly by key (the caller checks), reusing the
    /// vector's allocation for the members.
    fn from_sorted(pairs: Vec<(PublicKey, Power)>) -> Result<Self, ValidatorSetError> {
        if pairs.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        if pairs.len() > MAX_VALIDATORS {
            return Err(ValidatorSetError::TooMany(pairs.len()));
        }
        let mut total: u64 = 0;
        for (key, power) in &pairs {
            if *power == 0 {
                return Err(ValidatorSetError::ZeroPower(*key));
            }
            total = total
                .checked_add(*power)
                .filter(|t| *t <= MAX_TOTAL_POWER)
                .ok_or(ValidatorSetError::PowerOverflow)?;
            // Decompressed here only to check the point; kept on first verification.
            crypto::verifying_key(key)?;
        }
        let members = pairs.into_iter().map(|(key, power)| Validator { key, power }).collect();
        Ok(ValidatorSet { members, total, verifying: OnceBox::new() })
    }

    /// The members, sorted by key.
    #[must_use]
    pub fn members(&self) -> &[Validator] {
        &self.members
    }

    /// Number of members.
    #[must_use]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a validator set is never empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Sum of all voting power.
    #[must_use]
    pub fn total_power(&self) -> u64 {
        self.total
    }

    /// The smallest power that is a quorum: more than two thirds of the total,
    /// i.e. `floor(2 * total / 3) + 1`. Any two quorums overlap in more than a third of the power,
    /// so in more than the Byzantine power `f < total / 3`: at least one honest validator.
    #[must_use]
    pub fn quorum(&self) -> u64 {
        quorum_threshold(self.total)
    }

    /// More than one third of the total power: at least one honest validator is among any set
    /// with this much power.
    #[must_use]
    pub fn validity_threshold(&self) -> u64 {
        self.total / 3 + 1
    }

    /// The power of `key`, or `None` if it is not a member.
    #[must_use]
    pub fn power(&self, key: &PublicKey) -> Option<Power> {
        self.get(key).map(|v| v.power)
    }

    /// Whether `key` is a member.
    #[must_use]
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn get(&self, key: &PublicKey) -> Option<&Validator> {
        self.members.binary_search_by(|v| v.key.cmp(key)).ok().and_then(|i| self.members.get(i))
    }

    /// `key`'s decompressed verifying key, if it is a member. The first call decompresses every
    /// member's key (see the type's doc).
    pub(crate) fn verifying_key(&self, key: &PublicKey) -> Option<&ed25519_dalek::VerifyingKey> {
        let i = self.members.binary_search_by(|v| v.key.cmp(key)).ok()?;
        let keys = self.verifying.get_or_init(|| {
            Box::new(self.members.iter().map(|v| crypto::verifying_key(&v.key).ok()).collect())
        });
        keys.get(i)?.as_ref()
    }

    /// The set after applying `updates`: power 0 removes a member, any other power adds it or
    /// sets its power.
    pub fn apply(&self, updates: &ValidatorSetUpdates) -> Result<Self, ValidatorSetError> {
        let mut map: BTreeMap<PublicKey, Power> = self.members.iter().map(|v| (v.key, v.power)).collect();
        for (key, power) in &updates.0 {
            if *power == 0 {
                map.remove(key);
            } else {
                map.insert(*key, *power);
            }
        }
        Self::from_map(map)
    }

    /// The members as plain `(key, power)` pairs, for storage.
    #[must_use]
    pub fn to_pairs(&self) -> Vec<(PublicKey, Power)> {
        self.members.iter().map(|v| (v.key, v.power)).collect()
    }
}

/// `floor(2 * total / 3) + 1`, computed without overflow.
#[must_use]
pub fn quorum_threshold(total: u64) -> u64 {
    let q = (u128::from(total) * 2) / 3 + 1;
    u64::try_from(q).unwrap_or(u64::MAX)
}

impl BorshSerialize for ValidatorSet {
    fn serialize<W: borsh::io::Write>(&self, writer: &mut W) -> borsh::io::Result<()> {
        self.to_pairs().serialize(writer)
    }
}

impl BorshDeserialize for ValidatorSet {
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        let pairs: Vec<(PublicKey, Power)> = crate::codec::read_vec(reader, MAX_VALIDATORS)?;
        // Canonical: strictly ascending keys (so no duplicates either).
        if pairs.windows(2).any(|w| matches!(w, [a, b] if a.0 >= b.0)) {
            return Err(borsh::io::Error::new(
                borsh::io::ErrorKind::InvalidData,
                "validator set not sorted by key",
            ));
        }
        ValidatorSet::from_sorted(pairs)
            .map_err(|_| borsh::io::Error::new(borsh::io::ErrorKind::InvalidData, "invalid validator set"))
    }
}

/// Changes a block makes to the validator set: key -> new power (0 removes the key).
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ValidatorSetUpdates(pub BTreeMap<PublicKey, Power>);

impl ValidatorSetUpdates {
    /// True if the block changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
