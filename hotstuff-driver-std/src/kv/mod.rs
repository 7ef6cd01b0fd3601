//! A replicated key-value store: the example app of this crate (used by the `kv_cluster`
//! example and the `hotstuff-node` binary).
//!
//! Transactions put or delete a key. A block's payload is a borsh `Vec<Tx>`; its outcome sets
//! `kv/<key>` for each put, deletes it for each delete, and adds the number of transactions to
//! the counter `meta/txs` (read through the speculative state, so it exercises
//! [`crate::BlockContext::get`]). Clients submit to one node's [`Mempool`]; that node proposes the
//! transactions when it leads, and proposes them again if their block is abandoned; with a
//! [`Forwarder`] it hands them to the upcoming leader instead ([`forward`]).
//!
//! Transactions may be signed by their client ([`auth::SignedTx`]: an ed25519 key and a
//! per-client sequence number kept in the app state); on an *authenticated* chain (genesis
//! state from [`auth::genesis_state`]) only signed ones are accepted, and `validate_block`
//! refuses forged, replayed and out-of-order ones on every replica. Governance keys named in
//! genesis change the validator set, and validators' self-signed addresses form the peer book
//! the drivers dial ([`governance`]).
//!
//! [`ClientServer`] and [`Client`] speak a small line protocol over TCP (each request and each
//! answer is one `\n`-terminated UTF-8 line; a `\r` before the `\n` is ignored):
//!
//! | request | answer |
//! | --- | --- |
//! | `PUT <key> <value>` | `OK <id> <since>` |
//! | `DEL <key>` | `OK <id> <since>` |
//! | `TX <hex>` (a signed transaction, [`auth::SignedTx`]) | `OK <id> <since>` |
//! | `SEQ <client key hex>` | `SEQ chain=.. next=..` |
//! | `WAIT <id> <since> <timeout_ms>` | `COMMITTED <id> <height>` or `UNKNOWN <id> <scanned>` |
//! | `GET <key>` | `VALUE <value>` or `NONE` |
//! | `STATUS` | `STATUS view=.. leader=.. height=.. txs=.. running=..` |
//! | `DIGEST` | `DIGEST height=.. digest=..` |
//!
//! Any request may be answered `ERR <reason>`; `ERR busy: ...` ([`is_busy`]) means a limit is
//! full and the same request may succeed later. A key is 1 to [`MAX_KEY`] bytes without
//! whitespace; a value is the rest of the line after the key and one space: it may hold spaces
//! or be empty, up to [`MAX_VALUE`] bytes, without line breaks. A request line is at most
//! [`MAX_LINE`] bytes. `<id>` is the transaction's id ([`tx_id`], 64 hex characters) and
//! `<since>` the committed height when the node accepted it; `WAIT` answers `COMMITTED` with
//! the height of the first block after `since` that holds a transaction with that id
//! ([`receipt`]), or `UNKNOWN` with the height it looked up to once `timeout_ms` (at most
//! [`MAX_WAIT`]) passed. Transactions of equal content share an id; `since` tells a new put
//! of an unchanged value from the old one.
//!
//! Intake is bounded and fair: the [`Mempool`] holds at most [`MempoolLimits`] (transactions
//! and bytes) and each client connection at most its [`Quota`]; submitters take turns in
//! each block (round robin, each one's transactions in order); blocks are filled by bytes as
//! well as count and never exceed the payload limit; a transaction that can never fit a block
//! is refused at submission. The client port caps connections in total and per address, keeps
//! slots for reads, and cuts off idle and trickling clients ([`ClientLimits`]). A full limit is
//! answered `ERR busy: ...` ([`is_busy`]), never dropped silently.
//!
//! One file per concern: [`payload`](Tx) (transactions and their encoding), the app
//! ([`KvApp`]), signed transactions and the block rules ([`auth`]), validator-set changes and
//! the peer book ([`governance`]), the [`Mempool`], the client protocol ([`Client`]), the client
//! port ([`ClientServer`]), its limits ([`MAX_LINE`]), commit receipts ([`receipt`]), the app's
//! metrics ([`register_metrics`]), forwarding to the leaders ([`forward`]) and the load harness
//! ([`load`]) of the `kv_cluster` examples.

mod app;
pub mod auth;
pub mod certified;
mod client;
pub mod commitment;
pub mod forward;
pub mod governance;
pub mod load;
mod mempool;
mod metrics;
mod payload;
mod protocol;
pub mod receipt;
mod server;
pub mod snapshot;

pub use app::KvApp;
pub use client::{is_busy, Client, RemoteStatus, Submitted};
pub use forward::{Forwarded, Forwarder, LocalForwarder, PeerForwarder};
pub use mempool::{Mempool, MempoolLimits, MempoolStats, Quota, SubmitError, ENTRY_OVERHEAD};
pub use metrics::register_metrics;
pub use payload::{
    decode_payload, hex, state_key, stored_block_txs, tx_count, tx_id, Tx, MAX_BLOCK_TXS, MAX_KEY, MAX_VALUE,
    TX_COUNT_KEY,
};
pub use protocol::{check_key, check_value, parse_id, MAX_LINE, MAX_WAIT};
pub use receipt::Receipt;
pub use server::{ClientLimits, ClientServer};

#[cfg(test)]
mod auth_tests;
