//! Errors. Bad input from peers or the disk is one of these, logged, never a panic.

use hotstuff_core::ChainId;

/// A store failed or holds data this code cannot accept.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database engine failed (I/O, a corrupt file, a lock held by another process).
    #[error("database: {0}")]
    Db(#[from] Box<redb::Error>),
    /// An I/O error outside the database engine.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value does not decode, or contradicts its key. The store is not reset.
    #[error("corrupt store data in `{what}`: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store was initialised for another chain.
    #[error("the store belongs to chain {stored:?}, not {expected:?}")]
    WrongChain {
        /// The store's chain.
        stored: ChainId,
        /// The configured chain.
        expected: ChainId,
    },
    /// The store was initialised with another genesis validator set.
    #[error("the store was initialised with a different genesis validator set")]
    WrongGenesis,
    /// The store has never been initialised.
    #[error("the store is not initialised")]
    NotInitialised,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
