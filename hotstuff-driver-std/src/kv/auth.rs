//! Signed client transactions and the rules every replica applies to a block's transactions.
//!
//! A [`SignedTx`] is an [`Op`] signed by its client's ed25519 key together with the client's
//! sequence number: the domain tag, the chain id, the client key, the sequence number and the
//! op ([`signing_bytes`]). The next sequence number of each client lives in the app state
//! (`meta/seq/<key>`, u64 LE), so every replica checks a block against the same state:
//! [`Rules`] refuses a forged signature, a sequence number already used (replayed) and one
//! above the next (out of order), and applies the rest.
//!
//! A chain whose genesis app state holds [`AUTH_KEY`] (its value is the chain id) is an
//! *authenticated* chain: unsigned [`Tx::Put`] and [`Tx::Delete`] are refused on it, so a
//! Byzantine leader cannot put writes in a block that no client made. Without it the chain is
//! *open* (the in-process examples and benchmarks): unsigned writes are accepted and signed
//! transactions are checked all the same, under chain id 0. `hotstuff-node testnet` writes
//! authenticated chains ([`genesis_state`]).
//!
//! Validator-set changes are signed transactions too (see [`super::governance`]).

use super::governance::{self, Change, ChangeError, PeerRecord, MAX_CHANGES_PER_BLOCK, MAX_POWER};
use super::payload::{state_key, Tx, MAX_KEY, MAX_VALUE};
use crate::error::StoreError;
use borsh::{BorshDeserialize, BorshSerialize};
use hotstuff_core::{AppStateUpdates, Keypair, PublicKey, Signature, ValidatorSet, ValidatorSetUpdates};
use std::path::Path;

/// App-state key present on authenticated chains; its value is the chain id (u64 LE), which
/// every client signature covers.
pub const AUTH_KEY: &[u8] = b"meta/auth";
/// App-state prefix of the clients' next sequence numbers: `meta/seq/<32-byte key>` -> u64 LE.
pub const SEQ_PREFIX: &[u8] = b"meta/seq/";

const TX_DOMAIN: &[u8] = b"hotstuff-kv/signed-tx/v1";

/// What a signed transaction does.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize)]
pub enum Op {
    /// Sets `key` to `value`.
    Put {
        /// The key (1 to [`MAX_KEY`] bytes).
        key: Vec<u8>,
        /// The value (at most [`MAX_VALUE`] bytes).
        value: Vec<u8>,
    },
    /// Deletes `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Changes the validator set or the peer book.
    Validator(Change),
}

impl BorshDeserialize for Op {
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        let key = |r: &mut R| hotstuff_core::codec::read_bytes(r, MAX_KEY);
        Ok(match u8::deserialize_reader(reader)? {
            0 => Op::Put { key: key(reader)?, value: hotstuff_core::codec::read_bytes(reader, MAX_VALUE)? },
            1 => Op::Delete { key: key(reader)? },
            2 => Op::Validator(Change::deserialize_reader(reader)?),
            _ => return Err(borsh::io::Error::new(borsh::io::ErrorKind::InvalidData, "unknown op")),
        })
    }
}

impl Op {
    fn encoded_len(&self) -> usize {
        match self {
            Op::Put { key, value } => 1 + 4 + key.len() + 4 + value.len(),
            Op::Delete { key } => 1 + 4 + key.len(),
            Op::Validator(c) => 1 + c.encoded_len(),
        }
    }

    fn valid(&self) -> bool {
        self.check().is_ok()
    }

    /// `Err` naming the limit a key or value breaks (a key is 1 to [`MAX_KEY`] bytes, a value
    /// at most [`MAX_VALUE`]), in the words the client protocol uses; clients check before they
    /// sign, and the node refuses the same with the same words.
    pub fn check(&self) -> Result<(), String> {
        let key = |key: &[u8]| match key.len() {
            0 => Err(format!("empty key: a key is 1 to {MAX_KEY} bytes")),
            n if n > MAX_KEY => Err(format!("key of {n} bytes is over the limit of {MAX_KEY} bytes")),
            _ => Ok(()),
        };
        match self {
            Op::Put { value, .. } if value.len() > MAX_VALUE => {
                Err(format!("value of {} bytes is over the limit of {MAX_VALUE} bytes", value.len()))
            }
            Op::Put { key: k, .. } | Op::Delete { key: k } => key(k),
            Op::Validator(_) => Ok(()),
        }
    }
}

/// A transaction signed by its client.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedTx {
    /// The client's key.
    pub client: PublicKey,
    /// The client's sequence number: 0 for its first transaction, then one more each time.
    pub seq: u64,
    /// What it does.
    pub op: Op,
    /// The client's signature over [`signing_bytes`].
    pub sig: Signature,
}

/// The largest encoded [`SignedTx`].
pub const MAX_SIGNED_TX: usize = 32 + 8 + (1 + 4 + MAX_KEY + 4 + MAX_VALUE) + 64;

impl SignedTx {
    /// Signs `op` as `key`'s transaction number `seq` on `chain` (0 on open chains).
    #[must_use]
    pub fn sign(chain: u64, key: &Keypair, seq: u64, op: Op) -> Self {
        let client = key.public();
        let sig = raw_sign(key, &signing_bytes(chain, &client, seq, &op));
        SignedTx { client, seq, op, sig }
    }

    /// Whether the signature is the client's on `chain`.
    #[must_use]
    pub fn verify(&self, chain: u64) -> bool {
        raw_verify(&self.client, &signing_bytes(chain, &self.client, self.seq, &self.op), &self.sig)
    }

    /// Its size in a block payload (its borsh encoding).
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        32 + 8 + self.op.encoded_len() + 64
    }

    pub(super) fn valid(&self) -> bool {
        self.op.valid()
    }

    /// Lowercase hex of its encoding (the `TX` request of the client protocol).
    #[must_use]
    pub fn to_hex(&self) -> String {
        super::hex(&borsh::to_vec(self).unwrap_or_default())
    }

    /// Decodes [`SignedTx::to_hex`]: canonical, within the size limits, nothing trailing.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        if text.len() > 2 * MAX_SIGNED_TX + 2 * 300 {
            return Err("transaction too long".into());
        }
        let bytes = from_hex(text).ok_or("transaction is not hex")?;
        let mut reader = &bytes[..];
        let tx =
            SignedTx::deserialize_reader(&mut reader).map_err(|e| format!("malformed transaction: {e}"))?;
        if !reader.is_empty() {
            return Err("malformed transaction: trailing bytes".into());
        }
        tx.op.check().map_err(|e| format!("invalid transaction: {e}"))?;
        Ok(tx)
    }
}

/// The bytes a client signs: a domain tag, the chain id, its key, the sequence number and the
/// op's encoding.
#[must_use]
pub fn signing_bytes(chain: u64, client: &PublicKey, seq: u64, op: &Op) -> Vec<u8> {
    let mut out = TX_DOMAIN.to_vec();
    out.extend_from_slice(&chain.to_le_bytes());
    out.extend_from_slice(&client.0);
    out.extend_from_slice(&seq.to_le_bytes());
    // Writing to a Vec cannot fail.
    let _ = op.serialize(&mut out);
    out
}

/// Signs `message` with `key` (plain ed25519; callers domain-separate).
pub(super) fn raw_sign(key: &Keypair, message: &[u8]) -> Signature {
    use ed25519_dalek::Signer;
    Signature(ed25519_dalek::SigningKey::from_bytes(&key.secret()).sign(message).to_bytes())
}

/// Strict ed25519 verification of `sig` by `key` over `message` (false for an invalid or weak
/// key).
pub(super) fn raw_verify(key: &PublicKey, message: &[u8], sig: &Signature) -> bool {
    hotstuff_core::crypto::verifying_key(key)
        .is_ok_and(|vk| vk.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig.0)).is_ok())
}

/// Decodes lowercase or uppercase hex.
#[must_use]
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| text.get(2 * i..2 * i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

/// Decodes a 32-byte key in hex.
pub fn key_from_hex(text: &str) -> Result<PublicKey, String> {
    let bytes = from_hex(text).ok_or_else(|| format!("`{text}` is not hex"))?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| format!("`{text}` is not 64 hex characters"))?;
    Ok(PublicKey(key))
}

/// Reads a key file (64 hex characters of secret seed, as `hotstuff-node keygen` writes).
pub fn read_key_file(path: &Path) -> std::io::Result<Keypair> {
    let text = std::fs::read_to_string(path)?;
    let secret = from_hex(&text).and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
        std::io::Error::other(format!("{}: not 64 hex characters of secret key", path.display()))
    })?;
    Ok(Keypair::from_secret(&secret))
}

/// Writes a key file readable by its owner only (created new: an existing file is never
/// overwritten).
pub fn write_key_file(path: &Path, key: &Keypair) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{}", super::hex(&key.secret()))?;
    file.sync_all()
}

/// The client key at `path`, generated and written there first if the file does not exist.
pub fn load_or_create_key(path: &Path) -> std::io::Result<Keypair> {
    match read_key_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = crate::generate_key()?;
            write_key_file(path, &key)?;
            Ok(key)
        }
        other => other,
    }
}

/// The genesis app state of an authenticated chain: [`AUTH_KEY`], the governance keys, and the
/// peer book of the genesis validators (each record signed by its validator).
#[must_use]
pub fn genesis_state(
    chain: u64,
    governance: &[PublicKey],
    peers: &[(PublicKey, PeerRecord)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut state = vec![(AUTH_KEY.to_vec(), chain.to_le_bytes().to_vec())];
    state.extend(governance.iter().map(|g| (governance::governance_key(g), vec![1])));
    state.extend(peers.iter().map(|(k, r)| (governance::peer_key(k), borsh::to_vec(r).unwrap_or_default())));
    state
}

/// The app-state key of `client`'s next sequence number.
#[must_use]
pub fn seq_key(client: &PublicKey) -> Vec<u8> {
    [SEQ_PREFIX, &client.0[..]].concat()
}

fn read_u64(value: Option<&[u8]>) -> u64 {
    value.and_then(|v| v.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Why a transaction is refused.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// An unsigned write on an authenticated chain.
    #[error("unsigned write refused: this chain accepts only transactions signed by a client key")]
    Unsigned,
    /// The signature does not verify.
    #[error("forged transaction: the signature does not verify under client key {0:#}")]
    BadSignature(PublicKey),
    /// The sequence number was used already.
    #[error(
        "replayed transaction: sequence number {seq} of client {client:#} is already used (next is {next})"
    )]
    Replayed {
        /// The client.
        client: PublicKey,
        /// Its sequence number.
        seq: u64,
        /// The client's next sequence number.
        next: u64,
    },
    /// The sequence number is beyond the next one.
    #[error("out-of-order transaction: sequence number {seq} of client {client:#}, expected {next}")]
    OutOfOrder {
        /// The client.
        client: PublicKey,
        /// Its sequence number.
        seq: u64,
        /// The client's next sequence number.
        next: u64,
    },
    /// A refused validator-set change.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The app state could not be read (not the transaction's fault).
    #[error("cannot read app state: {0}")]
    Store(#[from] StoreError),
}

/// Reads the app state a block builds on (the speculative state of its parent).
pub type StateFn<'a> = dyn Fn(&[u8]) -> Result<Option<Vec<u8>>, StoreError> + 'a;

/// The rules of a block's transactions, applied in order against the state of the block's
/// parent (`get`) and the validator set in force. Each [`Rules::apply`] either applies a
/// transaction to `updates` or refuses it and changes nothing.
pub struct Rules<'a> {
    get: &'a StateFn<'a>,
    chain: Option<u64>,
    /// `None` only when checking a submission on a store without a committed set.
    validators: Option<&'a ValidatorSet>,
    changes: usize,
    validator_updates: ValidatorSetUpdates,
}

impl<'a> Rules<'a> {
    /// Rules over the state `get` reads and the set in force.
    pub fn new(get: &'a StateFn<'a>, validators: &'a ValidatorSet) -> Result<Self, StoreError> {
        Self::with_set(get, Some(validators))
    }

    fn with_set(get: &'a StateFn<'a>, validators: Option<&'a ValidatorSet>) -> Result<Self, StoreError> {
        let chain = get(AUTH_KEY)?.map(|v| read_u64(Some(&v)));
        Ok(Rules { get, chain, validators, changes: 0, validator_updates: ValidatorSetUpdates::default() })
    }

    /// Whether the chain is authenticated (see the module docs).
    #[must_use]
    pub fn authenticated(&self) -> bool {
        self.chain.is_some()
    }

    /// The chain id signatures cover (0 on open chains).
    #[must_use]
    pub fn chain(&self) -> u64 {
        self.chain.unwrap_or(0)
    }

    /// The value of `key`: this block's `updates` so far over the parent's state.
    fn read(&self, updates: &AppStateUpdates, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match updates.get(key) {
            Some(v) => Ok(v.map(<[u8]>::to_vec)),
            None => (self.get)(key),
        }
    }

    /// The power `key` has after this block's changes so far (`None`: not a member).
    fn power(&self, key: &PublicKey) -> Option<u64> {
        match self.validator_updates.0.get(key) {
            Some(0) => None,
            Some(p) => Some(*p),
            None => self.validators.and_then(|v| v.power(key)),
        }
    }

    /// Applies `tx` to `updates`, or refuses it (leaving `updates` unchanged).
    pub fn apply(&mut self, tx: &Tx, updates: &mut AppStateUpdates) -> Result<(), TxError> {
        self.apply_with(tx, updates, false)
    }

    /// Checks a transaction a client submits, against the committed state: like
    /// [`Rules::apply`], except that a sequence number above the next one is accepted (the
    /// client may have earlier ones still waiting to commit).
    pub fn check_submission(&mut self, tx: &Tx) -> Result<(), TxError> {
        self.apply_with(tx, &mut AppStateUpdates::default(), true)
    }

    fn apply_with(&mut self, tx: &Tx, updates: &mut AppStateUpdates, ahead_ok: bool) -> Result<(), TxError> {
        let signed = match tx {
            Tx::Put { key, value } if self.chain.is_none() => {
                updates.insert(state_key(key), value.clone());
                return Ok(());
            }
            Tx::Delete { key } if self.chain.is_none() => {
                updates.delete(state_key(key));
                return Ok(());
            }
            Tx::Put { .. } | Tx::Delete { .. } => return Err(TxError::Unsigned),
            Tx::Signed(signed) => signed,
        };
        let client = signed.client;
        if !signed.verify(self.chain()) {
            return Err(TxError::BadSignature(client));
        }
        let next = read_u64(self.read(updates, &seq_key(&client))?.as_deref());
        if signed.seq < next {
            return Err(TxError::Replayed { client, seq: signed.seq, next });
        }
        if signed.seq > next && !ahead_ok {
            return Err(TxError::OutOfOrder { client, seq: signed.seq, next });
        }
        match &signed.op {
            Op::Put { key, value } => updates.insert(state_key(key), value.clone()),
            Op::Delete { key } => updates.delete(state_key(key)),
            Op::Validator(change) => self.change(&client, change, updates)?,
        }
        updates.insert(seq_key(&client), signed.seq.saturating_add(1).to_le_bytes().to_vec());
        Ok(())
    }

    /// Checks and applies a validator-set change signed by `signer`.
    fn change(
        &mut self,
        signer: &PublicKey,
        change: &Change,
        updates: &mut AppStateUpdates,
    ) -> Result<(), TxError> {
        let key = change.key();
        if let Change::SetAddress { .. } = change {
            if *signer != key {
                return Err(ChangeError::NotOwnAddress { key, signer: *signer }.into());
            }
        } else if self.read(updates, &governance::governance_key(signer))?.is_none() {
            return Err(ChangeError::NotGovernance(*signer).into());
        }
        if self.changes >= MAX_CHANGES_PER_BLOCK {
            return Err(ChangeError::TooManyChanges.into());
        }
        let check_power =
            |p: u64| if (1..=MAX_POWER).contains(&p) { Ok(()) } else { Err(ChangeError::BadPower(p)) };
        let check_address = |address: &str, sig: &Signature| {
            governance::check_address(address).map_err(ChangeError::BadAddress)?;
            if governance::verify_address(self.chain(), &key, address, sig) {
                Ok(())
            } else {
                Err(ChangeError::AddressNotSigned { key, address: address.to_string() })
            }
        };
        let (power, record) = match change {
            Change::Add { power, address, address_sig, .. } => {
                if hotstuff_core::crypto::verifying_key(&key).is_err() {
                    return Err(ChangeError::BadKey(key).into());
                }
                if self.power(&key).is_some() {
                    return Err(ChangeError::AlreadyMember(key).into());
                }
                check_power(*power)?;
                check_address(address, address_sig)?;
                (Some(*power), Some(PeerRecord { address: address.clone(), sig: *address_sig }))
            }
            Change::SetPower { power, .. } => {
                self.power(&key).ok_or(ChangeError::NotMember(key))?;
                check_power(*power)?;
                (Some(*power), None)
            }
            Change::Remove { .. } => {
                self.power(&key).ok_or(ChangeError::NotMember(key))?;
                (Some(0), None)
            }
            Change::SetAddress { address, address_sig, .. } => {
                self.power(&key).ok_or(ChangeError::NotMember(key))?;
                check_address(address, address_sig)?;
                (None, Some(PeerRecord { address: address.clone(), sig: *address_sig }))
            }
        };
        if let Some(power) = power {
            let mut next = self.validator_updates.clone();
            next.0.insert(key, power);
            let set = self.validators.ok_or(StoreError::NotInitialised)?;
            set.apply(&next).map_err(ChangeError::BadSet)?;
            self.validator_updates = next;
        }
        match (record, power) {
            (Some(r), _) => updates.insert(governance::peer_key(&key), borsh::to_vec(&r).unwrap_or_default()),
            (None, Some(0)) => updates.delete(governance::peer_key(&key)),
            (None, _) => {}
        }
        self.changes += 1;
        Ok(())
    }

    /// The validator-set updates of the transactions applied.
    #[must_use]
    pub fn into_validator_updates(self) -> ValidatorSetUpdates {
        self.validator_updates
    }
}

/// The signed transactions a node's client port accepted and that are not yet committed: for
/// each client, the sequence number after its highest one. A submission must continue the
/// client's sequence (the committed one, or the one pending here), so an out-of-order one is
/// refused at once with the number expected. Bounded: past [`Submissions::MAX_CLIENTS`]
/// clients it forgets them all (their next submissions are then checked against the committed
/// state only).
#[derive(Default)]
pub struct Submissions(std::sync::Mutex<std::collections::HashMap<PublicKey, u64>>);

impl Submissions {
    /// Most clients remembered.
    pub const MAX_CLIENTS: usize = 100_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<PublicKey, u64>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks `tx` (see [`check_submission`]) and that it continues its client's sequence.
    pub fn check(&self, reader: &crate::node::Reader, tx: &Tx) -> Result<(), TxError> {
        check_submission(reader, tx)?;
        let Tx::Signed(signed) = tx else { return Ok(()) };
        let committed = read_u64(reader.get(&seq_key(&signed.client))?.as_deref());
        let next = self.lock().get(&signed.client).copied().unwrap_or(0).max(committed);
        if signed.seq > next {
            return Err(TxError::OutOfOrder { client: signed.client, seq: signed.seq, next });
        }
        Ok(())
    }

    /// Records that `tx` was queued.
    pub fn queued(&self, tx: &Tx) {
        let Tx::Signed(signed) = tx else { return };
        let mut map = self.lock();
        if map.len() >= Self::MAX_CLIENTS && !map.contains_key(&signed.client) {
            map.clear();
        }
        let next = map.entry(signed.client).or_insert(0);
        *next = (*next).max(signed.seq.saturating_add(1));
    }
}

/// Checks a transaction a client submits against the committed state and set (see
/// [`Rules::check_submission`]), so that the client is told at once why it would be refused.
/// (A block may still refuse it later if another transaction of the same client or another
/// change comes first; `validate_block` decides.)
pub fn check_submission(reader: &crate::node::Reader, tx: &Tx) -> Result<(), TxError> {
    // Only a validator-set change needs the set (reading it checks every member's key).
    let change = matches!(tx, Tx::Signed(s) if matches!(s.op, Op::Validator(_)));
    let validators = match change.then(|| reader.validators()) {
        Some(Ok(v)) => Some(v),
        None | Some(Err(StoreError::NotInitialised)) => None,
        Some(Err(e)) => return Err(e.into()),
    };
    let get = |k: &[u8]| reader.get(k);
    Rules::with_set(&get, validators.as_ref())?.check_submission(tx)
}

/// The answer to `SEQ <client key hex>`: `SEQ chain=<id> next=<n>` (the chain id that
/// signatures cover, 0 on open chains, and the client's next committed sequence number).
#[must_use]
pub fn seq_answer(reader: &crate::node::Reader, client: &str) -> String {
    let client = match key_from_hex(client) {
        Ok(k) => k,
        Err(e) => return format!("ERR {e}"),
    };
    let read = || -> Result<(u64, u64), StoreError> {
        let chain = read_u64(reader.get(AUTH_KEY)?.as_deref());
        let next = read_u64(reader.get(&seq_key(&client))?.as_deref());
        Ok((chain, next))
    };
    match read() {
        Ok((chain, next)) => format!("SEQ chain={chain} next={next}"),
        Err(e) => format!("ERR {e}"),
    }
}
