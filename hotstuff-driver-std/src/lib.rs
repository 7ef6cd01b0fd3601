//! # hotstuff-driver-std
//!
//! The std-threads driver for [`hotstuff_core`]: what you embed to run a replica. It is thin:
//! every protocol decision (voting, locking, commits, view changes, block sync, validator-set
//! epochs) stays in the core; this crate moves bytes, keeps time, writes to disk and calls
//! your [`App`].
//!
//! ## Threads
//! - **One consensus thread** runs the core's loop ([`node`]): it takes one input at a time (a
//!   local acknowledgement or app reply first, then a due timer, then the inbox channel with
//!   `recv_timeout` up to the next timer), hands it to the replica, drains every action and
//!   performs it. The app is called on this thread.
//! - **Network threads** ([`net::TcpNetwork`]): an acceptor, one thread per connection that
//!   reads (handshake, then frames), and one writer per peer that owns that peer's bounded send
//!   queue and (re)connects with exponential back-off. A slow or dead peer fills only its own
//!   queue; further frames for it are dropped (consensus tolerates loss; block sync repairs it).
//! - Nothing spins: every thread blocks in `accept`, `read`, or a channel receive with a
//!   deadline. An idle 4-validator cluster uses 4-5% of one core and wakes its threads some
//!   560 times a second (`tests/cluster.rs`), mostly for the empty blocks it commits while idle
//!   (see the idle back-off below).
//!
//! ## Persist before send
//! The core emits `Action::Persist { seq, .. }` and holds every vote, timeout vote and proposal
//! signed under that state until it gets `Input::Persisted { seq }`. The loop collects the
//! Persists and Commits of one drain into one [`WriteBatch`], writes it in **one redb write
//! transaction with `Durability::Immediate`** (commit returns after fsync), and only then feeds
//! `Persisted` with the highest seq of the batch. Before the app is called or a sync request is
//! served, the pending batch is written first, so the app always reads committed state that
//! includes every commit handed over so far.
//!
//! ## Storage
//! [`Storage`] is the trait; [`RedbStore`] the default. redb is pure Rust (no C toolchain or FFI),
//! ACID, and crash-safe: copy-on-write B-trees with checksummed commits, so a crash at any
//! point leaves the last committed transaction intact, and `commit` with the default
//! `Durability::Immediate` returns only after fsync. The store holds the safety state, the
//! uncommitted blocks (as `BlockRecord`s with their app-state updates), every committed block
//! with its certificate by height (and the epoch proof of an epoch's last block) for serving
//! sync, the committed tip with the epoch in force, and the committed app state (key-value). A
//! commit's app-state updates, its block and certificate, the tip and a new epoch are written in
//! one transaction. On start the node recovers with [`hotstuff_core::Recovered::resume`]. Data
//! that does not decode, or contradicts its key, is [`StoreError::Corrupt`]: never a silent
//! reset. On disk ([`RedbStore::open`]), what a vote, timeout vote or proposal waits for (the
//! safety state and this node's own proposal) is made durable in a small preallocated safety
//! log beside the database ([`storage::safety_log`]: one record, one `fdatasync`) rather than
//! by a durable redb commit; redb takes it with its next transaction, and opening replays what
//! redb does not hold yet. [`RedbStore::in_memory`] is the in-memory store: the same code on
//! redb's memory backend (without the log: nothing survives the process anyway), so tests
//! exercise the production paths; [`RedbStore::with_backend_and_log`] puts the log on a
//! backend of its own (crash tests record both).
//!
//! ## Network
//! TCP with frames of a `u32` length prefix and a borsh [`hotstuff_core::Envelope`]; the prefix
//! is checked against `Limits::max_frame` before anything is allocated. Before any message is
//! accepted, a signed handshake ([`net::handshake`]) binds the connection to the peer's ed25519
//! key and the chain id: both sides send a fresh OS nonce and sign a digest of both keys and
//! both nonces with `SignKind::Handshake`, so a recorded handshake cannot be replayed. Only
//! configured peers and members of the validator set may connect. Garbage, oversized or
//! truncated frames, unknown keys and other chains are refused with a typed [`NetError`],
//! logged and reported as [`Event::Net`], and the connection is closed; the node goes on.
//! Peers are configured as `PublicKey -> Option<SocketAddr>`: with an address, the node dials
//! it; without (a listener behind NAT), it answers on the connection the peer opened.
//! Inbound connections are admitted within bounds ([`net::admission`]): at most
//! `max_handshakes` in their handshake at once and `max_handshakes_per_ip` from one address,
//! each with one deadline for the whole handshake (`handshake_timeout`, 2 s, not per read), and
//! an address that keeps failing handshakes is refused at accept for a while. Refusals are
//! counted; only the first of each kind per 10 s is logged in full and reaches the node's loop
//! (as [`Event::Net`]), the rest go into one summary line per window, so a flood costs neither
//! the log nor the consensus inbox more than a few lines.
//! [`Network`] lets you plug in your own transport.
//!
//! Connection health ([`net::health`]): each connection has a liveness deadline
//! ([`NodeBuilder::liveness_timeout`], default 1 s). Both sides send a heartbeat (an empty
//! frame) on a connection they sent nothing on for a quarter of it, and a connection on which
//! nothing arrived for the deadline is dropped and redialled with the back-off, so a blackholed
//! link (bytes accepted, nothing delivered, no error) is found within about a view timeout;
//! TCP keepalive and `TCP_USER_TIMEOUT` are set too. A writer prefers a fresh connection the
//! peer opened over one of its own that went quiet. Block sync's no-progress period follows
//! the base view timeout ([`NodeBuilder::sync_no_progress`]), so a sync request to a peer that
//! went silent moves to another within two view timeouts.
//!
//! ## The app
//! [`App::produce_block`], [`App::validate_block`] and [`App::validate_block_for_sync`] get a
//! [`BlockContext`]: the speculative state of the parent (committed state overlaid with the
//! updates of the uncommitted ancestors, newest first, first hit wins) and the validator set.
//! They run on the consensus thread, so they must be **fast and deterministic**. An empty
//! proposal waits `idle_block_delay` (default 100 ms) unless an uncommitted ancestor or the
//! latest committed block carries updates, doubled per further committed empty block up to
//! `max_idle_block_delay` (default a third of the base timeout), so an idle chain commits about
//! three empty blocks a second instead of spinning, and transactions commit without that delay. An
//! app that gets work while its node waits ends the wait with a [`Waker`] ([`Node::waker`]);
//! [`BlockContext::leader`] forecasts the next leaders, and [`BlockContext::waits_if_empty`]
//! says whether this node is about to wait (the kv app forwards its clients' transactions to
//! the next leader with both, see [`kv::forward`]).
//!
//! ## Metrics
//! [`NodeBuilder::metrics`] makes the engine record Prometheus metrics into a [`Metrics`]
//! (`prometheus-client`): committed height, view, epoch, views ended by QC or TC, the commit and
//! store-write latency histograms, peers, frame bytes, sync requests and refused inputs by kind.
//! The engine is shared by both drivers, so the tokio driver records the same numbers.
//! [`MetricsServer`] serves them at `GET /metrics`; [`kv::register_metrics`] adds the kv app's.
//!
//! ## Reuse by other runtimes
//! What does not depend on threads is public so that another driver (`hotstuff-driver-tokio`)
//! runs the same code: [`NodeBuilder::prepare`] (checked settings, opened store, recovered
//! replica), [`node::engine::Engine`] (one turn of the loop: perform the actions with the
//! persist-before-send batch, then the next local input or timer), [`NodeInfo`] (what a node
//! handle offers), the handshake's pure steps ([`net::handshake`]), the frame format
//! ([`net::frame`]), [`net::decode_frame`], [`net::Backoff`], and the kv load harness
//! ([`load`]).
//!
//! ## Choices that differ from the architecture brief
//! - The app is called on the consensus thread rather than a pool: simpler, and determinism
//!   and speed are the app's contract anyway.
//! - `ServeSync` is answered on the consensus thread: a response is at most
//!   `limits.max_sync_blocks` (64) point reads of committed blocks, well under a millisecond.
//! - A pair of peers may hold two connections (each dials the other); each side sends on the one
//!   it dialled and reads from both. This avoids a tie-break protocol and lets listeners without
//!   an address be served on the connection they opened.
//!
//! ## Example
//! ```no_run
//! use hotstuff_core::{ChainId, ValidatorSet};
//! use hotstuff_driver_std::kv::{KvApp, Mempool, Tx};
//! use hotstuff_driver_std::{generate_key, Genesis, NodeBuilder, RedbStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = generate_key()?;
//! let validators = ValidatorSet::new([(key.public(), 1)])?;
//! let mempool = Mempool::new(10_000);
//! let node = NodeBuilder::new(
//!     key,
//!     Genesis::new(ChainId(1), validators),
//!     KvApp::new(mempool.clone(), 1_000),
//!     RedbStore::open("node.redb")?,
//! )
//! .listen("127.0.0.1:7100".parse()?)
//! .on_event(|e| println!("{e:?}"))
//! .start()?;
//! mempool.submit(Tx::Put { key: b"k".to_vec(), value: b"v".to_vec() })?;
//! std::thread::sleep(std::time::Duration::from_secs(1));
//! println!("{:?}", node.reader().get(&hotstuff_driver_std::kv::state_key(b"k"))?);
//! node.shutdown()?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod app;
pub mod error;
pub mod event;
pub mod kv;
pub mod metrics;
pub mod net;
pub mod node;
pub mod snapshot;
pub mod storage;

/// The kv load harness (it lives in [`kv::load`], beside the app it drives).
pub use kv::load;

pub use app::{App, BlockContext, Produced, StateReader};
pub use error::{FrameError, HandshakeError, NetError, StoreError};
pub use event::Event;
pub use metrics::{Metrics, MetricsServer};
pub use net::{Inbox, NetEvent, Network, Outbound, TcpNetwork, TcpSettings};
pub use node::{BuildError, Node, NodeBuilder, NodeError, NodeInfo, Prepared, Reader, Status, Waker};
pub use snapshot::SnapshotSettings;
pub use storage::{CommittedEntry, Genesis, RedbStore, RetainBlocks, Storage, Stored, WriteBatch};

/// A new keypair from the operating system's randomness.
pub fn generate_key() -> Result<hotstuff_core::Keypair, std::io::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
    Ok(hotstuff_core::Keypair::from_secret(&secret))
}
