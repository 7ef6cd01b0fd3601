//! Transactions and block payloads of the kv app: the transaction type, its bounded decoding,
//! the state keys it writes.

use super::auth::SignedTx;
use borsh::{BorshDeserialize, BorshSerialize};

/// Largest key, in bytes.
pub const MAX_KEY: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 4096;
/// Most transactions in one block. Validation checks this constant, never a local setting:
/// every replica must reach the same verdict.
pub const MAX_BLOCK_TXS: usize = 10_000;
/// The app-state key of the committed transaction counter (u64 LE).
pub const TX_COUNT_KEY: &[u8] = b"meta/txs";

/// A transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize)]
pub enum Tx {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Deletes `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// A transaction signed by its client (see [`super::auth`]); the only kind an
    /// authenticated chain accepts.
    Signed(Box<SignedTx>),
}

impl BorshDeserialize for Tx {
    /// The derived layout, with the key and value read within [`MAX_KEY`] and [`MAX_VALUE`]:
    /// an oversized length prefix is refused before anything is allocated for it.
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        let key = |r: &mut R| hotstuff_core::codec::read_bytes(r, MAX_KEY);
        match u8::deserialize_reader(reader)? {
            0 => {
                Ok(Tx::Put { key: key(reader)?, value: hotstuff_core::codec::read_bytes(reader, MAX_VALUE)? })
            }
            1 => Ok(Tx::Delete { key: key(reader)? }),
            2 => Ok(Tx::Signed(Box::new(SignedTx::deserialize_reader(reader)?))),
            _ => Err(borsh::io::Error::new(borsh::io::ErrorKind::InvalidData, "unknown transaction kind")),
        }
    }
}

/// Decodes a block payload into its transactions: `None` unless it is a canonical borsh
/// `Vec<Tx>` of 1 to [`MAX_BLOCK_TXS`] valid transactions (the count is checked before any
/// transaction is read). An empty payload is an empty block, not a payload: the caller
/// handles it.
#[must_use]
pub fn decode_payload(payload: &[u8]) -> Option<Vec<Tx>> {
    let mut reader = payload;
    let txs: Vec<Tx> = hotstuff_core::codec::read_vec(&mut reader, MAX_BLOCK_TXS).ok()?;
    (reader.is_empty() && !txs.is_empty() && txs.iter().all(Tx::valid)).then_some(txs)
}

/// The encodings of a payload's transactions, in order, without building them: what a reader
/// that only needs their bytes (to hash them) uses. `None` unless the payload is a borsh
/// `Vec<Tx>` of at most [`MAX_BLOCK_TXS`] transactions that decodes without trailing bytes
/// (puts and deletes are split by their length prefixes, other kinds decoded to find their
/// end); unlike [`decode_payload`] it does not check the transactions' limits.
#[must_use]
pub fn payload_tx_encodings(payload: &[u8]) -> Option<Vec<&[u8]>> {
    fn skip_bytes(r: &mut &[u8]) -> Option<()> {
        let len = u32::from_le_bytes(r.get(..4)?.try_into().ok()?) as usize;
        *r = r.get(4..)?.get(len..)?;
        Some(())
    }
    let mut r = payload;
    let count = u32::from_le_bytes(r.get(..4)?.try_into().ok()?) as usize;
    if count > MAX_BLOCK_TXS {
        return None;
    }
    r = r.get(4..)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let start = r;
        match r.first()? {
            0 => {
                r = r.get(1..)?;
                skip_bytes(&mut r)?;
                skip_bytes(&mut r)?;
            }
            1 => {
                r = r.get(1..)?;
                skip_bytes(&mut r)?;
            }
            _ => {
                Tx::deserialize_reader(&mut r).ok()?;
            }
        }
        out.push(start.get(..start.len() - r.len())?);
    }
    r.is_empty().then_some(out)
}

/// The transactions of a committed kv block as stored, whether the chain runs the kv app as is
/// or wrapped in [`StateCommitted`](super::certified::StateCommitted) (whose payloads are the
/// parent state's root, 32 bytes, then the kv payload): what a reader of stored blocks (commit
/// receipts) uses, as it does not know the app's wrapping. Either layout is tried; a payload
/// that is exactly one is not also the other, save for a root whose bytes happen to be a
/// canonical transaction list prefix of the rest (a blake3 output: not a practical concern).
#[must_use]
pub fn stored_block_txs(payload: &[u8]) -> Option<Vec<Tx>> {
    decode_payload(payload).or_else(|| decode_payload(payload.get(super::certified::ROOT_LEN..)?))
}

impl Tx {
    /// Its size in a block payload (its borsh encoding).
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            Tx::Put { key, value } => 1 + 4 + key.len() + 4 + value.len(),
            Tx::Delete { key } => 1 + 4 + key.len(),
            Tx::Signed(s) => 1 + s.encoded_len(),
        }
    }

    pub(super) fn valid(&self) -> bool {
        match self {
            Tx::Put { key, value } => !key.is_empty() && key.len() <= MAX_KEY && value.len() <= MAX_VALUE,
            Tx::Delete { key } => !key.is_empty() && key.len() <= MAX_KEY,
            Tx::Signed(s) => s.valid(),
        }
    }
}

/// A transaction's id: the blake3 hash of its encoding in a block payload. Two transactions
/// with the same content have the same id (a put of the same key and value twice is one id;
/// [`super::Client::wait`] tells their commits apart by height).
#[must_use]
pub fn tx_id(tx: &Tx) -> [u8; 32] {
    // Encoding into a `Vec` cannot fail.
    *blake3::hash(&borsh::to_vec(tx).unwrap_or_default()).as_bytes()
}

/// The app-state key that holds the kv key `key`.
#[must_use]
pub fn state_key(key: &[u8]) -> Vec<u8> {
    let mut k = b"kv/".to_vec();
    k.extend_from_slice(key);
    k
}

/// The committed transaction count in a state value (`None`: 0).
#[must_use]
pub fn tx_count(value: Option<&[u8]>) -> u64 {
    value.and_then(|v| v.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Lowercase hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_blocks_give_their_transactions_with_or_without_the_certified_root() {
        let txs =
            vec![Tx::Put { key: b"k".to_vec(), value: b"v".to_vec() }, Tx::Delete { key: b"d".to_vec() }];
        let plain = borsh::to_vec(&txs).unwrap();
        let mut certified = vec![0xa7; super::super::certified::ROOT_LEN];
        certified.extend_from_slice(&plain);
        assert_eq!(stored_block_txs(&plain), Some(txs.clone()));
        assert_eq!(stored_block_txs(&certified), Some(txs));
        // The plain decoder alone misses the certified layout (what receipts used to do).
        assert_eq!(decode_payload(&certified), None);
        assert_eq!(stored_block_txs(&certified[..31]), None);
        assert_eq!(stored_block_txs(&[]), None);
    }

    #[test]
    fn payload_encodings_split_a_payload_into_each_transaction_s_encoding() {
        let key = crate::generate_key().unwrap();
        let op = super::super::auth::Op::Put { key: b"s".to_vec(), value: b"w".to_vec() };
        let signed = super::super::auth::SignedTx::sign(1, &key, 3, op);
        let txs = vec![
            Tx::Put { key: b"k".to_vec(), value: b"v".to_vec() },
            Tx::Signed(Box::new(signed)),
            Tx::Delete { key: b"d".to_vec() },
            Tx::Put { key: b"e".to_vec(), value: Vec::new() },
        ];
        let payload = borsh::to_vec(&txs).unwrap();
        let split = payload_tx_encodings(&payload).unwrap();
        let each: Vec<Vec<u8>> = txs.iter().map(|t| borsh::to_vec(t).unwrap()).collect();
        assert_eq!(split, each.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // Short, trailing bytes, an unknown kind: refused.
        assert_eq!(payload_tx_encodings(&payload[..payload.len() - 1]), None);
        let mut trailing = payload.clone();
        trailing.push(0);
        assert_eq!(payload_tx_encodings(&trailing), None);
        assert_eq!(payload_tx_encodings(&[1, 0, 0, 0, 9]), None);
        assert_eq!(payload_tx_encodings(&[]), None);
    }
}
