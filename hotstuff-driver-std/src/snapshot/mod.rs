//! Snapshot sync: a node behind every peer's retained range (or new) fetches the committed app
//! state at a recent height in verified chunks from several peers, installs it in one store
//! transaction, restarts its replica from it and block-syncs from there.
//!
//! # Where it lives, and why not in the core
//! Snapshot sync reads and writes app state, which the core never touches, and the replica can
//! be re-created from an installed state with what it already has ([`hotstuff_core::Recovered`]:
//! a committed tip, an epoch, a safety state). So the core gains only the wire messages
//! ([`hotstuff_core::Message::SnapshotRequest`], `SnapshotOffer`, `SnapshotChunk`, decoded
//! with bounds like every message; the replica refuses them as the driver's) and keeps its
//! contract; the [`Engine`](crate::node::engine::Engine) serves requests, runs the client and,
//! once a snapshot is installed, builds a new replica from the store exactly as a restart does
//! (both drivers share the engine, so both have it).
//!
//! # What is trusted, and why
//! An offer ([`hotstuff_core::SnapshotCertificate`]) names a committed block `tip`, its child
//! `cert` in the next view, and a QC for `cert`. The client checks the QC against the
//! validator set it knows, `cert.parent() == tip.hash()` and `cert.view == tip.view + 1`: by
//! the two-chain rule `tip` is committed, and `cert` was voted for by at least `f + 1` honest
//! validators, each of which checked that `cert` carries the root of its own state after
//! `tip` ([`App::snapshot_root`](crate::App::snapshot_root), the
//! [`StateCommitted`](crate::kv::certified::StateCommitted) wrapper). So no single peer, and
//! no coalition below a third of the power, can make the client accept a state that was not
//! the chain's committed state after `tip`.
//!
//! The validator set is the one the node's store is in (the genesis set for a new node). A
//! snapshot of another epoch is refused: following validator-set changes across pruned
//! heights would need the epoch proofs, which pruning keeps but no message serves yet (see
//! the README's "what is left").
//!
//! # The transfer
//! The state is cut into chunks by key-hash prefix ([`crate::kv::snapshot`]): chunk `index` at
//! depth `d` holds the keys whose `blake3` starts with the `d` bits of `index`. The client
//! starts at the depth that gives about [`TARGET_CHUNK_BYTES`] per chunk (from the offer's
//! size claim, which it need not trust: a chunk over the server's limit is answered
//! `too_large` and the client asks for its two halves). Each chunk comes with its proof and is
//! verified against the root on arrival; the chunks asked for always cover the key space
//! exactly (a chunk is replaced only by its two halves), so once every chunk verified, the
//! union is the whole state under the root, nothing missing, nothing added.
//!
//! Requests go to every peer that offered the same snapshot, at most [`PER_SERVER`] at a time
//! each. A peer whose answer does not verify, names another chunk or height, claims a chunk
//! too large at the deepest level, or is over the size limit is avoided for the rest of the
//! fetch; its chunk goes to another peer. A peer that does not answer within
//! [`CHUNK_TIMEOUT`] three times is avoided too. A peer that no longer has the snapshot (it
//! took a newer one) is dropped from the fetch; with none left, the client asks for offers
//! again.
//!
//! # Crashes
//! Verified chunks go to a staging area of the store (its own tables: the committed state is
//! untouched), each chunk in one transaction, with the offer it belongs to. The install is one
//! transaction that replaces the app state by the staged one, moves the tip, drops the
//! uncommitted and old committed blocks and empties the staging area. A crash (even `kill
//! -9`) before it leaves the old state and the staging area: the restarted node asks for
//! offers at once, and if a peer still offers the same snapshot it fetches only the chunks
//! not staged, otherwise it empties the staging area and starts over. A crash after it leaves
//! the new state. There is no state in between.
//!
//! # Serving
//! A node with [`SnapshotSettings::interval`] `> 0` takes a consistent view of its committed
//! state (a redb read transaction) each time its committed height crosses a multiple of the
//! interval, so peers that serve take their snapshots at the same heights. It builds the view
//! at once on a thread of its own (the entries sorted by key hash, and their commitment tree for
//! the proofs; one build at a time, a view taken meanwhile replacing the one waiting), looks
//! for the committed block certifying its root while the blocks above it are still stored, and
//! offers it once found. The newest snapshot, the newest certified one and any fetched from in the last minute
//! are kept in memory (at most four, about twice the state's size each); an idle chain (empty blocks carry no root) serves only a snapshot whose root a
//! later block certified.
//!
//! Requests (offers and chunks) are answered on the consensus thread, so they are paced
//! ([`pacing`]): queued per peer (at most [`pacing::QUEUE_PER_PEER`]), served in turn between
//! peers, each answer charged its size against one budget of [`pacing::KIB_PER_SECOND`]. A
//! peer asking for chunk after chunk gets its turn and no more, and the thread's time spent
//! copying chunks is bounded whoever asks.

mod client;
pub mod pacing;
mod server;

pub use client::staged_height;
pub use client::{Client, Ctx, Out};
pub(crate) use server::Server;

use std::time::Duration;

/// Snapshot sync settings ([`crate::NodeBuilder::snapshots`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// Serve snapshots taken every `interval` committed heights (0: serve none). Keep it well
    /// below the retention window ([`crate::RetainBlocks`]), so that a node that installs a
    /// snapshot can block-sync from it.
    pub interval: u64,
    /// Catch up by snapshot when a block-sync server answers that it pruned the heights asked
    /// for, or at start if a staged snapshot was left by a crash.
    pub fetch: bool,
}

/// The chunk size a client aims for.
pub const TARGET_CHUNK_BYTES: u64 = 1 << 20;
/// The largest chunk a server sends (keys and values); a larger one is answered `too_large`.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;
/// Chunk requests outstanding per server.
pub const PER_SERVER: usize = 4;
/// How long a chunk request may stay unanswered.
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client collects offers.
pub const OFFER_WAIT: Duration = Duration::from_secs(2);
/// The pause before asking for offers again after a failure.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
