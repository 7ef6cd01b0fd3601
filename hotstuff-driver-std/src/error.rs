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
    /// The background store writer stopped: it failed on an earlier write (logged and returned
    /// once as that error) or its thread ended.
    #[error("the background store writer stopped")]
    WriterStopped,
    /// The store does not implement an optional operation.
    #[error("the store does not support {0}")]
    Unsupported(&'static str),
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

/// A frame that could not be read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over the limit; nothing was allocated for the body.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("truncated frame: {got} of {expected} bytes")]
    Truncated {
        /// Bytes announced (or the 4 of the prefix).
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// The connection failed.
    #[error("I/O: {0}")]
    Io(std::sync::Arc<std::io::Error>),
}

/// A connection handshake that failed; the connection is closed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The connection failed or timed out.
    #[error("I/O: {0}")]
    Io(std::sync::Arc<std::io::Error>),
    /// The peer closed the connection during the handshake.
    #[error("closed during the handshake")]
    Closed,
    /// The hello is not this protocol (or another version of it).
    #[error("not a hotstuff-driver-std hello (bad magic or version)")]
    BadHello,
    /// A client of the kv client protocol (a text line) connected to the consensus port; it
    /// was answered with [`crate::net::handshake::NOT_A_CLIENT_PORT`].
    #[error("a client-protocol request (text) on the consensus port; the client port is `client_listen`")]
    ClientOnConsensusPort,
    /// The peer runs another chain.
    #[error("peer runs chain {got:?}, this node runs {expected:?}")]
    WrongChain {
        /// Our chain.
        expected: ChainId,
        /// The peer's chain.
        got: ChainId,
    },
    /// The peer presented our own key.
    #[error("peer presented this node's own key")]
    SelfConnection,
    /// The dialled address answered with another key than configured.
    #[error("expected peer {expected}, it presented {got}")]
    UnexpectedKey {
        /// The configured key.
        expected: hotstuff_core::PublicKey,
        /// The presented key.
        got: hotstuff_core::PublicKey,
    },
    /// The key is neither a configured peer nor a validator.
    #[error("key {0} is not a known peer or validator")]
    NotAllowed(hotstuff_core::PublicKey),
    /// The key is not a valid ed25519 point.
    #[error("key {0} is not a valid ed25519 key")]
    BadKey(hotstuff_core::PublicKey),
    /// The signature over the nonces does not verify (wrong key, or a replayed handshake).
    #[error("handshake signature of {0} does not verify")]
    BadSignature(hotstuff_core::PublicKey),
    /// The OS gave no randomness for the nonce.
    #[error("no entropy for the handshake nonce: {0}")]
    Entropy(String),
}

/// Why a connection or a message was refused.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NetError {
    /// A bad frame.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A failed handshake.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A frame whose envelope does not decode.
    #[error("message: {0}")]
    Decode(#[from] hotstuff_core::DecodeError),
    /// An envelope for another chain.
    #[error("message for chain {got:?}, this node runs {expected:?}")]
    WrongChain {
        /// Our chain.
        expected: ChainId,
        /// The message's chain.
        got: ChainId,
    },
    /// Too many connections are in their handshake at once.
    #[error("too many connections in handshake (limit {0})")]
    TooManyHandshakes(usize),
    /// This source address already holds this many connections in their handshake.
    #[error("too many connections in handshake from {addr} (limit {limit} per address)")]
    TooManyHandshakesFrom {
        /// The source address.
        addr: std::net::IpAddr,
        /// The limit per address.
        limit: usize,
    },
    /// This source address failed too many handshakes lately.
    #[error("too many failed handshakes from {addr} lately (at most {per_second} per second)")]
    TooManyFailures {
        /// The source address.
        addr: std::net::IpAddr,
        /// The sustained rate of failures allowed.
        per_second: u32,
    },
    /// The peer already holds this many inbound connections.
    #[error("too many connections from this peer (limit {0})")]
    TooManyConnections(usize),
    /// A socket operation failed.
    #[error("I/O: {0}")]
    Io(std::sync::Arc<std::io::Error>),
    /// The node is shutting down.
    #[error("the node is stopped")]
    Stopped,
}

impl NetError {
    /// A short name of the kind of refusal, for counting refusals by kind.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            NetError::Frame(FrameError::TooLarge { .. }) => "frame_too_large",
            NetError::Frame(FrameError::Truncated { .. }) => "frame_truncated",
            NetError::Frame(FrameError::Io(_)) => "frame_io",
            NetError::Handshake(h) => match h {
                HandshakeError::Io(_) => "handshake_io",
                HandshakeError::Closed => "handshake_closed",
                HandshakeError::ClientOnConsensusPort => "handshake_client_protocol",
                HandshakeError::BadHello => "handshake_bad_hello",
                HandshakeError::WrongChain { .. } => "handshake_wrong_chain",
                HandshakeError::SelfConnection => "handshake_self",
                HandshakeError::UnexpectedKey { .. } => "handshake_unexpected_key",
                HandshakeError::NotAllowed(_) => "handshake_not_allowed",
                HandshakeError::BadKey(_) => "handshake_bad_key",
                HandshakeError::BadSignature(_) => "handshake_bad_signature",
                HandshakeError::Entropy(_) => "handshake_entropy",
            },
            NetError::Decode(_) => "message_decode",
            NetError::WrongChain { .. } => "message_wrong_chain",
            NetError::TooManyHandshakes(_) => "too_many_handshakes",
            NetError::TooManyHandshakesFrom { .. } => "too_many_handshakes_from_address",
            NetError::TooManyFailures { .. } => "too_many_failures_from_address",
            NetError::TooManyConnections(_) => "too_many_connections_of_peer",
            NetError::Io(_) => "io",
            NetError::Stopped => "stopped",
        }
    }
}

impl From<std::io::Error> for NetError {
    fn from(e: std::io::Error) -> Self {
        NetError::Io(e.into())
    }
}
