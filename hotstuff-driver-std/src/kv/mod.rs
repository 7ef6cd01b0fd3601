//! A replicated key-value store: the example app of this crate (used by the `kv_cluster`
//! example and the `hotstuff-node` binary).
//!
//! Transactions put or delete a key. A block's payload is a borsh `Vec<Tx>`; its outcome sets
//! `kv/<key>` for each put, deletes it for each delete, and adds the number of transactions to
//! the counter `meta/txs` (read through the speculative state, so it exercises
//! [`crate::BlockContext::get`]). Clients submit to one node's [`Mempool`]; that node proposes the
//! transactions when it leads, and proposes them again if their block is abandoned.
//!
//! Transactions may be signed by their client ([`auth::SignedTx`]: an ed25519 key and a
//! per-client sequence number kept in the app state); on an *authenticated* chain (genesis
//! state from [`auth::genesis_state`]) only signed ones are accepted, and `validate_block`
//! refuses forged, replayed and out-of-order ones on every replica. Governance keys named in
//! genesis change the validator set, and validators' self-signed addresses form the peer book
//! the drivers dial ([`governance`]).
//!
//! [`ClientServer`] and [`Client`] speak a small line protocol over TCP:
//! `PUT <key> <value>`, `DEL <key>`, `TX <hex>` (a signed transaction), `SEQ <client>`,
//! `GET <key>` and `STATUS`, answered by `OK`, `VALUE <v>`, `NONE`, `SEQ chain=.. next=..`,
//! `STATUS view=.. leader=.. height=.. txs=..` or `ERR <reason>`. Keys and values are
//! whitespace-free UTF-8.
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
//! the peer book ([`governance`]), the [`Mempool`], the client protocol ([`Client`]), the client port
//! ([`ClientServer`]) and the load harness ([`load`]) of the `kv_cluster` examples.

mod app;
pub mod auth;
mod client;
pub mod governance;
pub mod load;
mod mempool;
mod payload;
mod server;

pub use app::KvApp;
pub use client::{is_busy, Client, RemoteStatus};
pub use mempool::{Mempool, MempoolLimits, MempoolStats, Quota, SubmitError, ENTRY_OVERHEAD};
pub use payload::{
    decode_payload, hex, state_key, tx_count, Tx, MAX_BLOCK_TXS, MAX_KEY, MAX_VALUE, TX_COUNT_KEY,
};
pub use server::{ClientLimits, ClientServer};

#[cfg(test)]
mod auth_tests;

/// Longest request line, in bytes: a `PUT` of the largest key and value, or a `TX` of the
/// largest signed transaction in hex.
const MAX_LINE: usize = 2 * auth::MAX_SIGNED_TX + 16;
